import json

from experiments import train_overhead


def test_overhead_tiny(tmp_path):
    result = train_overhead.main(["--tiny", "--out", str(tmp_path)])
    table = result["per_step"]
    assert table["bare step (donate=True)"]["vs_bare_step"] == 1.0
    for name in ["bare, K=10 steps/call", "fit, K=1, no bar", "fit, K=10, tqdm bar"]:
        assert table[name]["us_per_step"] > 0, name
    assert (
        json.loads((tmp_path / "train_overhead.json").read_text())["per_step"].keys()
        == table.keys()
    )
    assert (tmp_path / "train_overhead.png").stat().st_size > 0
