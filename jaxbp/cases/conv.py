"""Registry cases for convolutional networks: conv, pooling, normalization, dropout, embedding,
and small CNN models. Sizes are odd and random; strides may exceed the kernel; groups include
depthwise; batch norm and dropout run in train and eval mode."""

from __future__ import annotations

import jax
import numpy as np

import jaxbp
from jaxbp import losses
from jaxbp.cases.base import layer_case, model_case, size
from jaxbp.layer import Layer


def _pick(rng, options):
    return options[int(rng.integers(0, len(options)))]


def _conv_hyper(rng, nd: int):
    """Random kernel, stride (up to kernel + 1), dilation, padding, groups, and an input shape
    large enough for the dilated kernel."""
    groups = _pick(rng, [1, 1, 2, 3])
    c_in = groups * size(rng, 1, 2)
    if rng.integers(0, 4) == 0:
        groups = c_in  # depthwise
    features = groups * size(rng, 1, 2)
    kernel = tuple(size(rng, 1, 3) for _ in range(nd))
    # stride up to k + 1 (> kernel), for k >= 2 so that most of x still gets a gradient
    stride = tuple(size(rng, 1, k + 1 if k > 1 else 1) for k in kernel)
    if nd == 2 and stride[0] > kernel[0]:
        stride = (stride[0], min(stride[1], kernel[1]))  # keep enough of x in the gradient
    dilation = tuple(size(rng, 1, 2) for _ in range(nd))
    padding = _pick(rng, ["VALID", "SAME", "int", "pairs"])
    if padding == "int":
        padding = int(rng.integers(0, 3))
    elif padding == "pairs":
        padding = tuple((int(rng.integers(0, 3)), int(rng.integers(0, 3))) for _ in range(nd))
        padding = padding[0] if nd == 1 and rng.integers(0, 2) else padding
    span = [(k - 1) * d + 1 for k, d in zip(kernel, dilation, strict=True)]
    spatial = tuple(s + size(rng, 0, 4 if nd == 1 else 2) for s in span)
    make = jaxbp.Conv1D if nd == 1 else jaxbp.Conv2D
    layer = make(
        features,
        kernel,
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        bias=bool(rng.integers(0, 4)),
        b_init=jaxbp.init.normal(0.5),
    )
    return layer, (*spatial, c_in)


def _conv1d(rng):
    return _conv_hyper(rng, 1)


def _conv2d(rng):
    return _conv_hyper(rng, 2)


def _conv2d_depthwise_strided(rng):
    """Depthwise (groups = C_in), stride > kernel along the height, dilation along the width."""
    c, k = size(rng, 2, 3), size(rng, 2, 3)
    layer = jaxbp.Conv2D(
        2 * c,
        k,
        stride=(k + 1, 1),
        padding=_pick(rng, ["SAME", 1]),
        dilation=(1, 2),
        groups=c,
        b_init=jaxbp.init.normal(0.5),
    )
    return layer, (size(rng, 2 * k + 1, 3 * k + 2), size(rng, 2 * k - 1, 2 * k + 2), c)


def _pool(kind: str):
    def build(rng):
        nd = size(rng, 1, 2)
        window = tuple(size(rng, 1, 3) for _ in range(nd))
        stride = None if rng.integers(0, 3) == 0 else tuple(size(rng, 1, k + 1) for k in window)
        padding = _pick(rng, ["VALID", "SAME", "int"])
        if padding == "int":
            padding = int(rng.integers(0, min(window)))
        spatial = tuple(k + size(rng, 0, 5 if nd == 1 else 3) for k in window)
        make = {
            ("Max", 1): jaxbp.MaxPool1D,
            ("Max", 2): jaxbp.MaxPool2D,
            ("Avg", 1): jaxbp.AvgPool1D,
            ("Avg", 2): jaxbp.AvgPool2D,
        }[kind, nd]
        return make(window, stride=stride, padding=padding), (*spatial, size(rng, 1, 3))

    return build


def _global_avg_pool(rng):
    return jaxbp.GlobalAvgPool(), tuple(size(rng, 1, 4) for _ in range(int(rng.integers(2, 4))))


def _reshape(rng):
    a, b = size(rng, 1, 4), size(rng, 1, 4)
    if rng.integers(0, 2):
        return jaxbp.Flatten(), (a, b, size(rng, 1, 3))
    return jaxbp.Reshape((b, -1)), (a * b,)


def _randomized(layer: Layer) -> Layer:
    """`layer` with params and state drawn at random (scale ≠ 1, running var ≠ 1) so the check
    sees every factor of the formulas."""

    def init(key, in_shape):
        out, params, state = layer.init(key, in_shape)
        rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel().tolist())
        params = {k: p + 0.5 * rng.normal(size=p.shape).astype(p.dtype) for k, p in params.items()}
        if state != ():
            c = state["mean"].shape
            state = {
                "mean": (0.3 * rng.normal(size=c)).astype(state["mean"].dtype),
                "var": rng.uniform(0.5, 2.0, size=c).astype(state["var"].dtype),
            }
        return out, params, state

    return layer._replace(init=init)


def _norm(make, train: bool):
    """Shapes with >= 3 features per normalized group and >= 3 positions per channel: dx is δ
    with its projection on span{1, x̂} removed, so with 2 values per group (x̂ = ±1) the true dx
    is a tiny difference of large terms, which float32 cannot resolve."""

    def build(rng):
        shape = (
            *(size(rng, 1, 4) for _ in range(int(rng.integers(0, 2)))),
            size(rng, 3, 5),
            size(rng, 3, 5),
        )
        return _randomized(make()), shape, {"train": train}

    return build


def _dropout(train: bool):
    def build(rng):
        shape = tuple(size(rng, 1, 5) for _ in range(int(rng.integers(1, 3))))
        return jaxbp.Dropout(float(rng.uniform(0.1, 0.7))), shape, {"train": train}

    return build


def _embedding(rng):
    vocab, length = size(rng, 1, 9), size(rng, 1, 5)
    ids = lambda rng, batch: rng.integers(0, vocab, size=(batch, length))
    return jaxbp.Embedding(vocab, size(rng, 1, 4)), (length,), {"x": ids}


# ----------------------------------------------------------------------------------- models


def _cnn1d_model(rng, batch):
    # Biases drawn at random: a window of exact zeros (after ReLU) would otherwise put z = 0
    # on the ReLU kink, where jit and eager rounding may disagree about the side.
    length, classes = size(rng, 9, 13), size(rng, 2, 4)
    b_init = jaxbp.init.normal(0.5)
    model = jaxbp.serial(
        jaxbp.Reshape((length, 1)),
        jaxbp.Conv1D(size(rng, 2, 4), 3, stride=2, padding=1, bias=False),  # BN adds the shift
        jaxbp.BatchNorm(),
        jaxbp.MaxPool1D(2, stride=1),
        jaxbp.Relu(),
        jaxbp.Conv1D(size(rng, 2, 3), 2, padding="SAME", dilation=2, b_init=b_init),
        jaxbp.Relu(),
        jaxbp.Flatten(),
        jaxbp.Dropout(0.3),
        jaxbp.Dense(classes, b_init=b_init),
    )
    x = rng.normal(size=(batch, length))
    y = rng.integers(0, classes, size=(batch,))
    return model, losses.softmax_cross_entropy(), x, y, {"train": bool(rng.integers(0, 2))}


def _cnn2d_model(rng, batch):
    h, w, classes = size(rng, 5, 7), size(rng, 5, 7), size(rng, 2, 4)
    b_init = jaxbp.init.normal(0.5)
    model = jaxbp.serial(
        jaxbp.Conv2D(4, 3, padding="SAME", b_init=b_init),
        jaxbp.LayerNorm(),
        jaxbp.Tanh(),
        jaxbp.Conv2D(4, 3, stride=2, groups=4, b_init=b_init),
        jaxbp.AvgPool2D(2, stride=1, padding="SAME"),
        jaxbp.Relu(),
        jaxbp.GlobalAvgPool(),
        jaxbp.Dense(classes),
    )
    x = rng.normal(size=(batch, h, w, 2))
    y = rng.integers(0, classes, size=(batch,))
    return model, losses.softmax_cross_entropy(), x, y


def _embedding_model(rng, batch):
    vocab, length, classes = size(rng, 3, 9), size(rng, 3, 7), size(rng, 2, 4)
    model = jaxbp.serial(
        jaxbp.Embedding(vocab, 3),
        jaxbp.Conv1D(4, 2, padding="SAME", b_init=jaxbp.init.normal(0.5)),
        jaxbp.Gelu(),
        jaxbp.GlobalAvgPool(),
        jaxbp.Dense(classes),
    )
    x = rng.integers(0, vocab, size=(batch, length))
    y = rng.integers(0, classes, size=(batch,))
    return model, losses.softmax_cross_entropy(), x, y


CASES = [
    layer_case("Conv1D", _conv1d),
    layer_case("Conv2D", _conv2d),
    layer_case("Conv2D(depthwise, stride > kernel)", _conv2d_depthwise_strided),
    layer_case("MaxPool1D/2D", _pool("Max")),
    layer_case("AvgPool1D/2D", _pool("Avg")),
    layer_case("GlobalAvgPool", _global_avg_pool),
    layer_case("Reshape/Flatten", _reshape),
    layer_case("BatchNorm(train)", _norm(jaxbp.BatchNorm, train=True)),
    layer_case("BatchNorm(eval)", _norm(jaxbp.BatchNorm, train=False)),
    layer_case("LayerNorm", _norm(jaxbp.LayerNorm, train=False)),
    layer_case("Dropout(train)", _dropout(train=True)),
    layer_case("Dropout(eval)", _dropout(train=False)),
    layer_case("Embedding", _embedding),
    model_case("CNN-1D (conv, batch norm, pool, dropout)", _cnn1d_model),
    model_case("CNN-2D (groups, layer norm, avg pool)", _cnn2d_model),
    model_case("Embedding + Conv1D", _embedding_model),
]

__all__ = ["CASES"]
