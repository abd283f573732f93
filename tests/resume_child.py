"""A training run for tests/test_train.py's kill-and-resume test (run as a subprocess).

usage: python tests/resume_child.py CHECKPOINT_DIR OUT.npz [--slow]

Trains an MLP on synthetic data for 200 steps with checkpoints every 20 steps (resuming from
CHECKPOINT_DIR when it holds one) and writes the final training state to OUT.npz. --slow
sleeps at every log point, so that the parent has time to kill the run in the middle.
"""

import sys
import time

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

import jaxbp  # noqa: E402
from jaxbp import checkpoint, loop, losses, optim, train  # noqa: E402


def main(argv):
    directory, out = argv[0], argv[1]
    slow = "--slow" in argv
    found = checkpoint.latest(directory)
    print("start", 0 if found is None else checkpoint.read_metadata(found)["step"], flush=True)
    rng = np.random.default_rng(0)  # synthetic data: no scikit-learn import in the child
    x = rng.normal(size=(600, 16))
    y = (x[:, :4].argmax(axis=1) + (x[:, 4] > 0) * 4).astype(np.int32)  # 8 classes
    result = train.fit(
        jaxbp.MLP([16, 8]),
        losses.softmax_cross_entropy(),
        optim.adam(3e-3),
        (x[:500], y[:500]),
        key=jax.random.key(7),
        steps=200,
        batch_size=32,
        eval_data=(x[500:], y[500:]),
        schedule=train.Schedule(eval_every=100, log_every=10, checkpoint_every=20),
        checkpoint=train.CheckpointOptions(directory),
        progress=False,
        callbacks=[loop.every(10, lambda tick: time.sleep(0.2))] if slow else (),
    )
    is_key = lambda x: jax.numpy.issubdtype(x.dtype, jax.dtypes.prng_key)
    leaves = jax.tree.leaves(result.train_state)
    arrays = {
        f"leaf{i}": np.asarray(jax.random.key_data(x) if is_key(x) else x)
        for i, x in enumerate(leaves)
    }
    np.savez(out, **arrays)
    print("done", result.step, flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
