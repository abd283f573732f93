"""Dropout: inverted scaling, the key as an argument, the stored mask, eval identity."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxbp


def test_train_mask_scale_and_backward():
    layer = jaxbp.Dropout(0.25)
    x = jnp.ones((200, 50))
    y, res, _ = layer.forward((), (), x, key=jax.random.key(0), train=True)
    kept = np.asarray(y != 0)
    assert abs(kept.mean() - 0.75) < 0.01
    np.testing.assert_allclose(np.asarray(y)[kept], 1 / 0.75)
    _, dx = layer.backward((), res, 2 * jnp.ones_like(y))
    np.testing.assert_allclose(dx, 2 * y)  # same mask, same scale
    y2, _, _ = layer.forward((), (), x, key=jax.random.key(0), train=True)
    np.testing.assert_array_equal(y, y2)  # the key alone decides the mask


def test_eval_is_identity():
    layer = jaxbp.Dropout(0.5)
    x = jax.random.normal(jax.random.key(0), (3, 4))
    y, res, _ = layer.forward((), (), x, train=False)
    np.testing.assert_array_equal(y, x)
    np.testing.assert_array_equal(layer.backward((), res, x)[1], x)


def test_errors():
    with pytest.raises(ValueError, match=r"Dropout\(1.0\).*\[0, 1\)"):
        jaxbp.Dropout(1.0)
    with pytest.raises(TypeError, match="rate"):
        jaxbp.Dropout("0.5")
    with pytest.raises(ValueError, match="needs a random key"):
        jaxbp.Dropout(0.5).forward((), (), jnp.ones((2, 2)), train=True)
