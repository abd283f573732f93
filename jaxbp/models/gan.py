"""The two gradient routes of a GAN (Goodfellow et al. 2014), written out by hand.

A generator G maps noise z to samples x̃ = G(z); a discriminator D maps a sample to a logit.

* **Discriminator step** — D's parameters θ_D descend L_D (`gan_discriminator_loss`) on a real
  batch and a generated batch; the generated batch is data here (no gradient flows into G):

      (∂L_D/∂r, ∂L_D/∂f) = loss.backward,   ∂L_D/∂θ_D = D.backward(r) + D.backward(f)

* **Generator step** — G's parameters θ_G descend L_G (`gan_generator_loss`, non-saturating)
  of D(G(z)). D is only a path for the gradient: its backward gives the input gradient
  dx = ∂L_G/∂x̃, which G's backward pulls back to θ_G. The parameter gradient D's backward
  returns on that pass is **discarded** — D's weights must not move in G's step:

      δ_f = ∂L_G/∂f,   (∂θ_D [discarded], dx) = D.backward(θ_D, δ_f),   ∂L_G/∂θ_G = G.backward(dx)

Both functions run the networks in training mode with the given key (dropout in D is allowed).
Pass each network's `state` from its `init`; left as None it is built empty, which is right for
stateless networks (Dense, activations, dropout) — not for batch norm.

Example:
    >>> import jax, jax.numpy as jnp, jaxbp
    >>> from jaxbp.models import gan
    >>> G, D = jaxbp.MLP([16, 2]), jaxbp.MLP([16, 1])
    >>> _, g_params, _ = G.init(jax.random.key(0), (4,))
    >>> _, d_params, _ = D.init(jax.random.key(1), (2,))
    >>> z, x_real = jnp.ones((8, 4)), jnp.zeros((8, 2))
    >>> loss_g, dG = gan.generator_grads(G, D, g_params, d_params, z)
    >>> x_fake = G.forward(g_params, gan.empty_state(g_params), z)[0]
    >>> loss_d, dD = gan.discriminator_grads(D, d_params, x_real, x_fake)
    >>> jax.tree.structure(dG) == jax.tree.structure(g_params), float(loss_g) > 0
    (True, True)
"""

from __future__ import annotations

import jax

from jaxbp import losses
from jaxbp.layer import Layer, split_key


def discriminator_grads(discriminator: Layer, d_params, x_real, x_fake, *, key=None, d_state=None):
    """(L_D, ∂L_D/∂θ_D) on a real and a generated batch (both treated as data)."""
    loss = losses.gan_discriminator_loss()
    k_real, k_fake = split_key(key, 2)
    state = empty_state(d_params) if d_state is None else d_state
    r, res_r, _ = discriminator.forward(d_params, state, x_real, key=k_real, train=True)
    f, res_f, _ = discriminator.forward(d_params, state, x_fake, key=k_fake, train=True)
    value, loss_res = loss.forward((r, f))
    dr, df = loss.backward(loss_res)  # (n, 1), (m, 1)
    dD_real, _ = discriminator.backward(d_params, res_r, dr)
    dD_fake, _ = discriminator.backward(d_params, res_f, df)
    return value, jax.tree.map(lambda a, b: a + b, dD_real, dD_fake)


def generator_grads(
    generator: Layer,
    discriminator: Layer,
    g_params,
    d_params,
    z,
    *,
    key=None,
    g_state=None,
    d_state=None,
):
    """(L_G, ∂L_G/∂θ_G): D's input gradient dx pulled back through G; D's parameter gradient
    from this pass is discarded."""
    loss = losses.gan_generator_loss()
    k_g, k_d = split_key(key, 2)
    g_state = empty_state(g_params) if g_state is None else g_state
    d_state = empty_state(d_params) if d_state is None else d_state
    x_fake, res_g, _ = generator.forward(g_params, g_state, z, key=k_g, train=True)
    f, res_d, _ = discriminator.forward(d_params, d_state, x_fake, key=k_d, train=True)
    value, loss_res = loss.forward(f)
    df = loss.backward(loss_res)  # δ_f = ∂L_G/∂f, (m, 1)
    _discarded_dD, dx = discriminator.backward(d_params, res_d, df)  # dx = ∂L_G/∂x̃, (m, ...)
    dG, _ = generator.backward(g_params, res_g, dx)  # ∂L_G/∂θ_G
    return value, dG


def empty_state(params):
    """The state of a stateless network: () for each layer, nested like `serial`'s params.

    (A bare `()` is not that state: `serial` would zip it with its layers and run none.)
    """
    if isinstance(params, tuple):
        return tuple(empty_state(p) for p in params)
    return ()
