"""The examples in docstrings, the README and the docs run, and every number on a page agrees
with the JSON it was rendered from."""

import doctest
import importlib
import json
import pkgutil
import re
from pathlib import Path

import pytest

import jaxbp
from experiments import render_docs

ROOT = Path(__file__).parents[1]
MODULES = sorted(m.name for m in pkgutil.walk_packages(jaxbp.__path__, "jaxbp."))
PAGES = render_docs.pages(ROOT)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0


def python_blocks(page: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", page.read_text(), flags=re.S | re.M)


def test_readme_has_python_blocks():
    assert python_blocks(ROOT / "README.md")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_page_python_blocks_run(page):
    """Each page's ```python blocks run in order, in one namespace per page (a page reads as
    one session); a block that is not meant to run is fenced as ```text."""
    namespace = {}
    for i, block in enumerate(python_blocks(page)):
        name = f"{page.relative_to(ROOT)} (python block {i + 1})"
        exec(compile(block, name, "exec"), namespace)  # noqa: S102 - our own pages


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_page_numbers_match_their_json(page):
    text = page.read_text()
    rendered = render_docs.render(text, ROOT, str(page.relative_to(ROOT)))
    assert rendered == text, f"{page.name} differs from its JSON: python -m experiments.render_docs"


def test_a_changed_json_makes_the_page_stale(tmp_path):
    (tmp_path / "r.json").write_text(json.dumps({"rows": [{"T": 1, "ratio": 0.5}], "a": 2.0}))
    page = (
        "x <!-- value: r.json :: {a:.1f} -->2.0<!-- /value --> y\n"
        "<!-- table: r.json :: rows\n| T | ratio |\n|---|---|\n| {T} | {ratio:.2f} |\n-->\n"
        "| T | ratio |\n|---|---|\n| 1 | 0.50 |\n<!-- /table -->\n"
    )
    assert render_docs.render(page, tmp_path) == page
    (tmp_path / "r.json").write_text(json.dumps({"rows": [{"T": 1, "ratio": 0.7}], "a": 2.0}))
    assert "| 1 | 0.70 |" in render_docs.render(page, tmp_path)
    (tmp_path / "r.json").write_text(json.dumps({"rows": [], "a": 3.0}))
    assert "-->3.0<!--" in render_docs.render(page, tmp_path)


def test_plain_table_marker(tmp_path):
    """The form without a template: the JSON's "table" (columns + rows, or a list of objects)."""
    table = {"columns": ["bug", "caught"], "rows": [["sign", True], ["scale", 0.25]]}
    (tmp_path / "t.json").write_text(json.dumps({"table": table}))
    page = "<!-- table: t.json -->\nold\n<!-- /table -->"
    assert render_docs.render(page, tmp_path) == (
        "<!-- table: t.json -->\n| bug | caught |\n|---|---|\n| sign | True |\n"
        "| scale | 0.25 |\n<!-- /table -->"
    )


def test_plain_table_of_named_rows(tmp_path):
    (tmp_path / "t.json").write_text(json.dumps({"sign flip": {"caught": True, "floor": 1e-12}}))
    page = "<!-- table: t.json -->\n<!-- /table -->"
    assert "| sign flip | True | 1e-12 |" in render_docs.render(page, tmp_path)


def test_a_marker_naming_a_missing_key_fails(tmp_path):
    (tmp_path / "r.json").write_text("{}")
    with pytest.raises(render_docs.RenderError, match="cannot fill"):
        render_docs.render("<!-- value: r.json :: {nope} -->1<!-- /value -->", tmp_path)
    with pytest.raises(render_docs.RenderError, match="no such JSON"):
        render_docs.render("<!-- value: gone.json :: {a} -->1<!-- /value -->", tmp_path)
