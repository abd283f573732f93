"""Registry cases for the core: dense, activations, combinators, losses, MLP models."""

from __future__ import annotations

import jax

import jaxbp
from jaxbp import losses
from jaxbp.cases.base import layer_case, loss_case, model_case, size


def _dense(rng):
    extra = tuple(size(rng, 1, 3) for _ in range(int(rng.integers(0, 2))))  # e.g. a time axis
    bias = bool(rng.integers(0, 2))
    return jaxbp.Dense(size(rng, 1, 7), bias=bias), (*extra, size(rng, 1, 7))


def _activation(make, min_last=1):
    """`min_last`: the smallest last axis (a softmax over one entry is constant: zero gradient)."""

    def build(rng):
        shape = tuple(size(rng, 1, 5) for _ in range(int(rng.integers(1, 3))))
        return make(), (*shape[:-1], max(shape[-1], min_last))

    return build


ACTIVATIONS = {
    "Identity": jaxbp.Identity,
    "Sigmoid": jaxbp.Sigmoid,
    "Tanh": jaxbp.Tanh,
    "Relu": jaxbp.Relu,
    "LeakyRelu": lambda: jaxbp.LeakyRelu(negative_slope=0.1),
    "Elu": lambda: jaxbp.Elu(alpha=0.7),
    "Gelu": jaxbp.Gelu,
    "Gelu(tanh)": lambda: jaxbp.Gelu(approximate=True),
    "Softplus": jaxbp.Softplus,
    "Silu": jaxbp.Silu,
    "Softmax": jaxbp.Softmax,
    "LogSoftmax": jaxbp.LogSoftmax,
}


def _serial(rng):
    width = size(rng, 1, 6)
    return (
        jaxbp.serial(jaxbp.Dense(width), jaxbp.Tanh(), jaxbp.Dense(size(rng, 1, 4)), jaxbp.Elu()),
        (size(rng, 1, 6),),
    )


def _residual(rng):
    d = size(rng, 1, 6)
    block = jaxbp.serial(jaxbp.Dense(size(rng, 1, 6)), jaxbp.Gelu(), jaxbp.Dense(d))
    return jaxbp.serial(jaxbp.residual(block), jaxbp.Silu()), (d,)


def _parallel(rng):
    heads = jaxbp.parallel(
        jaxbp.Dense(size(rng, 1, 4)), jaxbp.serial(jaxbp.Dense(3), jaxbp.Sigmoid())
    )
    # bias 1 before the relu: a draw where every unit is dead leaves nothing to compare
    trunk = jaxbp.Dense(size(rng, 1, 5), b_init="ones")
    return jaxbp.serial(trunk, jaxbp.Relu(), heads), (size(rng, 1, 5),)


def _half_mse(rng, batch):
    shape = (batch, size(rng, 1, 4))
    return losses.half_mse(), rng.normal(size=shape), rng.normal(size=shape)


def _mse(rng, batch):
    shape = (batch, *(size(rng, 1, 4) for _ in range(int(rng.integers(1, 3)))))
    return losses.mse(), rng.normal(size=shape), rng.normal(size=shape)


def _ce_labels(rng, batch):
    classes = size(rng, 2, 7)
    return (
        losses.softmax_cross_entropy(),
        3 * rng.normal(size=(batch, classes)),
        rng.integers(0, classes, size=(batch,)),
    )


def _ce_probs(rng, batch):
    classes = size(rng, 2, 7)
    t = rng.random((batch, classes))
    return (
        losses.softmax_cross_entropy(),
        3 * rng.normal(size=(batch, classes)),
        t / t.sum(1, keepdims=True),
    )


def _ce_masked_rows(rng, batch):
    """Logits (batch, positions, classes); some rows' targets are zero (masked out)."""
    positions, classes = size(rng, 1, 4), size(rng, 2, 5)
    t = rng.random((batch, positions, classes))
    t = t / t.sum(-1, keepdims=True) * (rng.random((batch, positions, 1)) < 0.7)
    return losses.softmax_cross_entropy(), 3 * rng.normal(size=t.shape), t


def _bce(rng, batch):
    shape = (batch, size(rng, 1, 4))
    return losses.sigmoid_binary_cross_entropy(), 3 * rng.normal(size=shape), rng.random(shape)


def _mlp_classifier(rng, batch):
    d, classes = size(rng, 1, 8), size(rng, 2, 5)
    act = [jaxbp.Relu, jaxbp.Tanh, jaxbp.Sigmoid, jaxbp.Gelu][int(rng.integers(0, 4))]
    model = jaxbp.models.MLP([size(rng, 1, 8), size(rng, 1, 8), classes], activation=act)
    x = rng.normal(size=(batch, d))
    y = rng.integers(0, classes, size=(batch,))

    def params(rng):
        # zero biases put a whole layer at relu's kink for a row whose units all died before
        # it; there jax.vjp of max(z, 0) takes ½ and Relu the documented 0
        _, p, _ = model.init(jax.random.key(int(rng.integers(2**31 - 1))), (d,))
        return jax.tree.map(lambda a: a + 0.1 * rng.normal(size=a.shape), p)

    return model, losses.softmax_cross_entropy(), x, y, {"params": params}


def _mlp_regression(rng, batch):
    d, out = size(rng, 1, 6), size(rng, 1, 3)
    model = jaxbp.models.MLP([size(rng, 1, 8), out], activation=jaxbp.Softplus)
    return model, losses.half_mse(), rng.normal(size=(batch, d)), rng.normal(size=(batch, out))


def _multi_task_model(rng, batch):
    d, classes = size(rng, 1, 6), size(rng, 2, 5)
    model = jaxbp.serial(
        jaxbp.Dense(size(rng, 2, 8)),
        jaxbp.Tanh(),
        jaxbp.parallel(jaxbp.Dense(classes), jaxbp.Dense(1)),
    )
    loss = losses.multi_task(losses.softmax_cross_entropy(), losses.mse(), weights=(1.0, 0.5))
    x = rng.normal(size=(batch, d))
    y = (rng.integers(0, classes, size=(batch,)), rng.normal(size=(batch, 1)))
    return model, loss, x, y


CASES = [
    layer_case("Dense", _dense),
    *(
        layer_case(name, _activation(make, 2 if "Softmax" in name else 1))
        for name, make in ACTIVATIONS.items()
    ),
    layer_case("serial", _serial),
    layer_case("residual", _residual),
    layer_case("parallel", _parallel),
    loss_case("half_mse", _half_mse),
    loss_case("mse", _mse),
    loss_case("softmax_cross_entropy(labels)", _ce_labels),
    loss_case("softmax_cross_entropy(probs)", _ce_probs),
    loss_case("softmax_cross_entropy(3-D, masked rows)", _ce_masked_rows),
    loss_case("sigmoid_binary_cross_entropy", _bce),
    model_case("MLP classifier", _mlp_classifier),
    model_case("MLP regression", _mlp_regression),
    model_case("multi-task heads", _multi_task_model),
]
