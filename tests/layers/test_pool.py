"""Pooling, Flatten, Reshape: the max-pool tie rule, averages without padding, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxbp
from jaxbp.layers import pool


def _grad(layer, x):
    _, params, state = layer.init(jax.random.key(0), x.shape[1:])
    y, res, _ = layer.forward(params, state, x)
    return y, layer.backward(params, res, jnp.ones_like(y))[1]


def test_max_pool_tie_goes_to_first_index_1d():
    x = jnp.array([[[2.0], [2.0], [1.0], [5.0], [5.0], [5.0]]])  # windows of 3: ties in both
    y, dx = _grad(jaxbp.MaxPool1D(3), x)
    assert y[0, :, 0].tolist() == [2.0, 5.0]
    assert dx[0, :, 0].tolist() == [1.0, 0.0, 0.0, 1.0, 0.0, 0.0]


def test_max_pool_tie_rule_2d_row_major():
    x = jnp.array([[0.0, 3.0], [3.0, 3.0]]).reshape(1, 2, 2, 1)
    y, dx = _grad(jaxbp.MaxPool2D(2), x)
    assert float(y[0, 0, 0, 0]) == 3.0
    assert dx[0, :, :, 0].tolist() == [[0.0, 1.0], [0.0, 0.0]]  # first in row-major order


def test_max_pool_overlapping_windows_add():
    x = jnp.array([[[0.0], [9.0], [1.0], [2.0]]])
    y, dx = _grad(jaxbp.MaxPool1D(3, stride=1), x)  # both windows pick the 9
    assert y[0, :, 0].tolist() == [9.0, 9.0]
    assert dx[0, :, 0].tolist() == [0.0, 2.0, 0.0, 0.0]


def test_max_pool_matches_lax_reduce_window():
    x = jax.random.normal(jax.random.key(0), (2, 7, 6, 3))
    y, _, _ = jaxbp.MaxPool2D(3, stride=2, padding="SAME").forward((), (), x)
    ref = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 2, 2, 1), "SAME")
    np.testing.assert_array_equal(y, ref)


def test_avg_pool_does_not_count_padding():
    x = jnp.arange(1.0, 6.0).reshape(1, 5, 1)  # 1..5
    y, _, _ = jaxbp.AvgPool1D(2, padding="SAME").forward((), (), x)  # windows [1,2] [3,4] [5,pad]
    assert y[0, :, 0].tolist() == [1.5, 3.5, 5.0]


def test_global_avg_pool_and_reshape():
    x = jax.random.normal(jax.random.key(0), (2, 3, 4, 5))
    y, _, _ = jaxbp.GlobalAvgPool().forward((), (), x)
    np.testing.assert_allclose(y, x.mean(axis=(1, 2)))
    assert jaxbp.Flatten().init(None, (3, 4, 5))[0] == (60,)
    assert jaxbp.Reshape((-1, 5)).init(None, (3, 4, 5))[0] == (12, 5)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: jaxbp.MaxPool1D(0), "window must be a positive int"),
        (lambda: jaxbp.AvgPool2D(2, stride=0), "stride must be a positive int"),
        (lambda: jaxbp.MaxPool1D(2, padding=2), "smaller than the window"),
        (lambda: jaxbp.Reshape((-1, -1)), "one -1"),
    ],
)
def test_bad_hyperparameters(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


def test_shape_errors():
    with pytest.raises(ValueError, match=r"MaxPool2D\(3\).*larger than the padded input"):
        jaxbp.MaxPool2D(3).init(None, (2, 5, 1))
    with pytest.raises(ValueError, match=r"AvgPool1D\(2\).*rank 2 .*got shape \(4,\)"):
        jaxbp.AvgPool1D(2).init(None, (4,))
    with pytest.raises(ValueError, match=r"rank 3, got \(2, 4, 4, 1\)"):
        jaxbp.MaxPool1D(2).forward((), (), jnp.ones((2, 4, 4, 1)))
    with pytest.raises(ValueError, match=r"cannot reshape per-example shape \(7,\)"):
        jaxbp.Reshape((2, -1)).init(None, (7,))
    with pytest.raises(ValueError, match="GlobalAvgPool"):
        jaxbp.GlobalAvgPool().forward((), (), jnp.ones((2, 3)))


def test_ops_are_usable_directly():
    x = jax.random.normal(jax.random.key(0), (2, 5, 3))
    y, res = pool.avg_forward(x, window=(2,), stride=(2,))
    assert pool.avg_backward(res, jnp.ones_like(y), window=(2,), stride=(2,)).shape == x.shape
