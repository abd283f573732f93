from experiments import mlp_digits


def test_manual_and_autodiff_follow_the_same_curve_and_learn(tmp_path):
    result = mlp_digits.main(["--quick", "--out", str(tmp_path)])
    assert result["test_accuracy_manual"] >= 0.97
    assert result["max_loss_curve_difference"] <= 1e-8
    assert (tmp_path / "mlp_digits.png").exists()
