"""The GAN's routing: the generator step moves G only; D's gradient from that pass is real but
discarded."""

import jax
import jax.numpy as jnp
import numpy as np

import jaxbp
from experiments import gan as gan_exp
from jaxbp import losses, optim
from jaxbp.models import gan


def _nets():
    G, D = gan_exp.networks(4, 2, (16, 16), pack=2)
    _, g_params, _ = G.init(jax.random.key(0), (4,))
    _, d_params, _ = D.init(jax.random.key(1), (2,))
    return G, D, g_params, d_params


def test_generator_step_leaves_the_discriminator_bitwise_unchanged():
    G, D, g_params, d_params = _nets()
    opt = optim.adam(1e-2)
    z = jax.random.normal(jax.random.key(2), (8, 4))
    before = [np.array(leaf) for leaf in jax.tree.leaves(d_params)]
    step = jax.jit(lambda gp, go, dp: gan_exp.generator_step(G, D, opt, gp, go, dp, z))
    new_g, _, _ = step(g_params, opt.init(g_params), d_params)
    for leaf, old in zip(jax.tree.leaves(d_params), before):
        assert np.array_equal(np.asarray(leaf), old)
        assert np.asarray(leaf).tobytes() == old.tobytes()
    assert any(
        not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(new_g), jax.tree.leaves(g_params))
    )
    # ... and the discarded gradient was not zero: a combined model would have moved D
    x_fake, _, _ = G.forward(g_params, gan.empty_state(g_params), z)
    f, res_d, _ = D.forward(d_params, gan.empty_state(d_params), x_fake)
    loss = losses.gan_generator_loss()
    dD, _ = D.backward(d_params, res_d, loss.backward(loss.forward(f)[1]))
    assert max(float(jnp.abs(leaf).max()) for leaf in jax.tree.leaves(dD)) > 1e-4


def test_generator_gradient_is_the_gradient_in_g_only():
    G, D, g_params, d_params = _nets()
    z = jax.random.normal(jax.random.key(2), (8, 4))

    def loss_of(gp, dp):
        x = G.forward(gp, gan.empty_state(gp), z)[0]
        return losses.gan_generator_loss().forward(D.forward(dp, gan.empty_state(dp), x)[0])[0]

    value, dG = gan.generator_grads(G, D, g_params, d_params, z)
    ref = jax.grad(loss_of)(g_params, d_params)
    np.testing.assert_allclose(value, loss_of(g_params, d_params), rtol=1e-14)
    for g, r in zip(jax.tree.leaves(dG), jax.tree.leaves(ref)):
        np.testing.assert_allclose(g, r, rtol=1e-10, atol=1e-14)


def test_pack_layer_backward():
    jaxbp.check.assert_layer_correct(gan_exp.Pack(3), (2,), batch=6)
