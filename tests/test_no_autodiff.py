"""The first rule: nothing in jaxbp/ calls autodiff, except check.py and autodiff.py."""

import ast
from pathlib import Path

import jaxbp

FORBIDDEN = {"grad", "vjp", "jvp", "linearize", "value_and_grad", "hessian", "jacfwd", "jacrev"}
ALLOWED = {"check.py", "autodiff.py"}


def _violations(source: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr in FORBIDDEN:
            base = node.value
            if isinstance(base, ast.Name) and base.id == "jax":
                found.append(f"line {node.lineno}: jax.{node.attr}")
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "jax":
            found += [
                f"line {node.lineno}: from {node.module} import {a.name}"
                for a in node.names
                if a.name in FORBIDDEN
            ]
    return found


def test_scanner_catches_both_spellings():
    assert _violations("import jax\njax.grad(f)")
    assert _violations("from jax import vjp")
    assert not _violations("import jax\njax.jit(f)\nfrom jaxbp.models import loss_and_grad")


def test_no_autodiff_inside_the_package():
    root = Path(jaxbp.__file__).parent
    bad = {}
    for path in root.rglob("*.py"):
        if path.name in ALLOWED and path.parent == root:
            continue
        found = _violations(path.read_text())
        if found:
            bad[str(path.relative_to(root))] = found
    assert not bad, f"autodiff used inside jaxbp/: {bad}"
