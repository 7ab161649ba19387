"""``make bench-scale``: synthetic logs of growing size through preprocess, train and evaluate, with wall time,
throughput and peak memory per stage.

    .venv/bin/python -m benchmarks.scale                                  # 1M, 10M and 30M events, every stage
    .venv/bin/python -m benchmarks.scale --preprocess-only-above 1e7      # train/evaluate up to 10M only
    .venv/bin/python -m benchmarks.scale --stages preprocess --preprocess-args "--set shuffle=files" \
        --sizes 1e6,1e7,3e7,1e8 --output benchmarks/results/scale-files.json  # events through files
    .venv/bin/python -m benchmarks.scale --sizes 3000,6000 --train-steps 2   # the test (with a tiny model)

Each size gets its own synthetic log (``preprocessing.synthetic``: Zipf-like item popularity, about 50 events per
user, two years of timestamps), made once and kept in ``--work`` (generating is not a stage). Every stage runs
as the ``interest`` command a user runs (``preprocess``, ``train --max-steps``, ``evaluate --split test``), in
its own process, so the peak memory is that command's whole process tree (Beam's and torchrun's workers
included), sampled every ``--sample-seconds`` from /proc, and never the benchmark's own. Sizes run one after
another, never side by side. Writes ``--output`` (JSON: every stage's seconds, throughput, peak RSS and the
command), a Markdown growth table beside it (``.md``) and a plot (``.png``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path

from matplotlib.figure import Figure

from core import storage
from preprocessing.synthetic import SyntheticConfig, generate

log = logging.getLogger("benchmarks.scale")

RESULT = "benchmarks/results/scale.json"
STAGES = ("preprocess", "train", "evaluate")
# Preprocessing peak memory at 30M events within this factor of that at 10M (issue 26): memory must not grow
# with the data.
PREPROCESS_MEMORY_GROWTH_TARGET = 1.5
INTEREST = [sys.executable, "-m", "pipelines.cli"]


def tree_rss_bytes(pid: int) -> int:
    """Resident memory of ``pid`` and all its descendants (from /proc; 0 once it has exited)."""
    total, pending = 0, [pid]
    while pending:
        current = pending.pop()
        try:
            with open(f"/proc/{current}/status") as f:
                total += next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as f:
                    pending.extend(int(child) for child in f.read().split())
        except (FileNotFoundError, ProcessLookupError, StopIteration):
            continue  # exited between two reads (or a zombie without VmRSS)
    return total


def run_stage(command: list[str], sample_seconds: float, timeout: float | None, env: dict) -> dict:
    """Run ``command``; its wall seconds, the peak RSS of its process tree, and its exit status."""
    peak = 0
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, tree_rss_bytes(process.pid))
            done.wait(sample_seconds)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
    finally:
        done.set()
        sampler.join()
    seconds = time.perf_counter() - start
    result = {"command": shlex.join(command), "seconds": seconds, "peak_rss_bytes": peak,
              "returncode": process.returncode}
    if process.returncode != 0:
        result["error"] = output[-4000:]
        log.warning("%s failed (exit %s):\n%s", shlex.join(command), process.returncode, output[-2000:])
    return result


def run_size(events: int, work: Path, args: argparse.Namespace) -> dict:
    """One size through the selected stages; a stage whose input failed is skipped."""
    logs = work / f"logs-{events}"
    if not (logs / ".complete").exists():
        generate(SyntheticConfig(events=events, seed=args.seed), logs)
        (logs / ".complete").write_text("")
    data, model, metrics = work / f"data-{events}", work / f"model-{events}", work / f"eval-{events}"
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    commands = {
        "preprocess": [*INTEREST, "preprocess", "--input", str(logs / "*.parquet"), "--output", str(data), "--overwrite",
                       *args.preprocess_args],
        "train": [*INTEREST, "train", "--data", str(data), "--output", str(model), "--restart",
                  "--max-steps", str(args.train_steps), *args.train_args],
        "evaluate": [*INTEREST, "evaluate", "--model", str(model), "--data", str(data), "--split", "test",
                     "--output", str(metrics), *args.evaluate_args],
    }
    row: dict = {"events": events, "stages": {}}
    above = args.preprocess_only_above is not None and events > args.preprocess_only_above
    for stage in args.stages if not above else [s for s in args.stages if s == "preprocess"]:
        if any(row["stages"].get(s, {}).get("returncode") for s in STAGES[:STAGES.index(stage)]):
            break
        log.info("%s events: %s", f"{events:,}", stage)
        result = run_stage(commands[stage], args.sample_seconds, args.timeout, env)
        row["stages"][stage] = result
        if result["returncode"] == 0:
            result.update(_throughput(stage, events, result["seconds"], data, model))
        log.info("%s events: %s %.1f s, peak %.2f GB", f"{events:,}", stage, result["seconds"],
                 result["peak_rss_bytes"] / 1e9)
    if (data / "stats.json").exists():
        stats = json.loads((data / "stats.json").read_text())
        row.update({k: stats[k] for k in ("users", "items", "interactions")})
    return row


def _throughput(stage: str, events: int, seconds: float, data: Path, model: Path) -> dict:
    """Events/s of the whole preprocess command, the trainer's own tokens/s (steps only), test users/s of the
    whole evaluate command."""
    if stage == "preprocess":
        return {"unit": "events/s", "throughput": events / seconds}
    if stage == "train":
        summary = json.loads((model / "summary.json").read_text())
        validating = sum(h.get("validation_seconds", 0.0) for h in summary["history"])
        return {"unit": "tokens/s", "throughput": summary["tokens_per_second"], "steps": summary["steps"],
                "validation_seconds": validating, "validation_users": summary["validation"]["users"],
                "validation_share": validating / summary["train_seconds"] if summary["train_seconds"] else None}
    return {"unit": "users/s", "throughput": json.loads((data / "stats.json").read_text())["users"] / seconds}


def growth_table(rows: list[dict]) -> str:
    """Markdown: one row per size, per stage ``seconds, throughput, peak GB`` (a failed stage says so)."""
    head = "| events | users | items | " + " | ".join(STAGES) + " |"
    lines = [head, "|---:|---:|---:|" + "---|" * len(STAGES)]
    for row in rows:
        cells = []
        for stage in STAGES:
            r = row["stages"].get(stage)
            if r is None:
                cells.append("not run")
            elif r["returncode"] != 0:
                cells.append(f"failed after {r['seconds']:.0f} s, {r['peak_rss_bytes'] / 1e9:.2f} GB peak")
            else:
                rate = f", {r['throughput']:,.0f} {r['unit']}" if r.get("throughput") else ""
                cells.append(f"{r['seconds']:.1f} s{rate}, {r['peak_rss_bytes'] / 1e9:.2f} GB peak")
        lines.append(f"| {row['events']:,} | {row.get('users', 0):,} | {row.get('items', 0):,} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(rows: list[dict], path: str) -> None:
    """Peak memory and seconds of every stage the rows hold against events (log-log), as a PNG."""
    fig = Figure(figsize=(10, 4))
    memory, seconds = fig.subplots(1, 2)
    for stage in dict.fromkeys(stage for row in rows for stage in row["stages"]):
        points = [(r["events"], r["stages"][stage]) for r in rows
                  if stage in r["stages"] and r["stages"][stage]["returncode"] == 0]
        if points:
            memory.plot([e for e, _ in points], [s["peak_rss_bytes"] / 1e9 for _, s in points], "o-", label=stage)
            seconds.plot([e for e, _ in points], [s["seconds"] for _, s in points], "o-", label=stage)
    for ax, label in ((memory, "peak RSS of the command's processes (GB)"), (seconds, "wall seconds")):
        ax.set(xscale="log", yscale="log", xlabel="events", ylabel=label)
        ax.grid(True, which="both", lw=0.3)
        ax.legend()
    fig.suptitle("synthetic logs through interest preprocess / train / evaluate")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def memory_growth(rows: list[dict], small: int, large: int) -> float | None:
    """Preprocessing peak memory at ``large`` events over that at ``small`` (None unless both ran)."""
    peaks = {r["events"]: r["stages"].get("preprocess", {}) for r in rows}
    a, b = peaks.get(small, {}), peaks.get(large, {})
    if a.get("returncode") != 0 or b.get("returncode") != 0:
        return None
    return b["peak_rss_bytes"] / a["peak_rss_bytes"]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1e6,1e7,3e7", help="comma-separated event counts (1e6 or 1000000)")
    parser.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated subset of {','.join(STAGES)}")
    parser.add_argument("--preprocess-only-above", type=float, default=None,
                        help="sizes above this many events run the preprocess stage only")
    parser.add_argument("--train-steps", type=int, default=30, help="optimizer steps of the train stage")
    parser.add_argument("--preprocess-args", default="", help="more `interest preprocess` arguments")
    parser.add_argument("--train-args", default="", help="more `interest train` arguments (e.g. --set ...)")
    parser.add_argument("--evaluate-args", default="", help="more `interest evaluate` arguments")
    parser.add_argument("--work", default=".cache/bench-scale", help="logs, data, models (kept between runs)")
    parser.add_argument("--output", default=RESULT, help="the JSON result; .md and .png go beside it")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic logs")
    parser.add_argument("--sample-seconds", type=float, default=0.2, help="how often memory is sampled")
    parser.add_argument("--timeout", type=float, default=None, help="seconds after which a stage is killed")
    args = parser.parse_args(argv)
    sizes = [int(float(s)) for s in args.sizes.split(",") if s.strip()]
    args.stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = sorted(set(args.stages) - set(STAGES))
    if unknown:
        raise SystemExit(f"--stages: unknown {', '.join(unknown)}; choose from {', '.join(STAGES)}")
    args.stages = [s for s in STAGES if s in args.stages]
    for name in ("preprocess_args", "train_args", "evaluate_args"):
        setattr(args, name, shlex.split(getattr(args, name)))
    work = Path(args.work)
    rows = [run_size(events, work, args) for events in sizes]
    result = {
        "benchmark": "scale", "command": shlex.join(["python", "-m", "benchmarks.scale", *(argv or sys.argv[1:])]),
        "sizes": rows, "preprocess_memory_growth_30m_over_10m": memory_growth(rows, 10_000_000, 30_000_000),
        "target_preprocess_memory_growth": PREPROCESS_MEMORY_GROWTH_TARGET, "cpus": os.cpu_count(),
        "platform": platform.platform(), "load_average": os.getloadavg(),
        "note": "wall times measured with other work on the machine; peak RSS is the command's process tree",
    }
    out = Path(args.output)
    storage.write_json(str(out), result)
    table = growth_table(rows)
    storage.write_text(str(out.with_suffix(".md")), table + "\n")
    plot(rows, str(out.with_suffix(".png")))
    print(table)
    return result


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    main()
