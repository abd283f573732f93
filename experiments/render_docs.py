"""Render every number an experiment produced into the README and the docs, from its JSON.

    python -m experiments.render_docs           # rewrite the pages in place
    python -m experiments.render_docs --check   # exit 1 and name each page that is stale

A page never holds a measured number typed by hand: it holds a marker, an HTML comment that
GitHub and MkDocs do not show, followed by the text rendered from the experiment's committed
JSON, up to the closing marker. Two forms, paths relative to the repository root:

A value, inside a sentence (the template is a Python format string over the JSON's top level):

    at depth 256 √n keeps <!-- value: docs/memory_results/memory.json ::
    {summary[sqrt_memory_ratio]:.2f} -->0.10<!-- /value -->× the memory

A table. With a template, the comment's lines up to the `|---|` separator are the header; each
line after it is a row template, rendered once per element of the list at the `::` path (a
`/`-separated path of keys and list indexes), or once against the whole JSON when no path is
given:

    <!-- table: docs/recurrent_results/bench_rnn.json :: rows
    | cell | T | time ratio |
    |---|---|---|
    | {cell} | {T} | {time_ratio:.2f} |
    -->
    (rendered rows)
    <!-- /table -->

Without a template (`<!-- table: path.json -->`) the table is the JSON's "table" key (or the
JSON itself): a list of objects (their keys are the columns), an object of objects (one row
per key) or {"columns": [...], "rows": [[...], ...]}; numbers print with 4 significant digits.
A missing value (null) prints as "–".

`tests/test_docs.py` renders every page in memory and fails when one differs from its file:
change a JSON, and the page must be re-rendered (and re-read) before the tests pass.
"""

from __future__ import annotations

import argparse
import json
import re
import string
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

VALUE = re.compile(r"<!-- value: (?P<spec>.*?)-->(?P<body>.*?)<!-- /value -->", re.S)
TABLE = re.compile(r"<!-- table: (?P<spec>.*?)-->\n(?P<body>.*?)<!-- /table -->", re.S)


class RenderError(ValueError):
    """A marker that names a missing file, a missing key or a malformed template."""


class _Formatter(string.Formatter):
    def format_field(self, value, format_spec):
        if value is None:
            return "–"
        return super().format_field(value, format_spec)


_FORMAT = _Formatter()


def pages(root: Path = ROOT) -> list[Path]:
    """The pages that may hold markers: the README and every Markdown file under docs/."""
    return [root / "README.md", *sorted((root / "docs").rglob("*.md"))]


def load(path: str, root: Path, cache: dict):
    if path not in cache:
        file = root / path
        if not file.is_file():
            raise RenderError(f"no such JSON: {path}")
        cache[path] = json.loads(file.read_text())
    return cache[path]


def walk(data, path: str, where: str):
    """`data` at a `/`-separated path of keys and list indexes ('' is `data` itself)."""
    for part in filter(None, path.split("/")):
        try:
            data = data[int(part)] if isinstance(data, list) else data[part]
        except (KeyError, IndexError, ValueError, TypeError) as e:
            raise RenderError(f"{where}: no {part!r} on the path {path!r}") from e
    return data


def fill(template: str, data, where: str) -> str:
    try:
        if isinstance(data, dict):
            return _FORMAT.vformat(template, (data,), data)
        return _FORMAT.vformat(template, (data,), {})
    except (KeyError, IndexError, ValueError, TypeError, AttributeError) as e:
        raise RenderError(f"{where}: cannot fill {template!r}: {e!r}") from e


def _spec(spec: str) -> tuple[str, str]:
    """'path.json :: rest' -> (path, rest); 'path.json' -> (path, '')."""
    path, _, rest = spec.partition("::")
    return path.strip(), rest.strip()


def _cell(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def plain_table(data, where: str) -> str:
    """A Markdown table from a list of objects or from {"columns": [...], "rows": [[...]]}."""
    if isinstance(data, dict) and "table" in data:
        data = data["table"]
    if isinstance(data, dict) and {"columns", "rows"} <= set(data):
        columns, rows = list(data["columns"]), [list(r) for r in data["rows"]]
    elif isinstance(data, list) and data and all(isinstance(r, dict) for r in data):
        columns = list(data[0])
        rows = [[r.get(c) for c in columns] for r in data]
    elif isinstance(data, dict) and data and all(isinstance(r, dict) for r in data.values()):
        fields = list(next(iter(data.values())))  # {name: {field: value}}: one row per name
        columns = ["", *fields]
        rows = [[name, *(r.get(c) for c in fields)] for name, r in data.items()]
    else:
        raise RenderError(
            f"{where}: a plain table needs a list of objects, an object of objects, or "
            "columns + rows"
        )
    lines = ["| " + " | ".join(map(str, columns)) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def render_table(spec: str, root: Path, cache: dict, where: str) -> str:
    head, _, template = spec.partition("\n")
    path, key = _spec(head)
    data = load(path, root, cache)
    if not template.strip():
        return plain_table(walk(data, key, where), where)
    lines = template.strip().splitlines()
    rule = re.compile(r"\|(\s*:?-+:?\s*\|)+")
    sep = next((i for i, line in enumerate(lines) if rule.fullmatch(line)), None)
    if sep is None:
        raise RenderError(f"{where}: a table template needs a |---| line under its header")
    header, row_templates = lines[: sep + 1], lines[sep + 1 :]
    out = list(header)
    if key:
        items = walk(data, key, where)
        if not isinstance(items, list):
            raise RenderError(f"{where}: {key!r} is not a list")
        for item in items:
            out += [fill(t, item, where) for t in row_templates]
    else:
        out += [fill(t, data, where) for t in row_templates]
    return "\n".join(out) + "\n"


def render(text: str, root: Path = ROOT, where: str = "page", cache=None) -> str:
    """`text` with every marker's body rendered again from its JSON."""
    cache = {} if cache is None else cache

    def value(m):
        path, template = _spec(m["spec"])
        body = fill(" ".join(template.split()), load(path, root, cache), where)
        return f"<!-- value: {m['spec']}-->{body}<!-- /value -->"

    def table(m):
        body = render_table(m["spec"].rstrip(" "), root, cache, where)
        return f"<!-- table: {m['spec']}-->\n{body}<!-- /table -->"

    return VALUE.sub(value, TABLE.sub(table, text))


def stale(root: Path = ROOT) -> list[str]:
    """The pages whose text differs from their rendering (relative paths)."""
    cache, out = {}, []
    for page in pages(root):
        text = page.read_text()
        if render(text, root, str(page.relative_to(root)), cache) != text:
            out.append(str(page.relative_to(root)))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 if stale")
    args = p.parse_args(argv)
    if args.check:
        bad = stale()
        for name in bad:
            print(f"stale: {name} (run python -m experiments.render_docs)")
        return 1 if bad else 0
    cache = {}
    for page in pages():
        text = page.read_text()
        new = render(text, ROOT, str(page.relative_to(ROOT)), cache)
        if new != text:
            page.write_text(new)
            print(f"rendered {page.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
