"""Model registry: immutable model versions and a champion pointer that moves only by compare-and-swap.

Layout, below a local directory, ``gs://bucket/prefix`` or ``s3://bucket/prefix``::

    <registry>/<model-name>/<version>/     the model artifact dir (its manifest's files: no checkpoints, no logs),
                                           metrics.json + per_user.parquet (its test evaluation), blessing.json,
                                           lineage.json, and last the _SUCCESS.json manifest (core.rundir)
    <registry>/<model-name>/champion.json  {version, path, metrics, blessing, sequence, push_id, ...}

Every path the registry stores is relative to its root (``path``: ``<model-name>/<version>``), so a registry
that is copied or moved elsewhere works unchanged; a version that is a symbolic link, or a stored path that
leaves the root, is refused.

**A version is claimed before anything is copied.** Its writer lock (``core.rundir``: an ``fcntl`` lock beside
it locally, ``<version>/_LOCK.json`` created with ``if_generation_match=0`` / ``If-None-Match: *`` on object
stores, with a lease) lets exactly one of two concurrent pushes write it; the other fails at once naming the
holder. The version is staged and published whole, so it never mixes the files of two models. A push that dies
half-way leaves no manifest: the registry lists the version as incomplete, never serves it, and the next push of
that version replaces it.

**The champion pointer** moves only after the version is complete. The gate records the pointer's generation
as it read it (``read_champion``); ``push`` moves the pointer only if it is still that generation (GCS
``if_generation_match``, S3 ``If-Match`` on the ETag, locally ``sequence`` under an exclusive ``fcntl`` lock). The
run that loses a race gets ``ChampionChanged``: the champion it was gated against is gone, so it must re-gate.
Pushing a version that is already the champion changes nothing.

Every push first ``release.gate.verify``s its blessing: the exact files judged, the verdict re-derived.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import re
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from core import contract, rundir, storage
from core.configs import ConfigError, from_dict, to_dict
from core.lineage import code_version
from release.gate import BlessingInvalid, GateConfig, verify, weights_sha256
from release.records import Blessing, ChampionRef

POINTER = contract.CHAMPION_POINTER
POLICY = "policy.json"  # <registry>/<model-name>/policy.json: the release policy every push of that model is held to
VERSION_KIND = contract.REGISTRY_VERSION_KIND
# Files the push writes into a version next to the model's own files.
REGISTRY_FILES = (contract.METRICS, contract.PER_USER, contract.BLESSING, contract.LINEAGE)
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]")
REFERENCE_PREFIX = "registry:"  # registry:ROOT[#MODEL_NAME]: the champion of a registry, wherever a model dir goes
CLAIM_LEASE_SECONDS = 120.0  # object stores: how long a dead pusher's claim blocks its version


class ChampionChanged(RuntimeError):
    """The champion pointer moved after this candidate was gated: re-read the champion and re-gate."""


class VersionConflict(RuntimeError):
    """The version already exists in the registry and holds a different model."""


@dataclass(frozen=True)
class Policy:
    """What a blessing must have been judged by: the pipeline's configuration, never the blessing's own."""

    gate: GateConfig = GateConfig()  # thresholds and bootstrap settings the checks are derived with
    baseline: str | None = None  # the variant every candidate must be compared with (None: none required)


@dataclass(frozen=True)
class PushResult:
    outcome: Literal["pushed", "already_pushed", "not_blessed"]  # already_pushed: it was the champion already
    model_name: str  # registry model name
    version: str  # the version pushed (or that would have been)
    uri: str  # <registry>/<model-name>/<version>
    previous_version: str | None  # the champion before this push (None: there was none)


def check_name(value: str, field: str) -> str:
    """A model name or version: letters, digits, '.', '_', '-', starting with a letter or digit (no '/', no '..'),
    and none of the registry's own file names (a version called champion.json would be the pointer)."""
    if not isinstance(value, str) or not NAME_RE.fullmatch(value):
        raise ConfigError(f"{field}: {value!r} is not allowed; use 1-128 letters, digits, '.', '_' or '-', "
                          "starting with a letter or digit")
    if value.lower() == POINTER:
        raise ConfigError(f"{field}: {value!r} is the name of the registry's champion pointer")
    return value


def check_registry(registry: str) -> str:
    """A registry root: a local directory, or gs:// / s3:// / minio:// with a valid bucket and no '.'/'..'
    segments; any other scheme is refused."""
    if not registry:
        raise ConfigError("--registry: empty; give a local directory, gs://bucket/prefix or s3://bucket/prefix")
    storage.check_uri(registry, "--registry")
    if not storage.is_remote(registry):
        return registry
    bucket, prefix = storage.split(registry)
    if not BUCKET_RE.fullmatch(bucket):
        raise ConfigError(f"--registry: {registry!r} has no valid bucket name")
    if any(segment in (".", "..") for segment in prefix.split("/")):
        raise ConfigError(f"--registry: {registry!r} must not contain '.' or '..' segments")
    return registry.rstrip("/")


def model_uri(registry: str, model_name: str) -> str:
    return storage.join(check_registry(registry), check_name(model_name, "model name"))


def _inside(registry: str, uri: str) -> str:
    """``uri`` if no part of it below the registry root is a symbolic link (local registries)."""
    if storage.is_remote(registry):
        return uri
    root, path = Path(registry).absolute(), Path(uri).absolute()
    for part in [path, *path.parents]:
        if part == root or root not in part.parents:
            break
        if part.is_symlink():
            raise ConfigError(f"--registry: {part} is a symbolic link; the registry does not follow links out of "
                              f"its root {root}")
    return uri


def version_path(model_name: str, version: str) -> str:
    """A version's place relative to the registry root."""
    return f"{check_name(model_name, 'model name')}/{check_name(version, 'version')}"


def version_uri(registry: str, model_name: str, version: str) -> str:
    return _inside(registry, storage.join(check_registry(registry), version_path(model_name, version)))


def resolve_path(registry: str, path: str) -> str:
    """A stored relative path (``<model-name>/<version>``) resolved against the registry root, refusing one that
    would leave it."""
    parts = str(path).split("/")
    if len(parts) != 2:
        raise ConfigError(f"registry path {path!r}: expected <model-name>/<version>")
    return version_uri(registry, parts[0], parts[1])


def default_version(model_dir: str) -> str:
    """A content-addressed version, ``m-<first 12 hex digits of sha256(model.pt)>``: the same weights, the same
    version, so a retried push is recognised (the digest is checked against model.pt's bytes on opening)."""
    return "m-" + rundir.open_complete(model_dir).files[contract.WEIGHTS]["sha256"][:12]


# ----------------------------------------------------------------------------------------------- the pointer


@contextlib.contextmanager
def _local_lock(directory: str) -> Iterator[None]:
    """An exclusive lock on ``<directory>/.champion.lock`` (threads and processes on this machine)."""
    Path(directory).mkdir(parents=True, exist_ok=True)
    with rundir.open_lock_file(Path(directory, ".champion.lock")) as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def read_pointer(registry: str, model_name: str) -> tuple[dict | None, storage.Generation]:
    """The champion pointer and its generation ((None, 0) when there is no champion yet)."""
    uri = storage.join(model_uri(registry, model_name), POINTER)
    if storage.is_remote(uri):
        data, generation = storage.read_with_generation(uri)
        raw = data
    else:
        if not Path(uri).exists():
            return None, 0
        raw = Path(uri).read_bytes()
        generation = None
    try:
        pointer = json.loads(raw) if raw is not None else None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{uri}: the champion pointer is not valid JSON ({exc}); restore it from the registry's "
                          "versions or remove it to start without a champion") from None
    if pointer is None:
        return None, 0
    if not isinstance(pointer, dict) or not isinstance(pointer.get("version"), str):
        raise ConfigError(f"{uri}: the champion pointer has no version; restore it or remove it")
    return pointer, generation if generation is not None else int(pointer.get("sequence", 0))


def record_policy(registry: str, model_name: str, policy: Policy) -> None:
    """Record the release policy of ``model_name`` with the registry: pushes without one of their own use it."""
    storage.write_json(storage.join(model_uri(registry, model_name), POLICY),
                       {"gate": to_dict(policy.gate), "baseline": policy.baseline})


def read_policy(registry: str, model_name: str) -> Policy | None:
    """The policy recorded with the registry (None when none is)."""
    uri = storage.join(model_uri(registry, model_name), POLICY)
    if not storage.is_file(uri):
        return None
    data = storage.read_json(uri)
    if not isinstance(data, dict):
        raise ConfigError(f"{uri}: not a release policy (expected an object with gate and baseline)")
    return Policy(from_dict(GateConfig, data.get("gate") or {}), data.get("baseline"))


def _check_policy(blessing: Blessing, policy: Policy) -> None:
    """BlessingInvalid unless the blessing was judged by exactly ``policy``."""
    try:
        judged_by = from_dict(GateConfig, dict(blessing.config))
    except (ConfigError, TypeError, ValueError) as exc:
        raise BlessingInvalid(f"blessing config: {exc}") from None
    if judged_by != policy.gate:
        differs = sorted(k for k, v in to_dict(policy.gate).items() if to_dict(judged_by).get(k) != v)
        raise BlessingInvalid(f"blessing was judged by another policy than this push's ({', '.join(differs)} "
                              "differ); the policy is the pipeline's configuration, not the blessing's: re-run the gate")
    # The baseline is a variant of the run when the run trained it (else the gate has none to compare with).
    trained = {record.get("variant") for record in blessing.runs.values() if isinstance(record, Mapping)}
    if policy.baseline is not None and policy.baseline in trained and blessing.baseline != policy.baseline:
        raise BlessingInvalid(f"blessing was compared with baseline {blessing.baseline!r}, the policy's is "
                              f"{policy.baseline!r}; re-run the gate with --baseline {policy.baseline}")


def _check_champion_claim(blessing: Blessing, registry: str, model_name: str, staged: Mapping[str, str]) -> None:
    """The blessing's champion (or its claim that there is none) is the one the registry's pointer names at the
    generation the blessing records, and the champion model it bound is that version's model.pt."""
    pointer, generation = read_pointer(registry, model_name)
    if generation != blessing.champion_generation:
        return  # moved since the gate: the pointer's compare-and-swap refuses the push (or finds it already done)
    champion = blessing.champion or {}
    claimed = (champion.get("version"), champion.get("path")) if blessing.champion is not None else None
    actual = (pointer["version"], pointer.get("path") or version_path(model_name, pointer["version"])) if pointer \
        else None
    if claimed != actual:
        raise BlessingInvalid(f"blessing says the champion is {claimed and claimed[0]!r} ({claimed and claimed[1]}) "
                              f"but the registry's pointer at generation {generation} names {actual and actual[0]!r} "
                              f"({actual and actual[1]}); re-run the gate")
    actual = actual and actual[0]
    if actual is not None:
        champion = read_champion(registry, model_name)
        if "champion_model" not in staged or weights_sha256(staged["champion_model"]) != weights_sha256(champion.uri):
            raise BlessingInvalid(f"blessing's champion model is not the model.pt of {actual} in the registry; "
                                  "re-run the gate")


def read_champion(registry: str, model_name: str = "interest") -> ChampionRef | None:
    """The production champion (None if there is none); its version must be complete."""
    pointer, generation = read_pointer(registry, model_name)
    if pointer is None:
        return None
    path = pointer.get("path") or version_path(model_name, pointer["version"])
    uri = resolve_path(registry, path)
    try:
        rundir.open_complete(uri, VERSION_KIND)
    except rundir.IncompleteOutput as exc:
        raise ConfigError(f"the champion pointer of {model_name} names an unusable version: {exc}") from None
    return ChampionRef(model_name=model_name, version=pointer["version"], path=path, uri=uri, generation=generation,
                       metrics=pointer.get("metrics", {}))


def resolve(ref: str, model_name: str = "interest") -> str:
    """A model directory from ``ref``: ``registry:ROOT`` (or ``registry:ROOT#MODEL_NAME``) names the champion's
    version directory; anything else is already a directory."""
    if not ref.startswith(REFERENCE_PREFIX):
        return ref
    root, _, name = ref[len(REFERENCE_PREFIX):].partition("#")
    champion = read_champion(root, name or model_name)
    if champion is None:
        raise ConfigError(f"{ref}: the registry has no champion of {name or model_name} yet")
    return champion.uri


def _move_pointer(registry: str, model_name: str, pointer: dict, expected: storage.Generation) -> str:
    """Compare-and-swap the champion pointer; returns 'pushed' or 'already_pushed', raises ChampionChanged."""
    uri = storage.join(model_uri(registry, model_name), POINTER)
    version = pointer["version"]

    def outcome_of(current: dict | None, generation: storage.Generation) -> str | None:
        if current is not None and current.get("push_id") == pointer["push_id"]:
            return "pushed"  # our own write, answered late (a lost response, then a retry)
        if current is not None and current.get("version") == version:
            return "already_pushed"
        if generation != expected:
            raise ChampionChanged(
                f"champion changed, re-gate: {model_name} was gated against generation {expected} "
                f"but the pointer is now at generation {generation} (version "
                f"{current.get('version') if current else None})")
        return None

    if storage.is_remote(uri):
        current, generation = read_pointer(registry, model_name)
        outcome = outcome_of(current, generation)
        if outcome:
            return outcome
        pointer = {**pointer, "sequence": (current or {}).get("sequence", 0) + 1}
        try:
            storage.write_if_generation(uri, json.dumps(pointer, indent=2).encode(), expected)
            return "pushed"
        except storage.GenerationMismatch:
            outcome = outcome_of(*read_pointer(registry, model_name))
            if outcome:
                return outcome
            raise ChampionChanged(f"champion changed, re-gate: {uri} moved during the push") from None
    with _local_lock(model_uri(registry, model_name)):
        current, generation = read_pointer(registry, model_name)
        outcome = outcome_of(current, generation)
        if outcome:
            return outcome
        storage.write_json(uri, {**pointer, "sequence": int(generation) + 1})
        return "pushed"


# ------------------------------------------------------------------------------------------------ versions


def _model_files(model: rundir.Complete) -> dict[str, str]:
    """Relative path -> URI of every file of a complete model dir that ships (its manifest: no working state)."""
    files = {name: model.path(name) for name in model.files}
    clashes = sorted(set(files) & (set(REGISTRY_FILES) - {contract.LINEAGE}))
    if clashes:
        raise ValueError(f"{model.target}: holds {', '.join(clashes)}, names the registry writes itself")
    if contract.WEIGHTS not in files:
        raise ConfigError(f"model dir {model.target!r} has no {contract.WEIGHTS}; is it an `interest train` output?")
    return files


def lineage(model: rundir.Complete, evaluation_dir: str, data_dir: str | None) -> dict:
    """Where a version came from: the model's own lineage (data fingerprint, warm start), code version, source
    dirs, the data's stats/split/preprocess config/fingerprint and the model configs."""
    own = model.optional_path(contract.LINEAGE)
    return {
        **(storage.read_json(own) if own else {}),
        "code_version": code_version(),
        "model_dir": model.target, "eval_dir": evaluation_dir, "data_dir": data_dir,
        "data_stats": contract.read_optional_json(data_dir, contract.STATS),
        "split": contract.read_optional_json(data_dir, contract.SPLIT),
        "preprocess_config": contract.read_optional_json(data_dir, contract.PREPROCESS_CONFIG),
        "data_fingerprint": contract.read_optional_json(data_dir, contract.FINGERPRINT),
        "model_config": contract.read_optional_json(model.target, contract.MODEL_CONFIG),
        "train_config": contract.read_optional_json(model.target, contract.TRAIN_CONFIG),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def version_status(registry: str, model_name: str, version: str) -> str:
    """'complete', 'incomplete' (claimed or partly written, never served) or 'absent'."""
    uri = version_uri(registry, model_name, version)
    if rundir.is_complete(uri):
        return "complete"
    if storage.exists(uri) or (not storage.is_remote(uri) and list(Path(uri).parent.glob(f".{version}.staging-*"))):
        return "incomplete"
    return "absent"


def list_versions(registry: str, model_name: str = "interest") -> list[dict[str, Any]]:
    """Every version of ``model_name`` with its status, the champion marked."""
    root = model_uri(registry, model_name)
    names = set()
    for uri in storage.list_files(root):
        first = storage.relative(root, uri).split("/")[0]
        if NAME_RE.fullmatch(first) and first != POINTER:
            names.add(first)
    if not storage.is_remote(root) and Path(root).is_dir():
        names |= {p.name.split(".staging-")[0].lstrip(".") for p in Path(root).glob(".*.staging-*")}
        names |= {p.name for p in Path(root).iterdir() if p.is_dir() and NAME_RE.fullmatch(p.name)}
    pointer, _ = read_pointer(registry, model_name)
    champion = (pointer or {}).get("version")
    return [{"version": name, "status": version_status(registry, model_name, name), "champion": name == champion}
            for name in sorted(names)]


def _write_version(target: str, model: rundir.Complete, evaluation: rundir.Complete, data_dir: str | None,
                   blessing: Blessing, sources: Mapping[str, str]) -> None:
    """Publish the version whole from the staged copies: the model, its test evaluation, the blessing and the
    lineage (naming ``sources``, where the copies were read from)."""
    with rundir.publishing(target, VERSION_KIND) as staging:
        for rel, uri in sorted(_model_files(model).items()):
            if rel != contract.LINEAGE:
                storage.copy_file(uri, staging.join(rel))
        for name in (contract.METRICS, contract.PER_USER):
            storage.copy_file(evaluation.path(name), staging.join(name))
        storage.write_json(staging.join(contract.BLESSING), blessing.to_json())
        record = lineage(model, sources["candidate_test"], data_dir)
        storage.write_json(staging.join(contract.LINEAGE), {**record, "model_dir": sources["candidate_model"]})
        staging.meta.update(model_sha256=model.files[contract.WEIGHTS]["sha256"],
                            blessing_sha256=hashlib.sha256(json.dumps(blessing.to_json()).encode()).hexdigest())


def _check_data(evaluation_dir: str, data_dir: str) -> None:
    """The candidate's test evaluation (and so every evaluation verify bound to it) measured ``data_dir``."""
    today = rundir.open_complete(data_dir, contract.DATA_KIND).content_digest
    found = contract.read_json(evaluation_dir, contract.METRICS)[contract.MEASURED_KEY]["data_digest"]
    if found != today:
        raise BlessingInvalid(f"the blessing's evaluations measured data {str(found)[:12]}..., not {data_dir} "
                              f"({today[:12]}...); re-run the gate on this data")


def _stage_inputs(blessing: Blessing, locations: Mapping[str, str], private: str) -> tuple[dict, dict]:
    """Every directory the blessing binds, copied once into ``private`` (core.rundir.stage_copy: the copy is
    checked against its own marker); a directory that cannot be copied whole refuses the blessing. Returns
    (role -> staged copy, role -> where it was read from)."""
    staged, sources = {}, {}
    for index, (role, bound) in enumerate(sorted(blessing.inputs.items())):
        source = locations.get(role, bound["dir"])  # Blessing.from_json checked the types
        copy = str(Path(private, f"input-{index}"))  # roles hold ':' (test:RUN): never part of a path
        try:
            rundir.stage_copy(source, copy)
        except rundir.IncompleteOutput as exc:
            raise BlessingInvalid(f"blessing input {role}: {exc}") from None
        staged[role], sources[role] = copy, source
    return staged, sources


def push(blessing: Blessing | Mapping[str, Any], registry: str, model_name: str = "interest",
         version: str | None = None, model_dir: str | None = None, eval_dir: str | None = None,
         data_dir: str | None = None, locations: Mapping[str, str] | None = None,
         policy: Policy | None = None) -> PushResult:
    """Verify the blessing, copy the blessed model into the registry as ``version`` and make it the champion.

    ``policy`` (default: the one recorded with the registry, else ``Policy()``) is what the blessing must have
    been judged by; its champion, or its claim that there is none, must be the pointer's at the generation it
    records; with ``data_dir`` every evaluation must have measured that data.

    ``model_dir`` and ``eval_dir`` (the test split's evaluation) default to the blessing's candidate; with
    ``locations`` (blessing input role -> directory) they and the other judged evaluations are read from where a
    pipeline task received its copies. ``data_dir`` (optional) adds the data's stats, split, preprocess config and
    fingerprint to the lineage; ``version`` defaults to ``m-<12 hex of sha256(model.pt)>``.

    Each judged file is read once: copied into a private staging folder, hashed there and compared with the
    blessing, and only those staged bytes are published (a file swapped at its source during the push is never
    shipped); the version's name and marker come from them too. Raises BlessingInvalid (nothing written) when
    the files differ from those judged or the verdict does not follow from its checks, OutputLocked when another
    push holds the version, VersionConflict when the version holds other weights, ChampionChanged when the
    pointer moved since the gate.
    """
    if not isinstance(blessing, Blessing):
        blessing = Blessing.from_json(blessing)
    locations = dict(locations or {})
    if model_dir:
        locations["candidate_model"] = model_dir
    if eval_dir:
        locations["candidate_test"] = eval_dir
    check_registry(registry)
    check_name(model_name, "model name")
    if version is not None:
        check_name(version, "version")
    current, _ = read_pointer(registry, model_name)
    previous = current.get("version") if current else None
    if not blessing.blessed:
        return PushResult("not_blessed", model_name, version or "", "", previous)
    _check_policy(blessing, policy or read_policy(registry, model_name) or Policy())
    if not isinstance(blessing.inputs, Mapping) or not {"candidate_model", "candidate_test"} <= set(blessing.inputs):
        raise BlessingInvalid("blessing binds no candidate model or test evaluation; re-run the gate")
    with tempfile.TemporaryDirectory(prefix="interest-push-") as private:
        staged, sources = _stage_inputs(blessing, locations, private)
        verify(blessing, staged)  # nothing is written unless the blessing holds for the staged bytes
        _check_champion_claim(blessing, registry, model_name, staged)
        if data_dir is not None:
            _check_data(staged["candidate_test"], data_dir)
        model = rundir.open_complete(staged["candidate_model"])
        evaluation = rundir.open_complete(staged["candidate_test"])
        for name in (contract.METRICS, contract.PER_USER):  # the next gate compares against (and bootstraps over)
            evaluation.path(name)
        model_sha256 = model.files[contract.WEIGHTS]["sha256"]  # checked against the staged bytes on opening
        version = version or default_version(staged["candidate_model"])
        target = version_uri(registry, model_name, version)
        with rundir.locked(target, CLAIM_LEASE_SECONDS):  # the claim: one pusher per version
            if rundir.is_complete(target):  # complete: every file's digest checked against its marker
                stored = rundir.open_complete(target).files.get(contract.WEIGHTS, {}).get("sha256")
                if stored != model_sha256:
                    raise VersionConflict(f"{target} already holds another model (model.pt sha256 "
                                          f"{str(stored)[:12]}...)")
            else:
                _write_version(target, model, evaluation, data_dir, blessing, sources)
    pointer = {
        "model_name": model_name, "version": version, "path": version_path(model_name, version),
        "metrics": contract.read_json(target, contract.METRICS),
        "previous_version": previous, "blessing": blessing.to_json(), "code_version": code_version(),
        "push_id": uuid.uuid4().hex, "pushed_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    outcome = _move_pointer(registry, model_name, pointer, blessing.champion_generation)
    return PushResult(outcome, model_name, version, target, previous)
