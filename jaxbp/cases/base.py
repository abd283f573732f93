"""Registry entries: how to build a random instance of a layer, loss or model and check it.

A `Case` draws its hyperparameters and shapes from a NumPy generator seeded by one integer,
the draw's seed: the registry test checks each case at a few fixed seeds, `python -m
jaxbp.cases --draws N --seed S` at N more, and any seed replays alone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxbp import check


class Case(NamedTuple):
    name: str
    kind: str  # "layer", "loss" or "model"
    run: Callable  # (rng, *, batch, dtype, jit, **check_kwargs) -> check.Report
    # leaves whose gradient is zero by construction (a single-node tree has no children to
    # send anything to U): the registry accepts them in `Report.untested`, no others
    zero_leaves: tuple[str, ...] = ()


BATCHES = (1, 2, 5, 3)  # draw i's batch size: BATCHES[seed % 4] (1 = the simplest draw)


def draw_batch(seed: int) -> int:
    """The batch size of the draw at `seed` (a function of the seed, so a seed replays)."""
    return BATCHES[seed % len(BATCHES)]


def run_case(case: Case, *, seed=0, batch=None, dtype=jnp.float64, jit=False, **kwargs):
    """Check one case at the draw `seed` (batch `draw_batch(seed)` unless given); a Report.

    The draw's shapes, hyperparameters and values all come from `np.random.default_rng(seed)`;
    float64 runs with x64 enabled. `kwargs` go to the check (finite_diff, raise_on_fail, ...).
    """
    batch = draw_batch(seed) if batch is None else batch
    rng = np.random.default_rng(seed)
    if jnp.dtype(dtype) == jnp.float64:
        with jax.enable_x64(True):
            return case.run(rng, batch=batch, dtype=dtype, jit=jit, **kwargs)
    return case.run(rng, batch=batch, dtype=dtype, jit=jit, **kwargs)


def _seed(rng: np.random.Generator) -> int:
    return int(rng.integers(2**31 - 1))


def layer_case(name: str, build: Callable, zero_leaves: tuple[str, ...] = ()) -> Case:
    """`build(rng) -> (layer, in_shape)` or `(layer, in_shape, options)`; options may hold
    `x(rng, batch) -> array` (a custom input, e.g. integer ids) and `train` (bool)."""

    def run(rng, *, batch, dtype, jit, **kwargs):
        layer, in_shape, *rest = build(rng)
        opts = rest[0] if rest else {}
        x = opts["x"](rng, batch) if "x" in opts else None
        return check.check_layer(
            layer,
            in_shape,
            batch=batch,
            x=x,
            train=opts.get("train", False),
            seed=_seed(rng),
            dtype=dtype,
            jit=jit,
            **kwargs,
        )

    return Case(name, "layer", run, tuple(zero_leaves))


def loss_case(name: str, build: Callable) -> Case:
    """`build(rng, batch) -> (loss, pred, target)` as NumPy arrays."""

    def run(rng, *, batch, dtype, jit, **kwargs):
        loss, pred, target = build(rng, batch)
        return check.check_loss(loss, pred, target, seed=_seed(rng), dtype=dtype, jit=jit, **kwargs)

    return Case(name, "loss", run)


def model_case(name: str, build: Callable) -> Case:
    """`build(rng, batch) -> (model, loss, x, y)`, optionally `+ (options,)` with `train` and
    `params(rng) -> params` (e.g. nonzero biases, so that no unit of a relu net sits exactly
    at the kink for a dead row)."""

    def run(rng, *, batch, dtype, jit, **kwargs):
        model, loss, x, y, *rest = build(rng, batch)
        opts = rest[0] if rest else {}
        params = opts["params"](rng) if "params" in opts else None
        return check.check_model(
            model,
            loss,
            x,
            y,
            params=params,
            train=opts.get("train", True),
            seed=_seed(rng),
            dtype=dtype,
            jit=jit,
            **kwargs,
        )

    return Case(name, "model", run)


def size(rng, low=1, high=6) -> int:
    """A random size in [low, high]."""
    return int(rng.integers(low, high + 1))
