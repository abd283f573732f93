"""Every registered layer, loss and model against jax.vjp and finite differences, at three draws.

A draw is one seed: it fixes the case's shapes, hyperparameters, values and batch size
(`jaxbp.cases.draw_batch(seed)`: 1, 2, 5 for seeds 0, 1, 2), so every run checks the same
draws and any failure replays alone (`python -m jaxbp.cases --case NAME --seed S --draws 1`,
which also runs deep: `--draws 100` checks every mode at 100 draws).

The modes check every case at draws of their own, so that a case is seen at three shapes and
batch sizes for the price of one draw per mode:
* seed 0 (batch 1, the simplest draw): float64 without jit, against jax.vjp (≤ 1e-10) and
  finite differences, and one half precision under jit (manual error vs the float64 truth ≤
  2 × jax.vjp's + 2 ulps): bfloat16 and float16 alternate along the registry, so that both are
  covered at half the compile time (the CLI runs both at every draw; half precision outside jit
  runs in tests/test_check.py on a sample). Half precision runs without x64, as the CLI does:
  under x64 the initializers draw other values, and the suite once passed two draws that
  failed `make demo`'s table (GPT in bfloat16, the GAN discriminator step in float16);
* seed 1 (batch 2): float64 under jit;
* seed 2 (batch 5): float32 under jit.
(Half precision stays at seed 0, the CLI's first draw. Every block of the GPT case passes
alone, but the whole network in bfloat16 sits near the half rule's edge: under x64 its draws 3
and 5 fail on a few leaves, accumulated rounding; without x64, as run here, `python -m
jaxbp.cases --case 'GPT (2 layers, tied head)' --draws 8` passes seeds 0-7.)

A case must exercise every gradient at each draw: a leaf whose reference gradient is zero
everywhere (all relu units dead) passes whatever the backward returns, which is how a negated
∂L/∂h₀ of the vanilla RNN once passed the suite. `report.untested` must be empty in the float32
and float64 modes (in half precision a small gradient may round to zero); tests/test_mutations.py
shows that negated gradients are caught.
"""

import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbp.cases import CASES, run_case

MODES = {
    "f64": dict(dtype=jnp.float64, jit=False, finite_diff=True),
    "f64-jit": dict(dtype=jnp.float64, jit=True, finite_diff=False),
    "f32-jit": dict(dtype=jnp.float32, jit=True, finite_diff=False),
    "bf16-jit": dict(dtype=jnp.bfloat16, jit=True, finite_diff=False),
    "f16-jit": dict(dtype=jnp.float16, jit=True, finite_diff=False),
}
SEED = {"f64": 0, "f64-jit": 1, "f32-jit": 2, "bf16-jit": 0, "f16-jit": 0}  # each mode's draw
HALF_MODES = ("bf16-jit", "f16-jit")

PAIRS = [
    *((case, mode) for mode in ("f64", "f64-jit", "f32-jit") for case in CASES),
    *((case, HALF_MODES[i % 2]) for i, case in enumerate(CASES)),
]


def check_case(case, mode, seed):
    """The registry's assertions for one case, mode and draw (tests/test_mutations.py reuses
    them). Half precision runs without x64, as `python -m jaxbp.cases` (make demo's table)
    and a half-precision user do: the initializers draw other values under x64."""
    with jax.enable_x64(False) if mode in HALF_MODES else contextlib.nullcontext():
        report = run_case(case, seed=seed, **MODES[mode])
    assert report.ok, str(report)
    assert report.results, "a check that compared nothing"
    assert np.isfinite(list(report.max_rel_err.values())).all(), str(report)
    if mode not in HALF_MODES:
        unexpected = set(report.untested) - set(case.zero_leaves)
        assert not unexpected, f"a zero reference gradient checks nothing:\n{report}"


@pytest.mark.parametrize(
    ("case", "mode"), PAIRS, ids=[f"{case.name}-{mode}-seed{SEED[mode]}" for case, mode in PAIRS]
)
def test_case(case, mode):
    check_case(case, mode, SEED[mode])
