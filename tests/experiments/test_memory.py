"""The memory experiment at a tiny size: every variant measured, formulas met, report built."""

import json

import pytest

from experiments import common
from experiments import memory as mem


@pytest.mark.slow  # `make demo` runs it at --quick; CI's time goes to the registry
def test_memory_experiment_pieces(tmp_path):
    proof = mem.isolation_proof(8, 32, 64, 2)
    t = proof["temp_MiB"]
    assert t["jaxbp every(k), isolation=cond"] < t["jaxbp store-all"]
    assert t["autodiff + jax.checkpoint, barriers kept"] < t["autodiff + jax.checkpoint"]
    mlp = [mem.mlp_depth(n, 16, 8, 1, 0) for n in (4, 9)]
    lstm = [mem.lstm_T(T, 4, 2, 3, 1, 0) for T in (9, 16)]
    for r in mlp:
        for name in mem.SCHEDULES:
            row = r["variants"][name]
            assert row["extra_forward"] == row["formula_extra_forward"], name
    s = mem.summarize(mlp, lstm)
    assert s["extra_forward_matches_formulas"]
    for v in s["versus_best_jax_checkpoint"]:  # one baseline per depth, named
        assert v["best_jax_checkpoint"].startswith("jax.checkpoint") and v["sqrt_memory_ratio"] > 0
    for r in mlp:  # the default schedule keeps no more than √n, with the same isolation
        v = r["variants"]
        assert v["min_peak"]["temp_MiB"] <= v["√n"]["temp_MiB"]
        assert v[mem.MIN_PEAK_FLAG]["temp_MiB"] <= v[mem.SQRT_FLAG]["temp_MiB"]
    heads = mem.headline(s, 9, True)
    assert any(h["metric"].startswith("min_peak (the default; cond") for h in heads)
    figs = mem.figures(tmp_path, mlp, lstm)
    assert all((tmp_path / f).exists() for f in figs)
    common.save_json(tmp_path / "m.json", {"report": {"headline": heads}})
    assert json.loads((tmp_path / "m.json").read_text())["report"]["headline"]
