# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
DEMO_DIR ?= .demo

.PHONY: demo test lint bench bench-quick clean help

help:
	@echo "make demo   - install into .venv (if missing or stale) and run the demo job"
	@echo "make test   - install into .venv (if missing or stale), lint, and run the tests"
	@echo "make bench  - run the benchmark suite (results in benchmarks/results)"

# (Re)install when .venv is missing or pyproject.toml changed since the last install.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m trainers.demo --out $(DEMO_DIR) --controls

lint: $(STAMP)
	$(PY) -m ruff check eegstore trainers benchmarks tests examples
	$(PY) -m mypy

test: $(STAMP) lint
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) -m benchmarks run --out benchmarks/results

bench-quick: $(STAMP)
	$(PY) -m benchmarks run --quick --out benchmarks/results-quick

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache .mypy_cache .ruff_cache
