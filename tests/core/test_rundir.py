"""core.rundir: one suite run on a local directory, a real GCS emulator (behind the proxy that enforces
``ifGenerationMatch`` as GCS does) and a real S3 server (moto, which enforces ``If-None-Match``/``If-Match``): an
output is written by one writer at a time, published whole, and read only when complete, whatever the store.
Then rundir under attack: writers racing for one output, and a writer killed inside the two-rename publish
(kernels without renameat2). Per-stage attacks through the CLI: tests/pipelines/test_output_safety.py."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import threading
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
        storage.write_bytes(storage.join(storage_root, "other", rundir.LOCK), json.dumps(alive).encode())
        with pytest.raises(rundir.OutputLocked, match="pid 1 on elsewhere"):
            write(storage.join(storage_root, "other"), {"report.md": b"#"}, kind="report")
    else:
        lock = rundir._LocalLock(Path(target)).path  # <parent>/.report.lock, as a killed writer leaves it
        lock.parent.mkdir(parents=True, exist_ok=True)
        lock.write_text(json.dumps(dead))
    write(target, {"report.md": b"# report"}, kind="report")
    assert rundir.is_complete(target)
    assert not storage.exists(storage.join(target, rundir.LOCK))  # released with its writer


def publish(target: str, content: str) -> None:
    with rundir.writing(target, "test") as staging:
        for name in ("a.txt", "sub/b.txt"):
            storage.write_text(staging.join(name), f"{content} {name}")


def assert_whole(target: str, content: str) -> None:
    """``target`` is complete, every listed file verifies, and each holds ``content``'s bytes: no mix."""
    complete = rundir.open_complete(target, "test")
    assert {name: storage.read_text(complete.path(name)) for name in complete.files} == {
        "a.txt": f"{content} a.txt", "sub/b.txt": f"{content} sub/b.txt"}


@pytest.mark.parametrize("backend", ["local", "gcs"])
def test_writers_racing_for_one_output_leave_exactly_one_whole(backend, tmp_path, request):
    """Four threads take the lock at the same moment (a barrier); the lock admits one, the others fail at once
    with OutputLocked naming a holder. On GCS only the server-side precondition can decide (the proxy enforces
    ifGenerationMatch, which the bare emulator ignores)."""
    if backend == "gcs":
        request.getfixturevalue("flaky_gcs")(fault_rate=0.0)
        target = f"{request.getfixturevalue('gcs_bucket')}/out"
    else:
        target = str(tmp_path / "out")
    publish(target, "previous")
    barrier, outcomes = threading.Barrier(4, timeout=60), {}
    inside = threading.Event()

    def writer(name: str) -> None:
        barrier.wait()
        try:
            with rundir.writing(target, "test") as staging:
                inside.wait(10)  # keep the lock until the others have tried
                for file in ("a.txt", "sub/b.txt"):
                    storage.write_text(staging.join(file), f"{name} {file}")
            outcomes[name] = "published"
        except rundir.OutputLocked as exc:
            assert "is being written by pid" in str(exc), exc
            outcomes[name] = "locked"
            if sum(o == "locked" for o in outcomes.values()) == 3:
                inside.set()

    threads = [threading.Thread(target=writer, args=(f"w{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert sorted(outcomes.values()) == ["locked", "locked", "locked", "published"], outcomes
    (winner,) = [name for name, outcome in outcomes.items() if outcome == "published"]
    assert_whole(target, winner)


def test_a_writer_that_just_took_the_lock_is_named_to_the_second(tmp_path, monkeypatch):
    """The holder writes its details into the lock file right after locking; a second writer that arrives in
    between must not report "no owner recorded". The first writer is held at that exact point (inside the
    ``_owner`` call) until the second is looking again for its details."""
    target = str(tmp_path / "out")
    first_locked, first_may_go, second_moved = threading.Event(), threading.Event(), threading.Event()
    owner, sleep = rundir._owner, rundir.time.sleep

    def slow_owner(*args):
        if threading.current_thread().name == "first":
            first_locked.set()
            assert first_may_go.wait(60)
        return owner(*args)

    def noted_sleep(seconds):
        if threading.current_thread().name == "second":
            second_moved.set()  # it found the lock held and looks again
        sleep(seconds)

    monkeypatch.setattr(rundir, "_owner", slow_owner)
    monkeypatch.setattr(rundir.time, "sleep", noted_sleep)
    errors = []

    def second():
        try:
            with rundir.locked(target):
                errors.append("the second writer got the lock")
        except rundir.OutputLocked as exc:
            errors.append(str(exc))
        finally:
            second_moved.set()

    def first():
        with rundir.locked(target):
            while not errors:  # hold the lock until the second writer has given up
                sleep(0.01)

    holder = threading.Thread(target=first, name="first", daemon=True)
    challenger = threading.Thread(target=second, name="second", daemon=True)
    holder.start()
    assert first_locked.wait(60)  # locked, its details not written yet
    challenger.start()
    assert second_moved.wait(60)
    first_may_go.set()
    challenger.join(timeout=60)
    holder.join(timeout=60)
    assert first_locked.is_set() and len(errors) == 1
    assert f"is being written by pid {os.getpid()} on " in errors[0], errors


def _killed_between_the_renames(target: str) -> None:
    """Forked child: publish over ``target`` without renameat2 and die right after the first rename."""
    rundir._exchange = lambda a, b: False
    rename = os.rename

    def rename_then_die(src, dst):
        rename(src, dst)
        if ".old-" in str(dst):
            os.kill(os.getpid(), signal.SIGKILL)

    rundir.os.rename = rename_then_die
    publish(target, "new")


def test_a_publish_killed_between_its_two_renames_is_rolled_forward(tmp_path):
    """Without renameat2 a publish is two renames (target -> .old, staging -> target). A writer SIGKILLed between
    them leaves no target: readers get IncompleteOutput (never a mix), and the next writer's recover() puts the
    complete staged output in place before anything else."""
    target = str(tmp_path / "out")
    publish(target, "previous")
    child = multiprocessing.get_context("fork").Process(target=_killed_between_the_renames, args=(target,))
    child.start()
    child.join(timeout=60)
    assert child.exitcode == -signal.SIGKILL
    assert not Path(target).exists() and len(list(tmp_path.glob(".out.old-*"))) == 1
    with pytest.raises(rundir.IncompleteOutput, match="no such directory"):
        rundir.open_complete(target)
    with rundir.locked(target):  # the kernel released the dead writer's lock
        rundir.recover(target)
    assert_whole(target, "new")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.lock", "out"]
