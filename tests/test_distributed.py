"""jaxbp.distributed: one device in-process; 8 simulated devices and two processes in
subprocesses (JAX fixes its device count and its distributed runtime when it starts)."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxbp
from jaxbp import checkpoint, distributed, optim, train

ROOT = Path(__file__).resolve().parents[1]
CHILD_CHECKS = [
    "data_parallel_1",
    "data_parallel_4",
    "data_parallel_8",
    "tensor_parallel_gradient",
    "gather_scatter_transposes",
    "fit_two_d_mesh",
    "errors",
    "mixed_precision_data_parallel",
    "fit_mesh_mixed_precision",
]


def _env(xla_flags=""):
    """This process's environment (its XLA_FLAGS, see conftest.py) plus `xla_flags`."""
    flags = f"{os.environ.get('XLA_FLAGS', '')} {xla_flags}".strip()
    return {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu", "XLA_FLAGS": flags}


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    """Run tests/distributed_child.py once on 8 simulated CPU devices; its results by name."""
    out = tmp_path_factory.mktemp("distributed") / "results.json"
    env = _env("--xla_force_host_platform_device_count=8")
    script = str(ROOT / "tests" / "distributed_child.py")
    proc = subprocess.run(
        [sys.executable, script, str(out)], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0 and out.exists(), proc.stdout + proc.stderr
    return json.loads(out.read_text())


def test_eight_simulated_devices(simulated):
    assert simulated["devices"] == 8


@pytest.mark.parametrize("name", CHILD_CHECKS)
def test_on_simulated_devices(simulated, name):
    result = simulated[name]
    assert result["ok"], result["detail"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_equal_one(tmp_path):
    """Two processes (gloo over 127.0.0.1) train data-parallel with fit(mesh=...): both hold
    the same parameters, equal to one process training on the same global batches."""
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        import multihost_child
    finally:
        sys.path.remove(str(ROOT / "tests"))
    port, script = _free_port(), str(ROOT / "tests" / "multihost_child.py")
    outs = [tmp_path / f"p{i}.npz" for i in range(2)]
    logs = [open(tmp_path / f"p{i}.log", "w+") for i in range(2)]
    procs = []
    try:
        for i in range(2):
            cmd = [sys.executable, script, str(i), str(port), str(outs[i])]
            procs.append(
                subprocess.Popen(cmd, env=_env(), stdout=logs[i], stderr=subprocess.STDOUT)
            )
        codes = [p.wait(timeout=180) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        text = []
        for log in logs:
            log.seek(0)
            text.append(log.read()[-3000:])
            log.close()
    assert codes == [0, 0], "\n---\n".join(text)
    held = [np.load(out) for out in outs]
    names = [k for k in held[0].files if k.startswith("arr_")]
    for k in names:  # both processes hold the same replicated parameters, bit for bit
        np.testing.assert_array_equal(held[0][k], held[1][k])
    model, loss, opt, data, kwargs = multihost_child.problem()
    single = train.fit(model, loss, opt, data, **kwargs)
    assert int(held[0]["step"]) == single.step == multihost_child.STEPS
    single_evals = [r["loss"] for r in single.history["eval"]]
    saved, _ = checkpoint.load(
        checkpoint.latest(f"{outs[1]}.ckpt"),
        like={"train_state": single.train_state, "data_key": jax.random.key(0)},
    )
    for k, leaf in zip(names, jax.tree.leaves(saved["train_state"].params)):
        np.testing.assert_array_equal(np.asarray(leaf), held[1][k])
    np.testing.assert_allclose(held[0]["eval_loss"], single_evals, rtol=1e-12)
    for k, ref in zip(names, jax.tree.leaves(single.params)):
        ref = np.asarray(ref)
        err = np.max(np.abs(held[0][k] - ref)) / np.max(np.abs(ref))
        assert err <= 1e-12, (k, err)


# ------------------------------------------------------------------ one device, in-process


def _plain(params):
    return jax.tree.map(
        lambda n: {"W": n.W, "b": n.b} if isinstance(n, distributed.ShardedParams) else n,
        params,
        is_leaf=lambda n: isinstance(n, distributed.ShardedParams),
    )


def test_tensor_parallel_without_a_mesh_is_the_unsplit_block(key):
    """Outside shard_map the collectives act on one device: the TP block is Dense-Gelu-Dense,
    same init, same forward, same backward."""
    block = distributed.TensorParallelMLP(12, 3)
    plain = jaxbp.serial(jaxbp.Dense(12), jaxbp.Gelu(), jaxbp.Dense(3))
    _, p_tp, s_tp = block.init(key, (5,))
    _, p, s = plain.init(key, (5,))
    assert all(jax.tree.leaves(jax.tree.map(lambda a, b: bool(jnp.all(a == b)), _plain(p_tp), p)))
    x = jax.random.normal(jax.random.key(1), (4, 5))
    y_tp, r_tp, _ = block.forward(p_tp, s_tp, x)
    y, r, _ = plain.forward(p, s, x)
    assert y.shape == (4, 3)
    np.testing.assert_array_equal(y_tp, y)
    (d_tp, dx_tp), (d, dx) = block.backward(p_tp, r_tp, y), plain.backward(p, r, y)
    np.testing.assert_allclose(dx_tp, dx, rtol=1e-14)
    for a, b in zip(jax.tree.leaves(_plain(d_tp)), jax.tree.leaves(d)):
        np.testing.assert_allclose(a, b, rtol=1e-14)
    assert isinstance(d_tp[0], distributed.ShardedParams) and d_tp[0].split == "column"


def test_partition_specs_follow_the_sharded_params(key):
    P = jax.sharding.PartitionSpec
    model = jaxbp.serial(jaxbp.Dense(4), distributed.TensorParallelMLP(8, 4))
    state = train.init_train_state(model, optim.adam(1e-3), key, (3,))
    specs = distributed.partition_specs(state)
    col, row = specs.params[1][0], specs.params[1][2]
    assert (col.W, col.b, row.W, row.b) == (P(None, "model"), P("model"), P("model", None), P())
    assert specs.params[0] == {"W": P(), "b": P()} and specs.step == P()
    assert specs.opt_state.mu[1][0].W == P(None, "model")  # Adam's moments split like W
    data_only = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
    no_model_axis = distributed.partition_specs(state, data_only)
    assert no_model_axis.params[1][0].W == P()  # a mesh without "model" replicates them


def test_clear_errors():
    with pytest.raises(ValueError, match="needs 2 devices"):
        distributed.make_mesh(2, 1, devices=jax.devices()[:1])
    with pytest.raises(ValueError, match="AllGather: axis must be a nonzero int"):
        distributed.AllGather(axis=0)
    layer = distributed.ColumnParallelDense(4)
    _, params, _ = layer.init(jax.random.key(0), (3,))
    with pytest.raises(ValueError, match=r"ColumnParallelDense\(4, 'model'\): expected input"):
        layer.forward(params, (), jnp.ones((2, 5)))
    with pytest.raises(TypeError, match="RowParallelDense"):
        distributed.RowParallelDense(2).forward(params, (), jnp.ones((2, 3), jnp.int32))
