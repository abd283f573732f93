"""The detection-floor experiment runs at a tiny size, and its floors follow the tolerance rule."""

import json

from experiments import detection_floor


def test_detection_floor_tiny(tmp_path):
    detection_floor.main(["--quick", "--seeds", "1", "--layers", "Dense", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "detection_floor.json").read_text())
    assert saved["report"]["status"] == "ok" and (tmp_path / "detection_floor.png").exists()
    floors = saved["table"]["Dense"]
    assert floors["float64"] == 1e-6  # far above rtol 1e-10: the smallest ε tried is caught
    assert floors["float32"] in (1e-4, 1e-3)  # rtol 1e-4: 1e-4 itself sits on the line
    assert floors["bfloat16"] is None or floors["bfloat16"] >= 1e-2 - 1e-12
    one_percent = saved["errors"].index(1e-2)
    assert not any(saved["results"]["Dense"]["bfloat16"]["caught"][one_percent])
