"""core.rundir: one suite run on a local directory, a real GCS emulator (behind the proxy that enforces
``ifGenerationMatch`` as GCS does) and a real S3 server (moto, which enforces ``If-None-Match``/``If-Match``): an
output is written by one writer at a time, published whole, and read only when complete, whatever the store."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from core import rundir, storage


def write(target: str, files: dict[str, bytes], kind: str = "evaluation", fail: bool = False) -> None:
    with rundir.writing(target, kind) as staging:
        for name, data in files.items():
            storage.write_bytes(staging.join(name), data)
        staging.describe(next(iter(files)), rows=len(files))
        if fail:
            raise RuntimeError("killed mid-write")


def test_published_whole_and_replaced_whole(storage_root):
    target = storage.join(storage_root, "eval")
    write(target, {"metrics.json": b'{"recall@10": 0.1}', "per_user.parquet": b"x" * 300})
    first = rundir.open_complete(target, kind="evaluation")
    assert sorted(first.files) == ["metrics.json", "per_user.parquet"]
    assert first.files["metrics.json"]["rows"] == 2 and first.files["per_user.parquet"]["size"] == 300
    assert storage.read_bytes(first.path("per_user.parquet")) == b"x" * 300

    # A writer that dies half-way publishes nothing: readers still get the previous output, whole.
    with pytest.raises(RuntimeError, match="killed mid-write"):
        write(target, {"metrics.json": b'{"recall@10": 0.9}', "per_user.parquet": b"y"}, fail=True)
    again = rundir.open_complete(target)
    assert again.manifest == first.manifest and storage.read_json(again.path("metrics.json")) == {"recall@10": 0.1}

    write(target, {"metrics.json": b'{"recall@10": 0.2}'})
    latest = rundir.open_complete(target)
    assert sorted(latest.files) == ["metrics.json"] and storage.read_json(latest.path("metrics.json")) == {
        "recall@10": 0.2}
    assert rundir.has_content(target) and not rundir.has_content(storage.join(storage_root, "other"))


def test_a_second_writer_is_refused_naming_the_first(storage_root):
    target = storage.join(storage_root, "data")
    with rundir.writing(target, "preprocessed-data") as staging:
        storage.write_bytes(staging.join("stats.json"), b"{}")
        with pytest.raises(rundir.OutputLocked, match="being written by pid"):
            write(target, {"stats.json": b"{}"})
    assert rundir.is_complete(target)
    write(target, {"stats.json": b"{}"}, kind="preprocessed-data")  # the lock went with its writer


def test_a_missing_or_truncated_file_is_incomplete(storage_root):
    target = storage.join(storage_root, "model")
    write(target, {"model.pt": b"w" * 1000, "vocab.json": b"[]"}, kind="model")
    complete = rundir.open_complete(target, kind="model")
    storage.write_bytes(complete.path("model.pt"), b"w" * 10)  # size checked from the listing: nothing read
    with pytest.raises(rundir.IncompleteOutput, match="model.pt has 10 bytes"):
        rundir.open_complete(target)
    storage.delete(complete.path("model.pt"))
    with pytest.raises(rundir.IncompleteOutput, match="model.pt is listed in _SUCCESS.json but missing"):
        rundir.open_complete(target)
    with pytest.raises(rundir.IncompleteOutput, match="holds 'model', expected 'evaluation'"):
        rundir.open_complete(target, kind="evaluation")
    with pytest.raises(rundir.IncompleteOutput, match="incomplete: no _SUCCESS.json|no such directory"):
        rundir.open_complete(storage.join(storage_root, "never-written"))


def test_a_dead_writers_lock_does_not_block_its_successor(storage_root):
    """Locally the kernel drops a dead holder's fcntl lock (its lock file stays); on an object store the lock
    object stays until its lease expires, and then the next writer breaks it."""
    target = storage.join(storage_root, "report")
    dead = {"host": "elsewhere", "pid": 1, "since": "then", "command": "interest report", "id": "dead",
            "lease_expires": time.time() - 1}
    if storage.is_remote(target):
        storage.write_bytes(storage.join(target, rundir.LOCK), json.dumps(dead).encode())
        alive = {**dead, "lease_expires": time.time() + 600}
        storage.write_bytes(storage.join(target, "other", rundir.LOCK), json.dumps(alive).encode())
        with pytest.raises(rundir.OutputLocked, match="pid 1 on elsewhere"):
            write(storage.join(target, "other"), {"report.md": b"#"}, kind="report")
    else:
        lock = rundir._LocalLock(Path(target)).path  # <parent>/.report.lock, as a killed writer leaves it
        lock.parent.mkdir(parents=True, exist_ok=True)
        lock.write_text(json.dumps(dead))
    write(target, {"report.md": b"# report"}, kind="report")
    assert rundir.is_complete(target)
    assert not storage.exists(storage.join(target, rundir.LOCK))  # released with its writer
