"""MkDocs hook: the site shows the numbers, not the markers they were rendered under.

`python -m experiments.render_docs` keeps each measured number of a page between an opening
comment that names its JSON and template (`<!-- value: ... -->`, `<!-- table: ... -->`) and a
closing one. Markdown would read a template's `{rows[1][ratio]}` inside a table row as a
reference link, so the comments are dropped before the page is converted.
"""

from __future__ import annotations

import re

OPEN = re.compile(r"<!-- (?:value|table): .*?-->\n?", re.S)
CLOSE = re.compile(r"<!-- /(?:value|table) -->")


def on_page_markdown(markdown, page, config, files):
    return CLOSE.sub("", OPEN.sub("", markdown))
