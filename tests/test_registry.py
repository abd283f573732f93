"""Every registered layer, loss and model against jax.vjp and finite differences.

Per case: float64 without jit (vjp ≤ 1e-10 and finite differences), float64 under jit,
float32 under jit, and one half precision under jit (manual error vs the float64 truth
≤ 2 × jax.vjp's + 2 ulps): bfloat16 and float16 alternate along the registry, so that both
dtypes are covered at half the compile time; `python -m jaxbp.cases` runs both on every case,
and half precision outside jit runs in tests/test_check.py on a sample. Shapes,
hyperparameters and the batch size (1 included) come from hypothesis.

With `derandomize=True` and one example, hypothesis draws the same, simplest example every run
(seed 0, batch 1): each case is checked at that one draw here (the derandomized draw is the
same for every mode). So a case must exercise every gradient at that draw: a leaf whose reference
gradient is zero everywhere (all relu units dead) passes whatever the backward returns, which
is how a negated ∂L/∂h₀ of the vanilla RNN once passed the suite. `report.untested` must be
empty in the float32 and float64 modes (in half precision a small gradient may round to zero);
tests/test_mutations.py shows that negated gradients are caught.
"""

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jaxbp import check
from jaxbp.cases import CASES

MODES = {
    "f64": dict(dtype=jnp.float64, jit=False, finite_diff=True),
    "f64-jit": dict(dtype=jnp.float64, jit=True, finite_diff=False),
    "f32-jit": dict(dtype=jnp.float32, jit=True, finite_diff=False),
    "bf16-jit": dict(dtype=jnp.bfloat16, jit=True, finite_diff=False),
    "f16-jit": dict(dtype=jnp.float16, jit=True, finite_diff=False),
}

SETTINGS = settings(
    max_examples=1,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


HALF_MODES = ("bf16-jit", "f16-jit")
PAIRS = [
    *((case, mode) for mode in MODES if mode not in HALF_MODES for case in CASES),
    *((case, HALF_MODES[i % 2]) for i, case in enumerate(CASES)),
]


@pytest.mark.parametrize(
    ("case", "mode"), PAIRS, ids=[f"{case.name}-{mode}" for case, mode in PAIRS]
)
@SETTINGS
@given(seed=st.integers(0, 2**31 - 1), batch=st.sampled_from([1, 2, 5]))
def test_case(case, mode, seed, batch):
    report = check.run_case(case, seed=seed, batch=batch, **MODES[mode])
    assert report.ok, str(report)
    assert report.results, "a check that compared nothing"
    assert np.isfinite(list(report.max_rel_err.values())).all(), str(report)
    if mode not in HALF_MODES:
        unexpected = set(report.untested) - set(case.zero_leaves)
        assert not unexpected, f"a zero reference gradient checks nothing:\n{report}"
