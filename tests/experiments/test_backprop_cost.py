import json
import sys

import numpy as np
import pytest

from experiments import backprop_cost as bc


def test_torch_is_optional(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
    prob = bc.mlp_problem((8, 8, 3), 4, True)
    assert prob.torch_step is None and prob.torch_sgd is None
    assert prob.numpy_step is not None


def test_flop_counts():
    prob = bc.mlp_problem((10, 20, 30), 4, False)
    fwd = 2 * 4 * (10 * 20 + 20 * 30)
    assert prob.forward_flops == fwd
    assert prob.step_flops == 3 * fwd - 2 * 4 * 10 * 20  # no ∂L/∂x for the input


def test_power_law():
    xs = np.array([64, 128, 256, 512])
    assert bc.power_law(xs, 3e-9 * xs**2.0) == pytest.approx(2.0)


def test_tiny_run(tmp_path):
    result = bc.main(["--tiny", "--out", str(tmp_path)])
    rows = result["rows"]
    assert [r["name"] for r in rows] == [w.name for w in bc.workloads("tiny")]
    for r in rows:
        assert all(t > 0 for t in r["seconds"].values())
        assert {"forward", "manual", "autodiff", "numpy", "matmul"} <= set(r["seconds"])
        # what XLA compiled for the manual backward is no more work than autodiff's
        man, ad = r["compiled"]["manual"], r["compiled"]["autodiff"]
        assert man["flops"] <= 1.01 * ad["flops"]
        assert man["temp_bytes"] <= 1.05 * ad["temp_bytes"] + 1024
        # the NumPy and PyTorch references compute jaxbp's gradients (classifier and regression)
        assert r["reference_max_rel_error"]["numpy"] < 1e-4
        assert r["reference_max_rel_error"].get("torch", 0.0) < 1e-4
    sgd = rows[0]["sgd_seconds_per_step"]
    assert {"manual_sgd_K1", "manual_sgd_K4", "numpy_sgd"} <= set(sgd)
    assert {"width_exponent_all", "depth_exponent"} <= set(result["fits"]["8"])
    assert all(c["measured"] is not None for c in result["targets"])
    saved = json.loads((tmp_path / "backprop_cost.json").read_text())
    assert saved["machine"]["shared"] is True
    assert (tmp_path / "backprop_cost_scaling.png").stat().st_size > 0
    assert (tmp_path / "backprop_cost_ratios.png").stat().st_size > 0
