"""The convolutional experiments run end to end at a tiny size and write their results."""

import json

import numpy as np

from experiments import bench_cnn, cnn_digits, mnist1d
from jaxbp import data


def test_mnist1d_data_is_generated_offline():
    d = data.mnist1d()
    assert d["x_train"].shape == (4000, 40) and d["x_test"].shape == (1000, 40)
    assert set(np.unique(d["y_train"])) == set(range(10))
    state = np.random.get_state()[1].copy()
    small, again = data.mnist1d(samples=500), data.mnist1d(samples=500)
    assert small["x_train"].shape == (400, 40) and small["x_test"].shape == (100, 40)
    np.testing.assert_array_equal(again["x_test"], small["x_test"])  # seed 42 is reproducible
    np.testing.assert_array_equal(np.random.get_state()[1], state)  # global RNG left alone


def test_mnist1d_tiny(tmp_path):
    out = mnist1d.main(
        ["--steps", "60", "--seeds", "2", "--models", "logistic,CNN,GRU", "--samples", "1000"]
        + ["--out", str(tmp_path)]
    )
    saved = json.loads((tmp_path / "mnist1d.json").read_text())
    assert set(saved["results"]) == {"logistic", "CNN", "GRU"}
    assert (tmp_path / "mnist1d.png").exists()
    for name, row in out.items():
        assert len(row["test_acc"]) == 2
        if name != "GRU":  # the small GRU needs more than 60 steps to leave chance
            assert row["mean"] > 15  # better than chance (10%) after 60 steps
    assert "published" in saved["table"]


def test_cnn_digits_tiny(tmp_path):
    out = cnn_digits.main(["--steps", "80", "--seeds", "1", "--out", str(tmp_path)])
    assert out["test_acc"][0] > 50
    assert (tmp_path / "cnn_digits.png").exists()


def test_bench_cnn_tiny(tmp_path):
    out = bench_cnn.main(
        ["--rounds", "1", "--repeat", "1", "--only", "MNIST-1D", "--out", str(tmp_path)]
    )
    (row,) = out.values()
    assert row["grad_rel_diff"] < 1e-4  # both sides compute the same gradient
    assert row["manual_ms"] > 0 and row["autodiff_ms"] > 0
