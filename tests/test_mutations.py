"""Mutation tests: a backward changed on purpose must make the registry fail.

Each mutant negates gradients a backward returns (initial states, inputs, parameter leaves). The
registry's own test (tests/test_registry.py::test_case, at the draw hypothesis gives it) must
fail on the state-gradient mutants of the recurrent ops, and a check of a layer whose backward
negates everything must mark every leaf it compares as failed — so no returned gradient goes
unchecked, the optional dict inputs ({"x", "mask", "h0", "c0"}) included.
"""

import importlib.util
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

from jaxbp import check
from jaxbp.cases import CASES, run_case
from jaxbp.layers import recurrent

CASE = {c.name: c for c in CASES}


# The first draw of tests/test_registry.py::test_case (seed 0, batch 1).
REGISTRY_DRAW = dict(seed=0, batch=1)


def _registry_test_case():
    path = Path(__file__).parent / "test_registry.py"
    spec = importlib.util.spec_from_file_location("registry_under_mutation", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.check_case


def _negating(op, position):
    """`op` with its `position`-th return value negated."""

    def mutant(*args, **kwargs):
        out = list(op(*args, **kwargs))
        out[position] = -out[position]
        return tuple(out)

    return mutant


@pytest.mark.parametrize(
    "op, position, case",
    [
        ("rnn_backward", 2, "RNN(tanh)+mask+h0"),  # ∂L/∂h₀, the audit's mutant
        ("rnn_backward", 2, "RNN(relu)+mask+h0"),
        ("lstm_backward", 2, "LSTM+mask+h0+c0"),  # ∂L/∂h₀
        ("lstm_backward", 3, "bidirectional(LSTM)+mask+h0+c0"),  # ∂L/∂c₀, through the wrapper
        ("gru_backward", 2, "GRU+mask+h0"),
    ],
)
def test_the_registry_fails_when_a_state_gradient_is_negated(monkeypatch, op, position, case):
    # (the unchanged op passes the same test in tests/test_registry.py)
    test_case = _registry_test_case()
    monkeypatch.setattr(recurrent, op, _negating(getattr(recurrent, op), position))
    with pytest.raises(AssertionError, match=r"x\['[hc]0'\].*FAIL"):
        test_case(CASE[case], "f64-jit", REGISTRY_DRAW["seed"])


def _negate_every_gradient(monkeypatch):
    original = check.check_layer

    def check_mutant(layer, *args, **kwargs):
        def backward(params, residuals, dy):
            dparams, dx = layer.backward(params, residuals, dy)
            return jax.tree.map(jnp.negative, dparams), jax.tree.map(jnp.negative, dx)

        return original(layer._replace(backward=backward), *args, **kwargs)

    monkeypatch.setattr(check, "check_layer", check_mutant)


@pytest.mark.parametrize(
    "case, inputs",
    [
        ("RNN(relu)+mask+h0", {"x['x']", "x['h0']"}),
        ("LSTM+mask+h0+c0", {"x['x']", "x['h0']", "x['c0']"}),
        ("GRU+mask+h0", {"x['x']", "x['h0']"}),
        ("bidirectional(LSTM)+mask+h0+c0", {"x['h0'][0]", "x['h0'][1]", "x['c0'][1]"}),
        ("parallel", {"x"}),
    ],
)
def test_every_returned_gradient_is_compared_and_caught(monkeypatch, case, inputs):
    _negate_every_gradient(monkeypatch)
    report = run_case(
        CASE[case], **REGISTRY_DRAW, dtype=jnp.float64, finite_diff=False, raise_on_fail=False
    )
    compared = {r.leaf for r in report.results}
    assert inputs <= compared and any(leaf.startswith("params") for leaf in compared)
    assert not report.untested, str(report)
    assert all(not r.ok for r in report.results), str(report)
