"""Tests run in float64 by default (the gradient checks need it); float32 is tested explicitly.

Most of the suite's time is XLA compiling small programs (docs/test_times.md has the numbers):

- A compilation cache for this one run, shared by the pytest-xdist workers and the subprocesses
  tests start: the registry's modes and many tests compile the same program again (the jax.vjp
  reference of a case, a model's step rebuilt per test). It lives in a fresh temporary directory
  per run, so a run never starts warm and `make test` on a fresh clone times what it measures.
  It returns the executable XLA compiled for the same program: numerics are unchanged.
- With `-n 2 --dist loadgroup` (the Makefile's `make test`), the tests of a file that share a
  module-scoped fixture run on one worker, so the fixture (a subprocess child, a dataset, a
  compiled step) is built once, not once per worker.
- XLA compiles at LLVM optimization level 0 (`--xla_backend_optimization_level=0`, also in
  the subprocesses tests start): the suite is mostly compiling small programs once, and this
  cuts the compile CPU by ~20 % (the registry's float32 modes: 82 → 65 s). The HLO passes,
  hence buffer assignment and every `memory_analysis()` a test reads, are unchanged; results
  may differ in the last bits from a default build, which no check depends on (each bitwise
  test compares two programs compiled with the same flags, and passes at both levels).
- XLA:CPU emits fusions with its older elemental emitter (`--xla_cpu_use_fusion_emitters=false`):
  the MLIR fusion emitters take about twice the compile time on these small programs (four
  registry cases in all modes: 46 → 27 s; the whole suite 678 → 556 s wall on a fresh clone).
  The same caveat on last bits applies; every check, memory_analysis ones included, passes
  under both emitters.
"""

import os
import shutil
import tempfile

FAST_COMPILE_FLAGS = ("--xla_backend_optimization_level=0", "--xla_cpu_use_fusion_emitters=false")

# One cache directory per run, made by the first process (the xdist controller, or the only
# process), which deletes it at the end; the workers and the subprocesses that tests start
# inherit it through the environment, where JAX reads these settings when it is imported.
MADE_CACHE = "JAX_COMPILATION_CACHE_DIR" not in os.environ
if MADE_CACHE:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="jaxbp-test-xla-cache-")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
for flag in FAST_COMPILE_FLAGS:
    if flag.split("=")[0] not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flag).strip()

import jax  # noqa: E402 - after the environment: JAX reads it when it is imported
import pytest  # noqa: E402

jax.config.update("jax_enable_x64", True)


def pytest_unconfigure(config):
    if MADE_CACHE:
        shutil.rmtree(os.environ.pop("JAX_COMPILATION_CACHE_DIR"), ignore_errors=True)


def pytest_itemcollected(item):
    """Under --dist loadgroup: the tests of a file that share a module-scoped fixture are one
    group (one worker); every other test is scheduled on its own. Marked as each test is
    collected: pytest-xdist reads the marks in its own pytest_collection_modifyitems, which
    ran before this conftest's (so until this fix each worker built the fixture again)."""
    info = getattr(item, "_fixtureinfo", None)
    fixtures = info.name2fixturedefs.values() if info else ()
    if any(d.scope == "module" for defs in fixtures for d in defs):
        item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))


@pytest.fixture
def key():
    return jax.random.key(0)
