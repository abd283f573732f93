"""The attention benchmark and the char-LM at tiny sizes: they run, write their report, and
measure what they claim."""

import json

import numpy as np
import pytest

from experiments import bench_attention, char_lm


def test_bench_attention_runs_tiny(tmp_path):
    argv = ["--T", "16", "--block", "8", "--repeat", "1", "--gpt-T", "8", "--gpt-batch", "2"]
    argv += ["--gpt-width", "16", "--gpt-depth", "1"]
    result = bench_attention.main(argv + ["--out", str(tmp_path)])
    saved = json.loads((tmp_path / "bench_attention.json").read_text())
    assert saved["report"]["figures"] == ["bench_attention.png"]
    assert (tmp_path / "bench_attention.png").exists()
    assert [(r["T"], r["causal"]) for r in result["rows"]] == [(16, True), (16, False)]
    for row in result["rows"]:
        assert set(row["time_ms"]) == set(bench_attention.attention_methods(8))
        assert max(row["grad_rel_err"].values()) < 1e-4  # every method computes one gradient
        assert row["default_form"] == "whole"
    assert max(result["gpt_step"]["grad_rel_err"].values()) < 1e-4
    heads = {h["metric"]: h for h in result["report"]["headline"]}
    assert heads["blocked / autodiff memory at T = 1024"]["value"] is None  # no T = 1024 here
    assert len([m for m in heads if m.startswith("default form / autodiff")]) == 2


def test_fitted_exponent_reads_the_power():
    Ts = np.array([128, 256, 512])
    assert abs(bench_attention.fitted_exponent(Ts, 3.0 * Ts**2) - 2) < 1e-12


def test_text_split_and_windows():
    text, vocab, ids = char_lm.load_text()
    assert len(text) > 400_000 and len(vocab) == ids.max() + 1
    train, val = char_lm.split(ids)
    assert len(train) == int(0.9 * len(ids)) and len(train) + len(val) == len(ids)
    x, y = char_lm.windows(train, np.random.default_rng(0), (2, 3), 5)
    assert x.shape == y.shape == (2, 3, 5)
    np.testing.assert_array_equal(x[..., 1:], y[..., :-1])  # y is x shifted by one
    assert char_lm.unigram_nats(train, val, len(vocab)) < np.log(len(vocab))


@pytest.mark.slow  # `make demo` runs it at --quick; CI's time goes to the registry
def test_char_lm_runs_tiny(tmp_path):
    argv = ["--quick", "--steps", "4", "--eval-every", "2", "--agreement-steps", "3"]
    argv += ["--samples", "5", "--out", str(tmp_path)]
    result = char_lm.main(argv)
    saved = json.loads((tmp_path / "char_lm.json").read_text())
    assert saved["report"]["status"] == "partial" and (tmp_path / "char_lm_loss.png").exists()
    gpt, lstm = result["runs"]["GPT"]["params"], result["runs"]["LSTM"]["params"]
    assert abs(gpt - lstm) / gpt < 0.02  # the same parameter count
    assert result["agreement"]["sgd"]["max_rel_diff"] < 1e-9
    assert all(len(s) == 4 + 5 for s in result["samples"].values())
