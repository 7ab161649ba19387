"""Preemption of a real ``torchrun`` job: SIGKILL one worker mid-epoch, rerun the same command, and finish with
exactly the metrics and weights of a job that was never interrupted (same seed)."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from trainer import checkpoint

ROOT = Path(__file__).resolve().parents[2]
FLAGS = ["--set", "d_model=16", "--set", "n_layer=1", "--set", "n_head=2", "--set", "max_len=12",
         "--set", "batch_size=6", "--set", "lr=0.003", "--set", "patience=0", "--set", "dropout=0.1",
         "--set", "eval_every_steps=7", "--set", "checkpoint_every_steps=5", "--epochs", "8", "--nproc", "2"]


def interest(argv: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pipelines.cli", *argv], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc: the launcher starts torchrun, torchrun starts the workers)."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        children = [p for p, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def worker_of_rank(launcher: int, rank: int) -> int:
    for pid in descendants(launcher):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in environ and f"LOCAL_RANK={rank}".encode() in environ:
            return pid
    raise AssertionError(f"no worker of rank {rank} under {launcher}")


def final_state(out: Path) -> tuple[dict, dict, dict]:
    state, _ = checkpoint.load_latest(str(out / "checkpoints"))
    best = torch.load(io.BytesIO((out / "model.pt").read_bytes()), weights_only=True)
    return json.loads((out / "summary.json").read_text()), state["model"], best


@pytest.mark.slow
def test_torchrun_worker_killed_mid_epoch_then_rerun_matches_an_uninterrupted_job(tiny_data, tmp_path):
    command = ["train", "--data", str(tiny_data), "--output", str(tmp_path / "preempted"), *FLAGS]
    launcher = interest(command)
    # The uninterrupted job runs alongside (its own output and rendezvous) to keep the test short.
    reference = interest(["train", "--data", str(tiny_data), "--output", str(tmp_path / "reference"), *FLAGS])
    deadline = time.monotonic() + 180
    while not (tmp_path / "preempted" / "checkpoints" / "step-00000010.pt.sha256").exists():
        assert launcher.poll() is None and time.monotonic() < deadline, launcher.communicate()[0]
        time.sleep(0.01)
    os.kill(worker_of_rank(launcher.pid, 1), signal.SIGKILL)  # step 10 of 7-step epochs: mid-epoch
    log, _ = launcher.communicate(timeout=120)
    assert launcher.returncode != 0, log
    assert not (tmp_path / "preempted" / "summary.json").exists()

    rerun = interest(command)  # the very same command
    log, _ = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, log
    assert "resuming from" in log

    log, _ = reference.communicate(timeout=300)
    assert reference.returncode == 0, log

    summary, last, best = final_state(tmp_path / "preempted")
    ref_summary, ref_last, ref_best = final_state(tmp_path / "reference")
    assert summary["world_size"] == 2 and summary["steps"] == ref_summary["steps"] == 56
    assert len(summary["resumed_from"]) == 1 and 10 <= summary["resumed_from"][0] < 56
    assert summary["best"] == ref_summary["best"]
    metrics = ("step", "valid_recall@10", "valid_ndcg@10", "user_norm_mean")
    assert [{k: h[k] for k in metrics} for h in summary["history"]] == \
        [{k: h[k] for k in metrics} for h in ref_summary["history"]]
    for weights, ref in ((last, ref_last), (best, ref_best)):
        assert weights.keys() == ref.keys()
        assert all(torch.equal(weights[k], ref[k]) for k in weights)
