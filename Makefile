# Two commands: `make run` (the whole pipeline locally) and `make test` (the suite).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PROFILE ?= quick

.PHONY: install run test test-fast lint bench bench-gpu image compile clean

# Reinstall only when the dependency list changes; the project itself is installed editable.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/interest data fetch --dataset ml-1m

test: $(STAMP)
	$(BIN)/python -m pytest tests

test-fast: $(STAMP)
	$(BIN)/python -m pytest tests -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check pipelines components trainer preprocessing tests benchmarks

clean:
	rm -rf runs build dist *.egg-info .pytest_cache .ruff_cache
