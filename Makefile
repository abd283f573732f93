# The two set-up commands of the README. Each creates .venv when missing and installs the
# project into it; nothing else is needed on a fresh machine with Python 3.10+ and make.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test demo check lint format clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,experiments]'
	touch $(STAMP)

# loadgroup: the tests that share a module-scoped fixture run on one worker (tests/conftest.py).
test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadgroup

# Every experiment at the quick size, the gradient-check table, then one page:
# results/index.html. A failed experiment or check shows on the page, and makes demo fail.
# The check table (mostly single-threaded compilation) runs beside the experiments, which run
# in 2 processes (run_all --jobs 2, the slowest first) at a lower priority (nice 5): the table
# is the longest single job, and would otherwise finish alone on one core. They share a compilation cache for
# this one run (a fresh directory, deleted at the end): a program compiled again under a new
# closure (each gradient check's jax.vjp reference, detection_floor's 144 checks) is read
# back, not recompiled; it is the executable XLA built for the same program, so no result
# changes, and no timing does (the benchmarks time compiled calls, never compilation).
demo: $(STAMP)
	mkdir -p results
	export JAX_COMPILATION_CACHE_DIR=$$(mktemp -d) JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0 \
		JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES=0; \
	$(PY) -m jaxbp.cases > results/check_table.txt & check=$$!; \
	nice -n 5 $(PY) -m experiments.run_all --quick --jobs 2; ran=$$?; \
	wait $$check; checked=$$?; cat results/check_table.txt; rm -rf "$$JAX_COMPILATION_CACHE_DIR"; \
	$(PY) -m experiments.report --out results && test $$ran -eq 0 -a $$checked -eq 0

check: $(STAMP)
	$(PY) -m jaxbp.cases

# Every ratio benchmark, manual backward vs autodiff interleaved in one process: results/bench.json,
# bench.png, bench.md; lists each ratio that moved > 10 % against docs/bench_results/bench.json.
.PHONY: bench accelerator
bench: $(STAMP)
	$(PY) -m experiments.bench

# On a GPU/TPU machine: check table (float32, bfloat16), attention, GPT step, backprop_cost
# --quick, into results/accelerator.json naming the device (docs/accelerator.md).
accelerator: $(STAMP)
	$(PY) -m experiments.accelerator

# The documentation site, offline and strict (a warning fails it): numbers re-rendered from the
# experiments' JSON first, then site/ (open site/index.html; no server, no network).
.PHONY: docs
docs: $(STAMP)
	$(PY) -m experiments.render_docs
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet

lint: $(STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix . && $(VENV)/bin/ruff format .

clean:
	rm -rf $(VENV) results .pytest_cache .hypothesis
