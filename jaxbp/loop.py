"""The training loop, public: call a step on batches, then the callbacks.

    for each call:   state, out = step_fn(state, batches(step, count))
                     step += count
                     for cb in callbacks: cb(Tick(step, steps, state, out))

`fit` is this loop with its own callbacks (logging, evaluation, checkpoints, progress bar).
An experiment that needs its own step (a GAN's two players, an ELBO with its own key, several
optimizers) writes the step and hands it to `loop`, with `every(n, fn)` for what happens
every n steps (evaluate, record a curve) — so no experiment copies a training loop.

Batches: either a function `batches(step, count)` returning the batch for steps
step .. step+count−1 (a function of the step is what makes a resumed run see the same
batches), or an iterable, one item per call.

Example:
    >>> import jax.numpy as jnp
    >>> from jaxbp import loop
    >>> curve = []
    >>> step_fn = lambda w, x: (w - 0.5 * (w - x), (w - x) ** 2)     # gradient step on (w−x)²/4
    >>> w = loop.loop(step_fn, jnp.array(0.0), lambda step, count: jnp.array(2.0), steps=6,
    ...               callbacks=[loop.every(3, lambda tick: curve.append(float(tick.out)))])
    >>> float(w), curve
    (1.96875, [0.25, 0.00390625])
"""

from __future__ import annotations

import json
import numbers
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NamedTuple


class Stop(Exception):
    """Raised by a callback to end the loop after the current call (early stopping); `loop`
    then returns the state as it is."""


class Tick(NamedTuple):
    """What a callback sees after each call of the step.

    step: the steps done so far; steps: the total the loop runs to; state: the new state;
    out: what the step returned beside the state (e.g. the loss, or K losses).
    """

    step: int
    steps: int
    state: Any
    out: Any

    @property
    def done(self) -> bool:
        """True after the last call."""
        return self.step >= self.steps


def loop(
    step_fn: Callable,
    state,
    batches: Callable | Iterable,
    *,
    steps: int,
    start: int = 0,
    steps_per_call: int = 1,
    callbacks: Iterable[Callable] = (),
):
    """Run `state, out = step_fn(state, batch)` from step `start` until `steps` steps are
    done, `steps_per_call` steps per call (the last call may do fewer: `batches(step, count)`
    is told how many), calling every callback with a `Tick` after each call. Returns the
    final state. A callback ends the loop early by raising `Stop`."""
    for name, value, low in (
        ("steps", steps, 0),
        ("start", start, 0),
        ("steps_per_call", steps_per_call, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
            raise ValueError(f"loop: {name} must be an int >= {low}, got {value!r}")
    callbacks = list(callbacks)
    draw = batches if callable(batches) else _iterate(batches)
    step = start
    while step < steps:
        count = min(steps_per_call, steps - step)
        state, out = step_fn(state, draw(step, count))
        step += count
        tick = Tick(step, steps, state, out)
        try:
            for callback in callbacks:
                callback(tick)
        except Stop:
            break
    return state


def _iterate(batches: Iterable) -> Callable:
    items = iter(batches)

    def draw(step, count):
        try:
            return next(items)
        except StopIteration:
            raise ValueError(f"loop: the batches ran out at step {step}") from None

    return draw


def every(n: int, fn: Callable) -> Callable:
    """A callback that calls `fn(tick)` when the step count reaches a multiple of `n`, and
    after the last call."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"every: n must be a positive int, got {n!r}")
    last = [0]

    def callback(tick: Tick):
        if tick.done or tick.step // n > last[0] // n:
            fn(tick)
        last[0] = tick.step

    return callback


def write_json_atomic(path, obj) -> None:
    """Write `obj` as JSON to `path` atomically (a temporary file, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def progress_bar(enabled: bool, total: int, initial: int = 0, desc: str = "fit"):
    """A tqdm bar (`update(n)`, `set_postfix(dict)`, `close()`), or one that does nothing
    when `enabled` is False or tqdm is not installed."""
    if enabled:
        try:
            from tqdm.auto import tqdm
        except ImportError:  # tqdm is optional: no bar without it
            enabled = False
    if not enabled:
        return _NoBar()
    return tqdm(total=total, initial=initial, unit="step", desc=desc, dynamic_ncols=True)


class _NoBar:
    def update(self, n):
        pass

    def set_postfix(self, *args, **kwargs):
        pass

    def close(self):
        pass
