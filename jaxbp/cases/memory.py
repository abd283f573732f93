"""Registry cases for recomputation (`jaxbp.recompute`): `remat` around layers (dropout and
batch norm in train mode included: the recomputation must draw the same mask and use the same
statistics), `remat_sequence` chains under every schedule, and recurrent layers with BPTT by
segments (`remat_every`). Each is checked like the plain layer it wraps; tests/
test_recompute.py also checks that they match the plain layers bit for bit.
"""

from __future__ import annotations

import jaxbp
from jaxbp import recompute
from jaxbp.cases.base import layer_case, size


def _block(width):
    return jaxbp.residual(jaxbp.serial(jaxbp.Dense(width), jaxbp.Tanh()))


def _remat_dense(rng):
    layer = jaxbp.serial(jaxbp.Dense(size(rng, 1, 6)), jaxbp.Gelu())
    return jaxbp.remat(layer), (size(rng, 1, 6),)


def _remat_dropout(rng):
    layer = jaxbp.serial(jaxbp.Dense(size(rng, 2, 6)), jaxbp.Dropout(0.4), jaxbp.Tanh())
    return jaxbp.remat(layer), (size(rng, 1, 6),), {"train": True}


def _remat_batchnorm(rng):
    """A (time, features) input: batch statistics over batch × 4 values, never one."""
    dense = jaxbp.Dense(size(rng, 2, 5), bias=False)  # a bias before batch norm gets ∂ = 0
    layer = jaxbp.serial(dense, jaxbp.BatchNorm(), jaxbp.Relu())
    return jaxbp.remat(layer), (4, size(rng, 1, 5)), {"train": True}


SCHEDULES = {
    "store_all": recompute.store_all,
    "every(2)": lambda: recompute.every(2),
    "sqrt_n": recompute.sqrt_n,
    "revolve(2)": lambda: recompute.revolve(2),
    "revolve(3)": lambda: recompute.revolve(3),
}


def _chain(schedule):
    def build(rng):
        width = size(rng, 1, 5)
        layers = [_block(width) for _ in range(size(rng, 1, 7))]
        layers.append(jaxbp.Dropout(0.3))
        chain = jaxbp.remat_sequence(*layers, schedule=SCHEDULES[schedule]())
        return chain, (width,), {"train": True}

    return build


def _chain_barrier(rng):
    width = size(rng, 1, 5)
    layers = [_block(width) for _ in range(size(rng, 2, 5))]
    return jaxbp.remat_sequence(*layers, schedule=recompute.every(2), isolation="barrier"), (width,)


CELLS = {
    "RNN": lambda h, seq, k: jaxbp.RNN(h, return_sequences=seq, remat_every=k),
    "LSTM": lambda h, seq, k: jaxbp.LSTM(h, return_sequences=seq, remat_every=k),
    "GRU": lambda h, seq, k: jaxbp.GRU(h, return_sequences=seq, remat_every=k),
}
STATES = {"RNN": ("h0",), "LSTM": ("h0", "c0"), "GRU": ("h0",)}


def _segmented(cell):
    """T in [1, 9] and k in [1, 4]: full segments, a shorter tail, and T < k all occur."""

    def build(rng):
        T, F, H, k = size(rng, 1, 9), size(rng, 1, 4), size(rng, 1, 4), size(rng, 1, 4)
        layer = CELLS[cell](H, bool(rng.integers(0, 2)), k)

        def x(rng, batch):
            inputs = {"x": rng.normal(size=(batch, T, F)), "mask": rng.random((batch, T)) < 0.7}
            inputs.update({s: rng.normal(size=(batch, H)) for s in STATES[cell]})
            return inputs

        return layer, (T, F), {"x": x}

    return build


# Kept few for the test budget: remat with a random key and with batch statistics, a
# segment schedule and the binomial one, two recurrent cells. tests/test_recompute.py covers
# the other schedules, barrier isolation, the RNN and a model bit for bit against the plain ones.
CASES = [
    layer_case("remat(Dense, Dropout, Tanh) train", _remat_dropout),
    layer_case("remat(Dense, BatchNorm, Relu) train", _remat_batchnorm),
    layer_case("remat_sequence[every(2)]", _chain("every(2)")),
    layer_case("remat_sequence[revolve(2)]", _chain("revolve(2)")),
    *(layer_case(f"{c}(remat_every)+mask+states", _segmented(c)) for c in ("LSTM", "GRU")),
]
