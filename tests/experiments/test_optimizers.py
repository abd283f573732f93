import json

from experiments import optimizers


def test_lr_sweep_and_comparison_tiny(tmp_path):
    result = optimizers.main(["--tiny", "--steps", "100", "--out", str(tmp_path)])
    sweep = {r["lr"]: r for r in result["sgd_sweep"]}
    # lr = 100 blows up and the divergence guard stops it; lr = 0.1 learns
    assert sweep[100.0]["diverged_at"] is not None
    assert sweep[0.1]["diverged_at"] is None
    assert sweep[0.1]["final_train_loss"] < 0.5 * sweep[0.1]["train_curve"][0][1]
    assert set(result["best"]) == {"SGD", "momentum", "AdaGrad", "RMSprop", "Adam"}
    for name, best in result["best"].items():
        assert best["test_accuracy"] > 0.8, name
        assert best["best_lr"] in optimizers.QUICK_GRIDS[name] + optimizers.QUICK_SWEEP
    saved = json.loads((tmp_path / "optimizers.json").read_text())
    assert saved["best"] == json.loads(json.dumps(result["best"]))
    assert (tmp_path / "optimizers_lr_sweep.png").stat().st_size > 0
    assert (tmp_path / "optimizers_compare.png").stat().st_size > 0
