import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from experiments import scaling

ROOT = Path(__file__).resolve().parents[2]

HLO = """
ENTRY %main {
  %p = f32[16,10]{1,0} parameter(0)
  %all-reduce.1 = f32[16,10]{1,0} all-reduce(f32[16,10]{1,0} %p), replica_groups=[1,4]<=[4]
  %all-reduce.2 = (f32[3]{0}, f64[]) all-reduce(%a, %b), replica_groups={{0,1},{2,3}}
  %ag = f32[8,4]{1,0} all-gather(f32[2,4]{1,0} %q), replica_groups={{0,1,2,3}}, dimensions={0}
  %trivial = f32[5]{0} all-reduce(f32[5]{0} %r), replica_groups={{0},{1}}
}
"""


def test_collectives_are_read_off_the_hlo():
    got = scaling.collectives(HLO, n_devices=4)
    assert got["count"] == 3  # the all-reduce over groups of one device moves nothing
    assert got["payload_bytes"] == 640 + (12 + 8) + 128
    assert got["ring_bytes"] == 2 * 3 / 4 * 640 + 2 * 1 / 2 * 20 + 3 / 4 * 128


@pytest.mark.slow  # ~15 s of CPU: the test budget goes to tests/test_distributed.py
def test_quick_run_at_tiny_size(tmp_path):
    """The real script (re-executed with simulated devices): the GPT MLP at toy widths, 1 and 2
    devices, tensor- and data-parallel."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    cmd = [sys.executable, "-m", "experiments.scaling", "--quick", "--splits", "1,2", "--models"]
    cmd += ["gpt"]
    cmd += ["--d-model", "16", "--hidden", "32", "--repeat", "1", "--out", str(tmp_path)]
    subprocess.run(cmd, env={**env, "PYTHONPATH": str(ROOT)}, cwd=ROOT, check=True, timeout=300)
    result = json.loads((tmp_path / "scaling.json").read_text())
    rows = result["rows"]
    assert [r["devices"] for r in rows] == [1, 2] * 2
    assert all(r["payload_bytes"] == r["predicted_payload_bytes"] for r in rows)
    tp = [r for r in rows if r["parallel"] == "model"]
    assert tp[1]["memory_bytes_per_device"] < tp[0]["memory_bytes_per_device"]
    assert result["report"]["status"] == "ok" and (tmp_path / "scaling.png").exists()
