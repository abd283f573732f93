"""The recurrent experiments at tiny sizes: they run, write their files, and measure what
they claim to measure."""

import json

import jax
import numpy as np

from experiments import adding_problem, bench_rnn, exploding_gradients


def test_adding_batch_marks_one_step_in_each_half():
    x, y = adding_problem.adding_batch(jax.random.key(0), 64, 10)
    values, markers = np.asarray(x[..., 0]), np.asarray(x[..., 1])
    assert x.shape == (64, 10, 2) and y.shape == (64, 1)
    np.testing.assert_array_equal(markers[:, :5].sum(1), 1)
    np.testing.assert_array_equal(markers[:, 5:].sum(1), 1)
    np.testing.assert_allclose(y[:, 0], (values * markers).sum(1), rtol=1e-6)
    assert values.min() >= 0 and values.max() <= 1


def test_adding_problem_runs_tiny(tmp_path):
    argv = ["--T", "6", "--hidden", "4", "--steps", "20", "--chunk", "10", "--cells", "LSTM"]
    argv += ["--out", str(tmp_path)]
    result = adding_problem.main(argv)
    saved = json.loads((tmp_path / "adding_problem.json").read_text())
    assert [r["cell"] for r in saved["runs"]] == ["LSTM"]
    for run in result["runs"]:
        assert len(run["curve"]) == 2 and np.isfinite(run["final_mse"])
    assert (tmp_path / "adding_problem.png").exists()


def test_adding_problem_settle_stops_once_below_and_merge_joins_runs(tmp_path):
    # T = 2: the two marked steps are the whole sequence, so a GRU learns it within 400 steps
    argv = ["--T", "2", "--hidden", "8", "--steps", "2000", "--chunk", "50", "--lr", "1e-2"]
    runs = {}
    for cell in ("GRU", "RNN(tanh)"):
        out = tmp_path / cell
        adding_problem.main(argv + ["--cells", cell, "--settle", "100", "--out", str(out)])
        runs[cell] = out / "adding_problem.json"
    merged = adding_problem.main(["--merge", *map(str, runs.values()), "--out", str(tmp_path)])
    assert [r["cell"] for r in merged["runs"]] == ["GRU", "RNN(tanh)"]
    for run in merged["runs"]:
        if run["steps_run"] < 2000:  # stopped early: below 0.01 for the last 100 steps
            assert run["step_below_0.01"] == run["steps_run"] - 100
            assert all(mse < 0.01 for step, mse in run["curve"] if step > run["steps_run"] - 100)
    assert merged["runs"][0]["steps_run"] < 2000  # the GRU solved T = 2
    assert (tmp_path / "adding_problem.png").exists()


def test_adding_problem_resumes_from_its_checkpoint(tmp_path):
    argv = ["--T", "4", "--hidden", "4", "--chunk", "2", "--cells", "LSTM"]
    whole = adding_problem.main(argv + ["--steps", "40", "--out", str(tmp_path / "whole")])
    parts = str(tmp_path / "parts")
    adding_problem.main(argv + ["--steps", "20", "--out", parts])  # checkpoint at step 20
    resumed = adding_problem.main(argv + ["--steps", "40", "--out", parts])
    (a,), (b,) = whole["runs"], resumed["runs"]
    assert [s for s, _ in b["curve"]] == list(range(2, 42, 2))
    np.testing.assert_allclose([m for _, m in b["curve"]], [m for _, m in a["curve"]], rtol=1e-6)
    np.testing.assert_allclose(b["final_mse"], a["final_mse"], rtol=1e-6)


def test_exploding_gradients_follow_rho_to_the_T_in_the_linear_regime():
    Ts = [1, 5, 20]
    for rho in (0.9, 1.1):
        with jax.enable_x64(True):
            raw, clipped = exploding_gradients.gradient_norms(rho, Ts, 8, "linear", 1.0, 0)
        np.testing.assert_allclose(raw, rho ** np.array(Ts), rtol=1e-6)
        assert np.all(clipped <= raw * (1 + 1e-12))


def test_exploding_gradients_runs_tiny(tmp_path):
    exploding_gradients.main(["--T-max", "10", "--hidden", "4", "--out", str(tmp_path)])
    assert (tmp_path / "exploding_gradients.png").exists()
    saved = json.loads((tmp_path / "exploding_gradients.json").read_text())
    assert len(saved["curves"]) == 6


def test_bench_rnn_compares_equal_gradients(tmp_path):
    result = bench_rnn.main(["--tiny", "--out", str(tmp_path)])
    assert [r["cell"] for r in result["rows"]] == ["RNN", "LSTM", "GRU"]
    for row in result["rows"]:
        assert row["grad_rel_err"] < 1e-4  # float32: both compute the same gradient
        assert row["temp_manual_MiB"] > 0 and row["time_manual_ms"] > 0
