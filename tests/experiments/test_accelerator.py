"""The accelerator command at the tiny size on the CPU, so that it cannot rot."""

import json

from experiments import accelerator


def test_tiny_run_names_the_device_and_checks_both_dtypes(tmp_path):
    accelerator.main(["--tiny", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "accelerator.json").read_text())

    device = saved["device"]
    assert device["backend"] == "cpu" and device["accelerator"] is False
    assert device["device_kind"] and device["devices"]
    assert set(saved["check_table"]) == {"float32", "bfloat16"}
    for dtype, table in saved["check_table"].items():
        assert table["failed"] == 0, (dtype, table["rows"])
        assert {r["case"] for r in table["rows"]} and len(table["rows"]) == 3
    bf16 = saved["check_table"]["bfloat16"]["rows"]
    assert all(r["autodiff_rel_err"] is not None for r in bf16)  # judged against jax.vjp's error
    ratios = saved["bench"]["ratios"]
    assert any(k.startswith("attention") for k in ratios)
    assert any(k.startswith("gpt step") for k in ratios)
    assert saved["backprop_cost"]["manual_over_autodiff"]
    assert (tmp_path / "accelerator_backprop_cost" / "backprop_cost.json").exists()
    assert saved["report"]["status"] == "partial"  # a CPU is not an accelerator
