"""The checker itself: it passes right backwards, catches wrong ones, and says where."""

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
    assert check.main(["-k", "softplus"]) == 0
    out = capsys.readouterr().out
    assert "Softplus" in out and "1 passed, 0 failed" in out


def test_cli_exits_nonzero_on_failure(monkeypatch, capsys):
    from jaxbp import cases
    from jaxbp.cases.base import layer_case

    broken = layer_case("broken-square", lambda rng: (_square_layer(3.0), (2,)))
    monkeypatch.setattr(cases, "CASES", [broken])
    assert check.main([]) == 1
    assert "FAIL" in capsys.readouterr().out


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
    from jaxbp.cases import CASES

    (case,) = [c for c in CASES if c.name == name]
    report = check.run_case(case, seed=3, batch=4, dtype=dtype, jit=False)
    assert report.ok and report.results, str(report)
