"""``interest train`` and ``interest evaluate``.

``--set key=value`` goes to the ModelConfig or the TrainConfig field of that name (``model.`` / ``train.``
prefixes make it explicit); ``--config FILE`` is JSON/YAML with ``model:`` and ``train:`` sections. Precedence:
preset < config file < --set < --epochs/--max-steps/--time-budget.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import subprocess

from pipelines.configs import ConfigError, load, read_config_file, require
from trainer.config import ModelConfig
from trainer.presets import PRESETS, get_preset
from trainer.training_config import TrainConfig

SECTIONS = {"model": ModelConfig, "train": TrainConfig}


def register(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser(
        "train",
        help="train a preset on a preprocessed data directory (one process, DDP, or several nodes)",
        description="Train (or resume: rerun the same command) a model and write the model artifact directory. "
        "Arguments after a bare -- go to torchrun (rendezvous flags for multi-node jobs).",
    )
    train.add_argument("--data", required=True, help="preprocessed data directory (local or gs://)")
    train.add_argument("--output", required=True, help="model artifact directory (local or gs://)")
    train.add_argument("--preset", default="baseline", help=f"one of {', '.join(PRESETS)} (default baseline)")
    train.add_argument("--config", help="JSON/YAML file with 'model:' and 'train:' sections")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a ModelConfig or TrainConfig field, e.g. --set lr=3e-4 --set d_model=128")
    horizon = train.add_mutually_exclusive_group()
    horizon.add_argument("--epochs", type=int, help="train for N epochs (the LR schedule spans them)")
    horizon.add_argument("--max-steps", type=int, help="train for N optimizer steps (the LR schedule spans them)")
    train.add_argument("--time-budget", type=float, metavar="SECONDS",
                       help="stop after this many seconds of training (summed over resumes)")
    train.add_argument("--nproc", type=int, default=1,
                       help="launch N DDP processes on this machine through torchrun (default 1: this process)")
    train.set_defaults(func=run_train)

    evaluate = subparsers.add_parser(
        "evaluate",
        help="rank the full catalogue for a split's users with a trained model",
        description="Write metrics.json and per_user.parquet (docs/contracts.md) for --split of --data.",
    )
    evaluate.add_argument("--model", required=True, help="model artifact directory of `interest train`")
    evaluate.add_argument("--data", required=True, help="preprocessed data directory")
    evaluate.add_argument("--split", default="test", choices=("valid", "test"), help="which targets (default test)")
    evaluate.add_argument("--output", required=True, help="where metrics.json and per_user.parquet go")
    evaluate.add_argument("--batch-size", type=int, default=512, help="users per batch (default 512)")
    evaluate.set_defaults(func=run_evaluate)


def split_overrides(items: list[str]) -> dict[str, list[str]]:
    """Route each ``key=value`` to the config section that has the field ``key``."""
    fields = {name: {f.name for f in dataclasses.fields(cls)} for name, cls in SECTIONS.items()}
    routed: dict[str, list[str]] = {name: [] for name in SECTIONS}
    for item in items:
        key, sep, value = item.partition("=")
        section, dot, field = key.partition(".")
        if not dot:
            section = next((name for name, names in fields.items() if key in names), "")
            field = key
        if not sep or field not in fields.get(section, ()):
            known = sorted(fields["model"] | fields["train"])
            raise ConfigError(f"--set {key}: not a ModelConfig or TrainConfig field; known: {', '.join(known)}")
        routed[section].append(f"{field}={value}")
    return routed


def configs_from_args(args: argparse.Namespace) -> tuple[ModelConfig, TrainConfig]:
    preset = get_preset(args.preset)
    file = read_config_file(args.config) if args.config else {}
    unknown = sorted(set(file) - set(SECTIONS))
    require(not unknown, "--config", f"unknown section {unknown[0] if unknown else ''!r}; allowed: model, train")
    routed = split_overrides(args.set)
    model_cfg = load(ModelConfig, overrides=routed["model"], base={**preset.model, **file.get("model", {})})
    horizon = []
    if args.epochs is not None:
        horizon += [f"epochs={args.epochs}", "max_steps=null"]
    if args.max_steps is not None:
        horizon += [f"max_steps={args.max_steps}", "epochs=null"]
    if args.time_budget is not None:
        horizon.append(f"time_budget_seconds={args.time_budget}")
    train_cfg = load(TrainConfig, overrides=[*routed["train"], *horizon],
                     base={**preset.train, **file.get("train", {})})
    return model_cfg, train_cfg


def worker_argv(args: argparse.Namespace) -> list[str]:
    """The same ``interest train`` arguments minus --nproc, for each torchrun worker."""
    argv = ["--data", args.data, "--output", args.output, "--preset", args.preset]
    if args.config:
        argv += ["--config", args.config]
    for item in args.set:
        argv += ["--set", item]
    for flag, value in (("--epochs", args.epochs), ("--max-steps", args.max_steps),
                        ("--time-budget", args.time_budget)):
        if value is not None:
            argv += [flag, str(value)]
    return argv


def run_train(args: argparse.Namespace) -> int:
    require(args.nproc >= 1, "--nproc", f"must be >= 1, got {args.nproc}")
    model_cfg, train_cfg = configs_from_args(args)  # fail on bad flags before any process starts
    if (args.nproc > 1 or args.passthrough) and "RANK" not in os.environ:
        from trainer.distributed import torchrun_command  # imports torch: only when launching

        command = torchrun_command(args.nproc, worker_argv(args), args.passthrough)
        logging.getLogger("trainer").info("launching %s", " ".join(command))
        return subprocess.run(command, check=False).returncode
    if int(os.environ.get("RANK", "0")) != 0:
        logging.getLogger().setLevel(logging.WARNING)  # rank 0 speaks for the job
    from trainer.train import train

    summary = train(args.data, args.output, args.preset, train_config=train_cfg, model_config=model_cfg)
    if summary:
        print(json.dumps({k: summary[k] for k in ("steps", "train_seconds", "tokens_per_second", "best", "stopped")}))
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    require(args.batch_size >= 1, "--batch-size", f"must be >= 1, got {args.batch_size}")
    from trainer.evaluate import evaluate

    metrics = evaluate(args.model, args.data, args.split, args.output, args.batch_size)
    print(json.dumps(metrics, indent=2))
    return 0
