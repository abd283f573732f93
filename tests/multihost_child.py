"""One of the two processes of tests/test_distributed.py's multi-host test.

usage: python tests/multihost_child.py PROCESS_ID PORT OUT.npz

Joins a 2-process JAX runtime on 127.0.0.1:PORT (CPU collectives over gloo), builds a mesh
over both processes' devices (one CPU device each), trains `problem()` data-parallel with
`fit(..., mesh=mesh)` (checkpoints in OUT.npz.ckpt/) and writes the parameters it holds to
OUT.npz.
"""

import sys

import jax

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_cpu_collectives_implementation", "gloo")

import numpy as np  # noqa: E402

import jaxbp  # noqa: E402
from jaxbp import distributed, losses, optim, train  # noqa: E402

STEPS = 12


def problem():
    """Model, loss, optimizer, data and fit arguments, shared with the single-process run."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 5))
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int32) + (x[:, 2] > 1)
    model = jaxbp.MLP([16, 3])
    kwargs = dict(key=jax.random.key(7), steps=STEPS, batch_size=16, progress=False)
    kwargs.update(
        eval_data=(x[:40], y[:40]), schedule=train.Schedule(eval_every=6, checkpoint_every=6)
    )
    return model, losses.softmax_cross_entropy(), optim.adam(1e-2), (x, y), kwargs


def main(process_id, port, out):
    jax.distributed.initialize(
        f"127.0.0.1:{port}", num_processes=2, process_id=process_id, initialization_timeout=60
    )
    try:
        mesh = distributed.make_mesh()  # both processes' devices on the "data" axis
        assert mesh.devices.size == 2 and len(jax.local_devices()) == 1
        model, loss, opt, data, kwargs = problem()
        ckpt = dict(checkpoint=train.CheckpointOptions(f"{out}.ckpt"))  # one folder per process
        result = train.fit(model, loss, opt, data, mesh=mesh, **kwargs, **ckpt)
        leaves = [np.asarray(leaf) for leaf in jax.tree.leaves(result.params)]
        evals = [r["loss"] for r in result.history["eval"]]
        np.savez(out, *leaves, step=result.step, eval_loss=np.array(evals))
    finally:
        jax.distributed.shutdown()


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], sys.argv[3])
