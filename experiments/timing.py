"""The one timer every benchmark uses: interleaved rounds → medians → ratios.

Two ways of computing the same thing are timed in one process, in turns: every round runs each
method once (in a shuffled order, after a short pause), each for at least `min_time` seconds
of repeated calls. Load that comes and goes on a shared machine then hits all methods alike,
and the ratio of two methods is taken **per round** before its median is taken:

    t̃_m   = median over rounds r of t_m(r)                (seconds per call of method m)
    a / b = median over rounds r of t_a(r) / t_b(r)

Compilation is excluded: each method is called twice before the rounds (compile, then warm up,
which also sizes its repetitions).

    >>> import jax.numpy as jnp
    >>> x = jnp.ones((64, 64))
    >>> t = interleaved_times({"a": lambda: x @ x, "b": lambda: x + x}, rounds=3, pause=0)
    >>> sorted(t.medians), len(t.per_round["a"])
    (['a', 'b'], 3)
    >>> ratio(t, "a", "a")
    1.0
"""

from __future__ import annotations

import math
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

PAUSE = 0.02  # seconds of rest before each measurement: BLAS/OpenMP threads spin after a call


class Times(NamedTuple):
    medians: dict  # name -> median seconds per call
    per_round: dict  # name -> [seconds per call in round r]


def block(value):
    """Wait for JAX results (asynchronous dispatch); NumPy and PyTorch results are ready."""
    if any(isinstance(leaf, jax.Array) for leaf in jax.tree.leaves(value)):
        jax.block_until_ready(value)
    return value


def interleaved_times(
    methods: dict,
    *,
    rounds: int,
    min_time: float = 0.0,
    repeat: int | None = None,
    seed: int = 0,
    pause: float = PAUSE,
) -> Times:
    """Time zero-argument callables `methods` (name -> fn) in interleaved, shuffled rounds;
    each measurement repeats a call `repeat` times, or (None) as often as fills `min_time`."""
    names = list(methods)
    reps = {}
    for name in names:  # compile and warm up, then size the repetitions
        block(methods[name]())
        t0 = time.perf_counter()
        block(methods[name]())
        fill = math.ceil(min_time / max(time.perf_counter() - t0, 1e-6))
        reps[name] = max(1, fill) if repeat is None else repeat
    per_round = {name: [] for name in names}
    rng = np.random.default_rng(seed)
    for _ in range(rounds):
        for i in rng.permutation(len(names)):
            name, fn = names[i], methods[names[i]]
            time.sleep(pause)
            t0 = time.perf_counter()
            for _ in range(reps[name]):
                block(fn())
            per_round[name].append((time.perf_counter() - t0) / reps[name])
    return Times({n: float(np.median(ts)) for n, ts in per_round.items()}, per_round)


def ratio(times: Times, a: str, b: str) -> float | None:
    """Median over rounds of t_a / t_b (None when either was not timed)."""
    if a not in times.per_round or b not in times.per_round:
        return None
    return float(np.median(np.asarray(times.per_round[a]) / np.asarray(times.per_round[b])))


def min_ratio(times: Times, a: str, b: str) -> float | None:
    """min t_a / min t_b: the ratio of the least disturbed times (None when one is missing)."""
    if a not in times.per_round or b not in times.per_round:
        return None
    return float(np.min(times.per_round[a]) / np.min(times.per_round[b]))


def interleaved_medians(fns, args, repeat: int) -> list[float]:
    """Median seconds of each `fn(*args)` over `repeat` interleaved rounds, one call each."""
    calls = {i: (lambda fn=fn: fn(*args)) for i, fn in enumerate(fns)}
    medians = interleaved_times(calls, rounds=repeat, pause=0.0).medians
    return [medians[i] for i in range(len(fns))]


def carried(call, params, *data):
    """A zero-argument function running `params, value = call(params, *data)` on its own
    copy of `params`, keeping the new ones: for steps that donate (consume) their params."""
    holder = [jax.tree.map(jnp.copy, params)]

    def run():
        holder[0], value = call(holder[0], *data)
        return value

    return run
