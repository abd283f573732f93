"""Registry cases for the recurrent layers: RNN (tanh, relu), LSTM, GRU and bidirectional.

Sizes are random and small: time T in [1, 5] (T = 1 included), features and hidden in [1, 5],
`return_sequences` either way. The "+mask+h0" cases feed the dict input {"x", "mask", "h0"
(, "c0")}: a random bool mask (some steps skipped) and random initial states, whose gradients
are checked too. Every case's gradients must be non-zero somewhere at the registry's draw
(`check.Report.untested` is empty; tests/test_registry.py asserts it): a gradient that is zero
everywhere would pass whatever sign or scale the backward gave it.
"""

from __future__ import annotations

import jaxbp
from jaxbp.cases.base import layer_case, size

CELLS = {
    "RNN(tanh)": lambda h, seq: jaxbp.RNN(h, activation=jaxbp.Tanh, return_sequences=seq),
    # bias 1 keeps the relu units alive: with the zero default, a draw where every unit is dead
    # at every step has all-zero gradients, and the check compares nothing (see check.Report)
    "RNN(relu)": lambda h, seq: jaxbp.RNN(
        h, activation=jaxbp.Relu, return_sequences=seq, b_init="ones"
    ),
    "LSTM": lambda h, seq: jaxbp.LSTM(h, return_sequences=seq),
    "GRU": lambda h, seq: jaxbp.GRU(h, return_sequences=seq),
}
STATE_KEYS = {"RNN(tanh)": ("h0",), "RNN(relu)": ("h0",), "LSTM": ("h0", "c0"), "GRU": ("h0",)}


def _dims(rng):
    return size(rng, 1, 5), size(rng, 1, 5), size(rng, 1, 5)  # T, F, H


def _plain(cell):
    def build(rng):
        T, F, H = _dims(rng)
        return CELLS[cell](H, bool(rng.integers(0, 2))), (T, F)

    return build


def _sequences(rng, batch, T, F):
    return {"x": rng.normal(size=(batch, T, F)), "mask": rng.random((batch, T)) < 0.7}


def _masked(cell):
    def build(rng):
        T, F, H = _dims(rng)

        def x(rng, batch):
            inputs = _sequences(rng, batch, T, F)
            inputs.update({k: rng.normal(size=(batch, H)) for k in STATE_KEYS[cell]})
            return inputs

        return CELLS[cell](H, bool(rng.integers(0, 2))), (T, F), {"x": x}

    return build


def _bidirectional(cell, with_inputs):
    def build(rng):
        T, F, H = _dims(rng)
        layer = jaxbp.bidirectional(CELLS[cell](H, bool(rng.integers(0, 2))))
        if not with_inputs:
            return layer, (T, F)

        def x(rng, batch):
            inputs = _sequences(rng, batch, T, F)
            for k in STATE_KEYS[cell]:
                inputs[k] = (rng.normal(size=(batch, H)), rng.normal(size=(batch, H)))
            return inputs

        return layer, (T, F), {"x": x}

    return build


def _stacked(rng):
    T, F = size(rng, 1, 5), size(rng, 1, 4)
    net = jaxbp.serial(
        jaxbp.bidirectional(jaxbp.GRU(size(rng, 1, 4))),
        jaxbp.LSTM(size(rng, 1, 4), return_sequences=bool(rng.integers(0, 2))),
        jaxbp.Dense(size(rng, 1, 3)),
    )
    return net, (T, F)


# One plain and one masked case per cell kind keeps the registry's run time in check; the
# relu RNN and the bidirectional wrapper around each cell are also covered in
# tests/layers/test_recurrent.py.
CASES = [
    layer_case("RNN(tanh)", _plain("RNN(tanh)")),
    layer_case("RNN(tanh)+mask+h0", _masked("RNN(tanh)")),
    layer_case("RNN(relu)+mask+h0", _masked("RNN(relu)")),
    layer_case("LSTM", _plain("LSTM")),
    layer_case("LSTM+mask+h0+c0", _masked("LSTM")),
    layer_case("GRU", _plain("GRU")),
    layer_case("GRU+mask+h0", _masked("GRU")),
    layer_case("bidirectional(LSTM)+mask+h0+c0", _bidirectional("LSTM", True)),
    layer_case("serial(bidirectional(GRU), LSTM, Dense)", _stacked),
]
