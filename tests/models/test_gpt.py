"""The whole GPT in the style of llm.c's test: every parameter gradient of a 2-layer GPT
against jax.grad of the same forward (float64 ≤ 1e-10, float32 ≤ 1e-5 relative), the tied
gradient as the sum of its two uses, and the errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxbp
from jaxbp import losses

V, T, B = 17, 12, 3


def setup(dtype, block_size=None, dropout=0.0):
    model = jaxbp.GPT(V, features=16, depth=2, heads=2, max_len=T, dropout=dropout,
                      block_size=block_size)  # fmt: skip
    _, params, state = model.init(jax.random.key(0), (T,))
    params = jax.tree.map(lambda p: p.astype(dtype), params)
    ids = jax.random.randint(jax.random.key(1), (B, T + 1), 0, V)
    return model, params, state, ids[:, :-1], ids[:, 1:]


def worst_rel_err(manual, reference):
    """Per leaf: max|manual − reference| / max|reference|; the worst leaf and its error."""
    errs = {
        jax.tree_util.keystr(path): float(jnp.max(jnp.abs(m - r)) / jnp.max(jnp.abs(r)))
        for (path, m), r in zip(
            jax.tree_util.tree_flatten_with_path(manual)[0], jax.tree.leaves(reference)
        )
    }
    return max(errs.items(), key=lambda kv: kv[1])


@pytest.mark.parametrize(
    "dtype, tol, block_size, dropout",
    [
        (jnp.float64, 1e-10, None, 0.0),
        (jnp.float32, 1e-5, None, 0.0),
        pytest.param(jnp.float64, 1e-10, 5, 0.2, marks=pytest.mark.slow),  # blocked, dropout
    ],
)
def test_every_parameter_gradient_matches_jax_grad(dtype, tol, block_size, dropout):
    model, params, state, x, y = setup(dtype, block_size, dropout)
    loss, key = losses.token_cross_entropy(), jax.random.key(2)

    def value(p):
        return loss.forward(model.forward(p, state, x, key=key, train=True)[0], y)[0]

    ref_loss, ref_grads = jax.jit(jax.value_and_grad(value))(params)
    man_loss, man_grads, _ = jaxbp.loss_and_grad(model, loss)(params, state, x, y, key)
    assert jax.tree.structure(man_grads) == jax.tree.structure(params)
    assert all(g.dtype == dtype for g in jax.tree.leaves(man_grads))
    np.testing.assert_allclose(man_loss, ref_loss, rtol=tol)
    leaf, err = worst_rel_err(man_grads, ref_grads)
    assert err <= tol, f"{leaf}: relative error {err:.2e} > {tol:.0e}"


def test_tied_gradient_is_the_sum_of_its_two_uses():
    """Untie E (the lookup's copy and the head's copy), differentiate each with jax.grad: the
    tied gradient is their sum, and each part is nonzero."""
    model, params, state, x, y = setup(jnp.float64)
    loss = losses.token_cross_entropy()

    def untied(E_lookup, E_head):
        p = {**params, "tok": {"W": E_lookup}}
        logits, res, _ = model.forward(p, state, x)
        logits = jnp.einsum("btc,vc->btv", res.z, E_head)  # the head with its own copy
        return loss.forward(logits, y)[0]

    E = params["tok"]["W"]
    d_lookup, d_head = jax.grad(untied, argnums=(0, 1))(E, E)
    _, grads, _ = jaxbp.loss_and_grad(model, loss)(params, state, x, y)
    np.testing.assert_allclose(grads["tok"]["W"], d_lookup + d_head, rtol=1e-10, atol=1e-14)
    assert float(jnp.abs(d_lookup).max()) > 0 and float(jnp.abs(d_head).max()) > 0


def test_errors_name_the_model_and_the_shapes():
    with pytest.raises(ValueError, match=r"GPT.*features = 10 is not divisible by heads = 4"):
        jaxbp.GPT(9, features=10, heads=4)
    model, params, state, x, _ = setup(jnp.float64)
    with pytest.raises(ValueError, match=rf"GPT.*T = 13.*\(3, 13\).*max_len = {T}"):
        model.forward(params, state, jnp.zeros((3, 13), jnp.int32))
    with pytest.raises(TypeError, match=r"GPT.*integer token ids.*float"):
        model.forward(params, state, jnp.zeros((3, 4)))
    with pytest.raises(ValueError, match=r"token_cross_entropy.*\(3, 12, 17\).*\(3, 11\)"):
        losses.token_cross_entropy().forward(jnp.zeros((3, 12, 17)), jnp.zeros((3, 11), int))
