"""experiments.report: results/index.html from the experiments' JSON "report" keys."""

import html
import json
import re
import textwrap

import pytest

from experiments import common, report, run_all

PNG = bytes.fromhex("89504e470d0a1a0a")  # a PNG signature is enough for a link to resolve


def _page_links(page):
    """The page's text (entities decoded) and the figures it shows."""
    text = page.read_text()
    return html.unescape(text), set(re.findall(r'<img src="([^"]+)"', text))


def _write_experiment(folder, name, body):
    (folder / f"{name}.py").write_text(textwrap.dedent(body))


@pytest.fixture
def fake_experiments(tmp_path, monkeypatch):
    """Three experiment modules: one that reports, one that crashes, one that writes no report."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    _write_experiment(
        pkg,
        "fake_ok",
        """
        from experiments import common

        def main(argv):
            args = common.parser("ok").parse_args(argv)
            out = common.out_dir(args)
            (out / "fake_ok.png").write_bytes(bytes.fromhex("89504e470d0a1a0a"))
            value = 0.5 * 3  # a computed number
            common.save_json(out / "fake_ok.json", {"report": common.report(
                "A fake experiment", "python -m fake_ok",
                [common.headline("a value", value, "1.5 (expected)", ok=value == 1.5),
                 common.headline("a miss", 2.0, "< 1 (target)", ok=False)],
                ["fake_ok.png", "never_written.png"], notes="tiny size")})
    """,
    )
    _write_experiment(
        pkg,
        "fake_crash",
        """
        def main(argv):
            raise RuntimeError("the data set is not there")
    """,
    )
    _write_experiment(
        pkg,
        "fake_silent",
        """
        from experiments import common

        def main(argv):
            out = common.out_dir(common.parser("silent").parse_args(argv))
            common.save_json(out / "fake_silent.json", {"value": 1.0})
    """,
    )
    monkeypatch.syspath_prepend(str(pkg))
    return ["fake_ok", "fake_crash", "fake_silent", "fake_never_ran"]


@pytest.mark.parametrize("jobs", [1, 2])  # in this process; in two worker processes
def test_run_all_records_failures_keeps_going_and_the_page_shows_every_row(
    tmp_path, fake_experiments, jobs
):
    out = tmp_path / "results"
    (out).mkdir()
    (out / "check_table.txt").write_text("case ...\n3 passed, 0 failed\n")
    argv = ["--out", str(out), "--jobs", str(jobs)]
    status = run_all.main(argv, experiments=fake_experiments[:3])
    assert status == 1  # one experiment failed
    record = json.loads((out / "run_all.json").read_text())
    assert record["jobs"] == jobs and record["argv"] == ["--out", str(out)]
    outcomes = record["experiments"]  # in the order given, whatever order they finished in
    assert [o["status"] for o in outcomes] == ["ok", "failed", "ok"]
    assert "RuntimeError: the data set is not there" in outcomes[1]["error"]

    page = report.build(out, fake_experiments)
    text, images = _page_links(page)
    for image in images:
        assert (out / image).is_file(), image
    assert images == {"fake_ok.png"}
    assert "missing figure: never_written.png" in text
    rows = {r.module: r for r in report.collect(out, fake_experiments)}
    assert [rows[m].state for m in fake_experiments] == ["ok", "failed", "missing", "missing"]
    for row in rows.values():
        assert f'id="{report._anchor(row)}"' in text and f'href="#{report._anchor(row)}"' in text
    assert "the data set is not there" in text and 'has no "report" key' in text
    assert "no fake_never_ran.json" in text
    assert "1 met, 1 missed" in text and "python -m fake_ok" in text
    assert "3 passed, 0 failed" in text and "Machine and versions" in text
    assert "<script" not in text and "http" not in text  # self-contained, offline


def test_a_real_tiny_run_reports_with_figures(tmp_path):
    from experiments import exploding_gradients

    exploding_gradients.main(["--T-max", "10", "--hidden", "4", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "exploding_gradients.json").read_text())
    assert report.validate(saved["report"]) == []
    linear = [h for h in saved["report"]["headline"] if h["metric"].startswith("linear")]
    assert len(linear) == 3 and all(h["ok"] for h in linear)  # ‖∂L/∂h₀‖ = ρ^T
    page = report.build(tmp_path, ["experiments.exploding_gradients", "experiments.mnist1d"])
    text, images = _page_links(page)
    assert (
        images == {"exploding_gradients.png"} and (tmp_path / "exploding_gradients.png").is_file()
    )
    assert "no mnist1d.json" in text and f"no {report.CHECK_TABLE}" in text


def test_unlisted_experiments_join_and_bad_reports_are_named(tmp_path):
    good = common.report("Later", "python -m experiments.later", [], status="partial")
    (tmp_path / "later.json").write_text(json.dumps({"report": good}))
    bad = {**good, "status": "great", "figures": ["../x.png"]}
    (tmp_path / "broken.json").write_text(json.dumps({"report": bad}))
    rows = report.collect(tmp_path, [])
    assert {r.json_name: r.state for r in rows} == {
        "broken.json": "failed",
        "later.json": "partial",
    }
    assert "status must be" in rows[0].problem and "file name" in rows[0].problem
    with pytest.raises(ValueError, match="status"):
        common.report("x", "y", [], status="fine")


def test_every_experiment_in_run_all_writes_the_report_key():
    # the contract, read in the sources: each listed experiment builds its report with
    # common.report (the tiny runs in the other experiment tests execute that code)
    import importlib
    import inspect

    for name in run_all.EXPERIMENTS:
        source = inspect.getsource(importlib.import_module(name))
        assert "common.report(" in source, f"{name} builds its report without common.report"


def test_every_listed_experiment_has_a_docs_page_and_the_page_links_it(tmp_path):
    for name in run_all.EXPERIMENTS:
        assert name in report.DOCS, f"{name}: add its docs page to experiments.report.DOCS"
        assert (report.ROOT / "docs" / f"{report.DOCS[name]}.md").is_file(), name
    (tmp_path / "mnist1d.json").write_text(json.dumps({"report": common.report("m", "c", [])}))
    page = report.build(tmp_path, ["experiments.mnist1d"])
    links = re.findall(r'documentation: <a href="([^"]+)"', page.read_text())
    assert len(links) == 1 and links[0].endswith(("conv.md", "conv.html"))
    assert (tmp_path / links[0]).resolve().is_file()


def _one_target_report(size):
    miss = common.headline("8/8 modes in 4 of 5 seeds", 0, ">= 4", ok=False, at="full")
    hit = common.headline("a quick check", 1.0, "= 1", ok=True)
    return common.report("GAN", "python -m gan", [miss, hit], size=size)


@pytest.mark.parametrize("size", ["quick", "tiny"])
def test_a_full_size_target_is_not_judged_on_a_quick_run(tmp_path, size):
    (tmp_path / "gan.json").write_text(json.dumps({"report": _one_target_report(size)}))
    text, _ = _page_links(report.build(tmp_path, ["experiments.gan"]))
    assert "1 met, 0 missed (1 full-size only)" in text
    assert "full size only: not judged at this size" in text and ">missed<" not in text


def test_a_full_size_target_is_judged_on_a_full_run(tmp_path):
    (tmp_path / "gan.json").write_text(json.dumps({"report": _one_target_report("full")}))
    text, _ = _page_links(report.build(tmp_path, ["experiments.gan"]))
    assert "1 met, 1 missed" in text and "not judged" not in text


def test_a_full_size_target_needs_the_run_size():
    with pytest.raises(ValueError, match="size"):
        common.report("x", "y", [common.headline("m", 1, "r", ok=True, at="full")])
    with pytest.raises(ValueError, match="at must be"):
        common.headline("m", 1, at="later")
    bad = {**_one_target_report("quick"), "size": None}
    assert any("needs the report's size" in p for p in report.validate(bad))
