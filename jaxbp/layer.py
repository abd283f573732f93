r"""The Layer protocol and the combinators that make networks of layers: the backprop engine.

A `Layer` is a NamedTuple of three pure functions::

    init(key, in_shape)                                 -> (out_shape, params, state)
    forward(params, state, x, *, key=None, train=False) -> (y, residuals, new_state)
    backward(params, residuals, dy)                     -> (dparams, dx)

Shapes given to `init` are per example (no batch axis); arrays carry a leading batch axis.
`residuals` is whatever the backward needs from the forward; `dparams` has the same pytree
structure and dtypes as `params`. `state` holds non-trainable buffers (empty `()` for most layers).

The backward of a composition is the chain rule walked in reverse: if y = f_L(... f_1(x)), then
dx = J_1ᵀ(... J_Lᵀ dy), and each layer's parameter gradient is read off on the way. With
$a_0 = x$, $a_l = f_l(a_{l-1}; \theta_l)$ and $\bar a_l = \partial L / \partial a_l$:

$$
\bar a_{l-1} = J_{f_l}(a_{l-1})^\top \, \bar a_l, \qquad
\frac{\partial L}{\partial \theta_l} = J_{\theta_l}(a_{l-1})^\top \, \bar a_l, \qquad
l = L, L-1, \dots, 1 .
$$

Example:
    >>> import jax, jax.numpy as jnp, jaxbp
    >>> net = jaxbp.serial(jaxbp.Dense(8), jaxbp.Tanh(), jaxbp.Dense(1))
    >>> out_shape, params, state = net.init(jax.random.key(0), (3,))
    >>> x = jnp.ones((5, 3))
    >>> y, res, state = net.forward(params, state, x)
    >>> dparams, dx = net.backward(params, res, jnp.ones_like(y))
    >>> out_shape, y.shape, dx.shape
    ((1,), (5, 1), (5, 3))
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

Shape = tuple[int, ...]


class Layer(NamedTuple):
    """Three pure functions (`init`, `forward`, `backward`), a name used in error messages,
    for a combinator `children`, and `config`.

    `children(params, state, x, *, key=None, train=False) -> tuple[Child, ...]` lists the
    layers a combinator is made of, each with the params, state, input and key its forward
    gets from the combinator's (for `serial`, child i's input is child i−1's output). It is
    None for a layer that is not made of layers. `jaxbp.check` walks it to name the first
    layer whose own backward is wrong.

    `config` is the constructor's hyperparameters as (name, value) pairs (hashable):
    dict(config), for tools that need them (e.g. `jaxbp.generate` reads a GPT's).
    """

    init: Callable[..., tuple[Shape, Any, Any]]
    forward: Callable[..., tuple[Any, Any, Any]]
    backward: Callable[..., tuple[Any, Any]]
    name: str = "Layer"
    children: Callable[..., tuple[Child, ...]] | None = None
    config: Any = None


class Child(NamedTuple):
    """One layer inside a combinator, with what the combinator's forward feeds it."""

    path: str  # e.g. "serial[3]": the combinator's kind and the child's place in it
    layer: Layer
    params: Any
    state: Any
    x: Any  # the child's input, computed by the combinator's forward from its own input
    key: Any  # the PRNG key the child's forward gets (None without one)


# ---------------------------------------------------------------- helpers for layer authors


def split_key(key, n: int):
    """`n` independent keys from `key`, or `n` Nones when `key` is None."""
    if key is None:
        return [None] * n
    return list(jax.random.split(key, n))


def check_float_input(name: str, x) -> None:
    """Raise TypeError unless `x` is a real floating-point array."""
    dtype = jnp.result_type(x)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(
            f"{name}: expected a real floating-point input, got dtype {dtype} "
            f"with shape {jnp.shape(x)}; cast it first, e.g. x.astype(jnp.float32)"
        )


def check_input_shape(name: str, x, in_shape: Shape) -> None:
    """Raise ValueError unless `x` has shape (batch, *in_shape)."""
    shape = tuple(jnp.shape(x))
    if len(shape) != len(in_shape) + 1 or shape[1:] != tuple(in_shape):
        raise ValueError(
            f"{name}: expected input of shape (batch, {', '.join(map(str, in_shape))}) "
            f"[rank {len(in_shape) + 1}], got {shape} [rank {len(shape)}]"
        )


def positive_int(name: str, what: str, value) -> int:
    """Validate a hyperparameter that must be a positive integer."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: {what} must be a positive int, got {value!r}")
    if value <= 0:
        raise ValueError(f"{name}: {what} must be a positive int, got {value}")
    return value


def as_shape(in_shape) -> Shape:
    """A per-example shape as a tuple of ints (an int n is (n,)); a pytree of shapes (a dict,
    e.g. a graph's {"x": (F,), "edges": (2,), ...}, or a tuple of tuples for several inputs)
    keeps its structure with each shape normalised. TypeError for anything else."""
    if isinstance(in_shape, (int, np.integer)) and not isinstance(in_shape, bool):
        return (int(in_shape),)
    if isinstance(in_shape, dict):
        return {k: as_shape(v) for k, v in in_shape.items()}
    if isinstance(in_shape, (tuple, list)):
        if all(isinstance(d, (int, np.integer)) and not isinstance(d, bool) for d in in_shape):
            return tuple(int(d) for d in in_shape)
        if all(isinstance(d, (tuple, list, dict)) for d in in_shape):
            return tuple(as_shape(d) for d in in_shape)
    raise TypeError(
        f"in_shape must be a per-example shape (a tuple of ints) or a pytree (dict, tuple) of "
        f"such shapes, got {in_shape!r}"
    )


# ------------------------------------------------------------------------------ combinators


def check_per_layer(name: str, params, state, n: int) -> None:
    """A combinator's params and state hold one entry per layer: ValueError otherwise (a bare
    `()` state would otherwise run no layer at all)."""
    for what, value in (("params", params), ("state", state)):
        if not isinstance(value, (tuple, list)) or len(value) != n:
            got = (
                f"{len(value)} entries"
                if isinstance(value, (tuple, list))
                else type(value).__name__
            )
            raise ValueError(
                f"{name}: {what} must be a tuple with one entry per layer ({n}), got {got} "
                "(pass the params and state that init returned)"
            )


def chain_children(kind: str, layers, params, state, x, keys, train) -> tuple[Child, ...]:
    """The children of a chain y = f_n(... f_1(x)): child i gets f_(i−1)'s output."""
    children = []
    for i, (layer, p, s, k) in enumerate(zip(layers, params, state, keys)):
        children.append(Child(f"{kind}[{i}]", layer, p, s, x, k))
        x = layer.forward(p, s, x, key=k, train=train)[0]
    return tuple(children)


def serial(*layers: Layer, name: str | None = None) -> Layer:
    """Compose layers in sequence: y = f_L(... f_2(f_1(x))).

    Forward walks the layers in order and keeps each layer's residuals; backward walks them in
    reverse, feeding each layer the gradient of its output (δ) and collecting its parameter
    gradient:

        δ_L = dy,   (dθ_l, δ_{l-1}) = backward_l(θ_l, residuals_l, δ_l),   dx = δ_0

    `params`, `state` and `residuals` are tuples with one entry per layer.
    """
    if not layers:
        raise ValueError("serial: needs at least one layer")
    for i, layer in enumerate(layers):
        if not isinstance(layer, Layer):
            raise TypeError(
                f"serial: argument {i} is a {type(layer).__name__}, not a Layer "
                "(did you forget to call a constructor, e.g. Relu() instead of Relu?)"
            )
    name = name or "serial(" + ", ".join(layer.name for layer in layers) + ")"

    def init(key, in_shape):
        shape = as_shape(in_shape)
        params, state = [], []
        for layer, k in zip(layers, jax.random.split(key, len(layers))):
            shape, p, s = layer.init(k, shape)
            params.append(p)
            state.append(s)
        return shape, tuple(params), tuple(state)

    def forward(params, state, x, *, key=None, train=False):
        check_per_layer(name, params, state, len(layers))
        residuals, new_state = [], []
        for layer, p, s, k in zip(layers, params, state, split_key(key, len(layers))):
            x, r, s = layer.forward(p, s, x, key=k, train=train)
            residuals.append(r)
            new_state.append(s)
        return x, tuple(residuals), tuple(new_state)

    def backward(params, residuals, dy):
        dparams = [None] * len(layers)
        delta = dy
        for i in reversed(range(len(layers))):
            dparams[i], delta = layers[i].backward(params[i], residuals[i], delta)
        return tuple(dparams), delta

    def children(params, state, x, *, key=None, train=False):
        keys = split_key(key, len(layers))
        return chain_children("serial", layers, params, state, x, keys, train)

    return Layer(init, forward, backward, name, children)


def residual(layer: Layer, *, name: str | None = None) -> Layer:
    """Skip connection y = x + f(x); backward: dx = dy + J_fᵀ dy.

    `f` must map its input shape to the same shape.
    """
    if not isinstance(layer, Layer):
        raise TypeError(f"residual: expected a Layer, got {type(layer).__name__}")
    name = name or f"residual({layer.name})"

    def init(key, in_shape):
        in_shape = as_shape(in_shape)
        out_shape, params, state = layer.init(key, in_shape)
        if tuple(out_shape) != in_shape:
            raise ValueError(
                f"{name}: the inner layer maps {in_shape} to {tuple(out_shape)}; "
                "a residual block needs the same shape in and out"
            )
        return in_shape, params, state

    def forward(params, state, x, *, key=None, train=False):
        fx, res, state = layer.forward(params, state, x, key=key, train=train)
        return x + fx, res, state

    def backward(params, residuals, dy):
        dparams, dx_inner = layer.backward(params, residuals, dy)
        return dparams, dy + dx_inner

    def children(params, state, x, *, key=None, train=False):
        return (Child("residual[0]", layer, params, state, x, key),)

    return Layer(init, forward, backward, name, children)


def parallel(*layers: Layer, name: str | None = None) -> Layer:
    """Fan one input out to several heads: y = (f_1(x), ..., f_k(x)) (multi-task models).

    Backward sums the heads' input gradients: dx = Σ_i J_iᵀ dy_i, where `dy` is a tuple with
    one cotangent per head. `out_shape` is a tuple of the heads' output shapes.
    """
    if not layers:
        raise ValueError("parallel: needs at least one layer")
    name = name or "parallel(" + ", ".join(layer.name for layer in layers) + ")"

    def init(key, in_shape):
        in_shape = as_shape(in_shape)
        outs, params, state = [], [], []
        for layer, k in zip(layers, jax.random.split(key, len(layers))):
            o, p, s = layer.init(k, in_shape)
            outs.append(o)
            params.append(p)
            state.append(s)
        return tuple(outs), tuple(params), tuple(state)

    def forward(params, state, x, *, key=None, train=False):
        check_per_layer(name, params, state, len(layers))
        ys, residuals, new_state = [], [], []
        for layer, p, s, k in zip(layers, params, state, split_key(key, len(layers))):
            y, r, s = layer.forward(p, s, x, key=k, train=train)
            ys.append(y)
            residuals.append(r)
            new_state.append(s)
        return tuple(ys), tuple(residuals), tuple(new_state)

    def backward(params, residuals, dy):
        if len(dy) != len(layers):
            raise ValueError(f"{name}: expected {len(layers)} output cotangents, got {len(dy)}")
        dparams, dx = [], None
        for layer, p, r, g in zip(layers, params, residuals, dy):
            dp, dxi = layer.backward(p, r, g)
            dparams.append(dp)
            dx = dxi if dx is None else dx + dxi
        return tuple(dparams), dx

    def children(params, state, x, *, key=None, train=False):
        heads = zip(layers, params, state, split_key(key, len(layers)))
        return tuple(
            Child(f"parallel[{i}]", layer, p, s, x, k) for i, (layer, p, s, k) in enumerate(heads)
        )

    return Layer(init, forward, backward, name, children)
