"""The checker itself: it passes right backwards, catches wrong ones, and says where."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxbp
from jaxbp import check


def _square_layer(factor=2.0):
    """y = s ⊙ x²; the right backward has factor 2."""

    def init(key, in_shape):
        return in_shape, {"s": jnp.linspace(0.5, 1.5, in_shape[-1])}, ()

    def forward(params, state, x, *, key=None, train=False):
        return params["s"] * x**2, (x,), state

    def backward(params, residuals, dy):
        (x,) = residuals
        return {"s": (dy * x**2).sum(0)}, factor * params["s"] * x * dy

    return jaxbp.Layer(init, forward, backward, f"Square(factor={factor})")


def test_right_backward_passes():
    report = check.check_layer(_square_layer(), (4,))
    assert report.ok
    refs = {(r.leaf, r.reference) for r in report.results}
    assert refs == {
        ("params['s']", "jax.vjp"),
        ("params['s']", "finite diff"),
        ("x", "jax.vjp"),
        ("x", "finite diff"),
    }


def test_wrong_backward_is_caught_with_leaf_and_values():
    with pytest.raises(check.GradientCheckError) as err:
        check.check_layer(_square_layer(factor=3.0), (4,))
    report = err.value.report
    failing = [r for r in report.results if not r.ok]
    assert {r.leaf for r in failing} == {"x"}
    worst = failing[0]
    assert worst.manual == pytest.approx(1.5 * worst.expected)  # factor 3 instead of 2
    text = str(err.value)
    assert "FAILED" in text and "manual" in text and "reference" in text and "<-- FAIL" in text


def test_float32_check_passes_and_keeps_dtype():
    report = check.check_layer(_square_layer(), (3,), dtype=jnp.float32, jit=True)
    assert report.ok and report.dtype == "float32"


def test_dtype_drift_is_reported():
    layer = _square_layer()

    def backward(params, residuals, dy):
        dp, dx = layer.backward(params, residuals, dy)
        return {"s": dp["s"].astype(jnp.float32)}, dx

    report = check.check_layer(layer._replace(backward=backward), (3,), raise_on_fail=False)
    assert not report.ok and any("dtype" in p for p in report.problems)


def test_check_ops_on_op_pairs():
    import jax

    from jaxbp.layers import dense

    params = dense.dense_init(jax.random.key(1), 3, 2)
    assert check.check_ops(
        dense.dense_forward, dense.dense_backward, params, np.ones((4, 3)), name="dense"
    ).ok


def test_pytest_helper_raises_assertion_error():
    check.assert_layer_correct(_square_layer(), (3,))
    with pytest.raises(AssertionError):
        check.assert_layer_correct(_square_layer(factor=2.5), (3,))


def test_cli_prints_table_and_exit_code(capsys):
    from jaxbp.cases.__main__ import main

    assert main(["-k", "softplus", "--draws", "2"]) == 0
    out = capsys.readouterr().out
    assert "Softplus" in out and "1 passed, 0 failed" in out and "2 draw(s)" in out


def _fails_at_seed(bad_seed):
    """A case whose draw at `bad_seed` has a wrong backward (factor 3), right elsewhere."""
    from jaxbp.cases.base import layer_case

    def build(rng):
        # the draw's rng is seeded by the seed: its first integer tells the seeds apart
        bad = int(rng.integers(1000)) == int(np.random.default_rng(bad_seed).integers(1000))
        return _square_layer(3.0 if bad else 2.0), (2,)

    return layer_case("broken-square", build)


def test_cli_prints_the_seed_of_a_failing_draw_and_replays_it(monkeypatch, capsys):
    from jaxbp.cases import __main__ as cli

    monkeypatch.setattr(cli, "CASES", [_fails_at_seed(7)])
    assert cli.main(["--draws", "5", "--seed", "5"]) == 1  # seeds 5..9
    out = capsys.readouterr().out
    assert "FAIL" in out and "draw: seed 7, batch 3, at x (3, 2)" in out
    assert "replay: python -m jaxbp.cases --case 'broken-square' --seed 7 --draws 1" in out
    assert cli.main(["--case", "broken-square", "--seed", "7", "--draws", "1"]) == 1
    assert cli.main(["--seed", "5", "--draws", "2"]) == 0  # seeds 5, 6 pass


def test_check_imports_nothing_from_the_registry():
    import ast
    from pathlib import Path

    tree = ast.parse(Path(check.__file__).read_text())
    imported = [
        node.module if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    ]
    assert not [m for m in imported if m and m.startswith("jaxbp.cases")]


# ----------------------------------------------------------------------- half precision


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_half_precision_is_judged_against_the_float64_truth(dtype):
    report = check.check_layer(jaxbp.Dense(4), (3,), dtype=dtype, jit=True)
    assert report.ok and report.dtype == str(jnp.dtype(dtype))
    assert {r.reference for r in report.results} == {"float64"}
    ulp = float(jnp.finfo(dtype).eps)
    for r in report.results:
        assert r.autodiff_err is not None and r.tol == 2 * r.autodiff_err + check.HALF_ULPS * ulp
    assert any("finite differences skipped" in n for n in report.notes)
    text = str(report)
    assert "vjp rel err" in text and "note: finite differences skipped" in text


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_half_precision_catches_a_wrong_backward(dtype):
    with pytest.raises(check.GradientCheckError) as err:
        check.check_layer(_square_layer(factor=2.2), (6,), batch=8, dtype=dtype)
    assert {r.leaf for r in err.value.report.results if not r.ok} == {"x"}


def test_float32_finite_differences_take_their_step_from_the_dtype():
    report = check.check_layer(_square_layer(), (3,), dtype=jnp.float32)
    fd = [r for r in report.results if r.reference == "finite diff"]
    assert report.ok and fd and all(r.tol == check.F32_FD_RTOL for r in fd)


@pytest.mark.parametrize("name", ["Dense", "BatchNorm(train)", "GRU"])
@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_half_precision_without_jit_on_a_sample_of_the_registry(name, dtype):
    from jaxbp.cases import CASES, run_case

    (case,) = [c for c in CASES if c.name == name]
    report = run_case(case, seed=3, batch=4, dtype=dtype, jit=False)
    assert report.ok and report.results, str(report)


# ---------------------------------------------------------------- pytree inputs and targets


def _graph_batch():
    from jaxbp import layers

    graphs = [
        (np.arange(6.0).reshape(3, 2) / 6, [[0, 1], [1, 2], [2, 0]]),
        (np.ones((2, 2)), [[0, 1]]),
    ]
    return layers.batch_graphs(graphs, np.float64)


def test_check_model_takes_a_graph_dict_input():
    model = jaxbp.serial(jaxbp.GCN(3), jaxbp.GraphReadout(), jaxbp.Dense(2))
    y = np.array([[0.5, -1.0], [1.0, 0.0]])
    report = check.check_model(model, jaxbp.losses.mse(), _graph_batch(), y, in_shape=(2,))
    assert report.ok and "x['edges'] (4, 2)" in report.inputs
    with pytest.raises(TypeError, match=r"x is a dict .*pass in_shape="):
        check.check_model(model, jaxbp.losses.mse(), _graph_batch(), y)


def test_check_model_takes_tuple_targets_and_refuses_what_is_not_an_array_tree():
    model = jaxbp.parallel(jaxbp.Dense(3), jaxbp.Dense(1))
    loss = jaxbp.losses.multi_task(jaxbp.losses.softmax_cross_entropy(), jaxbp.losses.mse())
    x = np.linspace(-1, 1, 8).reshape(4, 2)
    y = (np.array([0, 2, 1, 0]), np.ones((4, 1)))
    assert check.check_model(model, loss, x, y).ok
    with pytest.raises(TypeError, match=r"y must be an array, or a dict / tuple / list"):
        check.check_model(model, loss, x, (y[0], "ones"))


# ------------------------------------------------------------------ which layer is wrong


def _off_by(layer, factor=1.01):
    """`layer` whose backward returns every gradient 1 % too large."""

    def backward(params, residuals, dy):
        dparams, dx = layer.backward(params, residuals, dy)
        scale = lambda g: g * factor  # noqa: E731
        return jax.tree.map(scale, dparams), jax.tree.map(scale, dx)

    return layer._replace(backward=backward)


def _named_culprit(model, loss, x, y):
    with pytest.raises(check.GradientCheckError) as err:
        check.check_model(model, loss, x, y, finite_diff=False)
    report = err.value.report
    assert report.culprit_report is not None and not report.culprit_report.ok
    assert f"first wrong layer: {report.culprit}" in str(report)
    return report.culprit


def test_the_wrong_layer_of_a_serial_mlp_is_named():
    layers = [
        jaxbp.Dense(5),
        jaxbp.Tanh(),
        jaxbp.Dense(4),
        jaxbp.Sigmoid(),
        jaxbp.Dense(3),
        jaxbp.Elu(),
    ]
    x, y = np.linspace(-1, 1, 12).reshape(4, 3), np.ones((4, 3))
    for i in (0, 3, 4):
        model = jaxbp.serial(*layers[:i], _off_by(layers[i]), *layers[i + 1 :])
        assert _named_culprit(model, jaxbp.losses.mse(), x, y) == f"serial[{i}] ({layers[i].name})"


def test_the_wrong_layer_of_a_residual_transformer_stack_is_named():
    def block(inner):
        return jaxbp.residual(jaxbp.serial(jaxbp.LayerNorm(), inner))

    attention, ff = jaxbp.MultiHeadAttention(2), jaxbp.FeedForward(8)
    stack = [block(attention), block(ff), block(_off_by(attention)), block(ff)]
    model = jaxbp.serial(*stack, jaxbp.LayerNorm(), jaxbp.Dense(2))
    x = np.random.default_rng(0).normal(size=(2, 3, 4))
    culprit = _named_culprit(model, jaxbp.losses.mse(), x, np.zeros((2, 3, 2)))
    assert culprit == f"serial[2].residual[0].serial[1] ({attention.name})"


def test_the_wrong_layer_of_a_recurrent_model_is_named():
    lstm, gru = jaxbp.LSTM(3), jaxbp.GRU(3)
    layers = [
        jaxbp.Dense(4),
        lstm,
        jaxbp.bidirectional(_off_by(gru)),
        jaxbp.RNN(3),
        jaxbp.Tanh(),
        jaxbp.Dense(1),
    ]
    x = np.random.default_rng(1).normal(size=(2, 4, 2))
    culprit = _named_culprit(jaxbp.serial(*layers), jaxbp.losses.mse(), x, np.zeros((2, 4, 1)))
    assert culprit == f"serial[2].bidirectional[0] ({gru.name})"


def test_a_wrong_combinator_or_loss_is_named_when_its_parts_are_right():
    inner = jaxbp.serial(jaxbp.Dense(3), jaxbp.Tanh())
    x, y = np.linspace(-1, 1, 8).reshape(4, 2), np.ones((4, 3))
    wrong_skip = _off_by(jaxbp.residual(inner))
    culprit = _named_culprit(jaxbp.serial(jaxbp.Dense(3), wrong_skip), jaxbp.losses.mse(), x, y)
    assert culprit == f"serial[1] ({wrong_skip.name})"
    mse = jaxbp.losses.mse()
    wrong_mse = mse._replace(backward=lambda res, g=1.0: 1.01 * mse.backward(res, g))
    assert _named_culprit(inner, wrong_mse, x, y) == f"the loss ({mse.name})"


def test_check_layer_on_a_combinator_names_the_wrong_child():
    net = jaxbp.serial(jaxbp.Dense(3), jaxbp.parallel(jaxbp.Dense(2), _off_by(jaxbp.Dense(1))))
    report = check.check_layer(net, (2,), raise_on_fail=False, finite_diff=False)
    assert not report.ok and report.culprit == "serial[1].parallel[1] (Dense(1))"
