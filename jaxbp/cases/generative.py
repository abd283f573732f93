"""Registry cases for the generative family: the reparameterized sample, the VAE and GAN losses,
the autoencoder and VAE models, and the GAN's two gradient routes."""

from __future__ import annotations

import jax
import jax.numpy as jnp

import jaxbp
from jaxbp import check, losses
from jaxbp.cases.base import Case, _seed, layer_case, loss_case, model_case, size
from jaxbp.models import autoencoder, gan


def _gaussian_sample(rng):
    extra = tuple(size(rng, 1, 3) for _ in range(int(rng.integers(0, 2))))
    return jaxbp.GaussianSample(), (*extra, 2 * size(rng, 1, 5)), {"train": True}


def _bernoulli_nll(rng, batch):
    shape = (batch, *(size(rng, 1, 5) for _ in range(int(rng.integers(1, 3)))))
    return losses.bernoulli_nll(), 3 * rng.normal(size=shape), rng.random(shape)


def no_target_loss_case(name: str, build) -> Case:
    """A loss without a target (`target=None`): `build(rng, batch) -> (loss, pred)`, where pred
    is an array or a tuple of arrays."""

    def run(rng, *, batch, dtype, jit, **kwargs):
        loss, pred = build(rng, batch)
        pred = jax.tree.map(lambda a: jnp.asarray(a, dtype), pred)

        def f(args):
            return loss.forward(args["pred"], None)[0]

        def manual_vjp(args, g):
            _, res = loss.forward(args["pred"], None)
            return {"pred": loss.backward(res, g)}

        return check.check_vjp(
            loss.name, f, manual_vjp, {"pred": pred}, seed=_seed(rng), jit=jit, **kwargs
        )

    return Case(name, "loss", run)


def _gaussian_kl(rng, batch):
    d = size(rng, 1, 5)
    return losses.gaussian_kl(), rng.normal(size=(batch, 2 * d))


def _gan_discriminator(rng, batch):
    real, fake = 3 * rng.normal(size=(batch, 1)), 3 * rng.normal(size=(size(rng, 1, 6), 1))
    return losses.gan_discriminator_loss(), (real, fake)


def _gan_generator(rng, batch):
    return losses.gan_generator_loss(), 3 * rng.normal(size=(batch, 1))


def _autoencoder(rng, batch):
    d, code = size(rng, 2, 8), size(rng, 1, 3)
    model = autoencoder.Autoencoder(
        jaxbp.MLP([size(rng, 1, 6), code], activation=jaxbp.Tanh),
        # tanh, not relu: a one-unit relu decoder can be dead at the registry's draw, and a
        # reference gradient that is zero everywhere tests nothing (check.Report.untested)
        jaxbp.MLP([size(rng, 1, 6), d], activation=jaxbp.Tanh, out_activation=jaxbp.Sigmoid),
    )
    x = rng.random((batch, d))
    return model, losses.half_mse(), x, x


def _vae(rng, batch):
    d, latent = size(rng, 2, 8), size(rng, 1, 3)
    model = autoencoder.VAE(
        jaxbp.MLP([size(rng, 1, 6), 2 * latent], activation=jaxbp.Tanh),
        jaxbp.MLP([size(rng, 1, 6), d], activation=jaxbp.Softplus),
    )
    x = rng.random((batch, d))
    return model, losses.vae_loss(), x, (x, None)


def _gan_nets(rng):
    d, z_dim = size(rng, 1, 4), size(rng, 1, 4)
    # Tanh in G: a ReLU G with all units dead maps z to exactly 0 (zero biases at init), D's logit
    # is then exactly 0, where autodiff of softplus's stable form returns 0 instead of σ(0) = ½.
    G = jaxbp.MLP([size(rng, 1, 6), d], activation=jaxbp.Tanh)
    D = jaxbp.MLP([size(rng, 1, 6), 1], activation=lambda: jaxbp.LeakyRelu(negative_slope=0.2))
    return G, D, d, z_dim


def gan_route_case(name: str, which: str) -> Case:
    """The generator's (`which="generator"`) or discriminator's gradient route, against JAX's
    autodiff reference (check.check_vjp) of the same scalar loss in that network's parameters
    only."""

    def run(rng, *, batch, dtype, jit, **kwargs):
        G, D, d, z_dim = _gan_nets(rng)
        k_g, k_d = jax.random.split(jax.random.key(_seed(rng)))
        cast = lambda t: jax.tree.map(lambda a: jnp.asarray(a, dtype), t)  # noqa: E731
        g_params, d_params = cast(G.init(k_g, (z_dim,))[1]), cast(D.init(k_d, (d,))[1])
        z = cast(rng.normal(size=(batch, z_dim)))
        x_real = cast(rng.normal(size=(size(rng, 1, 5), d)))
        fake = lambda gp: G.forward(gp, gan.empty_state(gp), z)[0]  # noqa: E731
        if which == "generator":

            def f(gp):
                logits = D.forward(d_params, gan.empty_state(d_params), fake(gp))[0]
                return losses.gan_generator_loss().forward(logits)[0]

            def manual_vjp(gp, g):
                dG = gan.generator_grads(G, D, gp, d_params, z)[1]
                return jax.tree.map(lambda a: g * a, dG)

            args = g_params
        else:
            x_fake = fake(g_params)

            def f(dp):
                state = gan.empty_state(dp)
                r, f_ = D.forward(dp, state, x_real)[0], D.forward(dp, state, x_fake)[0]
                return losses.gan_discriminator_loss().forward((r, f_))[0]

            def manual_vjp(dp, g):
                dD = gan.discriminator_grads(D, dp, x_real, x_fake)[1]
                return jax.tree.map(lambda a: g * a, dD)

            args = d_params
        return check.check_vjp(name, f, manual_vjp, args, seed=_seed(rng), jit=jit, **kwargs)

    return Case(name, "model", run)


CASES = [
    layer_case("GaussianSample", _gaussian_sample),
    loss_case("bernoulli_nll", _bernoulli_nll),
    no_target_loss_case("gaussian_kl", _gaussian_kl),
    no_target_loss_case("gan_discriminator_loss", _gan_discriminator),
    no_target_loss_case("gan_generator_loss", _gan_generator),
    model_case("Autoencoder", _autoencoder),
    model_case("VAE", _vae),
    gan_route_case("GAN generator step", "generator"),
    gan_route_case("GAN discriminator step", "discriminator"),
]
