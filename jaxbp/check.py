"""Gradient checks: is a hand-written backward right?

Each check runs the manual backward and compares it, leaf by leaf, with two references:

* **jax.vjp** of the forward, with a random cotangent (float64; passes at relative error
  ≤ 1e-10, where relative error = max|manual − reference| / max|reference| over the leaf;
  float32: ≤ 1e-4);
* **central finite differences** of φ(θ) = ⟨dy, f(θ)⟩ at a few random elements of every leaf:
  (φ(θ + εeᵢ) − φ(θ − εeᵢ)) / 2ε (float64: ε = 1e-6, passes at error ≤ 1e-6 relative to the
  leaf's largest gradient, or to 1e7 × the quotient's own rounding noise u·Σ|dy ⊙ y|/ε when
  that is larger: a gradient below that floor is beyond what finite differences can resolve,
  and the jax.vjp comparison certifies it; float32: ε = u^⅓ ≈ 5e-3 and 1e-3, same floor rule).

**Half precision** (bfloat16, float16). Every result is rounded, so the manual backward and
jax.vjp differ by rounding however right both are. The reference is then the **float64 truth**:
the same forward differentiated by jax.vjp in float64 at the same (upcast) parameters, inputs
and cotangent. The check measures the manual backward's error against it and the error that
jax.vjp makes in the same half dtype, and passes a leaf when

    manual error ≤ 2 × autodiff error + 2 ulps of the dtype        (ulp = finfo(dtype).eps)

(both relative to the leaf's largest true gradient). Finite differences are skipped there:
a step a bfloat16 (8 significant bits) or float16 (11 bits) number can resolve is far too
large for a derivative, and the report says so.

A `Report` lists, per leaf (each parameter, and dx for the input): the reference, the maximum
absolute and relative errors, the worst element, and the manual and reference values there.
When a check fails it raises `GradientCheckError` (an AssertionError, so pytest shows the
report) carrying that report.

Write a layer, then check it::

    >>> import jax, jax.numpy as jnp, jaxbp
    >>> from jaxbp import check
    >>> def init(key, in_shape):
    ...     return in_shape, {"s": jnp.ones(in_shape)}, ()
    >>> def forward(params, state, x, *, key=None, train=False):
    ...     return params["s"] * x**2, (x,), state          # y = s x²
    >>> def backward(params, residuals, dy):
    ...     (x,) = residuals
    ...     return {"s": (dy * x**2).sum(0)}, 2 * params["s"] * x * dy
    >>> report = check.check_layer(jaxbp.Layer(init, forward, backward, "Square"), (4,))
    >>> report.ok
    True

`python -m jaxbp.cases` checks every built-in layer, loss and model and prints one table.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxbp.layer import Layer
from jaxbp.losses import Loss

VJP_RTOL = 1e-10
FD_RTOL = 1e-6
F32_RTOL = 1e-4
F32_FD_RTOL = 1e-3
HALF_ULPS = 2  # the few ulps added to 2 × autodiff error in bfloat16 / float16
HALF_DTYPES = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))


class GradientCheckError(AssertionError):
    """A manual backward disagrees with its reference; `.report` holds the details."""

    def __init__(self, report: Report):
        super().__init__(str(report))
        self.report = report


class LeafResult(NamedTuple):
    leaf: str  # e.g. "params[0]['W']" or "dx"
    reference: str  # "jax.vjp", "finite diff" or "float64" (the truth, in half precision)
    max_abs_err: float
    rel_err: float  # max_abs_err / max |reference|
    worst_index: tuple  # index of the worst element in the leaf
    manual: float  # manual gradient at worst_index
    expected: float  # reference gradient at worst_index
    tol: float
    ok: bool
    autodiff_err: float | None = None  # half precision: jax.vjp's own rel err vs float64


class Report(NamedTuple):
    name: str
    dtype: str
    jit: bool
    results: tuple[LeafResult, ...]
    problems: tuple[str, ...] = ()  # structure or dtype mismatches
    # float leaves whose reference gradient is identically zero: a zero manual gradient
    # matches it, and so would any multiple of the right one (a sign flip, a missing term)
    untested: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()  # what was not checked, and why
    inputs: str = ""  # the shapes checked at, e.g. "x (2, 5)" (to tell draws apart)
    # a failed network: the path of the first layer whose own backward is wrong, e.g.
    # "serial[3].residual[0] (MultiHeadAttention)", and that layer's own report
    culprit: str = ""
    culprit_report: Report | None = None

    @property
    def ok(self) -> bool:
        return not self.problems and all(r.ok for r in self.results)

    @property
    def max_rel_err(self) -> dict[str, float]:
        """Largest relative error per reference."""
        out: dict[str, float] = {}
        for r in self.results:
            out[r.reference] = max(out.get(r.reference, 0.0), r.rel_err)
        return out

    def __str__(self) -> str:
        at = f", at {self.inputs}" if self.inputs else ""
        head = f"gradient check of {self.name} ({self.dtype}, jit={self.jit}{at}): "
        lines = [head + ("PASSED" if self.ok else "FAILED")]
        lines += [f"  problem: {p}" for p in self.problems]
        lines += [
            f"  untested: {leaf}: the reference gradient is zero everywhere, so this input "
            "cannot tell a right backward from a wrong one (draw another)"
            for leaf in self.untested
        ]
        lines += [f"  note: {n}" for n in self.notes]
        if self.culprit:
            lines.append(f"  first wrong layer: {self.culprit}")
        half = any(r.autodiff_err is not None for r in self.results)
        lines.append(
            f"  {'leaf':<28} {'reference':<11} {'max abs err':>11} {'rel err':>9} "
            + (f"{'vjp rel err':>11} " if half else "")
            + f"{'tol':>7}  {'worst at':<14} {'manual':>13} {'reference':>13}"
        )
        for r in self.results:
            vjp = "" if not half else f"{r.autodiff_err or 0.0:11.2e} "
            lines.append(
                f"  {r.leaf:<28} {r.reference:<11} {r.max_abs_err:11.3e} {r.rel_err:9.2e} "
                f"{vjp}{r.tol:7.0e}  {str(r.worst_index):<14} {r.manual:13.6e} "
                f"{r.expected:13.6e}" + ("" if r.ok else "  <-- FAIL")
            )
        if self.culprit_report is not None:
            inner = str(self.culprit_report).splitlines()
            lines.append(f"  its own check, at the input the network gives it: {inner[0]}")
            lines += ["  " + line for line in inner[1:]]
        return "\n".join(lines)


# ------------------------------------------------------------------------ the shared core


def _leaves_with_names(tree) -> list[tuple[str, Any]]:
    named = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        first, rest = path[0], path[1:]
        head = getattr(first, "key", getattr(first, "idx", first))
        named.append((str(head) + jax.tree_util.keystr(rest), leaf))
    return named


def describe_shapes(what: str, tree) -> str:
    """'x (2, 5)' or "x['x'] (2, 4, 3), x['mask'] (2, 4)": the shapes of a pytree's leaves."""
    return ", ".join(
        f"{leaf} {tuple(jnp.shape(v))}" for leaf, v in _leaves_with_names({what: tree})
    )


def _is_float(x) -> bool:
    return jnp.issubdtype(jnp.result_type(x), jnp.floating)


def _compare(leaf, reference, manual, expected, tol, scale=None) -> LeafResult:
    """Relative error = max|manual − expected| / scale, scale = max|expected| by default."""
    manual = np.asarray(manual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    diff = np.abs(manual - expected)
    if diff.size == 0:
        return LeafResult(leaf, reference, 0.0, 0.0, (), 0.0, 0.0, tol, True)
    if not np.all(np.isfinite(manual)):
        diff = np.where(np.isfinite(manual), diff, np.inf)
    worst = np.unravel_index(int(np.argmax(diff)), diff.shape)
    scale = float(np.max(np.abs(expected))) if scale is None else scale
    max_abs = float(diff[worst])
    rel = max_abs / scale if scale > 0 else max_abs
    ok = bool(rel <= tol) if np.isfinite(rel) else False
    return LeafResult(
        leaf,
        reference,
        max_abs,
        rel,
        tuple(int(i) for i in worst),
        float(manual[worst]),
        float(expected[worst]),
        tol,
        ok,
    )


def _finite_differences(phi, args, grads, rng, points, eps):
    """Central differences of the scalar φ(args) at `points` random elements of every leaf.

    All perturbed points are evaluated in one jit-compiled, vmapped call of φ over the
    flattened float leaves. Returns {leaf name: (manual values, fd values)}.
    """
    named = _leaves_with_names(args)
    flat_args, treedef = jax.tree.flatten(args)
    flat_grads = treedef.flatten_up_to(grads)
    chosen = [
        i
        for i, (a, g) in enumerate(zip(flat_args, flat_grads))
        if g is not None and _is_float(a) and jnp.size(a) > 0
    ]
    if not chosen:
        return {}
    sizes = [flat_args[i].size for i in chosen]
    offsets = np.cumsum([0, *sizes])
    # host arrays: NumPy builds θ and its bumps without compiling a program per leaf shape
    theta = np.concatenate([np.asarray(flat_args[i]).ravel() for i in chosen])

    def phi_flat(v):
        leaves = list(flat_args)
        for i, start, n in zip(chosen, offsets[:-1], sizes):
            leaves[i] = v[start : start + n].reshape(flat_args[i].shape)
        return phi(jax.tree.unflatten(treedef, leaves))

    picks = []  # (leaf position, flat index within the leaf)
    for pos, n in enumerate(sizes):
        for j in rng.choice(n, min(points, n), replace=False):
            picks.append((pos, int(j)))
    where = np.array([offsets[pos] + j for pos, j in picks])
    step = eps * np.maximum(1.0, np.abs(theta[where]))
    bumps = np.zeros((2 * len(picks), theta.size))
    bumps[np.arange(len(picks)), where] = step
    bumps[len(picks) + np.arange(len(picks)), where] = -step
    points_at = theta + bumps.astype(theta.dtype)  # (2 × picks, size), rounded in θ's dtype
    values = np.asarray(jax.jit(jax.vmap(phi_flat))(_device_array(points_at)))
    fd = (values[: len(picks)] - values[len(picks) :]) / (2 * step)

    out = {}
    for pos, i in enumerate(chosen):
        rows = [k for k, (p, _) in enumerate(picks) if p == pos]
        flat_index = [picks[k][1] for k in rows]
        manual = np.asarray(flat_grads[i]).ravel()[flat_index]
        where_in_leaf = [
            tuple(int(v) for v in np.unravel_index(j, flat_args[i].shape)) for j in flat_index
        ]
        out[named[i][0]] = (manual, fd[rows], where_in_leaf)
    return out


def _compare_leaves(args, manual, expected, truth, rtol):
    """Leaf by leaf: the manual gradient's structure, shape and dtype, then its error against
    jax.vjp (or, in half precision, against the float64 truth). Returns (problems, results,
    untested leaves, the flat jax.vjp gradients)."""
    problems, results, untested = [], [], []
    flat_args, treedef = jax.tree.flatten(args)
    try:
        flat_manual = treedef.flatten_up_to(manual)
    except (ValueError, TypeError) as e:
        problems.append(f"the manual gradient's structure differs from the inputs': {e}")
        flat_manual = [None] * len(flat_args)
    flat_expected = treedef.flatten_up_to(expected)
    flat_truth = [None] * len(flat_args) if truth is None else treedef.flatten_up_to(truth)
    leaves = zip(_leaves_with_names(args), flat_manual, flat_expected, flat_truth)
    for (leaf_name, a), m, e, t in leaves:
        if not _is_float(a):
            continue
        if m is None:
            problems.append(f"{leaf_name}: the manual backward returned no gradient")
            continue
        if jnp.shape(m) != jnp.shape(a):
            problems.append(f"{leaf_name}: gradient shape {jnp.shape(m)} != shape {jnp.shape(a)}")
            continue
        if jnp.result_type(m) != jnp.result_type(a):
            problems.append(
                f"{leaf_name}: gradient dtype {jnp.result_type(m)} != dtype {jnp.result_type(a)}"
            )
        if t is None:
            results.append(_compare(leaf_name, "jax.vjp", m, e, rtol))
        else:
            results.append(_compare_with_truth(leaf_name, m, e, t, jnp.result_type(a)))
        if jnp.size(e) and not np.any(np.asarray(e)):
            untested.append(leaf_name)
    return problems, results, untested, flat_expected


def check_vjp(
    name: str,
    f: Callable,
    manual_vjp: Callable,
    args,
    *,
    cotangent=None,
    seed: int = 0,
    jit: bool = False,
    finite_diff: bool = True,
    fd_points: int = 6,
    fd_eps: float | None = None,
    rtol: float | None = None,
    raise_on_fail: bool = True,
    inputs: str = "",
) -> Report:
    """The shared core: compare `manual_vjp(args, ct)` with `jax.vjp(f, args)` and with finite
    differences.

    `f(args) -> out` is the forward; `manual_vjp(args, ct) -> grads` returns a pytree shaped
    like `args`, with None at leaves that get no gradient (integer inputs). The dtype follows
    `args`: float64 compares at `rtol=1e-10`, float32 at `1e-4`; bfloat16 and float16 compare
    both the manual backward and jax.vjp with the float64 truth (see the module docstring) and
    run no finite differences. `fd_eps` (the finite-difference step) defaults from the dtype.
    `jit` compiles the manual vjp (the jax.vjp reference is always compiled).
    `inputs` describes the shapes checked at, for the report.
    """
    rng = np.random.default_rng(seed)  # NumPy draws: no compilation per shape
    arg_dtypes = {jnp.result_type(x) for x in jax.tree.leaves(args) if _is_float(x)}
    wide = arg_dtypes <= {jnp.dtype("float64")}
    half = [d for d in HALF_DTYPES if d in arg_dtypes]
    dtype_name = "/".join(sorted(str(d) for d in arg_dtypes)) or "none"
    rtol = (VJP_RTOL if wide else F32_RTOL) if rtol is None else rtol

    if cotangent is None:
        cotangent = jax.tree.map(
            lambda o: jnp.asarray(rng.normal(size=o.shape), o.dtype), jax.eval_shape(f, args)
        )

    out, expected, manual = _reference_and_manual(f, manual_vjp, args, cotangent, jit, half)
    truth = _float64_truth(f, args, cotangent) if half else None

    problems, results, untested, flat_expected = _compare_leaves(
        args, manual, expected, truth, rtol
    )
    notes = []
    if finite_diff and half:
        notes.append(
            f"finite differences skipped in {'/'.join(map(str, half))}: no step the dtype can "
            "resolve is small enough for a derivative; the float64 truth is the reference"
        )
    elif finite_diff and not problems:
        fd_dtype = jnp.dtype("float64") if wide else jnp.dtype("float32")
        results += _finite_difference_results(
            f, args, out, cotangent, manual, flat_expected, rng, fd_points, fd_eps, fd_dtype
        )

    report = Report(
        name,
        dtype_name,
        jit,
        tuple(results),
        tuple(problems),
        tuple(untested),
        tuple(notes),
        inputs,
    )
    if raise_on_fail and not report.ok:
        raise GradientCheckError(report)
    return report


def _vjp_with_output(f):
    """(args, ct) -> (f(args), the jax.vjp gradient at ct): the reference, in one program."""

    def reference(args, cotangent):
        out, pullback = jax.vjp(f, args)
        return out, pullback(cotangent)[0]

    return reference


def _reference_and_manual(f, manual_vjp, args, cotangent, jit, half):
    """(f(args), the jax.vjp gradient, the manual gradient). The reference is compiled (the
    whole vjp compiles 2-5x faster than it runs op by op, every jnp helper compiling per
    shape). Under jit in float32/64 the manual vjp joins it in one program: one compilation
    instead of two (half precision keeps them apart: its rule compares their roundings)."""
    reference = _vjp_with_output(f)
    if jit and not half:
        both = jax.jit(lambda a, ct: (*reference(a, ct), manual_vjp(a, ct)))
        return both(args, cotangent)
    out, expected = jax.jit(reference)(args, cotangent)
    run = jax.jit(manual_vjp) if jit else manual_vjp
    return out, expected, run(args, cotangent)


def _float64_truth(f, args, cotangent):
    """jax.vjp of `f` in float64 at the float64 images of the (half-precision) args and
    cotangent: the exact gradient of the rounded inputs, up to float64 rounding."""
    with jax.enable_x64(True):
        wide = _cast(args, jnp.float64)
        out = jax.eval_shape(f, wide)
        ct = jax.tree.map(lambda c, o: _device_array(np.asarray(c), o.dtype), cotangent, out)
        return jax.jit(_vjp_with_output(f))(wide, ct)[1]


def _compare_with_truth(leaf, manual, expected, truth, dtype) -> LeafResult:
    """Half precision: manual error vs float64 ≤ 2 × jax.vjp's error vs float64 + a few ulps."""
    autodiff = _compare(leaf, "float64", expected, truth, math.inf)
    tol = 2 * autodiff.rel_err + HALF_ULPS * float(jnp.finfo(dtype).eps)
    result = _compare(leaf, "float64", manual, truth, tol)
    return result._replace(autodiff_err=autodiff.rel_err)


def _finite_difference_results(
    f, args, out, cotangent, manual, flat_expected, rng, points, eps, dtype
) -> list[LeafResult]:
    """Central differences of φ = ⟨dy, f(θ)⟩, judged against the leaf's gradient scale or the
    quotient's rounding-noise floor, whichever is larger (see the module docstring)."""
    u = float(jnp.finfo(dtype).eps)
    eps = (1e-6 if dtype == jnp.float64 else u ** (1 / 3)) if eps is None else eps
    tol = FD_RTOL if dtype == jnp.float64 else F32_FD_RTOL

    def phi(a):
        o = f(a)
        return sum(jnp.vdot(c, x) for c, x in zip(jax.tree.leaves(cotangent), jax.tree.leaves(o)))

    # Finite differences sample a few elements; their error is measured against the size of
    # the whole leaf's gradient, so that sampled elements whose gradient is zero (a pixel no
    # strided window reaches) compare rounding noise with the leaf's scale, not with itself.
    leaf_scale = {
        leaf_name: float(np.max(np.abs(np.asarray(e)))) if np.size(e) else 0.0
        for (leaf_name, _), e in zip(_leaves_with_names(args), flat_expected)
        if e is not None and _is_float(e)
    }
    # Central differences cannot resolve a gradient below their own rounding noise,
    # u·Σ|dy ⊙ y|/ε: each leaf is measured against at least (10/tol) times that noise, so the
    # tolerance stays 10× above it. (A leaf whose whole gradient is smaller — batch norm's dx
    # on few values — is certified by the jax.vjp comparison alone.)
    phi_abs = sum(
        float(np.sum(np.abs(np.asarray(c, np.float64) * np.asarray(o, np.float64))))
        for c, o in zip(jax.tree.leaves(cotangent), jax.tree.leaves(out))
    )
    noise_floor = (10 / tol) * u * phi_abs / eps
    results = []
    for leaf_name, (m, fd, where) in _finite_differences(
        phi, args, manual, rng, points, eps
    ).items():
        scale = max(leaf_scale.get(leaf_name, 0.0), noise_floor)
        result = _compare(leaf_name, "finite diff", m, fd, tol, scale)
        results.append(result._replace(worst_index=where[result.worst_index[0]]))
    return results


# ------------------------------------------------------------------------- public checks


def _device_array(a, dtype=None):
    """`a` as a jax array (in `dtype`). NumPy data is transferred: `jnp.asarray` would stage
    it through an identity program compiled once per shape (~20-50 ms each on XLA:CPU)."""
    if isinstance(a, np.ndarray) and (a.dtype == bool or jnp.issubdtype(a.dtype, jnp.number)):
        return jax.device_put(a if dtype is None else a.astype(dtype))
    return jnp.asarray(a, dtype)


def _cast(tree, dtype):
    """The float leaves in `dtype`; concrete ones cast on the host (NumPy), so that a check
    does not compile one conversion program per leaf shape."""
    dtype = jnp.dtype(dtype)

    def cast(a):
        if not _is_float(a) or jnp.result_type(a) == dtype:
            return a
        if isinstance(a, jax.core.Tracer):
            return a.astype(dtype)
        return _device_array(np.asarray(a), dtype)

    return jax.tree.map(cast, tree)


def _x64_context(dtype):
    return jax.enable_x64(True) if jnp.dtype(dtype) == jnp.float64 else _nullcontext()


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def check_layer(
    layer: Layer,
    in_shape,
    *,
    batch: int = 3,
    x=None,
    params=None,
    state=None,
    train: bool = False,
    seed: int = 0,
    dtype=jnp.float64,
    jit: bool = False,
    **kwargs,
) -> Report:
    """Check `layer.backward` against `jax.vjp` of `layer.forward` and finite differences.

    Args:
        layer: the Layer to check.
        in_shape: per-example input shape (no batch axis).
        batch: batch size of the random input.
        x: input to use instead of a random normal one: any pytree of arrays (integer ids, a
            dict such as {"x": floats, "mask": bools}, a graph batch): only its float leaves
            are differentiated.
        params, state: use these instead of `layer.init`'s.
        train: passed to forward (dropout, batch norm).
        dtype: float64 (default; enables x64 for the check), float32, or bfloat16/float16
            (judged against the float64 truth relative to jax.vjp's own error in that dtype).
        jit: run the manual forward+backward under `jax.jit` (the jax.vjp reference is
            always compiled).
        **kwargs: passed to `check_vjp` (rtol, fd_points, fd_eps, raise_on_fail, ...).
    Returns:
        a Report; raises GradientCheckError with the report when a leaf fails.
    """
    with _x64_context(dtype):
        k_init, k_fwd = jax.random.split(jax.random.key(seed))
        if params is None or state is None:
            _, p0, s0 = layer.init(k_init, in_shape)
            params = p0 if params is None else params
            state = s0 if state is None else state
        params = _cast(params, dtype)
        if x is None:
            # a stream apart from the cotangent's (the same draws would make dy = x)
            x = np.random.default_rng([seed, 1]).normal(size=(batch, *tuple(in_shape)))
        x = _cast(_as_array_tree(layer.name, "x", x), dtype)
        raise_on_fail = kwargs.pop("raise_on_fail", True)
        report = _check_at(layer, params, state, x, k_fwd, train, seed=seed, jit=jit, **kwargs)
        if not report.ok and layer.children is not None:
            report = _with_culprit(report, locate(layer, params, state, x, key=k_fwd, train=train))
        if raise_on_fail and not report.ok:
            raise GradientCheckError(report)
        return report


def _check_at(layer, params, state, x, key, train, **kwargs) -> Report:
    """check_vjp of `layer` at exactly these params, state, input and key."""
    # Differentiate the float leaves of x; integer/bool leaves (ids, masks) get no gradient,
    # and the manual backward returns None there (e.g. {"x": dx, "mask": None}).
    diff_x = any(_is_float(leaf) for leaf in jax.tree.leaves(x))

    def f(args):
        xin = args["x"] if diff_x else x
        return layer.forward(args["params"], state, xin, key=key, train=train)[0]

    def manual_vjp(args, dy):
        xin = args["x"] if diff_x else x
        _, res, _ = layer.forward(args["params"], state, xin, key=key, train=train)
        dparams, dx = layer.backward(args["params"], res, dy)
        return {"params": dparams, "x": dx} if diff_x else {"params": dparams}

    args = {"params": params, "x": x} if diff_x else {"params": params}
    kwargs = {"raise_on_fail": False, "inputs": describe_shapes("x", x), **kwargs}
    return check_vjp(layer.name, f, manual_vjp, args, **kwargs)


# ------------------------------------------------------------- which layer is wrong


def locate(layer: Layer, params, state, x, *, key=None, train=False, path="") -> Report | None:
    """The report of the first layer inside `layer`, in forward order and depth first, whose own
    backward disagrees with jax.vjp at the input the network actually gives it; None if none.

    Each combinator lists its children and their inputs (`Layer.children`); a layer is checked
    after its children, so a combinator is named only when all its children are right and
    its own chain rule is wrong. The report's `culprit` is the path, e.g.
    "serial[3].residual[0] (MultiHeadAttention)". Each layer is checked under jit against
    jax.vjp only (no finite differences), in the dtype of the inputs.
    """
    if layer.children is not None:
        for child in layer.children(params, state, x, key=key, train=train):
            where = f"{path}.{child.path}" if path else child.path
            found = locate(
                child.layer,
                child.params,
                child.state,
                child.x,
                key=child.key,
                train=train,
                path=where,
            )
            if found is not None:
                return found
    report = _check_at(layer, params, state, x, key, train, jit=True, finite_diff=False)
    if report.ok:
        return None
    return report._replace(culprit=f"{path or '(the whole network)'} ({layer.name})")


def _with_culprit(report: Report, found: Report | None) -> Report:
    if found is None:
        return report
    return report._replace(culprit=found.culprit, culprit_report=found._replace(culprit=""))


def check_ops(forward, backward, params, x, *, name="op", dtype=jnp.float64, **kwargs) -> Report:
    """Check an op pair `forward(params, x) -> (y, res)`, `backward(params, res, dy) -> (dp, dx)`.

    `x` carries the batch axis.
    """

    def init(key, in_shape):
        return None, params, ()

    def fwd(p, state, xin, *, key=None, train=False):
        y, res = forward(p, xin)
        return y, res, state

    layer = Layer(init, fwd, backward, name)
    with _x64_context(dtype):
        x = _device_array(x)
        return check_layer(layer, x.shape[1:], x=x, dtype=dtype, **kwargs)


def check_loss(
    loss: Loss, pred, target, *, dtype=jnp.float64, seed: int = 0, jit: bool = False, **kwargs
) -> Report:
    """Check `loss.backward` (with a random scale g) against `jax.vjp` and finite differences."""
    with _x64_context(dtype):
        pred = _cast(_as_array_tree(loss.name, "pred", pred), dtype)
        target = _cast(_as_array_tree(loss.name, "target", target), dtype)

        def f(args):
            return loss.forward(args["pred"], target)[0]

        def manual_vjp(args, g):
            _, res = loss.forward(args["pred"], target)
            return {"pred": loss.backward(res, g)}

        inputs = describe_shapes("pred", pred)
        return check_vjp(
            loss.name, f, manual_vjp, {"pred": pred}, seed=seed, jit=jit, inputs=inputs, **kwargs
        )


def check_model(
    model: Layer,
    loss: Loss,
    x,
    y,
    *,
    in_shape=None,
    params=None,
    state=None,
    train: bool = True,
    seed: int = 0,
    dtype=jnp.float64,
    jit: bool = False,
    **kwargs,
) -> Report:
    """Check the gradient of loss(model(θ, x), y) from the manual step (`jaxbp.loss_and_grad`)
    against `jax.vjp` (cotangent 1 of the scalar loss) and finite differences.

    `x` and `y` are any pytrees of arrays: an array, a graph or tree batch (a dict), a tuple
    of targets for a multi-task model, `(x, None)` for a target with an empty part. When `x`
    is not a single array, `model.init` cannot read its per-example shape: pass `in_shape=`
    (what `model.init` takes, e.g. `(F,)` for a graph's node features) or `params=`.

    Example:
        >>> import numpy as np, jaxbp
        >>> from jaxbp import check, layers
        >>> g = layers.batch_graphs([(np.ones((3, 2)), [[0, 1], [1, 2]])], np.float64)
        >>> model = jaxbp.serial(jaxbp.GCN(4), jaxbp.GraphReadout(), jaxbp.Dense(1))
        >>> check.check_model(model, jaxbp.losses.mse(), g, np.ones((1, 1)), in_shape=(2,)).ok
        True
    """
    from jaxbp.models.grad import loss_and_grad

    name = f"{model.name} + {loss.name}"
    with _x64_context(dtype):
        k_init, k_fwd = jax.random.split(jax.random.key(seed))
        x = _cast(_as_array_tree(name, "x", x), dtype)
        y = _cast(_as_array_tree(name, "y", y), dtype)
        if params is None:
            _, params, s0 = model.init(k_init, _model_in_shape(name, x, in_shape))
            state = s0 if state is None else state
        elif state is None:
            state = model.init(k_init, _model_in_shape(name, x, in_shape))[2]
        params = _cast(params, dtype)
        step = loss_and_grad(model, loss, train=train, jit=False)

        def f(p):
            pred = model.forward(p, state, x, key=k_fwd, train=train)[0]
            return loss.forward(pred, y)[0]

        def manual_vjp(p, g):
            _, grads, _ = step(p, state, x, y, k_fwd)
            return jax.tree.map(lambda d: g * d, grads)

        raise_on_fail = kwargs.pop("raise_on_fail", True)
        inputs = describe_shapes("x", x)
        report = check_vjp(
            name,
            f,
            manual_vjp,
            params,
            seed=seed,
            jit=jit,
            inputs=inputs,
            raise_on_fail=False,
            **kwargs,
        )
        if not report.ok:
            found = locate(model, params, state, x, key=k_fwd, train=train)
            if found is None:
                found = _loss_culprit(model, loss, params, state, x, y, k_fwd, train)
            report = _with_culprit(report, found)
        if raise_on_fail and not report.ok:
            raise GradientCheckError(report)
        return report


def _loss_culprit(model, loss, params, state, x, y, key, train) -> Report | None:
    """Every layer is right: is the loss's backward wrong at the network's prediction?"""
    pred = model.forward(params, state, x, key=key, train=train)[0]
    dtype = next((jnp.result_type(a) for a in jax.tree.leaves(pred) if _is_float(a)), None)
    report = check_loss(loss, pred, y, dtype=dtype, finite_diff=False, raise_on_fail=False)
    return None if report.ok else report._replace(culprit=f"the loss ({loss.name})")


_PYTREE_FORMS = (
    "an array, or a dict / tuple / list (nested as deep as you like) of arrays, with None "
    "for an empty part, e.g. {'x': ..., 'edges': ...} or (y_class, y_reg) or (x, None)"
)


def _as_array_tree(name: str, what: str, tree):
    """Every leaf as a jax array; TypeError naming the form accepted otherwise."""
    leaves, treedef = jax.tree.flatten(tree)
    try:
        arrays = [_device_array(leaf) for leaf in leaves]
    except TypeError as e:
        kinds = sorted({type(leaf).__name__ for leaf in leaves})
        raise TypeError(
            f"{name}: {what} must be {_PYTREE_FORMS}; got leaves of types {kinds} ({e})"
        ) from None
    return jax.tree.unflatten(treedef, arrays)


def _model_in_shape(name: str, x, in_shape):
    """The per-example shape `model.init` takes: x.shape[1:] for an array, else `in_shape`."""
    if in_shape is not None:
        return in_shape
    if isinstance(x, jax.Array):
        return x.shape[1:]
    raise TypeError(
        f"{name}: x is a {type(x).__name__} ({describe_shapes('x', x)}), not one array, so its "
        "per-example shape is not x.shape[1:]: pass in_shape= (what model.init takes, e.g. "
        "(F,) for graph node features) or params="
    )


def assert_layer_correct(layer: Layer, in_shape, **kwargs) -> None:
    """Pytest helper: check `layer` in float64 with and without jit, and in float32, bfloat16
    and float16 under jit.

    Raises GradientCheckError (an AssertionError) with the failing report. Use it in your own
    test suite::

        def test_my_layer():
            jaxbp.check.assert_layer_correct(MyLayer(16), in_shape=(8,))
    """
    check_layer(layer, in_shape, jit=False, **kwargs)
    check_layer(layer, in_shape, jit=True, **kwargs)
    for dtype in (jnp.float32, jnp.bfloat16, jnp.float16):
        check_layer(layer, in_shape, jit=True, dtype=dtype, **{**kwargs, "finite_diff": False})
