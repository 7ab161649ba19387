"""``interest train`` and ``interest evaluate``: thin wrappers over ``trainer.job``, ``trainer.train`` and
``trainer.evaluate``.

``--set key=value`` goes to the ModelConfig, ObjectiveConfig or TrainConfig field of that name (``model.`` /
``objective.`` / ``train.`` prefixes make it explicit); ``--config FILE`` is JSON/YAML with ``model:``,
``objective:`` and ``train:`` sections. Precedence: preset < config file < --set < --epochs/--max-steps/
--time-budget (``trainer.job.resolve_configs``, called once per command).
"""

from __future__ import annotations

import argparse
import json

from components.warm_start import resolve_warm_start
from core.configs import require
from core.protocols import PROTOCOLS
from release.registry import resolve
from trainer.blocks import DEFAULT_ITEM_BLOCK
from trainer.job import add_arguments, job_from_args, torchrun_command


def register(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser(
        "train",
        help="train a preset on a preprocessed data directory (one process, DDP, or several nodes)",
        description="Train (or resume: rerun the same command) a model and write the model artifact directory. "
        "Arguments after a bare -- go to torchrun (rendezvous flags for multi-node jobs).",
    )
    add_arguments(train)
    train.add_argument("--nproc", type=int, default=1,
                       help="launch N DDP processes on this machine through torchrun (default 1: this process)")
    train.set_defaults(func=run_train)

    evaluate = subparsers.add_parser(
        "evaluate",
        help="rank the full catalogue for a split's users with a trained model",
        description="Write metrics.json and per_user.parquet (docs/contracts.md) for --split of --data.",
    )
    evaluate.add_argument("--model", required=True,
                          help="model artifact directory of `interest train`, or registry:ROOT[#MODEL] for the "
                          "registry's champion (evaluated on this data: items matched by id)")
    evaluate.add_argument("--data", required=True, help="preprocessed data directory")
    evaluate.add_argument("--split", default="test", choices=("valid", "test"), help="which targets (default test)")
    evaluate.add_argument("--output", required=True, help="where metrics.json and per_user.parquet go")
    evaluate.add_argument("--overwrite", action="store_true",
                          help="replace --output even when it holds something other than an evaluation")
    evaluate.add_argument("--batch-size", type=int, default=512, help="users per batch (default 512)")
    evaluate.add_argument("--item-block", type=int, default=DEFAULT_ITEM_BLOCK,
                          help="items scored at a time: memory is batch size x item block scores, whatever the "
                          f"catalogue; results do not depend on it (default {DEFAULT_ITEM_BLOCK:,})")
    evaluate.add_argument("--processes", type=int, default=1,
                          help="local processes sharing the users (default 1); under torchrun each rank is one")
    evaluate.add_argument("--protocol", choices=list(PROTOCOLS),
                          help="evaluation protocol (docs/protocols.md); default and only allowed value: the one the "
                          "data was preprocessed for (its split.json); recorded in metrics.json")
    evaluate.set_defaults(func=run_evaluate)


def run_train(args: argparse.Namespace) -> int:
    require(args.nproc >= 1, "--nproc", f"must be >= 1, got {args.nproc}")
    job = job_from_args(args)
    job, configs = resolve_warm_start(job, job.configs())  # bad flags fail here, before any process starts
    from trainer.data import open_data

    open_data(job.data)  # an incomplete data directory is a usage error, found before any process starts
    if args.nproc > 1 or args.passthrough:
        from trainer.launch import run_torchrun

        run_torchrun(torchrun_command(job, args.nproc, args.passthrough))
        return 0
    from trainer.train import fit, summary_line  # imports torch: only when training

    summary = fit(job, configs)
    if summary:
        print(summary_line(summary))
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    require(args.batch_size >= 1, "--batch-size", f"must be >= 1, got {args.batch_size}")
    from trainer.evaluate import evaluate

    metrics = evaluate(resolve(args.model), args.data, args.split, args.output, args.batch_size, args.protocol,
                       args.item_block, args.processes, args.overwrite)
    print(json.dumps(metrics, indent=2))
    return 0
