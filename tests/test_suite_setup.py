"""The test suite's own machinery: `make test`'s `-n 2 --dist loadgroup` keeps the tests that
share a module-scoped fixture on one worker, so the fixture is built once per run."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CONFTEST = f"""
import importlib.util
path = {str(ROOT / "tests" / "conftest.py")!r}
spec = importlib.util.spec_from_file_location("jaxbp_conftest", path)
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
pytest_itemcollected = module.pytest_itemcollected
"""

TESTS = """
import os
import pytest

BUILT = []

@pytest.fixture(scope="module")
def shared():
    BUILT.append(1)
    return os.environ["PYTEST_XDIST_WORKER"]

@pytest.mark.parametrize("i", range(6))
def test_shares(shared, i):
    assert shared == os.environ["PYTEST_XDIST_WORKER"] and len(BUILT) == 1

@pytest.mark.parametrize("i", range(6))
def test_alone(i):
    print("RAN-ON", os.environ["PYTEST_XDIST_WORKER"])
"""


def test_module_fixture_tests_run_on_one_worker_and_the_rest_stay_ungrouped(tmp_path):
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "test_group.py").write_text(TESTS)
    cmd = [sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "-v"]
    cmd += ["-p", "no:cacheprovider", "-o", "addopts=", "--rootdir", str(tmp_path), str(tmp_path)]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = [line for line in proc.stdout.splitlines() if "PASSED" in line]
    shares = {line.split()[0] for line in lines if "test_shares" in line}
    assert len(shares) == 1, "\n".join(lines)  # one worker ([gw0] or [gw1]) built the fixture
    assert all("@" in line for line in lines if "test_shares" in line)  # xdist saw the group
    alone = [line for line in lines if "test_alone" in line]
    assert len(alone) == 6 and not any("@" in line for line in alone)  # the rest stay ungrouped,
    # free to go to either worker (which one takes them is up to xdist's timing, not asserted)
