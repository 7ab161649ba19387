"""Every benchmark script imports: `make bench` runs them outside the suite, so a broken import would only show
there (one did, after the package moves)."""

import importlib
from pathlib import Path

import pytest

MODULES = sorted(p.stem for p in (Path(__file__).resolve().parents[2] / "benchmarks").glob("*.py")
                 if p.stem != "__init__")


def test_there_are_benchmarks():
    assert {"run_all", "train_bench", "preprocess_bench", "eval_bench", "time_to_quality"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_the_benchmark_module_imports(name):
    module = importlib.import_module(f"benchmarks.{name}")
    assert module.__doc__, f"benchmarks/{name}.py says what it measures"
