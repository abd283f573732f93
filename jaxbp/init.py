"""Initializers: `init(key, shape, dtype=None) -> array`.

Every public name is a factory that returns an initializer: `init.zeros()`, `init.normal(0.1)`,
`init.xavier_uniform()`. The `w_init=`/`b_init=` options of the layers also take a name
("zeros", "he_normal", ...), looked up by `get`.

Weights follow the layout `(..., fan_in, fan_out)`: a Dense kernel is `(in, out)` and a
convolution kernel is `(*window, in, out)`. The receptive field (the product of the leading
window axes) multiplies both fans, as in Glorot & Bengio (2010) and He et al. (2015):

    fan_in  = shape[-2] · receptive,     fan_out = shape[-1] · receptive

| initializer        | distribution                          | variance          |
|--------------------|---------------------------------------|-------------------|
| `normal(s)`        | N(0, s²)                              | s²                |
| `uniform(s)`       | U[−s, s]                              | s²/3              |
| `fan_in_uniform()` | U[−1/√fan_in, 1/√fan_in] ("classic")  | 1/(3 fan_in)      |
| `xavier_uniform()` | U[−a, a], a = √(6/(fan_in+fan_out))   | 2/(fan_in+fan_out)|
| `xavier_normal()`  | N(0, 2/(fan_in+fan_out))              | 2/(fan_in+fan_out)|
| `he_normal()`      | N(0, 2/fan_in)                        | 2/fan_in          |
| `he_uniform()`     | U[−√(6/fan_in), √(6/fan_in)]          | 2/fan_in          |
| `lecun_normal()`   | N(0, 1/fan_in)                        | 1/fan_in          |
| `lecun_uniform()`  | U[−√(3/fan_in), √(3/fan_in)]          | 1/fan_in          |
| `orthogonal(g)`    | g · Q, Q with orthonormal rows/cols   |                   |
| `zeros()`, `ones()`, `constant(v)` | constants            | 0                 |

`dtype=None` means the default float type (float64 when `jax_enable_x64` is on, else float32).

Example:
    >>> import jax
    >>> from jaxbp import init
    >>> W = init.xavier_uniform()(jax.random.key(0), (784, 256))
    >>> W.shape
    (784, 256)
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def _dtype(dtype):
    return jnp.zeros((), dtype if dtype is not None else float).dtype


def fans(shape) -> tuple[int, int]:
    """(fan_in, fan_out) of a weight of layout (..., fan_in, fan_out)."""
    shape = tuple(shape)
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive = math.prod(shape[:-2])
    return shape[-2] * receptive, shape[-1] * receptive


def zeros():
    """0 everywhere."""

    def init(key, shape, dtype=None):
        return jnp.zeros(shape, _dtype(dtype))

    return init


def ones():
    """1 everywhere."""

    def init(key, shape, dtype=None):
        return jnp.ones(shape, _dtype(dtype))

    return init


def constant(value: float):
    def init(key, shape, dtype=None):
        return jnp.full(shape, value, _dtype(dtype))

    return init


def normal(stddev: float = 1e-2):
    def init(key, shape, dtype=None):
        return stddev * jax.random.normal(key, shape, _dtype(dtype))

    return init


def uniform(scale: float = 1e-2):
    def init(key, shape, dtype=None):
        return jax.random.uniform(key, shape, _dtype(dtype), -scale, scale)

    return init


def _fan_uniform(scale_of_fans):
    def init(key, shape, dtype=None):
        a = scale_of_fans(*fans(shape))
        return jax.random.uniform(key, shape, _dtype(dtype), -a, a)

    return init


def _fan_normal(std_of_fans):
    def init(key, shape, dtype=None):
        return std_of_fans(*fans(shape)) * jax.random.normal(key, shape, _dtype(dtype))

    return init


def fan_in_uniform():
    """U[−1/√fan_in, 1/√fan_in]: the 'classic' heuristic examined by Glorot & Bengio (2010)."""
    return _fan_uniform(lambda fi, fo: 1.0 / math.sqrt(fi))


def xavier_uniform():
    return _fan_uniform(lambda fi, fo: math.sqrt(6.0 / (fi + fo)))


def xavier_normal():
    return _fan_normal(lambda fi, fo: math.sqrt(2.0 / (fi + fo)))


def he_normal():
    return _fan_normal(lambda fi, fo: math.sqrt(2.0 / fi))


def he_uniform():
    return _fan_uniform(lambda fi, fo: math.sqrt(6.0 / fi))


def lecun_normal():
    return _fan_normal(lambda fi, fo: math.sqrt(1.0 / fi))


def lecun_uniform():
    return _fan_uniform(lambda fi, fo: math.sqrt(3.0 / fi))


glorot_uniform = xavier_uniform
glorot_normal = xavier_normal
kaiming_normal = he_normal
kaiming_uniform = he_uniform


def orthogonal(gain: float = 1.0):
    """Orthogonal matrix (Saxe et al. 2014) over the last two axes: rows or columns orthonormal.

    Leading axes (a convolution window) are flattened into the fan-in side.
    """

    def init(key, shape, dtype=None):
        dtype = _dtype(dtype)
        if len(shape) < 2:
            raise ValueError(f"orthogonal: needs a shape of rank >= 2, got {tuple(shape)}")
        rows, cols = math.prod(shape[:-1]), shape[-1]
        a = jax.random.normal(key, (max(rows, cols), min(rows, cols)), dtype)
        q, r = jnp.linalg.qr(a)
        q = q * jnp.sign(jnp.diagonal(r))  # a uniformly distributed (Haar) orthogonal matrix
        if rows < cols:
            q = q.T
        return (gain * q).reshape(shape).astype(dtype)

    return init


def get(name_or_fn):
    """Look an initializer up by name ('he_normal', 'zeros', ...) or pass a callable through."""
    if name_or_fn in _FACTORIES:
        raise TypeError(
            f"{name_or_fn.__name__} is a factory: pass jaxbp.init.{name_or_fn.__name__}() (or the "
            f"name {name_or_fn.__name__!r}), not the factory itself"
        )
    if callable(name_or_fn) and not isinstance(name_or_fn, str):
        return name_or_fn
    table = {
        "zeros": zeros(),
        "ones": ones(),
        "normal": normal(),
        "uniform": uniform(),
        "fan_in_uniform": fan_in_uniform(),
        "xavier_uniform": xavier_uniform(),
        "glorot_uniform": xavier_uniform(),
        "xavier_normal": xavier_normal(),
        "glorot_normal": xavier_normal(),
        "he_normal": he_normal(),
        "kaiming_normal": he_normal(),
        "he_uniform": he_uniform(),
        "kaiming_uniform": he_uniform(),
        "lecun_normal": lecun_normal(),
        "lecun_uniform": lecun_uniform(),
        "orthogonal": orthogonal(),
    }
    if name_or_fn not in table:
        raise ValueError(f"unknown initializer {name_or_fn!r}; choose one of {sorted(table)}")
    return table[name_or_fn]


_FACTORIES = (
    zeros,
    ones,
    constant,
    normal,
    uniform,
    fan_in_uniform,
    xavier_uniform,
    xavier_normal,
    he_normal,
    he_uniform,
    lecun_normal,
    lecun_uniform,
    orthogonal,
)
