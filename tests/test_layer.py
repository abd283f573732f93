"""The engine: Layer, serial, residual, parallel, and Dense's validation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxbp


def test_serial_infers_shapes_and_walks_back_in_reverse(key):
    net = jaxbp.serial(jaxbp.Dense(5), jaxbp.Relu(), jaxbp.Dense(2))
    out_shape, params, state = net.init(key, (3,))
    assert out_shape == (2,)
    assert params[0]["W"].shape == (3, 5) and params[2]["W"].shape == (5, 2)
    assert state == ((), (), ())
    x = jax.random.normal(key, (4, 3))
    y, res, _ = net.forward(params, state, x)
    dparams, dx = net.backward(params, res, jnp.ones_like(y))
    # by hand: the last layer's weight gradient is aᵀ δ with a = relu(x W1 + b1), δ = 1
    a = jax.nn.relu(x @ params[0]["W"] + params[0]["b"])
    np.testing.assert_allclose(dparams[2]["W"], a.T @ jnp.ones((4, 2)), rtol=1e-12)
    assert dparams[1] == () and dx.shape == x.shape


def test_residual_adds_identity_path(key):
    block = jaxbp.residual(jaxbp.Dense(3, w_init="zeros"))
    _, params, state = block.init(key, (3,))
    x = jnp.arange(6.0).reshape(2, 3)
    y, res, _ = block.forward(params, state, x)
    np.testing.assert_array_equal(y, x)  # f(x) = 0
    dparams, dx = block.backward(params, res, jnp.ones_like(y))
    np.testing.assert_array_equal(dx, jnp.ones_like(x))  # dy + Wᵀ-path with W = 0


def test_parallel_sums_input_gradients(key):
    heads = jaxbp.parallel(jaxbp.Identity(), jaxbp.Identity())
    out_shape, params, state = heads.init(key, (2,))
    assert out_shape == ((2,), (2,))
    y, res, _ = heads.forward(params, state, jnp.ones((1, 2)))
    _, dx = heads.backward(params, res, (jnp.ones((1, 2)), 2 * jnp.ones((1, 2))))
    np.testing.assert_array_equal(dx, 3 * jnp.ones((1, 2)))


def test_serial_rejects_non_layers():
    with pytest.raises(TypeError, match="Relu"):
        jaxbp.serial(jaxbp.Dense(2), jaxbp.Relu)
    with pytest.raises(ValueError, match="at least one"):
        jaxbp.serial()


@pytest.mark.parametrize("combinator", [jaxbp.serial, jaxbp.parallel])
def test_combinators_reject_params_or_state_of_the_wrong_length(key, combinator):
    net = combinator(jaxbp.Dense(2), jaxbp.Tanh())
    _, params, state = net.init(key, (3,))
    x = jnp.ones((1, 3))
    with pytest.raises(ValueError, match=r"state must be a tuple with one entry per layer \(2\)"):
        net.forward(params, (), x)  # a bare () would otherwise run no layer
    with pytest.raises(ValueError, match="params must be a tuple.*got 1 entries"):
        net.forward(params[:1], state, x)
    with pytest.raises(ValueError, match="got dict"):
        net.forward({"W": 1}, state, x)


def test_residual_rejects_shape_change(key):
    with pytest.raises(ValueError, match=r"maps \(3,\) to \(4,\)"):
        jaxbp.residual(jaxbp.Dense(4)).init(key, (3,))


def test_keys_are_split_not_reused(key):
    seen = []

    def init(k, s):
        return s, (), ()

    def forward(p, s, x, *, key=None, train=False):
        seen.append(key)
        return x, (), s

    spy = jaxbp.Layer(init, forward, lambda p, r, dy: ((), dy), "spy")
    net = jaxbp.serial(spy, spy)
    _, params, state = net.init(key, (1,))
    net.forward(params, state, jnp.ones((1, 1)), key=key)
    assert not jnp.array_equal(jax.random.key_data(seen[0]), jax.random.key_data(seen[1]))
    seen.clear()
    net.forward(params, state, jnp.ones((1, 1)))
    assert seen == [None, None]


class TestDenseErrors:
    def test_wrong_rank(self, key):
        layer = jaxbp.Dense(4)
        _, params, state = layer.init(key, (3,))
        with pytest.raises(ValueError, match=r"Dense\(4\).*\(batch, \.\.\., 3\).*\(3,\)"):
            layer.forward(params, state, jnp.ones(3))

    def test_feature_mismatch(self, key):
        layer = jaxbp.Dense(4)
        _, params, state = layer.init(key, (3,))
        with pytest.raises(ValueError, match=r"Dense\(4\).*got \(2, 5\)"):
            layer.forward(params, state, jnp.ones((2, 5)))

    def test_integer_and_complex_inputs(self, key):
        layer = jaxbp.Dense(4)
        _, params, state = layer.init(key, (3,))
        with pytest.raises(TypeError, match=r"Dense\(4\).*int"):
            layer.forward(params, state, jnp.ones((2, 3), jnp.int32))
        with pytest.raises(TypeError, match=r"Dense\(4\).*complex"):
            layer.forward(params, state, jnp.ones((2, 3), jnp.complex64))

    def test_invalid_hyperparameters(self):
        with pytest.raises(ValueError, match="features"):
            jaxbp.Dense(0)
        with pytest.raises(TypeError, match="features"):
            jaxbp.Dense(2.5)
        with pytest.raises(ValueError, match="unknown initializer"):
            jaxbp.Dense(3, w_init="nope")

    def test_scalar_in_shape(self, key):
        with pytest.raises(ValueError, match="rank >= 1"):
            jaxbp.Dense(3).init(key, ())

    def test_errors_also_raise_under_jit(self, key):
        layer = jaxbp.Dense(4)
        _, params, state = layer.init(key, (3,))
        f = jax.jit(lambda p, x: layer.forward(p, state, x)[0])
        with pytest.raises(ValueError, match="Dense"):
            f(params, jnp.ones((2, 5)))


def test_dense_acts_on_last_axis(key):
    layer = jaxbp.Dense(2)
    out_shape, params, state = layer.init(key, (7, 3))
    assert out_shape == (7, 2)
    x = jax.random.normal(key, (4, 7, 3))
    y, res, _ = layer.forward(params, state, x)
    dparams, dx = layer.backward(params, res, jnp.ones_like(y))
    np.testing.assert_allclose(dparams["b"], jnp.full((2,), 28.0))
    assert dx.shape == x.shape


def test_dtype_follows_params_in_float32(key):
    net = jaxbp.serial(jaxbp.Dense(3), jaxbp.Tanh())
    _, params, state = net.init(key, (2,))
    params = jax.tree.map(lambda a: a.astype(jnp.float32), params)
    y, res, _ = net.forward(params, state, jnp.ones((2, 2), jnp.float32))
    dparams, dx = net.backward(params, res, jnp.ones_like(y))
    assert y.dtype == dx.dtype == jnp.float32
    assert all(g.dtype == jnp.float32 for g in jax.tree.leaves(dparams))


# ------------------------------------------- children: what check.locate walks to blame a layer


def test_a_four_field_layer_has_no_children():
    layer = jaxbp.Layer(lambda k, s: (s, (), ()), None, None, "Plain")
    assert layer.children is None and jaxbp.Dense(2).children is None


def _off_by(layer):
    def backward(params, residuals, dy):
        dparams, dx = layer.backward(params, residuals, dy)
        return jax.tree.map(lambda g: 1.01 * g, dparams), jax.tree.map(lambda g: 1.01 * g, dx)

    return layer._replace(backward=backward)


def _graph():
    from jaxbp import layers

    return layers.batch_graphs([(np.linspace(0, 1, 6).reshape(3, 2), [[0, 1], [2, 1]])], float)


COMBINATORS = {  # name -> (network with one wrong Dense, input shape, input, expected path)
    "remat": (lambda d: jaxbp.remat(d), (2,), None, "remat[0]"),
    "remat_sequence": (
        lambda d: jaxbp.remat_sequence(jaxbp.Tanh(), d, jaxbp.Tanh()),
        (2,),
        None,
        "remat_sequence[1]",
    ),
    "bidirectional": (
        lambda d: jaxbp.bidirectional(jaxbp.serial(jaxbp.Tanh(), d)),  # per step: no scan
        (3, 2),
        None,
        "bidirectional[0].serial[1]",
    ),
    "node_map": (lambda d: jaxbp.layers.node_map(d), (2,), _graph, "node_map[0]"),
    "data_parallel": (
        lambda d: jaxbp.distributed.data_parallel(jaxbp.serial(jaxbp.Relu(), d)),
        (2,),
        None,
        "data_parallel[0].serial[1]",
    ),
}


@pytest.mark.parametrize("name", COMBINATORS)
def test_every_combinator_lets_the_check_name_its_wrong_child(name):
    from jaxbp import check

    make, in_shape, x, path = COMBINATORS[name]
    dense = jaxbp.Dense(2)
    x = None if x is None else x()
    report = check.check_layer(
        make(_off_by(dense)), in_shape, x=x, batch=2, finite_diff=False, raise_on_fail=False
    )
    assert not report.ok and report.culprit == f"{path} ({dense.name})", str(report)
    right = check.check_layer(make(dense), in_shape, x=x, batch=2, finite_diff=False)
    assert right.ok and not right.culprit
