"""Conv1D/Conv2D: shapes, the forward against lax, edge geometry, and clear errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxbp
from jaxbp import check
from jaxbp.layers import conv


def test_forward_matches_lax_and_shapes():
    layer = jaxbp.Conv2D(6, (3, 2), stride=(2, 1), padding="SAME", dilation=(1, 2), groups=3)
    out_shape, params, _ = layer.init(jax.random.key(0), (7, 8, 3))
    assert params["W"].shape == (3, 2, 1, 6)
    x = jax.random.normal(jax.random.key(1), (2, 7, 8, 3))
    y, _, _ = layer.forward(params, (), x)
    ref = (
        jax.lax.conv_general_dilated(
            x,
            params["W"],
            (2, 1),
            "SAME",
            rhs_dilation=(1, 2),
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            feature_group_count=3,
        )
        + params["b"]
    )
    assert y.shape == (2, *out_shape) == (2, 4, 8, 6)
    np.testing.assert_allclose(y, ref, rtol=1e-12)


@pytest.mark.parametrize(
    "n, k, s, d, pad",
    [(10, 3, 3, 1, (1, 1)), (9, 2, 4, 1, (0, 2)), (7, 3, 2, 2, (2, 0)), (5, 1, 3, 1, (0, 0))],
)
def test_stride_remainder_and_dilation(n, k, s, d, pad):
    """Input sizes the strided windows do not cover exactly: the remainder gets zero gradient."""
    layer = jaxbp.Conv1D(3, k, stride=s, padding=pad, dilation=d)
    report = check.check_layer(layer, (n, 2), batch=2)
    assert report.ok and report.max_rel_err["jax.vjp"] <= 1e-12


def test_depthwise_and_grouped_ops():
    params = conv.conv_init(
        jax.random.key(0), in_channels=4, features=8, kernel_size=(3,), groups=4
    )
    x = jax.random.normal(jax.random.key(1), (2, 9, 4))
    hyper = dict(stride=2, padding="SAME", groups=4)
    report = check.check_ops(
        lambda p, x: conv.conv_forward(p, x, **hyper),
        lambda p, r, dy: conv.conv_backward(p, r, dy, **hyper),
        params,
        x,
        name="depthwise conv op",
    )
    assert report.ok


GEOMETRIES = [  # (spatial, kernel, stride, dilation, padding, groups)
    ((11,), (3,), 1, 1, "SAME", 1),
    ((11,), (3,), 2, 2, "VALID", 2),
    ((12,), (4,), 3, 1, ((2, 0),), 1),
    ((9, 8), (3, 2), 2, 1, "SAME", 2),
    ((9, 8), (3, 3), (1, 2), (2, 1), 1, 1),
    ((10, 7), (2, 3), 3, 1, ((1, 3), (0, 2)), 2),
]


@pytest.mark.parametrize("spatial, kernel, stride, dilation, padding, groups", GEOMETRIES)
@pytest.mark.parametrize("grads", [conv.grads_by_taps, conv.grads_by_convs])
def test_both_backward_formulations_equal_vjp(grads, spatial, kernel, stride, dilation, padding,
                                              groups):  # fmt: skip
    """By taps (CPU, large convolutions) and by convolutions (elsewhere): each against jax.vjp."""
    params = conv.conv_init(jax.random.key(0), 4, 6, kernel, groups=groups)
    x = jax.random.normal(jax.random.key(1), (3, *spatial, 4))
    hyper = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    y, vjp = jax.vjp(lambda W, x: conv.conv_forward({"W": W}, x, **hyper)[0], params["W"], x)
    dy = jax.random.normal(jax.random.key(2), y.shape)
    ref_W, ref_x = vjp(dy)
    nd = len(spatial)
    _, _, s, d, pads = conv._resolve(
        params["W"], x, stride, conv.normalize_padding("c", padding, nd), dilation
    )
    for fn in (grads, jax.jit(grads, static_argnames=("stride", "dilation", "pads", "groups"))):
        dW, dx = fn(x, params["W"], dy, stride=s, dilation=d, pads=pads, groups=groups)
        np.testing.assert_allclose(dW, ref_W, rtol=1e-11, atol=1e-11 * np.abs(ref_W).max())
        np.testing.assert_allclose(dx, ref_x, rtol=1e-11, atol=1e-11 * np.abs(ref_x).max())


def test_large_convolution_goes_by_taps_on_cpu_and_checks(monkeypatch):
    """Above TAPS_MIN_WORK the layer's backward runs `grads_by_taps` on CPU (here forced by a
    threshold of 0, and observed by counting calls); the whole layer still checks."""
    calls = []
    original = conv.grads_by_taps
    monkeypatch.setattr(conv, "TAPS_MIN_WORK", 0)
    monkeypatch.setattr(conv, "grads_by_taps", lambda *a, **k: calls.append(1) or original(*a, **k))
    layer = jaxbp.Conv2D(5, 3, stride=2, padding="SAME", groups=1)
    report = check.check_layer(layer, (7, 6, 2), batch=2)
    assert report.ok and report.max_rel_err["jax.vjp"] <= 1e-12
    assert calls, "grads_by_taps was not used"


def test_padding_forms_agree():
    x = jax.random.normal(jax.random.key(0), (1, 6, 5, 2))
    _, params, _ = jaxbp.Conv2D(3, 3, padding=1).init(jax.random.key(1), (6, 5, 2))
    outs = [
        jaxbp.Conv2D(3, 3, padding=p).forward(params, (), x)[0]
        for p in (1, (1, 1), ((1, 1), (1, 1)), "SAME")
    ]
    for y in outs[1:]:
        np.testing.assert_array_equal(y, outs[0])


def test_same_padding_output_size():
    for n, s in [(9, 2), (10, 3), (7, 1)]:
        out, _, _ = jaxbp.Conv1D(2, 4, stride=s, padding="same").init(jax.random.key(0), (n, 1))
        assert out == (-(-n // s), 2)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: jaxbp.Conv1D(4, 3, stride=0), "stride must be a positive int"),
        (lambda: jaxbp.Conv2D(4, (3, 3, 3)), "kernel_size must be an int or 2 ints"),
        (lambda: jaxbp.Conv1D(4, 3, padding="FULL"), "padding must be"),
        (lambda: jaxbp.Conv1D(4, 3, padding=-1), "non-negative"),
        (lambda: jaxbp.Conv1D(5, 3, groups=2), "divisible by groups"),
        (lambda: jaxbp.Conv1D(0, 3), "features must be a positive int"),
    ],
)
def test_bad_hyperparameters(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


def test_kernel_larger_than_padded_input():
    with pytest.raises(ValueError, match=r"Conv1D\(4, 5\).*larger than the padded input"):
        jaxbp.Conv1D(4, 5, padding=1).init(jax.random.key(0), (2, 3))
    with pytest.raises(ValueError, match=r"span \(5,\) with dilation \(2,\)"):
        jaxbp.Conv1D(4, 3, dilation=2).init(jax.random.key(0), (4, 3))


def test_input_errors_name_layer_and_shapes():
    layer = jaxbp.Conv2D(4, 3)
    _, params, _ = layer.init(jax.random.key(0), (5, 5, 3))
    with pytest.raises(ValueError, match=r"Conv2D\(4, 3\).*3 channels.*got \(2, 5, 5, 2\)"):
        layer.forward(params, (), jnp.ones((2, 5, 5, 2)))
    with pytest.raises(ValueError, match=r"got \(2, 5, 3\)"):
        layer.forward(params, (), jnp.ones((2, 5, 3)))
    with pytest.raises(ValueError, match=r"rank 3 without the batch axis, got shape \(5, 3\)"):
        layer.init(jax.random.key(0), (5, 3))
    with pytest.raises(ValueError, match="groups"):
        jaxbp.Conv1D(4, 3, groups=2).init(jax.random.key(0), (5, 3))
    with pytest.raises(TypeError, match="floating-point"):
        layer.forward(params, (), jnp.ones((2, 5, 5, 3), jnp.int32))
    with pytest.raises(ValueError, match="larger than the padded input"):
        layer.forward(params, (), jnp.ones((2, 2, 5, 3)))


def test_mixed_precision_keeps_each_dtype():
    """float32 data with float64 params (x64 on) promotes like x @ W; grads keep their dtypes."""
    layer = jaxbp.Conv1D(3, 2)
    _, params, _ = layer.init(jax.random.key(0), (5, 2))
    x = jnp.ones((2, 5, 2), jnp.float32)
    y, res, _ = layer.forward(params, (), x)
    dparams, dx = layer.backward(params, res, jnp.ones_like(y))
    assert y.dtype == jnp.float64 and dx.dtype == jnp.float32
    assert dparams["W"].dtype == dparams["b"].dtype == jnp.float64
