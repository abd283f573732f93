"""Data parallelism is a wrapper: shard the batch, pmean the gradients. Runs in a subprocess with
two host devices, so that the shards really live on different devices."""

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import os
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import Mesh, PartitionSpec as P
    jax.config.update("jax_enable_x64", True)
    import jaxbp
    from jaxbp import losses

    model = jaxbp.MLP([16, 4], activation=jaxbp.Tanh)
    loss = losses.softmax_cross_entropy()
    _, params, state = model.init(jax.random.key(0), (5,))
    x = jax.random.normal(jax.random.key(1), (8, 5))
    y = jnp.arange(8) % 4
    step = jaxbp.models.loss_and_grad(model, loss, jit=False)

    def shard_step(params, x, y):
        value, grads, _ = step(params, state, x, y)
        return jax.lax.pmean(value, "batch"), jax.lax.pmean(grads, "batch")

    mesh = Mesh(np.array(jax.devices()), ("batch",))
    sharded = jax.jit(jax.shard_map(shard_step, mesh=mesh, in_specs=(P(), P("batch"), P("batch")),
                                    out_specs=(P(), P())))
    assert len(jax.devices()) == 2
    value, grads = sharded(params, x, y)
    ref_value, ref_grads, _ = jaxbp.loss_and_grad(model, loss)(params, state, x, y)
    np.testing.assert_allclose(value, ref_value, rtol=1e-13)
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)
    print("OK")
    """
)


def test_shard_map_data_parallel_equals_full_batch():
    command = [sys.executable, "-c", SCRIPT]
    out = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "OK" in out.stdout, out.stderr[-3000:]
