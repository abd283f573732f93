"""The mixed-precision experiment runs end to end at a tiny size and writes its report."""

import json

import pytest

from experiments import mixed_precision


@pytest.mark.slow  # `make demo` runs it at --quick; CI's time goes to the registry
def test_mixed_precision_tiny(tmp_path):
    args = ["--tasks", "digits MLP", "--mlp-steps", "20", "--seeds", "1", "--out", str(tmp_path)]
    mixed_precision.main(args)
    saved = json.loads((tmp_path / "mixed_precision.json").read_text())
    report = saved["report"]
    assert report["status"] in {"ok", "partial"} and (tmp_path / report["figures"][0]).exists()
    assert all(h["ok"] in (True, False, None) for h in report["headline"])
    rows = saved["table"]["digits MLP"]
    assert set(rows) == set(mixed_precision.PRECISIONS)
    assert rows["float32"]["step_time_vs_float32"] == 1.0
    flow = saved["underflow_small_loss"]["digits MLP"]
    assert all(0 <= v["unscaled"] <= 1 and 0 <= v["scaled"] <= 1 for v in flow.values())
    # loss × 2⁻¹⁶: unscaled float16 gradients round to zero, loss scaling recovers them
    assert max(v["unscaled"] for v in flow.values()) > 0.5
    assert max(v["scaled"] for v in flow.values()) < 0.05
    assert set(saved["small_loss"]["digits MLP"]) == set(mixed_precision.SMALL_RUNS)
