"""Time to quality: train a preset (``best``) on ML-1M with the real trainer and track Recall@10 against time.

    .venv/bin/python -m benchmarks.time_to_quality --time-budget 3600            # the recorded run
    .venv/bin/python -m benchmarks.time_to_quality --time-budget 240 --test-every 60 --eval-every 100   # a check

``trainer.train.train`` runs in segments of ``--test-every`` seconds of training: each segment is the same
command with a larger ``time_budget_seconds`` (a stop field, so the run resumes exactly where it stopped, with
the same data order, RNG and LR schedule as one uninterrupted run). After each segment the exported model (the
best validated weights so far: what the pipeline would ship at that moment) is ranked against the whole
catalogue on the TEST split. Time is the trainer's ``train_seconds``: wall-clock of the training loop
(steps, validation, checkpoints) summed over segments, without process start-up and data loading.

Reported: the validation Recall@10 curve (every ``--eval-every`` steps), the test Recall@10 of the shipped model
after each segment, the first time that test Recall@10 reached 0.2853 (published SASRec on ML-1M, full ranking),
and the final test Recall@10 (target >= 0.31). Writes benchmarks/results/time_to_quality.json and .png.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import logging
import sys
import time

from matplotlib.figure import Figure

from benchmarks import ml1m
from core import storage
from core.configs import load
from trainer.evaluate import evaluate
from trainer.presets import get_preset
from trainer.train import train
from trainer.train_config import TrainConfig

log = logging.getLogger("benchmarks.time_to_quality")

RESULT = "benchmarks/results/time_to_quality.json"
PUBLISHED = {"SASRec": 0.2853, "SASRec full CE": 0.3152, "HSTU-large": 0.3294}  # full-ranking Recall@10, ML-1M
TARGET = 0.31


def first_time_at(points: list[dict], time_key: str, key: str, threshold: float) -> float | None:
    """The first ``point[time_key]`` at which ``point[key] >= threshold``, or None if never."""
    return next((p[time_key] for p in points if p[key] is not None and p[key] >= threshold), None)


def plot(history: list[dict], tests: list[dict], title: str, path: str) -> None:
    """The Recall@10 curves as a PNG at ``path`` (matplotlib's Figure API: no display, no global state)."""
    fig = Figure(figsize=(8, 4.5))
    ax = fig.subplots()
    ax.plot([h["wall_seconds"] for h in history], [h["valid_recall@10"] for h in history], ".-",
            label="validation Recall@10 (current weights)")
    ax.plot([t["train_seconds"] for t in tests], [t["test_recall@10"] for t in tests], "s-",
            label="test Recall@10 (best validated model so far)")
    for name, value in PUBLISHED.items():
        ax.axhline(value, ls=":", lw=1, color="gray")
        ax.annotate(f"{name} {value}", (0.01, value), xycoords=("axes fraction", "data"), textcoords="offset points",
                    xytext=(0, 2), fontsize=8, color="gray")
    ax.axhline(TARGET, ls="--", lw=1, color="tab:red", label=f"target {TARGET}")
    ax.set(xlabel="training wall-clock (s)", ylabel="Recall@10 (full ranking)", title=title, xlim=(0, None),
           ylim=(0, None))
    ax.grid(alpha=0.3)
    ax.legend(loc="center right", fontsize=8)
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=120)
    storage.write_bytes(path, png.getvalue())


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--time-budget", type=float, required=True, help="seconds of training in all")
    parser.add_argument("--test-every", type=float, default=300.0,
                        help="seconds of training between two test evaluations of the shipped model")
    parser.add_argument("--eval-every", type=int, default=None, help="validate every N steps (default: preset's)")
    parser.add_argument("--preset", default="best", help="preset to train")
    parser.add_argument("--data", default=None, help="preprocessed ML-1M directory (default: preprocess the "
                                                     "cached ML-1M events once into the data cache)")
    parser.add_argument("--output", default="runs/time-to-quality", help="model directory of the run "
                                                                         "(an earlier run there is resumed)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="TrainConfig override, e.g. --set lr=2e-3 (repeatable)")
    parser.add_argument("--result", default=RESULT, help="where the JSON result goes (the PNG goes beside it)")
    args = parser.parse_args(argv)
    if args.time_budget <= 0 or args.test_every <= 0:
        raise SystemExit("--time-budget and --test-every: must be > 0 seconds")
    started = time.monotonic()
    data_dir = args.data or ml1m.preprocessed()
    preset = get_preset(args.preset)
    base = {**preset.train, **({"eval_every_steps": args.eval_every} if args.eval_every else {})}
    train_cfg = load(TrainConfig, overrides=args.set, base=base)

    tests, summary, budget = [], {}, 0.0
    while budget < args.time_budget:
        budget = min(args.time_budget, budget + args.test_every)
        summary = train(data_dir, args.output, args.preset,
                        train_config=dataclasses.replace(train_cfg, time_budget_seconds=budget))
        metrics = evaluate(args.output, data_dir, split="test")
        tests.append({"train_seconds": summary["train_seconds"], "step": summary["steps"],
                      "best_step": summary["best"]["step"], "valid_recall@10": summary["best"]["valid_recall@10"],
                      "test_recall@10": metrics["recall@10"], "test_ndcg@10": metrics["ndcg@10"]})
        log.info("%.0f s, step %d: best valid Recall@10 %.4f, its test Recall@10 %.4f (stopped: %s)",
                 summary["train_seconds"], summary["steps"], tests[-1]["valid_recall@10"] or 0.0,
                 tests[-1]["test_recall@10"], summary["stopped"])
        if summary["stopped"] != "time_budget":  # epochs done or early stopping: more budget changes nothing
            break

    final = tests[-1]
    result = {
        "benchmark": "time_to_quality",
        "command": " ".join(["python -m benchmarks.time_to_quality", *argv]),
        "preset": args.preset, "data": data_dir, "model_dir": args.output,
        "train_config": dataclasses.asdict(train_cfg),
        "time_budget_seconds": args.time_budget, "stopped": summary["stopped"],
        "steps": summary["steps"], "epochs": summary["epochs"], "train_seconds": summary["train_seconds"],
        "tokens_per_second": summary["tokens_per_second"], "script_seconds": time.monotonic() - started,
        "seconds_to_test_recall@10": {
            f"{name} {value}": first_time_at(tests, "train_seconds", "test_recall@10", value)
            for name, value in {**PUBLISHED, "target": TARGET}.items()},
        "seconds_to_valid_recall@10_0.2853": first_time_at(summary["history"], "wall_seconds", "valid_recall@10",
                                                           PUBLISHED["SASRec"]),
        "final_test_recall@10": final["test_recall@10"], "final_test_ndcg@10": final["test_ndcg@10"],
        "meets_target": final["test_recall@10"] >= TARGET,
        "tests": tests,
        "validation_history": summary["history"],
    }
    storage.write_json(args.result, result)
    png = args.result.removesuffix(".json") + ".png"
    plot(summary["history"], tests, f"{args.preset} on ML-1M: final test Recall@10 {final['test_recall@10']:.4f}",
         png)
    log.info("final test Recall@10 %.4f (target %.2f); wrote %s and %s", final["test_recall@10"], TARGET,
             args.result, png)
    return result


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    main()
