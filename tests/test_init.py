"""Initializers: their variances, shapes, orthogonality and dtypes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbp import init


@pytest.mark.parametrize(
    "name, variance",
    [
        ("normal", 1e-4),
        ("uniform", 1e-4 / 3),
        ("fan_in_uniform", 1 / (3 * 400)),
        ("xavier_uniform", 2 / (400 + 300)),
        ("xavier_normal", 2 / (400 + 300)),
        ("he_normal", 2 / 400),
        ("he_uniform", 2 / 400),
        ("lecun_normal", 1 / 400),
        ("lecun_uniform", 1 / 400),
    ],
)
def test_variance(name, variance):
    w = init.get(name)(jax.random.key(0), (400, 300))
    assert w.shape == (400, 300)
    assert float(jnp.var(w)) == pytest.approx(variance, rel=0.03)
    assert abs(float(jnp.mean(w))) < 0.05 * np.sqrt(variance)


def test_conv_fans_include_receptive_field():
    assert init.fans((3, 3, 16, 32)) == (16 * 9, 32 * 9)
    w = init.he_normal()(jax.random.key(0), (3, 3, 64, 64))
    assert float(jnp.var(w)) == pytest.approx(2 / (64 * 9), rel=0.03)


@pytest.mark.parametrize("shape", [(64, 32), (32, 64), (3, 3, 8, 16)])
def test_orthogonal(shape):
    w = init.orthogonal(gain=2.0)(jax.random.key(0), shape).reshape(-1, shape[-1])
    gram = w.T @ w if w.shape[0] >= w.shape[1] else w @ w.T
    np.testing.assert_allclose(gram, 4 * jnp.eye(gram.shape[0]), atol=1e-10)


def test_dtype_and_constants():
    assert init.zeros()(None, (2,), jnp.float32).dtype == jnp.float32
    assert float(init.ones()(None, (2,)).sum()) == 2.0
    assert init.get("he_normal")(jax.random.key(0), (3, 4)).dtype == jnp.float64  # x64 on


def test_unknown_name():
    with pytest.raises(ValueError, match="unknown initializer 'foo'"):
        init.get("foo")


def test_every_public_name_is_a_factory():
    public = [n for n in dir(init) if not n.startswith("_") and n not in ("fans", "get")]
    for name in public:
        obj = getattr(init, name)
        if not callable(obj) or getattr(obj, "__module__", "") != "jaxbp.init":
            continue
        made = obj(1.0) if name == "constant" else obj()
        assert made(jax.random.key(0), (4, 4)).shape == (4, 4), name


def test_passing_a_factory_uncalled_is_a_type_error():
    zeros_factory = getattr(init, "zeros")  # noqa: B009 - the factory itself, not called
    with pytest.raises(TypeError, match=r"a factory: pass jaxbp[.]init[.]zeros[(][)]"):
        init.get(zeros_factory)
    with pytest.raises(TypeError, match=r"pass jaxbp[.]init[.]he_normal[(][)]"):
        init.get(init.he_normal)
    assert init.get("zeros")(None, (3,)).sum() == 0
