import importlib.util
import json
import sys

import jax
import numpy as np
import pytest

from experiments import backprop_cost as bc
from experiments import references as refs
from jaxbp.layers import conv

HAS_TORCH = importlib.util.find_spec("torch") is not None


def test_torch_is_optional(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
    prob = bc.mlp_problem((8, 8, 3), 4, True)
    assert prob.torch_step is None and prob.torch_sgd is None
    assert prob.numpy_step is not None
    for prob in (
        bc.cnn_problem(lambda: bc.mnist1d.cnn(2), refs.MNIST1D_CNN_LAYERS, (40,), 2),
        bc.recurrent_problem("GRU", 3, 2, 4, 2),
    ):
        assert prob.torch_step is None and prob.numpy_step is not None
        assert set(bc.reference_errors(prob)) == {"numpy"}


def test_flop_counts():
    prob = bc.mlp_problem((10, 20, 30), 4, False)
    fwd = 2 * 4 * (10 * 20 + 20 * 30)
    assert prob.forward_flops == fwd
    assert prob.step_flops == 3 * fwd - 2 * 4 * 10 * 20  # no ∂L/∂x for the input


def test_flop_counts_cnn():
    # MNIST-1D CNN, 3 channels, batch 2: lengths 40 -> 19 -> 10 -> 5 (k 5, 3, 3; stride 2, pad 1)
    prob = bc.cnn_problem(lambda: bc.mnist1d.cnn(3), refs.MNIST1D_CNN_LAYERS, (40,), 2)
    convs = [2 * 2 * 19 * 5 * 1 * 3, 2 * 2 * 10 * 3 * 3 * 3, 2 * 2 * 5 * 3 * 3 * 3]
    layers = [*convs, 2 * 2 * 15 * 10]  # + Dense(15 -> 10)
    assert prob.forward_flops == sum(layers)
    assert prob.step_flops == 3 * sum(layers) - layers[0]
    assert prob.matmul_shape is None


@pytest.mark.parametrize("cell, gates", [("RNN", 1), ("LSTM", 4), ("GRU", 3)])
def test_flop_counts_recurrent(cell, gates):
    B, T, F, H = 2, 5, 3, 4
    prob = bc.recurrent_problem(cell, T, B, H, F)
    projections = 2 * B * T * (F + H) * gates * H
    head = 2 * B * T * H * 1
    assert prob.forward_flops == projections + head
    assert prob.step_flops == 3 * (projections + head) - 2 * B * T * F * gates * H


@pytest.mark.parametrize(
    "padding, spatial, kernel, stride",
    [("SAME", (32, 32), (3, 3), 2), ("SAME", (8, 7), (3, 3), 1), ("SAME", (9,), (4,), 3),
     (1, (40,), (5,), 2)],
)  # fmt: skip
def test_conv_padding_is_jaxbps(padding, spatial, kernel, stride):
    nd = len(spatial)
    expected = conv.explicit_padding(
        conv.normalize_padding("test", padding, nd), spatial, kernel, (stride,) * nd, (1,) * nd
    )
    pads = refs.conv_padding(padding, spatial, kernel, stride)
    assert tuple(map(tuple, pads)) == expected
    assert refs.conv_output_size(spatial, kernel, stride, pads) == conv.output_size(
        spatial, kernel, (stride,) * nd, (1,) * nd, expected
    )


def test_layer_description_must_match_the_model():
    with pytest.raises(ValueError, match="does not match"):
        bc.cnn_problem(bc.bench_cnn.cnn2d, refs.MNIST1D_CNN_LAYERS, (8, 8, 3), 2)


def test_power_law():
    xs = np.array([64, 128, 256, 512])
    assert bc.power_law(xs, 3e-9 * xs**2.0) == pytest.approx(2.0)


def test_tiny_run(tmp_path):
    result = bc.main(["--tiny", "--out", str(tmp_path)])
    rows = result["rows"]
    assert [r["name"] for r in rows] == [w.name for w in bc.workloads("tiny")]
    assert {r["family"] for r in rows} == {"mlp", "cnn", "rnn"}
    for r in rows:
        assert all(t > 0 for t in r["seconds"].values())
        assert {"forward", "manual", "autodiff", "numpy"} <= set(r["seconds"])
        assert ("matmul" in r["seconds"]) == (r["family"] == "mlp")
        # what XLA compiled for the manual backward needs no more memory than autodiff's, and
        # no more FLOPs — compared where XLA counts them all: its cost analysis counts the body
        # of a scan once, not T times, so for the recurrent rows it is not comparable
        man, ad = r["compiled"]["manual"], r["compiled"]["autodiff"]
        assert man["temp_bytes"] <= 1.05 * ad["temp_bytes"] + 1024
        if r["family"] != "rnn":
            assert man["flops"] <= 1.01 * ad["flops"]
        # the NumPy and PyTorch references compute jaxbp's loss and every gradient (float32)
        errors = r["reference_max_rel_error"]
        assert set(errors) == ({"numpy", "torch"} if HAS_TORCH else {"numpy"})
        assert all(e <= 1e-3 for e in errors.values()), (r["name"], errors)
    sgd = rows[0]["sgd_seconds_per_step"]
    assert {"manual_sgd_K1", "manual_sgd_K4", "numpy_sgd"} <= set(sgd)
    assert {"width_exponent_all", "depth_exponent"} <= set(result["fits"]["8"])
    assert all(c["measured"] is not None for c in result["targets"])
    assert "| cnn2d_8x8x3_b4 |" in result["table_markdown"]
    saved = json.loads((tmp_path / "backprop_cost.json").read_text())
    assert saved["machine"]["shared"] is True
    assert (tmp_path / "backprop_cost_scaling.png").stat().st_size > 0
    assert (tmp_path / "backprop_cost_ratios.png").stat().st_size > 0


def test_only_one_family_runs(tmp_path):
    """A grid without square MLPs (`--only lstm`): no scaling fits, and the report still works."""
    result = bc.main(["--tiny", "--only", "lstm", "--rounds", "1", "--out", str(tmp_path)])
    assert [r["family"] for r in result["rows"]] == ["rnn"]
    assert result["fits"] == {}
    assert "–" in result["table_markdown"]  # no matmul reference for this row


def test_references_agree_in_float32_under_x64():
    """The tests run with x64 on: the problems stay float32 and the references still agree."""
    assert jax.config.jax_enable_x64
    prob = bc.recurrent_problem("LSTM", 4, 3, 5, 2)
    assert all(leaf.dtype == np.float32 for leaf in jax.tree.leaves(prob.params))
    assert all(e <= 1e-5 for e in bc.reference_errors(prob).values())
