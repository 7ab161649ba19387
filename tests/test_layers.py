"""The floors of the house are checked, not just written down: `lint-imports` (the contracts in pyproject.toml)
passes on the project and fails, naming the contract, when a lower floor imports a higher one."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "preprocessing", "trainer", "release", "components", "pipelines", "benchmarks")


def lint_imports(cwd: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).parent / "lint-imports"
    return subprocess.run([str(exe), "--no-cache"], cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.fixture
def tree(tmp_path) -> Path:
    """A copy of the packages and the contracts, to break on purpose."""
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__", "results"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_project_keeps_every_contract():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize("module, line, contract", [
    ("core/storage.py", "import pipelines.cli", "Floors"),  # the ground floor reaching the top
    ("trainer/data.py", "from release import registry", "Floors"),  # one stage library importing another
    ("release/gate.py", "import components.artifacts", "Floors"),  # a library importing a component
    ("components/push.py", "from pipelines import profiles", "Floors"),  # a component importing the DAG's floor
    ("trainer/model.py", "import benchmarks.flops", "Nothing that ships imports the benchmarks"),
    ("benchmarks/flops.py", "import pipelines.pipeline", "Benchmarks call"),
])
def test_a_lower_floor_importing_a_higher_one_is_caught(tree, module, line, contract):
    path = tree / module
    path.write_text(path.read_text() + f"\n{line}  # the violation under test\n")
    result = lint_imports(tree)
    assert result.returncode != 0, result.stdout
    broken = [row for row in result.stdout.splitlines() if row.endswith("BROKEN")]
    assert any(row.startswith(contract) for row in broken), result.stdout
    assert module.removesuffix(".py").replace("/", ".") in result.stdout


def test_an_import_cycle_inside_a_package_is_caught_even_through_a_function(tree):
    """trainer/train.py imports trainer/job.py; job.py importing train.py back inside a function (how the worker
    entry once did it) is a cycle."""
    path = tree / "trainer" / "job.py"
    path.write_text(path.read_text() + "\n\ndef _late():\n    from trainer import train  # the cycle under test\n\n"
                    "    return train\n")
    result = lint_imports(tree)
    assert result.returncode != 0, result.stdout
    broken = [row for row in result.stdout.splitlines() if row.endswith("BROKEN")]
    assert any(row.startswith("No import cycle inside a package") for row in broken), result.stdout
    assert "No cycles are allowed in trainer" in result.stdout
