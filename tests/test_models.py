"""value_and_grad: jit-compiled, manual only, equal to jax.value_and_grad."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxbp
from jaxbp import losses


@pytest.mark.parametrize(
    "loss, make_y",
    [
        (losses.softmax_cross_entropy(), lambda k: jax.random.randint(k, (16,), 0, 4)),
        (losses.half_mse(), lambda k: jax.random.normal(k, (16, 4))),
        (losses.sigmoid_binary_cross_entropy(), lambda k: jax.random.bernoulli(k, 0.5, (16, 4))),
    ],
)
def test_equals_jax_value_and_grad(key, loss, make_y):
    model = jaxbp.MLP([12, 12, 4], activation=jaxbp.Silu)
    _, params, state = model.init(key, (5,))
    x = jax.random.normal(key, (16, 5))
    y = make_y(jax.random.fold_in(key, 1))
    value, grads, new_state = jaxbp.loss_and_grad(model, loss)(params, state, x, y)

    def f(p):
        return loss.forward(model.forward(p, state, x, train=True)[0], y)[0]

    ref_value, ref_grads = jax.value_and_grad(f)(params)
    np.testing.assert_allclose(value, ref_value, rtol=1e-14)
    assert jax.tree.structure(grads) == jax.tree.structure(params)
    for g, r, p in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads), jax.tree.leaves(params)):
        assert g.dtype == p.dtype and g.shape == p.shape
        np.testing.assert_allclose(g, r, rtol=1e-10, atol=1e-14)


def test_is_compiled_once_per_shape(key):
    model = jaxbp.MLP([4, 2])
    _, params, state = model.init(key, (3,))
    step = jaxbp.loss_and_grad(model, losses.mse())
    x, y = jnp.ones((2, 3)), jnp.zeros((2, 2))
    step(params, state, x, y)
    step(params, state, x + 1, y)
    assert step._cache_size() == 1


def test_wrong_arguments():
    with pytest.raises(TypeError, match="losses.mse()"):
        jaxbp.loss_and_grad(jaxbp.Dense(2), losses.mse)
    with pytest.raises(TypeError, match="must be a Layer"):
        jaxbp.loss_and_grad(jaxbp.Dense, losses.mse())


def test_mlp_takes_every_width_the_last_the_output(key):
    model = jaxbp.MLP([5, 3], activation=jaxbp.Tanh)
    out_shape, params, _ = model.init(key, (4,))
    assert out_shape == (3,) and [p["W"].shape for p in params if p] == [(4, 5), (5, 3)]
    with pytest.raises(ValueError, match=r"MLP\(\[64, 64, 10\]\)"):
        jaxbp.MLP(10)
    with pytest.raises(ValueError, match="features"):
        jaxbp.MLP([4, 0])


def test_loss_and_grad_without_jit_gives_the_same_numbers(key):
    model = jaxbp.MLP([4, 2])
    _, params, state = model.init(key, (3,))
    x, y = jnp.ones((2, 3)), jnp.zeros((2, 2))
    jitted = jaxbp.loss_and_grad(model, losses.mse())(params, state, x, y)
    eager = jaxbp.loss_and_grad(model, losses.mse(), jit=False)
    assert not hasattr(eager, "_cache_size")
    np.testing.assert_allclose(eager(params, state, x, y)[0], jitted[0], rtol=1e-12)
