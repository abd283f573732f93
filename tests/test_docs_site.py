"""`make docs`'s build: the site builds strict (a broken link, a missing page or a docstring
that does not render fails it), renders the math to MathML, shows the figures, and needs no
network to be read."""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]
REMOTE = re.compile(r"""<(?:script|link|img)\b[^>]*\b(?:src|href)=["']?(?:https?:)?//""", re.I)


def test_site_builds_strict_offline_with_math(tmp_path):
    import mkdocs  # noqa: F401 - the site test needs the docs extra; missing, it fails here

    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    cmd = [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "-d", str(site)]
    run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr

    pages = list(site.rglob("*.html"))
    assert len(pages) > 25
    for page in pages:  # nothing fetched from another host to read a page
        assert not REMOTE.search(page.read_text()), page
    for css in site.rglob("*.css"):
        assert not re.search(r"@import\s+url\(\s*['\"]?https?:", css.read_text()), css
    api = (site / "api" / "index.html").read_text()
    assert "<math" in api and "arithmatex" not in api  # LaTeX became MathML at build time
    dense = (site / "api" / "layers.html").read_text()
    assert "dense" in dense and "<math" in dense  # a docstring's equations, rendered
    assert "jaxbp.layers.dense.dense_backward" in dense or "dense_backward" in dense  # ops listed
    recurrent = (site / "recurrent.html").read_text()  # a table rendered from bench_rnn.json
    assert "<!-- table" not in recurrent and "{time_ratio" not in recurrent
    assert "<td>LSTM</td>" in recurrent
    assert (site / "figures" / "optimizers_lr_sweep.png").is_file()
    assert 'src="figures/optimizers_lr_sweep.png"' in (site / "training.html").read_text()
