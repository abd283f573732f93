"""The memory of backprop: recompute instead of store (gradient checkpointing).

A plain backward needs every layer's residuals, so a chain of n layers keeps n residual sets
alive between its forward and its backward: memory ∝ n. Recomputing a stretch of the forward
inside the backward trades time for memory. This module makes that trade a part of the engine:

* `remat(layer)` — a layer whose forward keeps only its input (and key, state and train flag)
  and whose backward reruns the layer's forward, then its backward. Same results, bit for bit.
* `remat_sequence(*layers, schedule=...)` — a chain like `serial(*layers)` (same params, state,
  keys and results) whose forward stores only some layer inputs ("checkpoints"), with the
  schedules `store_all()`, `every(k)`, `sqrt_n()`, `min_peak()` (the default: segments sized
  from the layers' measured input and residual bytes) and `revolve(c)` (binomial
  checkpointing).

**Cost model.** Reversing layer i needs one *taped* forward of layer i (keeping its residuals)
followed by its backward; store-all does exactly that, n taped forwards. A schedule adds
*advances* — forwards that keep nothing — to reach layer inputs it did not store. With a = the
bytes of one stored layer input and r = the bytes of one layer's residuals:

=================  =================================  =================================
schedule           peak memory (besides the input)     extra forward work (layer evals)
=================  =================================  =================================
store_all()        n·r                                 0
every(k)           (⌈n/k⌉ − 1)·a + k·r                 n − (length of the last segment)
sqrt_n()           every(⌈√n⌉): ≈ √n·a + √n·r          ≈ n − √n
min_peak()         ≈ √(2·n·a·r), ≤ every(k) for all k   n − (last segment) ≤ n − 1
revolve(c)         c·a + 1·r                           t(n, c) = ρ·n − β(c + 1, ρ − 1)
=================  =================================  =================================

(a stored input is counted while the part after it is reversed, so every(k) counts its last
boundary and revolve the input of the layer it tapes). For revolve, c counts the stored states
including the chain's input (Griewank's "snapshots"), β(c, ρ) = C(c + ρ, c) is the longest
chain c snapshots reverse with each layer advanced at most ρ times, and ρ is the smallest
integer with β(c, ρ) ≥ n. `revolve` is the
schedule of Griewank (1992) / Griewank & Walther (2000): it minimizes the extra forward work
for a given number of snapshots (`revolve_cost` gives t; the test suite checks it against the
exhaustive recursion t(m, c) = min_k [k + t(m − k, c − 1) + t(k, c)]). `every(k)` keeps the last
segment's residuals from the forward, so it recomputes every segment but the last once.

**Keeping XLA from undoing it.** Inside one compiled program the recomputation is the same
computation, on the same values, as the forward's: XLA's common-subexpression elimination (CSE)
merges the two and keeps the forward's activations alive after all, and its scheduler may run a
recomputation early. `lax.optimization_barrier` is the documented guard, but XLA:CPU removes
barriers (its `cse_barrier_expander` pass) *before* its last CSE pass, which then merges the
recomputation back (measured in `experiments/memory.py`: a 64-layer tanh MLP, batch 1024,
float64, keeps 160 MiB of temporaries with or without barriers — `jax.checkpoint` included).
jaxbp therefore runs every recomputation as the branch of a `lax.cond` whose predicate is read
from the incoming cotangent dy, and whose two branches are the same function: a conditional is
a computation of its own, so CSE cannot reach into it, and it cannot start before dy exists.
The result is exact — both branches compute the same thing — and it works inside any jit, with
no compiler flags (measured: 130 → 40 MiB for 4 segments of that MLP). Only the forward rerun
sits in the conditional; the backward runs outside it, so that gradients are not held back.
XLA compiles the branch on its own, and may fuse it differently from the plain program: with
elementwise layers the results are bitwise those of `serial`, with fused reductions (batch
norm statistics, erf) they can differ in the last bit.
`isolation="barrier"` uses `lax.optimization_barrier((inputs, dy))` instead, which XLA honours on
GPU and TPU (there a conditional costs a small device-to-host read of its predicate per
recomputed segment). Under `jax.vmap` with a batched dy, a conditional becomes a select that
evaluates both branches: prefer `isolation="barrier"` there.

Example:
    >>> import jax, jax.numpy as jnp, jaxbp
    >>> block = lambda: jaxbp.residual(jaxbp.serial(jaxbp.Dense(4), jaxbp.Tanh()))
    >>> layers = [block() for _ in range(9)]
    >>> chain = jaxbp.remat_sequence(*layers)  # schedule=recompute.min_peak(), the default
    >>> plain = jaxbp.serial(*layers)
    >>> _, params, state = plain.init(jax.random.key(0), (4,))
    >>> def grads(model, x):  # one compiled program: the recomputation is bitwise the forward
    ...     y, res, _ = model.forward(params, state, x)
    ...     return y, model.backward(params, res, jnp.ones_like(y))
    >>> y, (dp, dx) = jax.jit(grads, static_argnums=0)(chain, jnp.ones((2, 4)))
    >>> y0, (dp0, dx0) = jax.jit(grads, static_argnums=0)(plain, jnp.ones((2, 4)))
    >>> bool((y == y0).all() and (dx == dx0).all())
    True
    >>> jaxbp.recompute.sqrt_n().cost(9)  # (extra forwards, stored inputs, taped layers)
    Cost(extra_forward=6, checkpoints=2, taped=3)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cache
from typing import Any, NamedTuple

import jax
import jax.extend
import jax.numpy as jnp
from jax import lax

from jaxbp.layer import Child, Layer, as_shape, chain_children, positive_int, split_key

ISOLATIONS = ("cond", "barrier")

# ------------------------------------------------------------------------------ isolation


def _check_isolation(name, isolation):
    if isolation not in ISOLATIONS:
        raise ValueError(f"{name}: isolation must be one of {ISOLATIONS}, got {isolation!r}")


def isolated(fn, operands, dy, isolation: str = "cond"):
    """fn(operands) — a recomputation — run as a unit that XLA can neither merge with the
    forward (CSE) nor schedule before the cotangent `dy` exists.

    "cond": `lax.cond(isnan(d0), fn, fn, operands)`, d0 the first element of dy: both
    branches are `fn`, so the result is fn's whatever d0 is, but a conditional is a
    computation of its own (out of CSE's reach) that cannot run before its predicate, hence
    before dy. "barrier": `lax.optimization_barrier((operands, dy))` before fn, which XLA:CPU
    does not honour (see the module docstring). Only the recomputation is isolated: the
    backward that consumes it runs outside, so each layer's gradient leaves as soon as it is
    computed instead of with the whole recomputed stretch.
    """
    leaves = [leaf for leaf in jax.tree.leaves(dy) if jnp.size(leaf) > 0]
    if isolation == "barrier" or not leaves:
        operands, _ = lax.optimization_barrier((operands, dy))
        return fn(operands)
    d0 = jnp.ravel(leaves[0])[0]
    return lax.cond(jnp.isnan(d0), fn, fn, operands)


# ---------------------------------------------------------------------------------- remat


@dataclass(frozen=True)
class RematResiduals:
    """What `remat` keeps: the input, the state before the forward, the key, the train flag."""

    x: Any  # the layer's input
    state: Any  # the layer's state before the forward (the recomputation reuses it)
    key: Any  # the forward's random key (the same dropout mask on recomputation), or None
    train: bool = field(default=False)  # static: part of the pytree structure


jax.tree_util.register_dataclass(
    RematResiduals, data_fields=["x", "state", "key"], meta_fields=["train"]
)


def remat(layer: Layer, *, isolation: str = "cond", name: str | None = None) -> Layer:
    """Recompute `layer`'s residuals in the backward instead of storing them.

    forward: y, new_state = layer.forward(θ, s, x); keeps only (x, s, key, train).
    backward: (y, residuals) = layer.forward(θ, s, x) again, then layer.backward(θ, residuals,
    dy) — the same operations on the same values, so the same gradients, bit for bit (the
    same key draws the same dropout mask). Memory: the input instead of the residuals; time:
    one more forward of the layer. `params` and `state` are the inner layer's.
    """
    if not isinstance(layer, Layer):
        raise TypeError(f"remat: expected a Layer, got {type(layer).__name__}")
    name = name or f"remat({layer.name})"
    _check_isolation(name, isolation)

    def forward(params, state, x, *, key=None, train=False):
        y, _, new_state = layer.forward(params, state, x, key=key, train=train)
        return y, RematResiduals(x, state, key, train), new_state

    def backward(params, residuals, dy):
        if not isinstance(residuals, RematResiduals):
            raise TypeError(f"{name}: expected the residuals of its own forward")
        r = residuals

        def rerun(x):
            return layer.forward(params, r.state, x, key=r.key, train=r.train)[1]

        return layer.backward(params, isolated(rerun, r.x, dy, isolation), dy)

    def children(params, state, x, *, key=None, train=False):
        return (Child("remat[0]", layer, params, state, x, key),)

    return Layer(layer.init, forward, backward, name, children)


# ------------------------------------------------------------------------- schedule plans


class Tape(NamedTuple):
    """Run layers lo..hi−1 keeping all their residuals (then walk their backward)."""

    lo: int
    hi: int


class Split(NamedTuple):
    """Advance through [lo, mid) keeping nothing, store the input of layer `mid`, reverse the
    right part [mid, hi); then recompute and reverse the left part [lo, mid) from x_lo."""

    lo: int
    mid: int
    hi: int
    left: Any  # plan of [lo, mid)
    right: Any  # plan of [mid, hi)


class Cost(NamedTuple):
    extra_forward: int  # layer forwards beyond store-all's n (the "advances")
    checkpoints: int  # peak number of stored layer inputs (besides the chain's input)
    taped: int  # peak number of layers whose residuals are alive at once


def _advances(p) -> int:
    """A(Tape) = 0, A(Split) = (mid − lo) + A(right) + A(left): the untaped stretch on the
    way to x_mid, the right part, and the left part run again from x_lo."""
    if isinstance(p, Tape):
        return 0
    return (p.mid - p.lo) + _advances(p.right) + _advances(p.left)


def plan_memory(p, a: float = 1.0, r: float = 1.0) -> float:
    """Peak memory of a plan, a per stored input and r per taped layer: Tape (hi − lo)·r,
    Split max(a + peak(right), peak(left)) — x_mid lives while the right part is reversed."""
    if isinstance(p, Tape):
        return (p.hi - p.lo) * r
    return max(a + plan_memory(p.right, a, r), plan_memory(p.left, a, r))


def plan_cost(p) -> Cost:
    """Extra forward work and peak memory of a plan, as the executor runs it."""
    return Cost(_advances(p), int(plan_memory(p, 1, 0)), int(plan_memory(p, 0, 1)))


class Schedule(NamedTuple):
    """A named rule that turns a chain length n into a plan; a rule with `sized` plans from
    the layers' sizes instead (`remat_sequence` measures them when it traces its forward)."""

    name: str
    plan: Any  # n -> plan (for `sized` rules: the plan for n layers of equal sizes a = r)
    sized: Any = None  # (input bytes per layer, residual bytes per layer) -> plan, or None

    def cost(self, n: int) -> Cost:
        return plan_cost(self.plan(n))

    def plan_for(self, input_bytes, residual_bytes):
        """The plan for layers whose inputs take input_bytes[i] and residuals
        residual_bytes[i] (a rule without `sized` ignores the sizes)."""
        if self.sized is None:
            return self.plan(len(input_bytes))
        return self.sized(tuple(input_bytes), tuple(residual_bytes))


def store_all() -> Schedule:
    """Keep every layer's residuals: memory n·r, no extra work (what `serial` does)."""
    return Schedule("store_all", lambda n: Tape(0, n))


def _segments(bounds):
    """Right-nested splits over the segments [b_0, b_1), [b_1, b_2), ... each taped."""
    if len(bounds) == 2:
        return Tape(bounds[0], bounds[1])
    lo, mid, hi = bounds[0], bounds[1], bounds[-1]
    return Split(lo, mid, hi, Tape(lo, mid), _segments(bounds[1:]))


def every(k: int) -> Schedule:
    """Store the input of every k-th layer; tape one segment of k layers at a time.

    Memory (⌈n/k⌉ − 1)·a + k·r; extra forward n − (last segment's length): every segment but the
    last is run twice (once keeping nothing, once taped in the backward).
    """
    k = positive_int("every", "k", k)
    return Schedule(f"every({k})", lambda n: _segments([*range(0, n, k), n]))


def sqrt_n() -> Schedule:
    """Chen et al. (2016): every(⌈√n⌉) — memory ≈ 2√n layers, one extra forward (≈ n − √n)."""
    return Schedule("sqrt_n", lambda n: every(max(1, math.isqrt(n - 1) + 1)).plan(n))


def segments_peak(bounds, input_bytes, residual_bytes) -> int:
    """Peak of the segmenting 0 = b_0 < b_1 < … < b_m = n (each segment taped in the
    backward, its boundaries stored): max_j [Σ_{i=1..j} a(b_i) + Σ_{l ∈ [b_j, b_{j+1})} r(l)]
    — segment j is reversed while the inputs b_1 … b_j are still stored."""
    stored, peak = 0, 0
    for j, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
        stored += input_bytes[lo] if j > 0 else 0
        peak = max(peak, stored + sum(residual_bytes[lo:hi]))
    return peak


def _bounds_within(peak, a, r):
    """Segment boundaries whose peak is ≤ `peak`, or None. g[i] = the least bytes stored up to
    a boundary at i (a(i) included); any feasible path to i with less stored is as good for
    what follows, so keeping the least per i is exact (O(n · longest segment)). The last
    segment starts at the first feasible j: the fewest extra forwards (j) for that peak."""
    n = len(r)
    g, prev = [0] + [math.inf] * n, [0] * (n + 1)
    for i in range(1, n + 1):
        taped = 0
        for j in range(i - 1, -1, -1):  # segment [j, i)
            taped += r[j]
            if taped > peak:
                break
            if g[j] + taped > peak:
                continue
            if i == n:  # nothing stored at the end: any feasible j, the smallest is best
                g[n], prev[n] = g[j], j
            elif g[j] + a[i] < g[i]:
                g[i], prev[i] = g[j] + a[i], j
    if g[n] == math.inf:
        return None
    bounds = [n]
    while bounds[-1] > 0:
        bounds.append(prev[bounds[-1]])
    return bounds[::-1]


@cache
def min_peak_bounds(input_bytes: tuple, residual_bytes: tuple) -> list:
    """The segmenting with the least `segments_peak` for these sizes: a bisection on the
    peak (between the largest layer's residuals and √n segments' peak) over `_bounds_within`."""
    n = len(residual_bytes)
    k = math.isqrt(n - 1) + 1
    best = [*range(0, n, k), n]
    lo, hi = max(residual_bytes) - 1, segments_peak(best, input_bytes, residual_bytes)
    while hi - lo > 1:  # invariant: nothing fits in lo, bounds `best` fit in hi
        mid = (lo + hi) // 2
        bounds = _bounds_within(mid, input_bytes, residual_bytes)
        lo, hi, best = (lo, mid, bounds) if bounds else (mid, hi, best)
    return best


def min_peak() -> Schedule:
    """Segments sized for the chain: the boundaries that minimize the peak memory
    max_j [stored inputs b_1…b_j + segment j's residuals] for the layers' own sizes (a(i) the
    bytes of layer i's input, r(i) of its residuals, measured from shapes when the chain is
    traced). With equal sizes the segments shrink toward the end of the chain, by a/r layers
    a segment: peak ≈ √(2·n·a·r), below every(k) for every k (≤ by construction, as every(k)
    is one of the segmentings searched), for n − (last segment) ≤ n − 1 extra forwards — no
    more than jax.checkpoint on every segment (n − 1 in experiments/memory.py's traced
    program). `sqrt_n()` stays Chen's fixed ⌈√n⌉ segments. The default schedule."""

    def sized(a, r):
        return _segments(min_peak_bounds(a, r))

    return Schedule("min_peak", lambda n: sized((1,) * n, (1,) * n), sized)


# --------------------------------------------------------------------- binomial (revolve)


def binomial(c: int, r: int) -> int:
    """β(c, r) = C(c + r, c): the longest chain c snapshots reverse with ≤ r advances a layer."""
    return math.comb(c + r, c) if r >= 0 else 0


def revolve_cost(n: int, c: int) -> int:
    """t(n, c) = ρ·n − β(c + 1, ρ − 1), ρ = min{ρ : β(c, ρ) ≥ n}: the fewest advances that
    reverse n layers with c snapshots (the chain's input included; Griewank 1992)."""
    if n <= 1:
        return 0
    rho = 0
    while binomial(c, rho) < n:
        rho += 1
    return rho * n - binomial(c + 1, rho - 1)


@cache
def _revolve_plan(lo: int, hi: int, c: int):
    m = hi - lo
    if m == 1:
        return Tape(lo, hi)
    if c == 1:  # only x_lo: advance to the last layer, tape it, repeat (m(m − 1)/2 advances)
        return Split(lo, hi - 1, hi, _revolve_plan(lo, hi - 1, 1), Tape(hi - 1, hi))
    best = revolve_cost(m, c)
    for k in range(m - 1, 0, -1):  # the longest first stretch that is still optimal
        if k + revolve_cost(m - k, c - 1) + revolve_cost(k, c) == best:
            left, right = _revolve_plan(lo, lo + k, c), _revolve_plan(lo + k, hi, c - 1)
            return Split(lo, lo + k, hi, left, right)
    raise AssertionError(f"no optimal split for m={m}, c={c}")  # pragma: no cover


def revolve(c: int) -> Schedule:
    """Binomial checkpointing with c snapshots (the chain's input included): the schedule
    with the least extra forward work t(n, c) (see `revolve_cost`) for that memory, at most
    c − 1 stored inputs and one layer's residuals at a time."""
    c = positive_int("revolve", "c (snapshots)", c)
    return Schedule(f"revolve({c})", lambda n: _revolve_plan(0, n, c))


# ------------------------------------------------------------------------ the chain executor


@dataclass(frozen=True)
class ChainResiduals:
    """What `remat_sequence` keeps between its forward and backward."""

    x: Any  # the chain's input
    stored: Any  # the plan's residuals: stored layer inputs and the last stretch's residuals
    state: Any  # every layer's state before the forward (recomputations reuse it)
    keys: Any  # every layer's key (or Nones)
    train: bool = field(default=False)  # static
    plan: Any = None  # static: the plan the forward ran (a sized schedule's, from the shapes)


jax.tree_util.register_dataclass(
    ChainResiduals, data_fields=["x", "stored", "state", "keys"], meta_fields=["train", "plan"]
)


class _Chain(NamedTuple):
    """The layers with what every run of them needs (params, state before, keys, train)."""

    layers: tuple
    params: Any
    state: Any
    keys: Any
    train: bool
    isolation: str

    def run(self, i, x):
        return self.layers[i].forward(
            self.params[i], self.state[i], x, key=self.keys[i], train=self.train
        )

    def sizes(self, x):
        """(bytes of each layer's input, bytes of its residuals), from shapes alone."""
        input_bytes, residual_bytes = [], []
        for i in range(len(self.layers)):
            input_bytes.append(_nbytes(x))
            x, residuals, _ = jax.eval_shape(lambda x, i=i: self.run(i, x), x)
            residual_bytes.append(_nbytes(residuals))
        return input_bytes, residual_bytes


def _nbytes(tree) -> int:
    return sum(math.prod(leaf.shape) * leaf.dtype.itemsize for leaf in jax.tree.leaves(tree))


def _forward_path(chain, plan, x, new_state):
    """Run a plan's forward: advance through each left stretch keeping nothing, store the
    input x_mid, and tape the last stretch. Fills new_state; returns (y, stored)."""
    if isinstance(plan, Tape):
        residuals = []
        for i in range(plan.lo, plan.hi):
            x, r, new_state[i] = chain.run(i, x)
            residuals.append(r)
        return x, tuple(residuals)
    for i in range(plan.lo, plan.mid):
        x, _, new_state[i] = chain.run(i, x)
    x_mid = x
    y, stored_right = _forward_path(chain, plan.right, x_mid, new_state)
    return y, (x_mid, stored_right)


def _reverse(chain, plan, x_lo, stored, dy, dparams):
    """The backward of a plan from its stored residuals: the right part first, then the left
    part recomputed from x_lo (isolated, see `isolated`). Fills dparams; returns dx."""
    if isinstance(plan, Tape):
        delta = dy
        for i in reversed(range(plan.lo, plan.hi)):
            dparams[i], delta = chain.layers[i].backward(
                chain.params[i], stored[i - plan.lo], delta
            )
        return delta
    x_mid, stored_right = stored
    d_mid = _reverse(chain, plan.right, x_mid, stored_right, dy, dparams)
    left = plan.left

    def rerun_left(x):  # the left part's forward path again, keeping what its plan keeps
        return _forward_path(chain, left, x, [None] * len(chain.layers))[1]

    stored_left = isolated(rerun_left, x_lo, d_mid, chain.isolation)
    return _reverse(chain, left, x_lo, stored_left, d_mid, dparams)


def remat_sequence(
    *layers: Layer, schedule: Schedule | None = None, isolation: str = "cond", name=None
) -> Layer:
    """A chain y = f_n(... f_1(x)) like `serial(*layers)` — the same params, state, keys and
    results, bit for bit — whose forward stores only what `schedule` says and whose backward
    recomputes the rest (default `min_peak()`; see the module docstring for the schedules'
    memory and extra work).

    Backward of a stored input x_mid splitting [lo, hi): reverse [mid, hi) from x_mid, giving
    δ_mid; then rerun [lo, mid) from x_lo (storing what its own plan says) and reverse it from
    δ_mid. Each rerun is isolated from the forward so that XLA keeps it a recomputation.
    """
    if not layers:
        raise ValueError("remat_sequence: needs at least one layer")
    for i, layer in enumerate(layers):
        if not isinstance(layer, Layer):
            raise TypeError(
                f"remat_sequence: argument {i} is a {type(layer).__name__}, not a Layer "
                "(did you forget to call a constructor, e.g. Relu() instead of Relu?)"
            )
    schedule = min_peak() if schedule is None else schedule
    if not isinstance(schedule, Schedule):
        raise TypeError(
            f"remat_sequence: schedule must be a Schedule (e.g. jaxbp.recompute.every(4)), "
            f"got {type(schedule).__name__}"
        )
    n = len(layers)
    name = name or f"remat_sequence[{schedule.name}](" + ", ".join(x.name for x in layers) + ")"
    _check_isolation(name, isolation)
    fixed_plan = None if schedule.sized else schedule.plan(n)

    def init(key, in_shape):
        shape = as_shape(in_shape)
        params, state = [], []
        for layer, k in zip(layers, jax.random.split(key, n)):
            shape, p, s = layer.init(k, shape)
            params.append(p)
            state.append(s)
        return shape, tuple(params), tuple(state)

    def forward(params, state, x, *, key=None, train=False):
        keys = tuple(split_key(key, n))
        chain = _Chain(layers, params, state, keys, train, isolation)
        plan = schedule.plan_for(*chain.sizes(x)) if fixed_plan is None else fixed_plan
        new_state = [None] * n
        y, stored = _forward_path(chain, plan, x, new_state)
        return y, ChainResiduals(x, stored, state, keys, train, plan), tuple(new_state)

    def backward(params, residuals, dy):
        if not isinstance(residuals, ChainResiduals):
            raise TypeError(f"{name}: expected the residuals of its own forward")
        r = residuals
        chain = _Chain(layers, params, r.state, r.keys, r.train, isolation)
        dparams = [None] * n
        dx = _reverse(chain, r.plan, r.x, r.stored, dy, dparams)
        return tuple(dparams), dx

    def children(params, state, x, *, key=None, train=False):
        keys = split_key(key, n)
        return chain_children("remat_sequence", layers, params, state, x, keys, train)

    return Layer(init, forward, backward, name, children)
