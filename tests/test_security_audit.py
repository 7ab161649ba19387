"""Static audit of the project's own code: no unsafe deserialisation, no eval/exec, no shell=True, no secrets.

The audit walks the syntax tree of every Python file in the shipped packages and benchmarks, so a new
``torch.load`` without ``weights_only=True`` (or a ``pickle.load``, ``yaml.load``, ``eval``...) fails CI.
"""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "preprocessing", "trainer", "release", "components", "pipelines", "benchmarks")


def python_files() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py") if "__pycache__" not in p.parts)


def call_name(node: ast.Call) -> str:
    parts = []
    func = node.func
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if isinstance(func, ast.Name):
        parts.append(func.id)
    return ".".join(reversed(parts))


def keyword(node: ast.Call, name: str):
    for kw in node.keywords:
        if kw.arg == name:
            return kw.value
    return None


def is_true(value) -> bool:
    return isinstance(value, ast.Constant) and value.value is True


def findings(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
            if any(n and n.split(".")[0] in ("pickle", "cPickle", "dill", "marshal", "shelve") for n in names):
                found.append(f"{path}:{node.lineno}: imports a pickle-like module")
        if not isinstance(node, ast.Call):
            continue
        name = call_name(node)
        where = f"{path}:{node.lineno}: {name}"
        if name in ("eval", "exec", "compile", "__import__"):
            found.append(f"{where}: dynamic code execution")
        if name.endswith("torch.load"):
            if not is_true(keyword(node, "weights_only")):
                found.append(f"{where}: torch.load without weights_only=True")
        if name in ("yaml.load", "yaml.unsafe_load", "yaml.full_load"):
            found.append(f"{where}: use yaml.safe_load")
        if name.endswith(("np.load", "numpy.load")) and is_true(keyword(node, "allow_pickle")):
            found.append(f"{where}: allow_pickle=True")
        if is_true(keyword(node, "shell")):
            found.append(f"{where}: shell=True")
        if name in ("os.system", "os.popen"):
            found.append(f"{where}: shell command")
    return found


def test_there_is_code_to_audit():
    assert len(python_files()) >= 5


@pytest.mark.parametrize("path", python_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_unsafe_calls(path):
    assert findings(path) == []


def test_audit_catches_what_it_claims(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import pickle\nimport torch, yaml, subprocess\n"
        "torch.load('x')\ntorch.load('x', weights_only=False)\nyaml.load('a')\n"
        "subprocess.run('ls', shell=True)\neval('1')\n"
    )
    assert len(findings(bad)) == 6


SECRET_PATTERNS = [
    re.compile(r"-----BEGIN (RSA |EC )?PRIVATE KEY-----"),
    re.compile(r'"type":\s*"service_account"'),
    re.compile(r"AKIA[0-9A-Z]{16}"),
    re.compile(r"AIza[0-9A-Za-z\-_]{35}"),
    re.compile(r'"private_key_id"'),
]


def test_no_credentials_in_tracked_files():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    hits = []
    for rel in tracked:
        path = ROOT / rel
        if not path.is_file() or path.stat().st_size > 2_000_000:
            continue
        text = path.read_text(errors="ignore")
        hits += [f"{rel}: {p.pattern}" for p in SECRET_PATTERNS if p.search(text) and rel != "tests/test_security_audit.py"]
    assert hits == []
