"""Time to quality: train a preset on ML-1M with the real trainer under each evaluation protocol and track test
Recall@10 against training time, beside the published lines.

    .venv/bin/python -m benchmarks.time_to_quality --time-budget 2400 --test-every 600        # best, both protocols
    .venv/bin/python -m benchmarks.time_to_quality --time-budget 240 --test-every 60 --eval-every 100   # a check
    .venv/bin/python -m benchmarks.time_to_quality --preset best --set n_layer=4 --set dropout=0.3 \\
        --time-budget 3600 --protocols generative-recommenders --output runs/ttq-l4   # one recipe of a search

Per protocol (core/protocols.py, docs/protocols.md; its ML-1M data is preprocessed once into the data cache
unless ``--data-PROTOCOL`` names a directory) ``trainer.train.train`` runs with ``time_budget_seconds =
--time-budget`` (so an LR schedule spans the whole budget) in segments of ``--test-every`` seconds
(``pause_after_seconds``: each segment resumes exactly where the last one paused, with the same data order, RNG
and schedule as one uninterrupted run). After each segment the exported model is ranked on the TEST split: under
``ours`` the best validated weights so far (what the pipeline would ship), under ``generative-recommenders`` the
current weights (that protocol has no validation event: docs/protocols.md). Time is the trainer's
``train_seconds``: the training loop's wall-clock (steps, validation, checkpoints) summed over segments.

Reported per protocol: the test Recall@10 and NDCG@10 after each segment, the first training time at which test
Recall@10 reached 0.2853 (published SASRec) and 0.31 (our target), the final figures, and the validation curve
(ours). The plot draws both protocols against the published lines (SASRec 0.2853, HSTU 0.3097, HSTU-large
0.3294: generative-recommenders' README, measured under its protocol). Writes
benchmarks/results/time_to_quality.json and .png.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import logging
import os
import sys
import time

from matplotlib.figure import Figure

from benchmarks import ml1m
from core import protocols, storage
from core.configs import to_dict
from trainer.evaluate import evaluate
from trainer.job import resolve_configs
from trainer.train import train

log = logging.getLogger("benchmarks.time_to_quality")

RESULT = "benchmarks/results/time_to_quality.json"
# Full-ranking HR@10 (= Recall@10) on ML-1M under the generative-recommenders protocol (its README, verified
# 04/15/2024).
PUBLISHED = {"SASRec": 0.2853, "HSTU": 0.3097, "HSTU-large": 0.3294}
TARGET = 0.31
THRESHOLDS = {"SASRec 0.2853": PUBLISHED["SASRec"], "target 0.31": TARGET}
STYLE = {"ours": ("tab:blue", "s-"), "generative-recommenders": ("tab:orange", "o-")}


def first_time_at(points: list[dict], time_key: str, key: str, threshold: float) -> float | None:
    """The first ``point[time_key]`` at which ``point[key] >= threshold``, or None if never."""
    return next((p[time_key] for p in points if p[key] is not None and p[key] >= threshold), None)


def plot(runs: dict[str, dict], title: str, path: str) -> None:
    """Test Recall@10 of every protocol (and ours' validation curve) against training seconds, as a PNG at
    ``path`` (matplotlib's Figure API: no display, no global state)."""
    fig = Figure(figsize=(8, 4.5))
    ax = fig.subplots()
    for protocol, run in runs.items():
        color, style = STYLE.get(protocol, ("black", ".-"))
        tests = run["tests"]
        ax.plot([t["train_seconds"] for t in tests], [t["test_recall@10"] for t in tests], style, color=color,
                label=f"test Recall@10, protocol {protocol}")
        history = run["validation_history"]
        if history:
            ax.plot([h["wall_seconds"] for h in history], [h["valid_recall@10"] for h in history], ":", color=color,
                    lw=1, label=f"validation Recall@10, protocol {protocol}")
    for name, value in PUBLISHED.items():
        ax.axhline(value, ls=":", lw=1, color="gray")
        ax.annotate(f"{name} {value}", (0.01, value), xycoords=("axes fraction", "data"), textcoords="offset points",
                    xytext=(0, 2), fontsize=8, color="gray")
    ax.axhline(TARGET, ls="--", lw=1, color="tab:red", label=f"target {TARGET}")
    ax.set(xlabel="training wall-clock (s)", ylabel="Recall@10 (full ranking)", title=title, xlim=(0, None),
           ylim=(0, None))
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=120)
    storage.write_bytes(path, png.getvalue())


def run_protocol(protocol: str, data_dir: str, output: str, preset: str, overrides: list[str],
                 time_budget: float, test_every: float, eval_every: int | None) -> dict:
    """Train ``preset`` on ``data_dir`` in segments and rank the exported model on the test split after each."""
    model_cfg, objective, train_cfg = resolve_configs(preset, overrides)
    train_cfg = dataclasses.replace(train_cfg, time_budget_seconds=time_budget,
                                    **({"eval_every_steps": eval_every} if eval_every else {}))
    tests, summary, paused_at = [], {}, 0.0
    while True:
        paused_at = min(time_budget, paused_at + test_every)
        segment = dataclasses.replace(train_cfg, pause_after_seconds=paused_at if paused_at < time_budget else None)
        summary = train(data_dir, output, model_cfg, segment, name=preset, objective=objective)
        metrics = evaluate(output, data_dir, split="test")
        tests.append({"train_seconds": summary["train_seconds"], "step": summary["steps"],
                      "best_step": summary["best"]["step"], "valid_recall@10": summary["best"]["valid_recall@10"],
                      "test_recall@10": metrics["recall@10"], "test_ndcg@10": metrics["ndcg@10"],
                      "lr": summary["final_lr"]})
        log.info("%s: %.0f s, step %d: test Recall@10 %.4f (%s)", protocol, summary["train_seconds"],
                 summary["steps"], metrics["recall@10"], summary["stop_note"])
        if summary["stopped"] != "paused":  # the budget, the epochs or early stopping ended the run
            break
    final = tests[-1]
    return {
        "protocol": protocol, "data": data_dir, "model_dir": output, "items": metrics["items"],
        "model_config": to_dict(model_cfg), "objective_config": to_dict(objective), "train_config": to_dict(train_cfg),
        "stopped": summary["stopped"], "stop_note": summary["stop_note"], "steps": summary["steps"],
        "epochs": summary["epochs"], "train_seconds": summary["train_seconds"],
        "tokens_per_second": summary["tokens_per_second"],
        "seconds_to_test_recall@10": {name: first_time_at(tests, "train_seconds", "test_recall@10", value)
                                      for name, value in THRESHOLDS.items()},
        "final_test_recall@10": final["test_recall@10"], "final_test_ndcg@10": final["test_ndcg@10"],
        "meets_target": final["test_recall@10"] >= TARGET,
        "tests": tests,
        "validation_history": summary["history"],
    }


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--time-budget", type=float, required=True, help="seconds of training per protocol")
    parser.add_argument("--test-every", type=float, default=300.0,
                        help="seconds of training between two test evaluations of the exported model")
    parser.add_argument("--eval-every", type=int, default=None, help="validate every N steps (default: preset's)")
    parser.add_argument("--preset", default="best", help="preset to train (the slot of the best recipe)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="ModelConfig or TrainConfig override, e.g. --set n_layer=4 --set lr=2e-3 (repeatable)")
    parser.add_argument("--protocols", default=",".join(protocols.PROTOCOLS),
                        help=f"comma-separated evaluation protocols (default: {','.join(protocols.PROTOCOLS)})")
    for name in protocols.PROTOCOLS:
        parser.add_argument(f"--data-{name}", default=None,
                            help=f"preprocessed ML-1M directory for protocol {name} (default: made once into the "
                                 "data cache)")
    parser.add_argument("--output", default="runs/time-to-quality",
                        help="parent of one model directory per protocol (an earlier run there is resumed)")
    parser.add_argument("--result", default=RESULT, help="where the JSON result goes (the PNG goes beside it)")
    args = parser.parse_args(argv)
    if args.time_budget <= 0 or args.test_every <= 0:
        raise SystemExit("--time-budget and --test-every: must be > 0 seconds")
    chosen = [protocols.get_protocol(p.strip()).name for p in args.protocols.split(",") if p.strip()]
    started = time.monotonic()
    runs = {}
    for protocol in chosen:
        data_dir = getattr(args, f"data_{protocol.replace('-', '_')}") or ml1m.preprocessed(protocol)
        runs[protocol] = run_protocol(protocol, data_dir, os.path.join(args.output, protocol), args.preset, args.set,
                                      args.time_budget, args.test_every, args.eval_every)
    result = {
        "benchmark": "time_to_quality",
        "command": " ".join(["python -m benchmarks.time_to_quality", *argv]),
        "preset": args.preset, "overrides": args.set, "time_budget_seconds": args.time_budget,
        "published_recall@10": PUBLISHED, "target": TARGET, "load_average": os.getloadavg(),
        "script_seconds": time.monotonic() - started,
        "protocols": runs,
    }
    storage.write_json(args.result, result)
    png = args.result.removesuffix(".json") + ".png"
    finals = ", ".join(f"{p} {r['final_test_recall@10']:.4f}" for p, r in runs.items())
    plot(runs, f"{args.preset} on ML-1M: final test Recall@10 {finals}", png)
    log.info("final test Recall@10: %s (target %.2f); wrote %s and %s", finals, TARGET, args.result, png)
    return result


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    main()
