"""Model registry: immutable model versions and a champion pointer that moves only by compare-and-swap.

Layout, below a local directory or ``gs://bucket/prefix``::

    <registry>/<model-name>/<version>/     the model artifact dir (without checkpoints/), metrics.json,
                                           per_user.parquet, blessing.json, lineage.json, and last _PUSHED.json
    <registry>/<model-name>/champion.json  {version, uri, metrics, blessing, sequence, push_id, ...}

A version exists once its ``_PUSHED.json`` manifest (files, sizes, sha256) does; the pointer only ever names such
versions, and every file is written atomically (pipelines.storage), so no reader sees a partial model.

The gate records the pointer's *generation* as it read it (``read_champion``); ``push`` moves the pointer only
if it is still that generation. On GCS that is the object generation with ``if_generation_match`` (0: must not
exist); locally it is the pointer's ``sequence`` compared and replaced under an exclusive ``fcntl`` lock. The
run that loses a race gets ``ChampionChanged``: the champion it was gated against is gone, so it must re-gate.
Pushing a version that is already the champion changes nothing.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pipelines import storage
from pipelines.configs import ConfigError
from pipelines.gate import read_per_user

POINTER = "champion.json"
MANIFEST = "_PUSHED.json"
SKIPPED_DIRS = ("checkpoints",)  # resumable training state: not part of a shipped model
# Files the push writes into a version next to the model's own files.
REGISTRY_FILES = ("metrics.json", "per_user.parquet", "blessing.json", "lineage.json", MANIFEST)
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]")


class ChampionChanged(RuntimeError):
    """The champion pointer moved after this candidate was gated: re-read the champion and re-gate."""


class VersionConflict(RuntimeError):
    """The version already exists in the registry and holds a different model."""


@dataclass(frozen=True)
class PushResult:
    outcome: Literal["pushed", "already_pushed", "not_blessed"]  # already_pushed: it was the champion already
    model_name: str  # registry model name
    version: str  # the version pushed (or that would have been)
    uri: str  # <registry>/<model-name>/<version>
    previous_version: str | None  # the champion before this push (None: there was none)


def check_name(value: str, field: str) -> str:
    """A model name or version: letters, digits, '.', '_', '-', starting with a letter or digit (no '/', no '..')."""
    if not isinstance(value, str) or not NAME_RE.fullmatch(value):
        raise ConfigError(f"{field}: {value!r} is not allowed; use 1-128 letters, digits, '.', '_' or '-', "
                          "starting with a letter or digit")
    return value


def check_registry(registry: str) -> str:
    """A registry root: a local directory, or gs://bucket[/prefix] with a valid bucket and no '.'/'..' segments."""
    if not registry:
        raise ConfigError("--registry: empty; give a local directory or gs://bucket/prefix")
    if not storage.is_gcs(registry):
        return registry
    bucket, _, prefix = registry[len(storage.GCS_PREFIX):].partition("/")
    if not BUCKET_RE.fullmatch(bucket):
        raise ConfigError(f"--registry: {registry!r} has no valid bucket name")
    if any(segment in (".", "..") for segment in prefix.split("/")):
        raise ConfigError(f"--registry: {registry!r} must not contain '.' or '..' segments")
    return registry.rstrip("/")


def model_uri(registry: str, model_name: str) -> str:
    return storage.join(check_registry(registry), check_name(model_name, "model name"))


def version_uri(registry: str, model_name: str, version: str) -> str:
    return storage.join(model_uri(registry, model_name), check_name(version, "version"))


def code_version() -> str:
    """The git commit this code runs from (``-dirty`` with local changes), else $INTEREST_CODE_VERSION, else
    'unknown' (a container image built without .git sets the variable)."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return os.environ.get("INTEREST_CODE_VERSION", "unknown")


def _sha256(uri: str) -> str:
    return hashlib.sha256(storage.read_bytes(uri)).hexdigest()


def default_version(model_dir: str) -> str:
    """A content-addressed version, ``m-<first 12 hex digits of sha256(model.pt)>``: the same weights, the same
    version, so a retried push is recognised."""
    return "m-" + _sha256(storage.join(model_dir, "model.pt"))[:12]


def _relative(root: str, uri: str) -> str:
    return uri[len(root.rstrip("/")) + 1:] if storage.is_gcs(root) else Path(uri).relative_to(root).as_posix()


def _model_files(model_dir: str) -> dict[str, str]:
    """Relative path -> URI of every file of the model dir that ships."""
    files = {_relative(model_dir, uri): uri for uri in storage.list_files(model_dir)}
    files = {rel: uri for rel, uri in files.items() if rel.split("/")[0] not in SKIPPED_DIRS}
    clashes = sorted(set(files) & set(REGISTRY_FILES))
    if clashes:
        raise ValueError(f"{model_dir}: holds {', '.join(clashes)}, names the registry writes itself")
    if "model.pt" not in files:
        raise ConfigError(f"model dir {model_dir!r} has no model.pt; is it an `interest train` output?")
    return files


def _copy(src: str, dst: str) -> None:
    if storage.is_gcs(src) or not storage.is_gcs(dst):
        storage.write_bytes(dst, storage.read_bytes(src))
    else:
        storage.upload_file(src, dst)


def lineage(model_dir: str, eval_dir: str, data_dir: str | None) -> dict:
    """Where a version came from: code version, source dirs, data stats/split/preprocess config, model configs."""

    def optional_json(directory: str | None, name: str) -> dict | None:
        uri = storage.join(directory, name) if directory else None
        return storage.read_json(uri) if uri and storage.exists(uri) else None

    return {
        "code_version": code_version(),
        "model_dir": model_dir, "eval_dir": eval_dir, "data_dir": data_dir,
        "data_stats": optional_json(data_dir, "stats.json"),
        "split": optional_json(data_dir, "split.json"),
        "preprocess_config": optional_json(data_dir, "preprocess_config.json"),
        "model_config": optional_json(model_dir, "model_config.json"),
        "train_config": optional_json(model_dir, "train_config.json"),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _write_version(target: str, model_dir: str, eval_dir: str, data_dir: str | None, blessing: dict,
                   model_sha256: str) -> None:
    """Copy the model and write metrics, blessing and lineage, then the manifest: the version's commit point."""
    manifest: dict[str, dict] = {}
    for rel, uri in sorted(_model_files(model_dir).items()):
        _copy(uri, storage.join(target, rel))
    storage.write_json(storage.join(target, "metrics.json"), storage.read_json(storage.join(eval_dir, "metrics.json")))
    _copy(storage.join(eval_dir, "per_user.parquet"), storage.join(target, "per_user.parquet"))
    storage.write_json(storage.join(target, "blessing.json"), blessing)
    storage.write_json(storage.join(target, "lineage.json"), lineage(model_dir, eval_dir, data_dir))
    for uri in storage.list_files(target):
        rel = _relative(target, uri)
        if rel != MANIFEST:
            data = storage.read_bytes(uri)  # read back: the manifest vouches for what is actually stored
            manifest[rel] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    storage.write_json(storage.join(target, MANIFEST), {
        "model_sha256": model_sha256, "files": manifest,
        "pushed_at": datetime.now(UTC).isoformat(timespec="seconds")})


@contextlib.contextmanager
def _local_lock(directory: str) -> Iterator[None]:
    """An exclusive lock on ``<directory>/.champion.lock`` (threads and processes on this machine)."""
    Path(directory).mkdir(parents=True, exist_ok=True)
    with open(Path(directory, ".champion.lock"), "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def read_pointer(registry: str, model_name: str) -> tuple[dict | None, int]:
    """The champion pointer and its generation ((None, 0) when there is no champion yet)."""
    uri = storage.join(model_uri(registry, model_name), POINTER)
    if storage.is_gcs(uri):
        data, generation = storage.read_with_generation(uri)
        return (json.loads(data), generation) if data is not None else (None, 0)
    if not Path(uri).exists():
        return None, 0
    pointer = storage.read_json(uri)
    return pointer, int(pointer["sequence"])


def read_champion(registry: str, model_name: str) -> dict | None:
    """The production champion as a gate variant (``name`` = version, ``test`` = its metrics, ``per_user``,
    ``model_dir`` = its registry URI) plus ``version``, ``uri`` and the pointer ``generation``; None if none."""
    pointer, generation = read_pointer(registry, model_name)
    if pointer is None:
        return None
    return {"name": pointer["version"], "version": pointer["version"], "uri": pointer["uri"],
            "model_dir": pointer["uri"], "test_dir": pointer["uri"], "generation": generation,
            "test": pointer.get("metrics", {}), "per_user": read_per_user(pointer["uri"])}


def _move_pointer(registry: str, model_name: str, pointer: dict, expected_generation: int) -> str:
    """Compare-and-swap the champion pointer; returns 'pushed' or 'already_pushed', raises ChampionChanged."""
    uri = storage.join(model_uri(registry, model_name), POINTER)
    version = pointer["version"]

    def decide(current: dict | None, generation: int) -> str | None:
        if current is not None and current.get("push_id") == pointer["push_id"]:
            return "pushed"  # our own write, answered late (a lost response, then a retry)
        if current is not None and current.get("version") == version:
            return "already_pushed"
        if generation != expected_generation:
            raise ChampionChanged(
                f"champion changed, re-gate: {model_name} was gated against generation {expected_generation} "
                f"but the pointer is now at generation {generation} (version "
                f"{current.get('version') if current else None})")
        return None

    if storage.is_gcs(uri):
        current, generation = read_pointer(registry, model_name)
        outcome = decide(current, generation)
        if outcome:
            return outcome
        pointer = {**pointer, "sequence": (current or {}).get("sequence", 0) + 1}
        try:
            storage.write_if_generation(uri, json.dumps(pointer, indent=2).encode(), expected_generation)
            return "pushed"
        except storage.GenerationMismatch:
            outcome = decide(*read_pointer(registry, model_name))
            if outcome:
                return outcome
            raise ChampionChanged(f"champion changed, re-gate: {uri} moved during the push") from None
    with _local_lock(model_uri(registry, model_name)):
        current, generation = read_pointer(registry, model_name)
        outcome = decide(current, generation)
        if outcome:
            return outcome
        storage.write_json(uri, {**pointer, "sequence": generation + 1})
        return "pushed"


def push(blessing: dict, registry: str, model_name: str, version: str | None = None,
         model_dir: str | None = None, eval_dir: str | None = None, data_dir: str | None = None) -> PushResult:
    """Copy a blessed model into the registry as ``version`` and make it the champion.

    ``model_dir`` and ``eval_dir`` (the test split's ``interest evaluate`` output) default to the blessing's
    candidate; ``data_dir`` (optional) adds the data's stats, split and preprocess config to the lineage;
    ``version`` defaults to ``default_version(model_dir)``. Raises ChampionChanged when the pointer moved since
    the blessing's gate, VersionConflict when ``version`` already holds other weights.
    """
    model_dir = model_dir or blessing["candidate"]["model_dir"]
    eval_dir = eval_dir or blessing["candidate"].get("test_dir")
    version = check_name(default_version(model_dir) if version is None else version, "version")
    target = version_uri(registry, model_name, version)
    current, _ = read_pointer(registry, model_name)
    previous = current.get("version") if current else None
    if not blessing.get("blessed"):
        return PushResult("not_blessed", model_name, version, target, previous)
    for name in ("metrics.json", "per_user.parquet"):  # the next gate compares against (and bootstraps over) them
        if not eval_dir or not storage.exists(storage.join(eval_dir, name)):
            raise ConfigError(f"eval dir {eval_dir!r}: no {name}; push needs the test split's `interest evaluate` "
                              "output")
    model_sha256 = _sha256(storage.join(model_dir, "model.pt"))
    manifest_uri = storage.join(target, MANIFEST)
    if storage.exists(manifest_uri):
        stored = storage.read_json(manifest_uri)["model_sha256"]
        if stored != model_sha256:
            raise VersionConflict(f"{target} already holds another model (model.pt sha256 {stored[:12]}...)")
    else:
        _write_version(target, model_dir, eval_dir, data_dir, blessing, model_sha256)
    pointer = {
        "model_name": model_name, "version": version, "uri": target,
        "metrics": storage.read_json(storage.join(target, "metrics.json")),
        "previous_version": previous, "blessing": blessing, "code_version": code_version(),
        "push_id": uuid.uuid4().hex, "pushed_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    outcome = _move_pointer(registry, model_name, pointer, int(blessing.get("champion_generation", 0)))
    return PushResult(outcome, model_name, version, target, previous)
