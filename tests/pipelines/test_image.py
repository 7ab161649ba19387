"""The container image, tested without a Docker engine (none runs here): the build context that .dockerignore
leaves, what the Dockerfile COPYs and runs and in which order (dependencies before code, a non-root user), and the
commit-tagged image reference flowing from `make` into the compiled YAML."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from components.image import IMAGE, TAG, check_cluster_image
from core.configs import ConfigError
from core.lineage import code_version

ROOT = Path(__file__).resolve().parents[2]


def ignore_patterns(text: str) -> list[tuple[bool, re.Pattern]]:
    """(is_exception, regex) per .dockerignore line, with Docker's rules: Go filepath.Match globs where `*`
    stays within one path element, `**` spans any number of them, a leading `!` re-includes."""
    rules = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
        regex, i = "", 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif pattern[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif pattern[i] == "?":
                regex, i = regex + "[^/]", i + 1
            else:
                regex, i = regex + re.escape(pattern[i]), i + 1
        rules.append((negate, re.compile(regex + r"\Z")))
    return rules


def excluded(rel: str, rules) -> bool:
    """Docker: the last rule matching the path or one of its parent directories decides."""
    parts = rel.split("/")
    candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    verdict = False
    for negate, regex in rules:
        if any(regex.match(c) for c in candidates):
            verdict = not negate
    return verdict


def build_context(root: Path) -> set[str]:
    """The files `docker build root` would send, skipping excluded directories no exception reaches into."""
    rules = ignore_patterns((root / ".dockerignore").read_text())
    exceptions = [regex.pattern for negate, regex in rules if negate]
    files = set()
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        rel_dir = "" if rel_dir == "." else rel_dir + "/"
        dirnames[:] = [d for d in dirnames if not (
            excluded(rel_dir + d, rules) and not any(p.startswith(re.escape(rel_dir + d)) for p in exceptions))]
        files |= {rel_dir + f for f in filenames if not excluded(rel_dir + f, rules)}
    return files


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1].strip()) for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def copy_sources() -> list[str]:
    sources = []
    for op, args in dockerfile_instructions():
        if op == "COPY":
            tokens = [t for t in shlex.split(args) if not t.startswith("--")]
            sources += tokens[:-1]
    return sources


DECOYS = [".venv/lib/python3.11/site-packages/torch/__init__.py", ".git/HEAD", "runs/20260101-quick/report.html",
          "data/ml-1m.parquet", "pipelines/__pycache__/cli.cpython-311.pyc", "pipelines/leftover.parquet",
          "trainer/model.pt", "pipeline.yaml", ".pytest_cache/v/cache/nodeids", "benchmarks/results/eval.json",
          "interest_pipeline.egg-info/PKG-INFO", "tests/pipeline/test_image.py"]
KEPT = ["pyproject.toml", "README.md", "pipelines/cli.py", "components/train.py", "trainer/model.py", "core/rundir.py",
        "release/gate.py",
        "preprocessing/config.py"]


def test_dockerignore_keeps_code_and_drops_data_venvs_runs_and_caches(tmp_path):
    (tmp_path / ".dockerignore").write_text((ROOT / ".dockerignore").read_text())
    for rel in DECOYS + KEPT:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    assert build_context(tmp_path) == set(KEPT)


def test_real_build_context_holds_what_the_dockerfile_copies_and_nothing_heavy():
    context = build_context(ROOT)
    for source in copy_sources():
        assert (ROOT / source).exists(), f"Dockerfile COPYs {source}, which does not exist"
        assert source in context or any(f.startswith(source + "/") for f in context), f"{source} is .dockerignored"
    for package in ("core", "preprocessing", "trainer", "release", "components", "pipelines"):
        assert f"{package}/__init__.py" in context
    bad = [f for f in context if f.split("/")[0] in (".git", ".venv", "runs", "data", "tests", "benchmarks")
           or f.endswith((".parquet", ".pt", ".whl", ".pyc"))]
    assert bad == []


def test_dockerfile_base_torch_pin_and_build_args():
    ops = dockerfile_instructions()
    assert ops[0] == ("FROM", "python:3.11-slim")
    args = dict(a.split("=", 1) for op, a in ops if op == "ARG" and "=" in a)
    pinned = re.search(r'"torch==([^"]+)"', (ROOT / "pyproject.toml").read_text()).group(1)
    assert args["TORCH_VERSION"] == pinned
    assert args["TORCH_INDEX_URL"].endswith("/whl/cpu")
    runs = " ".join(a for op, a in ops if op == "RUN")
    assert '--index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"' in runs


def test_entrypoint_and_cmd_run():
    ops = dict(dockerfile_instructions())
    entrypoint, cmd = json.loads(ops["ENTRYPOINT"]), json.loads(ops["CMD"])
    exe = Path(sys.executable).parent / entrypoint[0]
    proc = subprocess.run([str(exe), *entrypoint[1:], *cmd], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "usage: interest" in proc.stdout and "run" in proc.stdout


def make_dry_run(*args: str) -> str:
    proc = subprocess.run(["make", "-n", *args], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_dependencies_are_installed_in_a_layer_before_the_code():
    """A new commit rebuilds only the layers after the first COPY of code: the dependency layer (pyproject.toml's
    pins and extras) comes before it, the project itself is installed without dependencies after it, and the
    per-commit build argument is declared only after both installs (an ARG used earlier would void their cache)."""
    ops = dockerfile_instructions()
    index = {i: (op, args) for i, (op, args) in enumerate(ops)}
    first_code = min(i for i, (op, args) in index.items() if op == "COPY" and args.split()[0] in (
        "core", "preprocessing", "trainer", "release", "components", "pipelines"))
    deps = next(i for i, (op, args) in index.items() if op == "RUN" and "requirements.txt" in args)
    project = next(i for i, (op, args) in index.items() if op == "RUN" and "pip install --no-deps ." in args)
    code_version_arg = next(i for i, (op, args) in index.items() if op == "ARG" and args.startswith("CODE_VERSION"))
    assert deps < first_code < project < code_version_arg
    assert [a for op, a in ops[:deps] if op == "COPY"] == ["pyproject.toml ./"]

    # The dependency list the layer installs is pyproject.toml's (with the gcp extra), computed by its own command.
    command = shlex.split(ops[deps][1].replace("${EXTRAS}", "gcp"))
    script = command[command.index("-c") + 1]
    listed = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                            check=True).stdout.split()
    assert "torch==2.13.0" in listed and "kfp-kubernetes==2.17.3" in listed
    assert "google-cloud-aiplatform==1.165.1" in listed and not any(d.startswith("pytest") for d in listed)


def test_the_image_runs_as_a_non_root_user_that_owns_the_kfp_mount_points():
    ops = dockerfile_instructions()
    users = [args for op, args in ops if op == "USER"]
    assert users == ["1000"]  # numeric: Kubernetes runAsNonRoot can verify it without reading /etc/passwd
    user_at = next(i for i, (op, _) in enumerate(ops) if op == "USER")
    assert all(op != "RUN" or "pip install" not in args for op, args in ops[user_at:])
    setup = next(args for op, args in ops[:user_at] if op == "RUN" and "useradd" in args)
    assert "--uid 1000" in setup and "mkdir -p /gcs /minio /s3" in setup and "chown interest:interest /gcs /minio /s3" in (
        setup)


def test_make_image_and_interest_compile_agree_on_the_commit_tag():
    built = make_dry_run("image")
    commit = code_version()
    assert TAG == commit[:12] + ("-dirty" if commit.endswith("-dirty") else "")
    assert f"-t {IMAGE} ." in built and f"--build-arg CODE_VERSION={commit}" in built
    assert "INTEREST_CODE_VERSION=${CODE_VERSION}" in (ROOT / "Dockerfile").read_text()  # what the image reports
    compiled = next(c for c in make_dry_run("compile").splitlines() if " compile " in c)
    assert shlex.split(compiled)[-1] == IMAGE
    # Inside the image (no .git) the same tag comes back from the build argument.
    from components.image import image_tag

    assert image_tag(commit) == TAG
    built = make_dry_run("image", "IMAGE=ghcr.io/acme/interest", "TAG=9.9", "TORCH_INDEX_URL=https://x/whl/cu128")
    assert "docker build --build-arg TORCH_INDEX_URL=https://x/whl/cu128" in built
    assert "-t ghcr.io/acme/interest:9.9 ." in built


@pytest.mark.parametrize("image, problem", [
    ("interest-pipeline:3f2a9c1d0e4b", "no registry host"),
    ("team/interest-pipeline:3f2a9c1d0e4b", "no registry host"),  # Docker Hub's implicit host: refused too
    ("ghcr.io/acme/interest-pipeline", "has no tag"),
    ("ghcr.io/acme/interest-pipeline:latest", "does not say which code"),
    ("ghcr.io/acme/interest-pipeline:3f2a9c1d0e4b-dirty", "does not say which code"),
    ("ghcr.io/acme/interest-pipeline:3f2a9c1d0e4b", None),
    ("localhost:5000/interest-pipeline:3f2a9c1d0e4b", None),
    ("us-docker.pkg.dev/p/r/interest-pipeline@sha256:" + "a" * 64, None),
])
def test_a_cluster_image_names_a_registry_and_one_build(image, problem):
    if problem is None:
        assert check_cluster_image(image) == image
    else:
        with pytest.raises(ConfigError, match=problem):
            check_cluster_image(image)


@pytest.mark.parametrize("image, tag", [("ghcr.io/acme/interest", "1.2.3-cuda")])
def test_make_compile_puts_the_image_on_every_task(tmp_path, image, tag):
    line = next(c for c in make_dry_run("compile", f"IMAGE={image}", f"TAG={tag}").splitlines() if " compile " in c)
    argv = shlex.split(line)
    argv[argv.index("--output") + 1] = str(tmp_path / "pipeline.yaml")
    proc = subprocess.run([str(ROOT / argv[0]), *argv[1:]], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    spec, _platform = yaml.safe_load_all((tmp_path / "pipeline.yaml").read_text())
    assert {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()} == {f"{image}:{tag}"}
