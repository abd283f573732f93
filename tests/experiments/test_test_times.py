"""experiments.test_times: per-file seconds from a pytest run, into JSON and a markdown table."""

from experiments import test_times

LOG = """\
============================= slowest durations ==============================
74.67s call     tests/test_train.py::test_killed_run_resumes[x]
1.50s setup    tests/test_train.py::test_fit
0.25s teardown tests/layers/test_conv.py::test_conv[SAME-2]
0.01s call     tests/test_docs.py::test_docstring_examples[jaxbp.check]
758 passed, 1 warning in 2607.93s (0:43:27)
"""

JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" tests="3">
<testcase classname="tests.layers.test_conv" name="test_a" time="1.25" />
<testcase classname="tests.layers.test_conv" name="test_b[x]" time="0.75" />
<testcase classname="tests.test_docs" name="test_readme" time="3.0" />
</testsuite></testsuites>
"""


def test_durations_log_sums_setup_call_and_teardown_per_file():
    files = test_times.per_file_from_durations(LOG)
    assert files == {
        "tests/test_train.py": 74.67 + 1.50,
        "tests/layers/test_conv.py": 0.25,
        "tests/test_docs.py": 0.01,
    }


def test_junit_sums_per_file_and_counts_tests(tmp_path):
    path = tmp_path / "junit.xml"
    path.write_text(JUNIT)
    files, count = test_times.per_file_from_junit(path)
    assert files == {"tests/layers/test_conv.py": 2.0, "tests/test_docs.py": 3.0}
    assert count == 3


def test_table_has_a_row_per_file_slowest_first_and_the_totals():
    machine = test_times.machine(0.5, 0.7)
    entry = {"command": "pytest", "tests": 3, "wall_seconds": 4.0, "date": "d", "machine": machine}
    record = {
        "before": {**entry, "files": {"tests/a.py": 1.0, "tests/b.py": 5.0}},
        "after": {**entry, "files": {"tests/a.py": 0.5}},
    }
    table = test_times.render(record).splitlines()
    rows = [line for line in table if line.startswith("| tests/")]
    assert rows == ["| tests/b.py | 5.0 | – |", "| tests/a.py | 1.0 | 0.5 |"]
    assert "| **sum over files** | **6** | **0** |" in table
    assert not machine["contended"]
