"""MkDocs hook: LaTeX math rendered to MathML when the site is built, so reading it needs no
script and no network.

`pymdownx.arithmatex` (generic mode) leaves `$...$` as `<span class="arithmatex">\\(...\\)</span>`
and `$$...$$` as `<div class="arithmatex">\\[...\\]</div>` in every page, the API reference's
docstrings included; this hook replaces each with the MathML that `latex2mathml` makes of it.
A formula latex2mathml cannot convert fails the build (with the page and the formula).
"""

from __future__ import annotations

import html
import re

from latex2mathml.converter import convert

INLINE = re.compile(r'<span class="arithmatex">\\\((.*?)\\\)</span>', re.S)
BLOCK = re.compile(r'<div class="arithmatex">\\\[(.*?)\\\]</div>', re.S)


def _mathml(latex: str, display: str, page) -> str:
    try:
        return convert(html.unescape(latex).strip(), display=display)
    except Exception as e:  # latex2mathml raises several kinds; each is a broken formula
        raise SystemExit(f"math on {page.file.src_uri}: cannot render {latex!r}: {e}") from e


def on_page_content(html_text, page, config, files):
    html_text = BLOCK.sub(lambda m: _mathml(m[1], "block", page), html_text)
    return INLINE.sub(lambda m: _mathml(m[1], "inline", page), html_text)


def on_startup(command, dirty):
    """The docstrings head their doctests "Example:"; griffe's Google parser knows only
    "Examples:" and would render the `>>>` lines as prose (their brackets as broken links)."""
    from griffe._internal.docstrings import google

    kinds = google._section_kind
    if "examples" not in kinds:
        raise SystemExit("griffe changed: no 'examples' docstring section to alias 'example' to")
    kinds.setdefault("example", kinds["examples"])
