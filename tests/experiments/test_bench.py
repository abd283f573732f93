"""`make bench` at the tiny size: every workload runs once, the JSON has its keys, and the
comparison with a baseline flags every ratio that moved by more than 10 %."""

import doctest
import json
import math

from experiments import bench, timing

DENSE_TIME = "dense 12-16-16-10, batch 8: time manual / autodiff"  # the tiny dense row


def test_timer_interleaves_and_takes_ratios_per_round():
    calls = []
    methods = {name: (lambda name=name: calls.append(name)) for name in "ab"}
    times = timing.interleaved_times(methods, rounds=4, repeat=3, pause=0)
    assert calls.count("a") == calls.count("b") == 2 + 4 * 3  # compile + warm-up, then rounds
    assert len(times.per_round["a"]) == 4
    made_up = timing.Times({}, {"a": [1.0, 2.0, 10.0], "b": [1.0, 1.0, 2.0]})
    assert timing.ratio(made_up, "a", "b") == 2.0  # the median of 1, 2, 5
    assert timing.min_ratio(made_up, "a", "b") == 1.0
    assert timing.ratio(made_up, "a", "missing") is None
    assert doctest.testmod(timing).failed == 0


def test_compare_flags_only_moves_over_ten_percent():
    now = {"a": 1.0, "b": 1.0, "c": 1.0, "new": 1.0}
    before = {"ratios": {"a": 1.05, "b": 1.2, "c": 0.85, "gone": 1.0}}
    moved = bench.compare(now, before)
    assert [m["ratio"] for m in moved] == ["b", "c"]
    assert math.isclose(moved[0]["change"], 1 / 1.2 - 1)
    assert bench.compare(now, None) == []


def test_tiny_run_writes_every_workload_and_flags_a_doctored_baseline(tmp_path):
    baseline = tmp_path / "baseline.json"
    doctored = {DENSE_TIME: 1e6, "a ratio no longer measured": 1.0}
    baseline.write_text(json.dumps({"size": "tiny", "machine": {}, "ratios": doctored}))
    out = tmp_path / "out"
    result = bench.main(["--tiny", "--out", str(out), "--baseline", str(baseline)])

    saved = json.loads((out / "bench.json").read_text())
    assert (out / "bench.png").stat().st_size > 0
    keys = {"size", "config", "workloads", "ratios", "baseline", "moved", "machine", "report"}
    assert keys <= set(saved)
    assert set(saved["workloads"]) == set(bench.WORKLOADS)
    for name, workload in saved["workloads"].items():
        for row in workload["rows"]:
            assert row["ratios"], name
            assert all(v > 0 and math.isfinite(v) for v in row["ratios"].values()), row
            # both sides computed the same gradient (float32)
            assert all(err < 1e-4 for err in row["grad_rel_diff"].values()), row
    assert DENSE_TIME in saved["ratios"]
    assert any(k.startswith("recompute") and "memory √n" in k for k in saved["ratios"])
    assert any(k.startswith("train loop") and "fit / bare loop" in k for k in saved["ratios"])
    assert [m["ratio"] for m in saved["moved"]] == [DENSE_TIME]
    assert saved["moved"][0]["before"] == 1e6
    page = (out / "bench.md").read_text()
    assert f"| {DENSE_TIME} |" in page and "**moved**" in page
    assert page.count("\n| ") == 1 + len(saved["ratios"])  # the header and one row per ratio
    assert result["ratios"] == saved["ratios"]
