"""Runs that push at once: exactly one moves the champion pointer, the others get ChampionChanged, and the
registry stays consistent (every version complete, the pointer names one of them)."""

from __future__ import annotations

import contextlib
import fcntl
import multiprocessing
import threading

import pytest

from core import rundir, storage
from release.registry import ChampionChanged, push, read_pointer
from tests.support.fake_artifacts import LENIENT_POLICY, blessing_for, write_run


def _race_to_the_pointer(barrier) -> None:
    """In a forked pusher: hold its champion-pointer write until every pusher has read the pointer (they all
    meet at ``barrier`` just before the write), unless one of them is kept out by the registry's pointer lock,
    which then breaks the barrier so the lock holder goes on. Without the lock every pusher reads "no champion"
    before any writes, every run; with it, the ones kept out read the winner's pointer afterwards."""
    blocking_flock, write_json = fcntl.flock, storage.write_json

    def flock(fd, operation):
        if operation == fcntl.LOCK_EX:  # a blocking request: the pointer lock (output locks never block)
            try:
                return blocking_flock(fd, operation | fcntl.LOCK_NB)
            except BlockingIOError:
                barrier.abort()  # another pusher holds the lock: nobody waits for this one at the write
        return blocking_flock(fd, operation)

    def write_after_everyone_read(uri, *args, **kwargs):
        if uri.endswith("/champion.json"):
            with contextlib.suppress(threading.BrokenBarrierError):
                barrier.wait(timeout=120)
        return write_json(uri, *args, **kwargs)

    fcntl.flock = flock
    storage.write_json = write_after_everyone_read


def _push_in_process(start, at_pointer, results, root, model_dir, eval_dir, version):
    _race_to_the_pointer(at_pointer)
    start.wait(timeout=60)
    try:
        results.put((version, push(blessing_for(model_dir, eval_dir), root, "interest", version=version, policy=LENIENT_POLICY).outcome))
    except ChampionChanged:
        results.put((version, "champion_changed"))


def assert_consistent(root: str, outcomes: dict[str, str]) -> None:
    winners = [v for v, outcome in outcomes.items() if outcome == "pushed"]
    assert len(winners) == 1, outcomes
    assert all(outcome == "champion_changed" for v, outcome in outcomes.items() if v not in winners), outcomes
    pointer, _ = read_pointer(root, "interest")
    assert pointer["version"] == winners[0] and pointer["sequence"] == 1 and pointer["previous_version"] is None
    for version in outcomes:  # the losers' versions are complete too, ready for a re-gate and push
        rundir.open_complete(storage.join(root, "interest", version))


def test_concurrent_processes_on_a_local_registry(tmp_path):
    root = str(tmp_path / "registry")
    runs = {f"v{i}": write_run(tmp_path, f"v{i}", seed=i) for i in range(4)}
    ctx = multiprocessing.get_context("fork")
    start, at_pointer, results = ctx.Barrier(len(runs)), ctx.Barrier(len(runs)), ctx.Queue()
    procs = [ctx.Process(target=_push_in_process, args=(start, at_pointer, results, root, *run, version))
             for version, run in runs.items()]
    for p in procs:
        p.start()
    outcomes = dict(results.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    assert_consistent(root, outcomes)


def race(runs: dict[str, tuple[str, str]], root: str, monkeypatch) -> dict[str, str]:
    """Push every run from its own thread; all of them reach the conditional pointer write together, after
    each one checked that the pointer is still absent, so only the server-side precondition can decide."""
    barrier = threading.Barrier(len(runs), timeout=60)
    conditional_write = storage.write_if_generation

    def write_together(*args, **kwargs):
        barrier.wait()
        return conditional_write(*args, **kwargs)

    monkeypatch.setattr(storage, "write_if_generation", write_together)
    outcomes: dict[str, str] = {}

    def run(version: str, model_dir: str, eval_dir: str) -> None:
        try:
            outcomes[version] = push(blessing_for(model_dir, eval_dir), root, "interest", version=version, policy=LENIENT_POLICY).outcome
        except ChampionChanged:
            outcomes[version] = "champion_changed"

    threads = [threading.Thread(target=run, args=(v, *r)) for v, r in runs.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return outcomes


@pytest.mark.parametrize("fault_rate", [0.0, 0.25])
def test_concurrent_pushes_on_gcs_only_the_precondition_decides(flaky_gcs, gcs_bucket, tmp_path, monkeypatch,
                                                                  fault_rate):
    proxy = flaky_gcs(fault_rate=fault_rate, seed=7)
    root = f"{gcs_bucket}/registry"
    runs = {f"v{i}": write_run(tmp_path, f"v{i}", seed=i) for i in range(2)}
    outcomes = race(runs, root, monkeypatch)
    assert proxy.counts["precondition_failed"] >= 1  # the loser was stopped by GCS's check, not by the client
    if fault_rate:
        assert proxy.counts["faults"] > 0
    assert_consistent(root, outcomes)


def test_the_bare_emulator_ignores_generation_preconditions(gcs_bucket):
    """Why the proxy enforces ifGenerationMatch: gcp-storage-emulator accepts a write that GCS would refuse."""
    uri = f"{gcs_bucket}/pointer.json"
    storage.write_if_generation(uri, b"first", 0)
    storage.write_if_generation(uri, b"second", 0)  # GCS: 412 Precondition Failed
    assert storage.read_bytes(uri) == b"second"  # so the registry's GCS tests run behind flaky_gcs
