# The two set-up commands: `make demo` and `make test`. Each creates .venv by itself.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.trainlab-installed

.PHONY: demo test lint bench docs docs-serve clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	# torch first, pinned to the CPU build, so that resolving `torch>=2.6` below installs nothing more.
	$(PY) -m pip install --quiet --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m trainlab demo

test: $(STAMP)
	$(PY) -m ruff check src tests benchmarks docs
	$(PY) -m ruff format --check src tests benchmarks docs
	$(PY) -m pytest

# The documentation site, built to site/ with every guide's code executed; any warning (a
# broken reference, a public name without a docstring, a failing example) fails it.
DOCS_ENV := NO_MKDOCS_2_WARNING=1 PATH="$(CURDIR)/$(VENV)/bin:$$PATH"

# The build's output must be clean as well: a traceback or a library's warning printed while
# the examples run (which --strict does not see) fails it, so nobody learns to skip past them.
DOCS_LOG := $(VENV)/docs-build.log

docs: $(STAMP)
	$(DOCS_ENV) $(VENV)/bin/mkdocs build --strict > $(DOCS_LOG) 2>&1 || { cat $(DOCS_LOG); exit 1; }
	cat $(DOCS_LOG)
	@if grep -nE 'Traceback|^[WE][0-9]{4} |Warning:' $(DOCS_LOG); then \
		echo "make docs: the build printed the lines above (tracebacks or warnings)"; exit 1; fi

docs-serve: $(STAMP)
	$(DOCS_ENV) $(VENV)/bin/mkdocs serve --strict

lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks docs
	$(PY) -m ruff format --check src tests benchmarks docs

bench: $(STAMP)
	$(PY) benchmarks/optim_step.py
	$(PY) benchmarks/fixed_cost.py
	$(PY) benchmarks/data_batches.py
	$(PY) benchmarks/trainer_overhead.py
	$(PY) benchmarks/time_to_accuracy.py
	$(PY) benchmarks/diagnostics_overhead.py
	$(PY) benchmarks/lab_workers.py

clean:
	rm -rf $(VENV) build dist site src/*.egg-info
