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


def test_tree_arithmetic_targets_name_every_subexpression():
    """(3 − (2 × 4)) mod 10 = 5: the node targets sit in batch_trees' level layout, the
    sequence targets at the token closing each subexpression, and both put the whole value
    where `accuracy` reads it."""
    import numpy as np

    e = ("-", ("d", 3), ("*", ("d", 2), ("d", 4)))
    x, t = tree_arithmetic.tree_batches([e], batch=1, levels=3)
    nodes = np.asarray(t[0]).argmax(-1)[np.asarray(t[0]).sum(-1) > 0].tolist()
    assert nodes == [5, 3, 8, 2, 4]  # level 0: the root; level 1: 3, 2×4; level 2: 2, 4
    _, t_root = tree_arithmetic.tree_batches([e], batch=1, levels=3, root_only=True)
    assert int((np.asarray(t_root) > 0).sum()) == 1
    toks, closes = tree_arithmetic.to_tokens(e)
    assert len(toks) == 9 and closes == [-1, 3, -1, -1, 2, -1, 4, 8, 5]
    seq, t_seq = tree_arithmetic.seq_batches([e], batch=1, length=9)
    assert np.asarray(t_seq)[0, 0, -1].argmax() == 5

    # a model that outputs the targets themselves scores 1 on both layouts
    class Echo:
        def forward(self, params, state, x):
            return (x["t"], None, None)

    for xs, ts in ((x, t), (seq, t_seq)):
        assert tree_arithmetic.accuracy(Echo(), None, None, {**xs, "t": ts}, ts) == 1.0
