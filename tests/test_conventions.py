"""The naming and signature rules of docs/conventions.md, checked on the public API."""

import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import pytest

import jaxbp
import jaxbp.distributed
import jaxbp.layers

# The positional parameters a constructor may have: its required sizes (docs/conventions.md).
SIZES = {
    "features",
    "hidden_features",
    "kernel_size",
    "vocab_size",
    "heads",
    "window",
    "max_len",
    "rate",  # Dropout(rate)
    "shape",  # Reshape(shape)
}
# Models built from Layers keep the models' casing (docs/conventions.md).
MODELS_OF_LAYERS = {"VAE", "Autoencoder"}
FORBIDDEN_NAMES = {"out_dim", "dim", "hidden"}  # one width name: features / hidden_features

LAYER_MODULES = sorted(m.name for m in pkgutil.iter_modules(jaxbp.layers.__path__, "jaxbp.layers."))
ALL_MODULES = sorted(m.name for m in pkgutil.walk_packages(jaxbp.__path__, "jaxbp."))


def _public_functions(module):
    """(name, function) defined in `module` itself (not imported), public."""
    for name, obj in vars(module).items():
        if name.startswith("_") or not inspect.isfunction(obj):
            continue
        if obj.__module__ == module.__name__:
            yield name, obj


def _exported(module):
    names = getattr(module, "__all__", None) or [n for n in vars(module) if not n.startswith("_")]
    return {n: getattr(module, n) for n in names}


def _constructors():
    """Every public CamelCase function of jaxbp, jaxbp.layers(.*), jaxbp.distributed, models."""
    found = {}
    modules = [jaxbp, jaxbp.layers, jaxbp.distributed, jaxbp.models]
    modules += [importlib.import_module(m) for m in LAYER_MODULES]
    for module in modules:
        for name, obj in _exported(module).items():
            if inspect.isfunction(obj) and name[0].isupper() and obj.__module__.startswith("jaxbp"):
                found[f"{obj.__module__}.{name}"] = obj
    return found


CONSTRUCTORS = _constructors()


def _returns_layer(fn) -> bool:
    return inspect.signature(fn).return_annotation in ("Layer", jaxbp.Layer)


def test_there_are_constructors_to_check():
    assert {"jaxbp.layers.dense.Dense", "jaxbp.models.gpt.GPT", "jaxbp.models.mlp.MLP"} <= set(
        CONSTRUCTORS
    )
    assert "jaxbp.distributed.TensorParallelMLP" in CONSTRUCTORS


@pytest.mark.parametrize("qualname", sorted(CONSTRUCTORS))
def test_constructor_takes_sizes_positional_and_options_keyword_only(qualname):
    fn = CONSTRUCTORS[qualname]
    assert _returns_layer(fn), f"{qualname}: a CamelCase function returns a Layer"
    params = inspect.signature(fn).parameters.values()
    positional = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if fn.__name__ in MODELS_OF_LAYERS:
        assert positional == ["encoder", "decoder"], qualname
        return
    not_sizes = [name for name in positional if name not in SIZES]
    assert not not_sizes, f"{qualname}: options {not_sizes} must be keyword-only (after *)"
    assert all(p.kind != p.VAR_POSITIONAL for p in params), qualname
    for p in params:  # a size is required: it has no default
        if p.name in positional:
            assert p.default is p.empty, f"{qualname}: the size {p.name} has a default"


def test_constructor_rule_catches_a_positional_option():
    def Bad(features: int, bias: bool = True) -> "Layer":  # noqa: F821
        raise NotImplementedError

    positional = [p.name for p in inspect.signature(Bad).parameters.values()]
    assert [n for n in positional if n not in SIZES] == ["bias"]


def _combinators():
    found = {}
    modules = [importlib.import_module(m) for m in ALL_MODULES if not m.startswith("jaxbp.cases")]
    for module in modules:
        for name, fn in _public_functions(module):
            if name[0].islower() and _returns_layer(fn):
                found[f"{module.__name__}.{name}"] = fn
    return found


COMBINATORS = _combinators()


def test_the_known_combinators_are_found():
    names = {q.rsplit(".", 1)[1] for q in COMBINATORS}
    assert {"serial", "residual", "parallel", "remat", "remat_sequence", "bidirectional"} <= names
    assert {"node_map", "data_parallel"} <= names


@pytest.mark.parametrize("qualname", sorted(COMBINATORS))
def test_lowercase_layer_functions_take_layers(qualname):
    params = list(inspect.signature(COMBINATORS[qualname]).parameters.values())
    layers = [p for p in params if p.annotation in ("Layer", jaxbp.Layer)]
    assert layers, f"{qualname}: a lowercase function returning a Layer takes Layers"
    first = params[0]
    assert first.annotation in ("Layer", jaxbp.Layer), f"{qualname}: the Layers come first"
    others = [p for p in params[1:] if p.kind == p.POSITIONAL_OR_KEYWORD]
    assert all(p.annotation in ("Layer", jaxbp.Layer) for p in others), (
        f"{qualname}: options are keyword-only: {[p.name for p in others]}"
    )


@pytest.mark.parametrize("name", ALL_MODULES)
def test_no_public_parameter_uses_an_old_width_name(name):
    module = importlib.import_module(name)
    bad = {}
    for fname, fn in _public_functions(module):
        params = set(inspect.signature(fn).parameters)
        old = FORBIDDEN_NAMES & params
        if fname[0].isupper():  # a Layer's BPTT segments are remat_every (fit's period stays)
            old |= {"checkpoint_every"} & params
        if old:
            bad[fname] = sorted(old)
    assert not bad, f"{name}: use features / hidden_features / remat_every: {bad}"


@pytest.mark.parametrize("name", LAYER_MODULES + ["jaxbp.distributed"])
def test_every_forward_op_has_its_backward(name):
    module = importlib.import_module(name)
    functions = dict(_public_functions(module))
    forwards = [f for f in functions if f.endswith("_forward")]
    for fname in forwards:
        op = fname.removesuffix("_forward")
        assert f"{op}_backward" in functions, f"{name}.{fname} has no {op}_backward"


@pytest.mark.parametrize("name", LAYER_MODULES)
def test_op_backwards_take_residuals_then_the_cotangent(name):
    module = importlib.import_module(name)
    functions = dict(_public_functions(module))
    for fname, forward in functions.items():
        if not fname.endswith("_forward"):
            continue
        op = fname.removesuffix("_forward")
        backward = inspect.signature(functions[f"{op}_backward"]).parameters
        positional = [p for p, v in backward.items() if v.kind == v.POSITIONAL_OR_KEYWORD]
        where = [i for i, p in enumerate(positional) if p in ("residuals", "res")]
        assert where, f"{name}.{op}_backward takes the residuals"
        i = where[0]
        assert i in (0, 1) or op == "segments", f"{name}.{op}_backward: (params, residuals, dy)"
        assert positional[i + 1].startswith("d"), f"{name}.{op}_backward: residuals, then dy"
        forward_options = {
            p for p, v in inspect.signature(forward).parameters.items() if v.kind == v.KEYWORD_ONLY
        }
        extra = {p for p, v in backward.items() if v.kind == v.KEYWORD_ONLY} - forward_options
        assert not extra, f"{name}.{op}_backward has options its forward lacks: {extra}"


def _documented_public_names():
    page = (Path(__file__).parents[1] / "docs" / "conventions.md").read_text()
    section = page.split("## Public names", 1)[1].split("\n## ", 1)[0]
    bullets = [par for par in section.split("\n\n") if par.lstrip().startswith("* ")]
    assert len(bullets) == 1, "docs/conventions.md: one bullet list of public names"
    return re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)`", bullets[0])


def test_all_equals_the_documented_list():
    documented = _documented_public_names()
    assert len(documented) == len(set(documented)), "a name is listed twice in the docs"
    assert sorted(documented) == sorted(jaxbp.__all__)
    assert len(jaxbp.__all__) == len(set(jaxbp.__all__))


def test_every_exported_name_exists():
    missing = [name for name in jaxbp.__all__ if not hasattr(jaxbp, name)]
    assert not missing


def test_no_lazy_imports_in_the_package():
    assert not hasattr(jaxbp, "_LAZY")
    assert "__getattr__" not in vars(jaxbp)
