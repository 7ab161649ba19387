"""Output directories that are never half-written, never written by two runs at once, and read only when whole.

Every stage that writes a directory (preprocess, the training export, evaluate, report) writes it with
``writing(target)``::

    with rundir.writing(output, kind="preprocessed-data") as staging:
        ...write files below staging.path...
        staging.describe("sequences-00000-of-00004.parquet", rows=1510)   # optional per-file facts
    # here the directory is published: complete, with its manifest

1. **One writer.** ``writing`` takes an exclusive lock on ``target`` first. Locally it is an ``fcntl`` lock on
   ``<parent>/.<name>.lock`` (released by the kernel when the holder dies); on an object store it is the object
   ``<target>/_LOCK.json`` created only if absent (GCS ``if_generation_match=0``, S3 ``If-None-Match: *``),
   holding an owner and a lease that a heartbeat renews and that a crashed run's successor may break once it has
   expired. A second writer fails at once with ``OutputLocked`` naming the holder.
2. **Staging, then one publishing step.** Files go to a staging place beside the target; the manifest
   ``_SUCCESS.json`` (every file with its size and sha256, plus what the writer described) is written last.
   Locally the staging directory ``<parent>/.<name>.staging-<id>`` replaces the target in one
   ``renameat2(RENAME_EXCHANGE)`` (or, where the kernel lacks it, two renames that ``recover`` can finish or undo
   after a crash). On an object store the files are written under ``<target>/<id>/`` and publishing is the write of
   ``<target>/_SUCCESS.json`` naming that prefix, conditional on the marker's generation at lock time; readers
   trust only what the marker lists, and the previous version stays readable until the next publish. A failed or
   killed run therefore leaves the previous complete output untouched.
3. **Readers verify** (``open_complete``): the marker exists, names no root but its own version, and every file
   it lists is present, no symbolic link, with its size and sha256; ``IncompleteOutput`` (a ConfigError: exit 2)
   names the missing or changed piece otherwise. (ML-1M: 37 ms for the 12 MB data directory, benchmarks/README.)
4. **Writers replace only their own kind**: an output of another kind, or files no run published, are refused
   (``OutputExists``, exit 2) unless the writer is asked to ``overwrite``.

``carry`` names entries of the current target that are working state rather than output (a trainer's
``checkpoints/`` and live ``tensorboard/``): they are moved into the staging directory just before publishing,
are not listed in the manifest, and are recovered from a crashed publish.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import errno
import fcntl
import glob
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core import storage
from core.configs import ConfigError

log = logging.getLogger(__name__)

MARKER = "_SUCCESS.json"
LOCK = "_LOCK.json"  # object stores: the lock object inside the target prefix
MANIFEST_FORMAT = 1
DEFAULT_LEASE_SECONDS = 900.0  # object-store locks: renewed every third of it while the writer lives
_OWNER_READS = 100  # local locks: reads of a held lock's owner (10 ms apart) before naming no holder


class IncompleteOutput(ConfigError):
    """A directory is missing its marker, or a file its marker lists (exit code 2, names the missing piece)."""


class OutputExists(ConfigError):
    """The output already holds something this writer must not replace unasked: another kind of output, or files
    no run of this project published (exit code 2; ``--overwrite`` replaces it)."""


class OutputLocked(RuntimeError):
    """Another run is writing the same output directory right now; the message names it."""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _owner(lease_seconds: float | None = None) -> dict[str, Any]:
    owner = {"host": socket.gethostname(), "pid": os.getpid(), "since": _now(),
             "command": " ".join(sys.argv)[:500], "id": uuid.uuid4().hex[:12]}
    if lease_seconds is not None:
        owner["lease_expires"] = time.time() + lease_seconds
    return owner


def _describe_owner(owner: dict[str, Any] | None) -> str:
    if not owner:
        return "another process (no owner recorded)"
    return f"pid {owner.get('pid')} on {owner.get('host')} since {owner.get('since')} ({owner.get('command', '')!s:.120})"


# ------------------------------------------------------------------------------------------------- locks


def open_lock_file(path: Path):
    """A lock file opened for reading and writing, created if absent, never through a symbolic link: a link
    planted at the lock's name would otherwise have its target emptied and rewritten by the holder."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OutputLocked(f"{path} is a symbolic link; remove it (a lock file is never followed)") from None
        raise
    return os.fdopen(fd, "r+")


class _LocalLock:
    """``fcntl`` lock on ``<parent>/.<name>.lock``, holder details written into the file."""

    def __init__(self, target: Path):
        self.path = target.parent / f".{target.name}.lock"
        self.handle = None

    def acquire(self, what: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open_lock_file(self.path)
        for attempt in range(_OWNER_READS):
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                handle.seek(0)
                try:
                    owner = json.loads(handle.read() or "null")
                except json.JSONDecodeError:
                    owner = None
            # No owner yet: the holder has just locked and not yet written its details, or is releasing (it
            # empties the file before unlocking). Look again shortly, so the error names the holder.
            if owner is not None or attempt == _OWNER_READS - 1:
                handle.close()
                raise OutputLocked(f"{what} is being written by {_describe_owner(owner)}; wait for it or choose "
                                   "another output")
            time.sleep(0.01)
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(_owner()))
        handle.flush()
        self.handle = handle

    def release(self) -> None:
        if self.handle is not None:
            self.handle.seek(0)
            self.handle.truncate()
            fcntl.flock(self.handle.fileno(), fcntl.LOCK_UN)
            self.handle.close()
            self.handle = None


class _ObjectLock:
    """``<target>/_LOCK.json`` created only if absent; a lease renewed by a heartbeat thread; an expired lease
    (or one of a process on this host that is gone) may be broken: deleted at the generation that was read, so
    only one successor wins. Every conditional request may have landed with its answer lost: the owner id in the
    object tells our own write from another's."""

    def __init__(self, target: str, lease_seconds: float):
        self.uri = storage.join(target, LOCK)
        self.lease_seconds = lease_seconds
        self.generation: storage.Generation = 0
        self.owner: dict[str, Any] = {}
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None

    def _current(self) -> tuple[dict[str, Any] | None, storage.Generation]:
        data, generation = storage.read_with_generation(self.uri)
        try:
            return (json.loads(data) if data else None), generation
        except json.JSONDecodeError:
            return {}, generation

    def acquire(self, what: str) -> None:
        owner = _owner(self.lease_seconds)
        for _ in range(5):
            try:
                self.generation = storage.write_if_generation(self.uri, json.dumps(owner).encode(), 0)
                break
            except storage.GenerationMismatch:
                held, generation = self._current()
                if held is not None and held.get("id") == owner["id"]:
                    self.generation = generation  # our own create, answered late
                    break
                if held is not None and not _expired(held):
                    raise OutputLocked(f"{what} is being written by {_describe_owner(held)} (lease until "
                                       f"{datetime.fromtimestamp(held['lease_expires'], UTC):%H:%M:%S} UTC); wait "
                                       "for it or choose another output") from None
                if held is not None:
                    log.warning("breaking the stale lock of %s held by %s", what, _describe_owner(held))
                    with contextlib.suppress(storage.GenerationMismatch):
                        storage.delete(self.uri, generation)
        else:
            raise OutputLocked(f"{what}: could not take the lock {self.uri} (contended)")
        self.owner = owner
        self.thread = threading.Thread(target=self._heartbeat, name="output-lock-lease", daemon=True)
        self.thread.start()

    def _heartbeat(self) -> None:
        while not self.stop.wait(self.lease_seconds / 3):
            owner = {**self.owner, "lease_expires": time.time() + self.lease_seconds}
            try:
                self.generation = storage.write_if_generation(self.uri, json.dumps(owner).encode(), self.generation)
            except storage.GenerationMismatch:
                held, generation = self._current()
                if held is not None and held.get("id") == self.owner["id"]:
                    self.generation = generation  # our own renewal, answered late
                else:
                    log.warning("lost the lock %s to %s", self.uri, _describe_owner(held))
            except Exception as exc:  # noqa: BLE001 - the publish's own precondition still guards the output
                log.warning("could not renew the lease of %s: %s", self.uri, exc)

    def release(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(timeout=10)
        for _ in range(3):
            try:
                storage.delete(self.uri, self.generation)
                return
            except storage.GenerationMismatch:
                held, generation = self._current()
                if held is None or held.get("id") != self.owner.get("id"):
                    return  # gone, or another owner's now
                self.generation = generation


def _expired(owner: dict[str, Any]) -> bool:
    """A lease past its time, or held by a process of this host that no longer exists."""
    if owner.get("lease_expires", 0) <= time.time():
        return True
    if owner.get("host") == socket.gethostname() and isinstance(owner.get("pid"), int):
        try:
            os.kill(owner["pid"], 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
    return False


@contextlib.contextmanager
def locked(target: str, lease_seconds: float = DEFAULT_LEASE_SECONDS) -> Iterator[None]:
    """Hold the exclusive writer lock of ``target`` (see the module docstring); OutputLocked if another has it."""
    target = normalize(target)
    lock = _ObjectLock(target, lease_seconds) if storage.is_remote(target) else _LocalLock(Path(target))
    lock.acquire(str(target))
    try:
        yield
    finally:
        lock.release()


# -------------------------------------------------------------------------------------------- the manifest


def _file_entry(uri: str) -> dict[str, Any]:
    size, digest = storage.digest(uri)
    return {"size": size, "sha256": digest}


def sha256_of(uri: str) -> str:
    return storage.digest(uri)[1]


@dataclasses.dataclass(frozen=True)
class Complete:
    """A published directory as its marker describes it."""

    target: str  # the directory as named by the user
    root: str  # where its files are: the target itself locally, <target>/<version> on an object store
    manifest: dict[str, Any]  # the marker's content

    @property
    def files(self) -> dict[str, dict[str, Any]]:
        return self.manifest["files"]

    def path(self, name: str) -> str:
        """Where a listed file is; IncompleteOutput if the marker does not list it."""
        if name not in self.files:
            raise IncompleteOutput(f"{self.target}: no {name} in its {MARKER} (files: "
                                   f"{', '.join(sorted(self.files)) or 'none'})")
        return storage.join(self.root, name)

    @property
    def content_digest(self) -> str:
        """One sha256 over every listed file's name and sha256: the directory's content, wherever it is kept."""
        listing = "".join(f"{name}\0{entry['sha256']}\n" for name, entry in sorted(self.files.items()))
        return hashlib.sha256(listing.encode()).hexdigest()

    def optional_path(self, name: str) -> str | None:
        return storage.join(self.root, name) if name in self.files else None

    def matching(self, prefix: str, suffix: str = "") -> list[str]:
        """Listed files whose name starts with ``prefix`` and ends with ``suffix``, sorted."""
        return sorted(n for n in self.files if n.startswith(prefix) and n.endswith(suffix))


def read_marker(target: str) -> dict[str, Any] | None:
    uri = storage.join(target, MARKER)
    try:
        return json.loads(storage.read_bytes(uri))
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IncompleteOutput(f"{uri}: not a valid manifest ({exc})") from None


# The ``root`` a marker may name: a version prefix ``publishing`` created, never a path elsewhere.
VERSION_RE = re.compile(r"run-[0-9]{8}T[0-9]{12}Z-[0-9a-f]{8}")


def _version_root(target: str, manifest: dict[str, Any]) -> str:
    """Where the marker's files are: the target itself, or one of its own version prefixes (object stores); a
    ``root`` naming anything else (``..``, another bucket, an absolute path) is refused."""
    root = manifest.get("root")
    if root is None:
        return target
    if not isinstance(root, str) or not VERSION_RE.fullmatch(root):
        raise IncompleteOutput(f"{target}: its {MARKER} names the foreign root {root!r}; a marker names only one of "
                               "its own version prefixes")
    return storage.join(target, root)


def check_not_linked(root: str, name: str) -> None:
    """A listed file is read where it is: neither it nor a folder between it and ``root`` may be a link."""
    path = Path(root)
    for part in name.split("/"):
        path = path / part
        if path.is_symlink():
            raise IncompleteOutput(f"{root}: {path.relative_to(root)} is a symbolic link; a published directory "
                                   "holds its own files")


def open_complete(target: str, kind: str | None = None) -> Complete:
    """The published directory ``target``, after checking its marker and every file it lists: present, not a
    symbolic link, its size and its sha256 as the marker says; IncompleteOutput names what is missing or differs.
    Every reader comes through here, so a file changed, swapped or linked after the publish is never read."""
    if not storage.is_remote(target) and not Path(target).exists():
        raise IncompleteOutput(f"{target}: no such directory")
    manifest = read_marker(target)
    if manifest is None:
        raise IncompleteOutput(f"{target}: incomplete: no {MARKER} (a run is still writing it, failed, or it is "
                               "not an output of this project)")
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise IncompleteOutput(f"{target}: its {MARKER} is not a manifest of this project")
    if kind is not None and manifest.get("kind") != kind:
        raise IncompleteOutput(f"{target}: holds {manifest.get('kind')!r}, expected {kind!r}")
    root = _version_root(target, manifest)
    complete = Complete(str(target), root, manifest)
    present = {storage.relative(root, uri): (uri, size) for uri, size in storage.file_sizes(root).items()}
    for name, entry in manifest["files"].items():
        uri, size = present.get(name, (None, None))
        if uri is None:
            raise IncompleteOutput(f"{target}: incomplete: {name} is listed in {MARKER} but missing")
        if not storage.is_remote(root):
            check_not_linked(root, name)
        if size != entry.get("size"):
            raise IncompleteOutput(f"{target}: {name} has {size} bytes, {MARKER} says {entry.get('size')}")
        if sha256_of(uri) != entry.get("sha256"):
            raise IncompleteOutput(f"{target}: {name} does not match the sha256 in {MARKER} (changed after it "
                                   "was published)")
    return complete


def has_content(target: str) -> bool:
    """Whether ``target`` holds any file (its own lock object aside)."""
    return any(not uri.endswith("/" + LOCK) for uri in storage.list_files(target))


def is_complete(target: str) -> bool:
    try:
        open_complete(target)
        return True
    except IncompleteOutput:
        return False


# -------------------------------------------------------------------------------------------------- writing


class Staging:
    """Where a writer puts its files; ``describe`` adds facts (row counts) to a file's manifest entry."""

    def __init__(self, target: str, path: str, kind: str):
        self.target, self.path, self.kind = target, path, kind
        self.facts: dict[str, dict[str, Any]] = {}
        self.meta: dict[str, Any] = {}
        self.rejected = False

    def join(self, *parts: str) -> str:
        return storage.join(self.path, *parts)

    def rejected_path(self) -> str:
        """Where ``reject`` keeps this run's files: ``<target>.rejected`` locally, the run's own prefix on an
        object store (deleted by the next run that publishes)."""
        return self.path if storage.is_remote(self.path) else f"{self.target}.rejected"

    def reject(self) -> str:
        """Keep what was written so far aside for a person to read (dead letters of an unusable input), never
        published; the caller raises next."""
        self.rejected = True
        if not storage.is_remote(self.path):
            shutil.rmtree(self.rejected_path(), ignore_errors=True)
            os.rename(self.path, self.rejected_path())
        return self.rejected_path()

    def describe(self, name: str, **facts: Any) -> None:
        self.facts.setdefault(name, {}).update(facts)

    def manifest(self, carry: Sequence[str], root: str | None, previous: str | None) -> dict[str, Any]:
        files = {}
        for uri in storage.list_files(self.path):
            name = storage.relative(self.path, uri)
            if name == MARKER or name.split("/")[0] in carry:
                continue
            files[name] = {**_file_entry(uri), **self.facts.get(name, {})}
        missing = sorted(set(self.facts) - set(files))
        if missing:
            raise RuntimeError(f"{self.target}: described files were never written: {', '.join(missing)}")
        return {"format": MANIFEST_FORMAT, "kind": self.kind, "root": root, "previous_root": previous,
                "published_at": _now(), "files": dict(sorted(files.items())), **self.meta}


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two directories in one step (Linux renameat2); False where the kernel or filesystem cannot."""
    libc = ctypes.CDLL(None, use_errno=True)
    if not hasattr(libc, "renameat2"):
        return False
    if libc.renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    if ctypes.get_errno() in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(ctypes.get_errno(), f"renameat2({a}, {b}, RENAME_EXCHANGE) failed")


def _siblings(target: Path, kind: str) -> list[Path]:
    # Escaped: a name holding '*' or '[' must not match (and recover() then delete) another output's staging.
    return sorted(target.parent.glob(f".{glob.escape(target.name)}.{kind}-*"))


def recover(target: str | Path, carry: Sequence[str] = ()) -> None:
    """Finish or undo a local publish that a crash interrupted, then remove stale staging directories; call it
    holding the lock. Carried working state (checkpoints) found in a stale staging directory goes back into the
    target when the target lacks it."""
    target = Path(target)
    old = _siblings(target, "old")
    if not target.exists() and old:
        ready = [s for s in _siblings(target, "staging") if (s / MARKER).exists()]
        # The crash fell between the two renames of the fallback publish: the new output was complete.
        os.rename(ready[-1] if ready else old[-1], target)
        log.warning("recovered %s after an interrupted publish", target)
    for stale in _siblings(target, "staging") + _siblings(target, "old"):
        for name in carry:
            if (stale / name).exists() and not (target / name).exists():
                target.mkdir(parents=True, exist_ok=True)
                os.rename(stale / name, target / name)
                log.warning("recovered %s/%s from an interrupted run", target, name)
        shutil.rmtree(stale, ignore_errors=True)


def _publish_local(staging: Staging, target: Path, carry: Sequence[str]) -> None:
    staged = Path(staging.path)
    manifest = staging.manifest(carry, None, None)
    if target.exists():
        for name in carry:  # working state moves along; it is not part of the manifest
            if (target / name).exists() and not (staged / name).exists():
                os.rename(target / name, staged / name)
    storage.write_json(str(staged / MARKER), manifest)  # last file of the staging directory
    if not target.exists():
        os.rename(staged, target)
        return
    if _exchange(staged, target):  # staged now holds the previous output
        shutil.rmtree(staged, ignore_errors=True)
        return
    old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
    os.rename(target, old)
    os.rename(staged, target)  # a crash between these two: recover() rolls forward
    shutil.rmtree(old, ignore_errors=True)


def _publish_remote(staging: Staging, target: str, carry: Sequence[str], marker_generation: storage.Generation,
                    previous: dict[str, Any] | None) -> None:
    version = storage.relative(target, staging.path)
    manifest = staging.manifest(carry, version, (previous or {}).get("root"))
    try:
        storage.write_if_generation(storage.join(target, MARKER), json.dumps(manifest, indent=2).encode(),
                                    marker_generation)
    except storage.GenerationMismatch:
        # Our own write may have landed with its answer lost (then retried): the marker names our version.
        if (read_marker(target) or {}).get("root") != version:
            raise OutputLocked(f"{target} was published by another run while this one was writing it (its lock "
                               "lease expired?); nothing of this run was published") from None
    keep = {version, (previous or {}).get("root")}  # readers of the previous version may still be reading it
    _delete_versions(target, keep)


def _versions(target: str) -> set[str]:
    names = set()
    for uri in storage.list_files(target):
        first = storage.relative(target, uri).split("/")[0]
        if first.startswith("run-"):
            names.add(first)
    return names


def _delete_versions(target: str, keep: set[str | None]) -> None:
    for name in _versions(target) - keep:
        storage.delete_tree(storage.join(target, name))


def check_replaceable(target: str, kind: str, carry: Sequence[str] = ()) -> None:
    """OutputExists unless ``target`` is absent, empty, holds only working state (``carry``) or leftovers of this
    project's own interrupted writers, or is a complete output of ``kind`` (a rerun replaces its own kind)."""
    target = normalize(target)
    if storage.is_remote(target):
        marker = read_marker(target)
        names = {storage.relative(target, uri).split("/")[0] for uri in storage.list_files(target)}
        foreign = sorted(n for n in names if n not in (LOCK, MARKER, *carry) and not VERSION_RE.fullmatch(n))
    else:
        path = Path(target)
        if path.is_symlink() or (path.exists() and not path.is_dir()):
            raise OutputExists(f"{target} is a file or a symbolic link, not an output directory; pass --overwrite to "
                               "replace it, or choose another output")
        if not path.exists():
            return
        marker = read_marker(target)
        foreign = sorted(p.name for p in path.iterdir() if p.name not in (MARKER, *carry))
    if marker is not None and marker.get("kind") != kind:
        raise OutputExists(f"{target} holds {marker.get('kind')!r} output, not {kind!r}; this would delete it: pass "
                           "--overwrite to replace it (interest train: remove it first), or choose another output")
    if marker is None and foreign:
        raise OutputExists(f"{target} holds files no run of this project published ({', '.join(foreign[:3])}"
                           f"{', ...' if len(foreign) > 3 else ''}); pass --overwrite to replace them (interest train: remove "
                           "them first), or choose another output")


def normalize(target: str) -> str:
    return str(target).rstrip("/") if storage.is_remote(target) else str(Path(target).absolute())


@contextlib.contextmanager
def publishing(target: str, kind: str, carry: Sequence[str] = (), overwrite: bool = False) -> Iterator[Staging]:
    """Yield a ``Staging`` for ``target`` and publish it when the block ends without an error; the caller holds
    ``locked(target)``. On an error (or a kill) nothing is published and the previous complete output stays.
    Without ``overwrite`` an output of another kind, or files this project did not publish, are refused
    (``check_replaceable``) before anything is written."""
    target = normalize(target)
    if not overwrite:
        check_replaceable(target, kind, carry)
    run_id = f"run-{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}-{uuid.uuid4().hex[:8]}"
    if storage.is_remote(target):
        data, marker_generation = storage.read_with_generation(storage.join(target, MARKER))
        previous = json.loads(data) if data else None
        _delete_versions(target, {(previous or {}).get("root"), (previous or {}).get("previous_root")})
        staging = Staging(target, storage.join(target, run_id), kind)
        try:
            yield staging
        except BaseException:
            if not staging.rejected:
                storage.delete_tree(staging.path)
            raise
        _publish_remote(staging, target, carry, marker_generation, previous)
        return
    path = Path(target)
    recover(path, carry)
    staged = path.parent / f".{path.name}.staging-{run_id}"
    staged.mkdir(parents=True)
    staging = Staging(target, str(staged), kind)
    try:
        yield staging
        _publish_local(staging, path, carry)
    finally:
        if staged.exists() and not any((staged / name).exists() for name in carry):
            shutil.rmtree(staged, ignore_errors=True)


@contextlib.contextmanager
def writing(target: str, kind: str, carry: Sequence[str] = (), lease_seconds: float = DEFAULT_LEASE_SECONDS,
            overwrite: bool = False) -> Iterator[Staging]:
    """``locked(target)`` and ``publishing(target, ...)`` together: the usual way to write an output directory."""
    with locked(normalize(target), lease_seconds), publishing(target, kind, carry, overwrite) as staging:
        yield staging


def stage_copy(source: str, destination: str) -> Complete:
    """Copy the files ``source``'s marker lists into the new local folder ``destination``, reading each exactly
    once, then open the copy: its digests are checked on the copied bytes, so whatever happens to ``source``
    meanwhile (a file swapped by link-and-rename, a bit flipped) the copy is either exactly what the marker
    describes or refused (IncompleteOutput). A reader that must act on what it checked (push) reads the copy."""
    manifest = read_marker(source)
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise IncompleteOutput(f"{source}: incomplete: no {MARKER} (or not a manifest of this project)")
    root = _version_root(source, manifest)
    Path(destination).mkdir(parents=True)
    for name in manifest["files"]:
        if not isinstance(name, str) or name.startswith("/") or any(
                part in ("", ".", "..") for part in name.split("/")):
            raise IncompleteOutput(f"{source}: its {MARKER} lists {name!r}, a name that leaves the directory")
        if not storage.is_remote(root):
            check_not_linked(root, name)
        uri = storage.join(root, name)
        copy = Path(destination, name)
        copy.parent.mkdir(parents=True, exist_ok=True)
        if storage.is_remote(uri):
            copy.write_bytes(storage.read_bytes(uri))
        else:
            with open(os.open(uri, os.O_RDONLY | os.O_NOFOLLOW), "rb") as src, open(copy, "wb") as dst:
                shutil.copyfileobj(src, dst)
    storage.write_json(str(Path(destination, MARKER)), {**manifest, "root": None, "previous_root": None})
    return open_complete(destination, manifest.get("kind"))


def copy_complete(source: str, destination: str) -> Complete:
    """Publish a copy of the complete directory ``source`` at ``destination``: the files its manifest lists
    (never working state), with the same kind and facts."""
    complete = open_complete(source)
    with writing(destination, complete.manifest.get("kind", "copy")) as staging:
        for name, entry in complete.files.items():
            storage.copy_file(complete.path(name), staging.join(name))
            facts = {k: v for k, v in entry.items() if k not in ("size", "sha256")}
            if facts:
                staging.describe(name, **facts)
        staging.meta.update({k: v for k, v in complete.manifest.items()
                             if k not in ("format", "kind", "root", "previous_root", "published_at", "files")})
    return open_complete(destination)
