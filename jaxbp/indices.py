"""Integer inputs (ids, labels, edge lists, tree indices) checked against their valid range.

JAX never raises on an out-of-range index: a gather clamps it or fills it, a one-hot row of an
unknown label is all zeros. jaxbp refuses such inputs instead, with one rule for every integer
input the library takes:

* **Outside `jit`** (concrete values) the layer or loss raises `ValueError` naming itself, the
  offending value, where it sits, and the valid range.
* **Under `jit`** the values are not known while tracing, so nothing can be raised there. Wrap
  the function in `checked` to get the same message as a `checkify` error (`err.throw()` raises
  it; `err.get()` returns it or None). Without `checked`, what a traced out-of-range index does
  is written in each layer's docstring (an `Embedding` reads a zero vector, a cross-entropy label
  contributes nothing) — and nothing is checked, at no cost.

A layer author calls `check_range(name, what, values, low, high)` on each integer input at the
layer boundary, before using it; that is the whole protocol.

Example:
    >>> import jax, jax.numpy as jnp, jaxbp
    >>> emb = jaxbp.Embedding(10, 4)
    >>> _, params, _ = emb.init(jax.random.key(0), (3,))
    >>> try:
    ...     emb.forward(params, (), jnp.array([[1, 12, 3]]))
    ... except ValueError as e:
    ...     print(e)
    Embedding(10, 4): id 12 at index (0, 1) is outside the valid range [0, 10)
    >>> f = jax.jit(jaxbp.indices.checked(lambda ids: emb.forward(params, (), ids)[0]))
    >>> err, y = f(jnp.array([[1, 12, 3]]))
    >>> print(err.get())
    Embedding(10, 4): id 12 at index (0, 1) is outside the valid range [0, 10) (`check` failed)
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import checkify

# True while a `checked` function is being traced: traced range checks become checkify checks.
# A jit-cache-sensitive context, not a plain flag: a `jax.jit` function traced once without the
# checks (a step called before it was wrapped) is traced again under `checked`, and the other
# way round, instead of reusing a trace made in the other mode.
_CHECKED = jax.make_user_context(default_value=False)


def _message(name: str, what: str, low: int, high: int, ndim: int) -> str:
    """The template both paths fill in: `{value}` and the coordinates `{w0}`, `{w1}`, ..."""
    where = ", ".join(f"{{w{i}}}" for i in range(ndim)) + ("," if ndim == 1 else "")
    return f"{name}: {what} {{value}} at index ({where}) is outside the valid range [{low}, {high})"


def check_range(name: str, what: str, values, low: int, high: int) -> None:
    """Require every element of the integer array `values` to lie in [low, high).

    `name` is the layer or loss (e.g. "Embedding(10, 4)"), `what` the element ("id", "label",
    "edge source"). Concrete values: raise ValueError at the first offending element. Traced
    values: a `checkify` check inside `checked`, nothing otherwise (see the module docstring).
    """
    if isinstance(values, jax.core.Tracer):
        if _CHECKED.value:
            _traced_check(name, what, values, low, high)
        return
    values = np.asarray(values)
    bad = (values < low) | (values >= high)
    if bad.any():
        first = np.unravel_index(int(np.argmax(bad)), values.shape)
        where = {f"w{i}": int(w) for i, w in enumerate(first)}
        message = _message(name, what, low, high, values.ndim)
        raise ValueError(message.format(value=int(values[first]), **where))


def _traced_check(name, what, values, low, high):
    if values.size == 0:
        return
    bad = ((values < low) | (values >= high)).ravel()
    first = jnp.argmax(bad)  # the first offending element (0 when none is)
    where = jnp.unravel_index(first, jnp.shape(values))
    checkify.check(
        ~bad.any(),
        _message(name, what, low, high, values.ndim),
        value=values.ravel()[first],
        **{f"w{i}": w for i, w in enumerate(where)},
    )


def checked(fn: Callable) -> Callable:
    """`fn` with jaxbp's range checks on, returning `(err, out)` like `checkify.checkify`.

    Works with and under `jax.jit`: `jax.jit(checked(step))`. `err.throw()` raises the first
    failed check (a `checkify.JaxRuntimeError` carrying the same message as the ValueError
    raised outside jit); `err.get()` is that message or None. `fn` may be jitted and may
    have run before: its jit caches are keyed on whether the checks are on, so a trace made
    without them is never reused here (nor one made here outside `checked`).
    """
    with_errors = checkify.checkify(fn, errors=checkify.user_checks)

    @functools.wraps(fn)
    def run(*args, **kwargs):
        with _CHECKED(True):
            return with_errors(*args, **kwargs)

    return run
