"""The generation benchmark at a tiny size: it runs, writes its report, and both decoders
write the same greedy tokens."""

import json

import pytest

from experiments import bench_generate


@pytest.mark.slow  # ~7 s of CPU (3 compiles + a figure); `make demo` runs it at --quick
def test_bench_generate_runs_tiny(tmp_path):
    argv = ["--quick", "--T", "8", "--new", "3", "--repeat", "1", "--out", str(tmp_path)]
    result = bench_generate.main(argv)
    saved = json.loads((tmp_path / "bench_generate.json").read_text())
    assert saved["report"]["figures"] == ["bench_generate.png"]
    assert saved["report"]["status"] == "partial" and (tmp_path / "bench_generate.png").exists()
    (row,) = result["rows"]
    assert row["T"] == 8 and row["new_tokens"] == 3 and row["prompt"] == 5
    assert row["same_tokens"]  # the cached and the uncached decode agree
    assert set(row["tokens_per_s"]) == {"uncached", "cached", "cached, decoding only"}
