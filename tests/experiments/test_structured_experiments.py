"""Smoke tests of the structured-data experiments (graphs, trees, multi-task)."""

import json

import pytest

from experiments import graphs, multitask, tree_arithmetic


def test_multitask_fan_out_sums_the_heads(tmp_path):
    result = multitask.main(["--steps", "40", "--seeds", "1", "--out", str(tmp_path)])
    assert result["fan_out"]["max_abs_joint_minus_sum_of_heads"] <= 1e-12
    assert result["fan_out"]["max_abs_manual_minus_jax_grad"] <= 1e-12
    report = json.loads((tmp_path / "multitask.json").read_text())["report"]
    assert report["headline"] and (tmp_path / "multitask.png").exists()


@pytest.mark.slow
def test_graphs_quick_meets_the_karate_target(tmp_path):
    result = graphs.main(["--quick", "--out", str(tmp_path)])
    assert result["karate"]["mean_correct_of_32"] >= 31
    m = result["planted_partition"]["mean_accuracy"]
    assert min(m["GCN"], m["GAT"]) > m["MLP"]
    assert (tmp_path / "graphs_karate.png").exists()


@pytest.mark.slow
def test_tree_arithmetic_runs_and_reports(tmp_path):
    result = tree_arithmetic.main(["--train", "200", "--epochs", "1", "--out", str(tmp_path)])
    assert set(result["models"]) == {"Tree-LSTM", "LSTM"}
    assert (tmp_path / "tree_arithmetic.png").exists()
