"""Registry entries: how to build a random instance of a layer, loss or model and check it.

A `Case` draws its hyperparameters and shapes from a NumPy generator, so the same case serves
the hypothesis tests (random seeds, random batch sizes) and the fixed-seed CLI table.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from jaxbp import check


class Case(NamedTuple):
    name: str
    kind: str  # "layer", "loss" or "model"
    run: Callable  # (rng, *, batch, dtype, jit, **check_kwargs) -> check.Report
    # leaves whose gradient is zero by construction (a single-node tree has no children to
    # send anything to U): the registry accepts them in `Report.untested`, no others
    zero_leaves: tuple[str, ...] = ()


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
    """`build(rng, batch) -> (model, loss, x, y)`, optionally `+ (options,)` with `train`."""

    def run(rng, *, batch, dtype, jit, **kwargs):
        model, loss, x, y, *rest = build(rng, batch)
        opts = rest[0] if rest else {}
        return check.check_model(
            model,
            loss,
            x,
            y,
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
