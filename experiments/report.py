"""One page for the demo: results/index.html, built from the experiments' JSON.

    python -m experiments.report [--out results]

For every experiment in `experiments.catalog.EXPERIMENTS` the page reads the "report" key of
`<results>/<module name>.json` (the contract: title, command, headline rows of measured value,
reference and ok, figures, status, notes; see `experiments.common.report`) and shows its
headline numbers next to their references, its figures and its full-size command. It adds the
outcome `run_all` recorded (`run_all.json`: ok, or failed with the exception), the gradient-check
table (`check_table.txt`, from `python -m jaxbp.cases`) and the machine and versions. Nothing on
the page is typed in: an experiment whose run failed, whose JSON is absent or lacks "report", or
whose figure is missing shows as such. Any other JSON in the folder with a "report" key joins
too, so an experiment only has to write the key to appear.

The page is self-contained: inline CSS, no scripts, figures linked relatively (keep the folder
together), readable offline in any browser.
"""

from __future__ import annotations

import argparse
import html
import importlib.metadata
import json
import os
import platform
import sys
from pathlib import Path
from typing import NamedTuple

import jaxbp
from experiments import common
from experiments.catalog import EXPERIMENTS

PAGE = "index.html"
ROOT = Path(__file__).resolve().parents[1]

# The documentation page of each experiment (docs/<page>.md; site/<page>.html once `make docs`
# has built the site). tests/experiments/test_report.py checks every listed experiment has one.
DOCS = {
    "experiments.linear_regression": "article",
    "experiments.mlp_digits": "training",
    "experiments.optimizers": "training",
    "experiments.train_overhead": "training",
    "experiments.vanishing_gradients": "cost",
    "experiments.backprop_cost": "cost",
    "experiments.mnist1d": "conv",
    "experiments.cnn_digits": "conv",
    "experiments.bench_cnn": "conv",
    "experiments.bench_rnn": "recurrent",
    "experiments.adding_problem": "recurrent",
    "experiments.exploding_gradients": "recurrent",
    "experiments.scaling": "distributed",
    "experiments.autoencoder": "generative",
    "experiments.vae": "generative",
    "experiments.gan": "generative",
    "experiments.mixed_precision": "precision",
    "experiments.memory": "memory",
    "experiments.bench_attention": "attention",
    "experiments.bench_generate": "attention",
    "experiments.char_lm": "attention",
    "experiments.graphs": "structured",
    "experiments.tree_arithmetic": "structured",
    "experiments.multitask": "structured",
    "experiments.detection_floor": "checking",
}


def docs_link(module: str, results: Path) -> str | None:
    """A relative link from the results folder to the experiment's page: the built site's
    page when there is one, else the Markdown source (None for an unlisted experiment)."""
    page = DOCS.get(module)
    if page is None:
        return None
    target = ROOT / "site" / f"{page}.html"
    if not target.is_file():
        target = ROOT / "docs" / f"{page}.md"
    return os.path.relpath(target, Path(results).resolve())


OUTCOMES = "run_all.json"
CHECK_TABLE = "check_table.txt"


class Row(NamedTuple):
    module: str  # "experiments.mnist1d" (or the JSON's name for an unlisted one)
    json_name: str  # "mnist1d.json"
    state: str  # "ok", "partial", "failed" or "missing"
    report: dict | None
    outcome: dict | None  # what run_all recorded, if it ran the experiment
    problem: str  # why the state is failed or missing ("" otherwise)


# ------------------------------------------------------------------------------- reading


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        return e


FIELDS = ("title", "command", "headline", "figures", "status", "notes")


def validate(report) -> list[str]:
    """What in a "report" value breaks the contract (empty when it is well formed)."""
    if not isinstance(report, dict):
        return [f'"report" must be an object, got {type(report).__name__}']
    problems = [f'"report" lacks "{k}"' for k in FIELDS if k not in report]
    if report.get("status") not in ("ok", "partial", "failed"):
        problems.append(f"status must be ok, partial or failed, got {report.get('status')!r}")
    if report.get("size") not in (None, *common.RUN_SIZES):
        problems.append(f"size must be one of {common.RUN_SIZES} or null, got {report['size']!r}")
    for i, h in enumerate(report.get("headline") or []):
        if not isinstance(h, dict) or not {"metric", "value", "reference", "ok"} <= set(h):
            problems.append(f"headline row {i} must have metric, value, reference and ok")
        elif h["ok"] not in (True, False, None):
            problems.append(f"headline row {i}: ok must be true, false or null")
        elif h.get("at", "any") not in common.SIZES_OF_TARGETS:
            problems.append(f"headline row {i}: at must be one of {common.SIZES_OF_TARGETS}")
        elif h.get("at") == "full" and report.get("size") is None:
            problems.append(f"headline row {i}: a full-size target needs the report's size")
    for name in report.get("figures") or []:
        if not isinstance(name, str) or Path(name).name != name:
            problems.append(f"figure {name!r} must be a file name in the results folder")
    return problems


def _row(module: str, path: Path, outcome: dict | None) -> Row:
    name = path.name
    if outcome is not None and outcome.get("status") == "failed":
        return Row(module, name, "failed", None, outcome, f"the run failed: {outcome['error']}")
    if not path.exists():
        return Row(module, name, "missing", None, outcome, f"no {name} in the results folder")
    data = _read_json(path)
    if isinstance(data, Exception):
        return Row(module, name, "missing", None, outcome, f"{name} cannot be read: {data}")
    report = data.get("report") if isinstance(data, dict) else None
    if report is None:
        return Row(module, name, "missing", None, outcome, f'{name} has no "report" key')
    problems = validate(report)
    if problems:
        return Row(module, name, "failed", None, outcome, f"{name}: " + "; ".join(problems))
    return Row(module, name, report["status"], report, outcome, "")


def collect(results: Path, experiments) -> list[Row]:
    """One Row per listed experiment, then one per other JSON carrying a "report" key."""
    outcomes = _read_json(results / OUTCOMES)
    by_name = {}
    if isinstance(outcomes, dict):
        by_name = {o["experiment"]: o for o in outcomes.get("experiments", [])}
    rows = []
    for module in experiments:
        path = results / f"{module.rsplit('.', 1)[-1]}.json"
        rows.append(_row(module, path, by_name.get(module)))
    listed = {r.json_name for r in rows} | {OUTCOMES}
    for path in sorted(results.glob("*.json")):
        data = _read_json(path) if path.name not in listed else None
        if isinstance(data, dict) and "report" in data:
            rows.append(_row(f"({path.stem}: not in catalog.EXPERIMENTS)", path, None))
    return rows


def machine_and_versions() -> dict:
    """The machine the page was built on, with the versions of what the experiments use."""
    info = common.machine()
    info["python"] = platform.python_version()
    info["jaxbp"] = jaxbp.__version__
    for package in ("jaxlib", "numpy", "optax", "matplotlib", "scikit-learn", "mnist1d"):
        try:
            info[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            info[package] = "not installed"
    info["load average (1, 5, 15 min)"] = " ".join(f"{v:.1f}" for v in os.getloadavg())
    return info


# ------------------------------------------------------------------------------ rendering

CSS = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 72em; padding: 0 1em;
       color: #222; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em;
       margin-top: 2em; }
table { border-collapse: collapse; margin: 0.6em 0; } td, th { border: 1px solid #ddd;
       padding: 0.25em 0.6em; text-align: left; vertical-align: top; } th { background: #f4f4f4; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
code, pre { background: #f6f6f6; border-radius: 3px; } code { padding: 0 0.3em; }
pre { padding: 0.7em; overflow-x: auto; font-size: 12px; line-height: 1.3; }
.ok { color: #176b2c; font-weight: 600; } .partial { color: #9a6200; font-weight: 600; }
.failed, .missing, .miss { color: #b00020; font-weight: 600; } .none { color: #777; }
.badge { border: 1px solid currentColor; border-radius: 4px; padding: 0 0.4em; font-size: 0.85em;
       text-transform: uppercase; }
figure { display: inline-block; margin: 0.5em 1em 0.5em 0; } img { max-width: 100%;
       border: 1px solid #eee; } figcaption { font-size: 0.85em; color: #555; }
.notes { color: #444; }
"""


def _esc(value) -> str:
    return html.escape(str(value))


def fmt(value) -> str:
    """A measured value for the page: 4 significant digits, scientific when tiny or huge."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value:
            return "nan"
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
            return f"{value:.3e}"
        return f"{value:.4g}"
    return str(value)


def judged(h: dict, report: dict) -> bool:
    """Whether a headline's target can be judged from this run: a target that applies at the
    full size only ("at": "full") is not judged on a quick or tiny run."""
    return h.get("at", "any") == "any" or report.get("size") == "full"


def _verdict(h: dict, report: dict) -> str:
    ok = h.get("ok")
    if ok is not None and not judged(h, report):
        return '<span class="none">full size only: not judged at this size</span>'
    return {True: '<span class="ok">met</span>', False: '<span class="miss">missed</span>'}.get(
        ok, '<span class="none">no target</span>'
    )


def _badge(state: str) -> str:
    return f'<span class="badge {state}">{_esc(state)}</span>'


def _anchor(row: Row) -> str:
    return "x-" + "".join(c if c.isalnum() else "-" for c in row.json_name)


def _counts(row: Row) -> str:
    if row.report is None:
        return "—"
    heads = row.report.get("headline", [])
    oks = [h.get("ok") for h in heads if judged(h, row.report)]
    met, missed = oks.count(True), oks.count(False)
    later = sum(h.get("ok") is not None and not judged(h, row.report) for h in heads)
    text = f"{met} met, {missed} missed" if met or missed else "no targets"
    if later:
        text += f" ({later} full-size only)"
    return f'<span class="miss">{text}</span>' if missed else text


def _summary(rows: list[Row]) -> str:
    lines = ["<table><tr><th>experiment</th><th>status</th><th>targets</th><th>run time</th></tr>"]
    for row in rows:
        title = row.report.get("title", row.module) if row.report else row.module
        seconds = row.outcome.get("seconds") if row.outcome else None
        lines.append(
            f'<tr><td><a href="#{_anchor(row)}">{_esc(title)}</a></td><td>{_badge(row.state)}'
            f"</td><td>{_counts(row)}</td>"
            f'<td class="num">{"—" if seconds is None else f"{seconds:.0f} s"}</td></tr>'
        )
    lines.append("</table>")
    return "\n".join(lines)


def _headline_table(report: dict) -> str:
    headline = report.get("headline", [])
    if not headline:
        return '<p class="none">no headline numbers</p>'
    lines = ["<table><tr><th>metric</th><th>value</th><th>reference</th><th>target applies at"
             "</th><th>target</th></tr>"]  # fmt: skip
    for h in headline:
        at = "full size" if h.get("at") == "full" else "any size"
        lines.append(
            f"<tr><td>{_esc(h.get('metric', ''))}</td>"
            f'<td class="num">{_esc(fmt(h.get("value")))}</td>'
            f"<td>{_esc(h.get('reference') or '')}</td><td>{at if h.get('ok') is not None else ''}"
            f"</td><td>{_verdict(h, report)}</td></tr>"
        )
    lines.append("</table>")
    return "\n".join(lines)


def _figures(report: dict, results: Path) -> str:
    parts = []
    for name in report.get("figures", []):
        if (results / name).is_file():
            parts.append(
                f'<figure><a href="{_esc(name)}"><img src="{_esc(name)}" alt="{_esc(name)}" '
                f'loading="lazy"></a><figcaption>{_esc(name)}</figcaption></figure>'
            )
        else:
            parts.append(f'<p class="missing">missing figure: {_esc(name)}</p>')
    return "\n".join(parts)


def _section(row: Row, results: Path) -> str:
    report = row.report or {}
    title = report.get("title", row.module)
    out = [f'<h2 id="{_anchor(row)}">{_esc(title)} {_badge(row.state)}</h2>']
    out.append(f"<p>module <code>{_esc(row.module)}</code>, results <code>{_esc(row.json_name)}"
               "</code>" + (f", ran {row.outcome['seconds']:.0f} s" if row.outcome else "")
               + "</p>")  # fmt: skip
    if row.problem:
        out.append(f'<p class="{row.state}">{_esc(row.problem)}</p>')
        if row.outcome and row.outcome.get("traceback"):
            out.append(f"<pre>{_esc(row.outcome['traceback'])}</pre>")
        return "\n".join(out)
    if report.get("notes"):
        out.append(f'<p class="notes">{_esc(report["notes"])}</p>')
    if report.get("size"):
        out.append(f"<p>run at the <b>{_esc(report['size'])}</b> size</p>")
    out.append(_headline_table(report))
    out.append(f"<p>full size: <code>{_esc(report.get('command', '—'))}</code></p>")
    link = docs_link(row.module, results)
    if link:
        out.append(f'<p>documentation: <a href="{_esc(link)}">{_esc(Path(link).name)}</a></p>')
    out.append(_figures(report, results))
    return "\n".join(out)


def _check_section(results: Path) -> str:
    path = results / CHECK_TABLE
    if not path.is_file():
        return (f'<p class="missing">no {CHECK_TABLE}: run <code>python -m jaxbp.cases | tee '
                f"{_esc(results / CHECK_TABLE)}</code> (make demo does)</p>")  # fmt: skip
    text = path.read_text()
    last = [line for line in text.splitlines() if line.strip()][-1:] or ["(empty)"]
    state = "ok" if last[0].endswith(" 0 failed") else "failed"
    return f'<p class="{state}">{_esc(last[0])}</p>\n<pre>{_esc(text)}</pre>'


def _machine_section(info: dict) -> str:
    rows = "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in info.items())
    return f"<table>{rows}</table>"


def render(rows: list[Row], results: Path, info: dict) -> str:
    failed = [r for r in rows if r.state in ("failed", "missing")]
    if failed:
        head = f'<p class="failed">{len(failed)} of {len(rows)} failed or missing</p>'
    else:
        head = f'<p class="ok">all {len(rows)} experiments reported</p>'
    body = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>jaxbp demo report</title><style>{CSS}</style></head><body>",
        "<h1>jaxbp — demo report</h1>",
        f"<p>built {_esc(info['date'])} from the JSON in <code>{_esc(results)}</code> by "
        "<code>python -m experiments.report</code>; every number below comes from those runs.</p>",
        head,
        _summary(rows),
        '<h2 id="check">Gradient checks (<code>python -m jaxbp.cases</code>)</h2>',
        _check_section(results),
        *(_section(row, results) for row in rows),
        '<h2 id="machine">Machine and versions</h2>',
        _machine_section(info),
        "</body></html>",
    ]
    return "\n".join(body) + "\n"


def build(results, experiments=None) -> Path:
    """Write `<results>/index.html`; returns its path."""
    experiments = EXPERIMENTS if experiments is None else experiments
    results = Path(results)
    results.mkdir(parents=True, exist_ok=True)
    rows = collect(results, experiments)
    page = results / PAGE
    page.write_text(render(rows, results, machine_and_versions()))
    print(f"wrote {page}")
    return page


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=os.environ.get("JAXBP_RESULTS", "results"))
    args = p.parse_args(argv)
    build(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
