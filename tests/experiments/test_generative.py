"""The autoencoder, VAE and GAN experiments run end to end at a tiny size and write their
reports. The VAE and GAN runs are `slow` (≈ 20 s CPU each, mostly compilation); their pieces
(training loops, networks, the generator step, Pack) are tested in tests/models/, and `make demo`
runs both at --quick."""

import json

import pytest

from experiments import autoencoder, gan, vae


def _report(path):
    report = json.loads(path.read_text())["report"]
    assert {"title", "command", "headline", "figures", "status", "notes"} <= set(report)
    for fig in report["figures"]:
        assert (path.parent / fig).exists(), fig
    return report


def test_autoencoder_runs(tmp_path):
    result = autoencoder.main(["--quick", "--epochs", "3", "--out", str(tmp_path)])
    assert set(result["test_mse"]) >= {"PCA (8 components)", "linear", "nonlinear", "denoising"}
    assert _report(tmp_path / "autoencoder.json")["command"] == "python -m experiments.autoencoder"


@pytest.mark.slow
def test_vae_runs(tmp_path):
    argv = ["--quick", "--epochs", "1", "--hidden", "16", "--ks", "1", "10"]
    result = vae.main([*argv, "--out", str(tmp_path)])
    assert set(result["test_bounds_nats_per_image"]) == {"elbo", "iwae_1", "iwae_10"}
    assert len(_report(tmp_path / "vae.json")["figures"]) == 3


@pytest.mark.slow
def test_gan_runs(tmp_path):
    argv = ["--quick", "--steps", "20", "--log-every", "20", "--digit-steps", "10"]
    result = gan.main([*argv, "--variants", "packed", "--out", str(tmp_path)])
    assert set(result["ring"]) == {"packed"}
    assert all(0 <= m <= 8 for s in result["ring"].values() for m in s["modes_per_seed"])
    assert _report(tmp_path / "gan.json")["status"] == "partial"  # quick size
