"""What one training run is: ``TrainJob``, the ONE place a preset plus overrides becomes typed configs, and the
ONE builder of the training command line (``interest train``, torchrun workers, PyTorchJob and Vertex nodes).

Precedence of settings: preset < config file (``model:`` / ``train:`` sections) < overrides, in order.
An override is ``key=value`` (the value is YAML: ``128``, ``1e-3``, ``null``, ``[0.9, 0.95]``); ``key`` is a
``ModelConfig`` or ``TrainConfig`` field, made explicit with a ``model.`` or ``train.`` prefix.

The worker side of every launcher is ``python -m trainer.train ARGS`` with ``ARGS = job.argv()``; it parses them
with the same ``add_arguments`` that ``interest train`` uses, so the command line cannot drift from its parser.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from core.configs import ConfigError, load, read_config_file, require
from trainer.model_config import ModelConfig
from trainer.presets import PRESETS, get_preset
from trainer.train_config import TrainConfig

SECTIONS = {"model": ModelConfig, "train": TrainConfig}


def route_overrides(items: Iterable[str]) -> dict[str, list[str]]:
    """Send each ``key=value`` to the config section that has the field ``key`` (``model.``/``train.`` prefixes
    make it explicit); an unknown field is a ConfigError listing the known ones."""
    fields = {name: {f.name for f in dataclasses.fields(cls)} for name, cls in SECTIONS.items()}
    routed: dict[str, list[str]] = {name: [] for name in SECTIONS}
    for item in items:
        key, sep, value = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not dot:
            name = key.strip()
            section = next((s for s, names in fields.items() if name in names), "")
        if not sep or name not in fields.get(section, ()):
            known = sorted(fields["model"] | fields["train"])
            raise ConfigError(f"--set {key}: not a ModelConfig or TrainConfig field; known: {', '.join(known)}")
        routed[section].append(f"{name}={value}")
    return routed


def resolve_configs(preset: str, overrides: Sequence[str] = (),
                    config_file: str | None = None) -> tuple[ModelConfig, TrainConfig]:
    """The typed configs of ``preset`` updated by ``config_file`` then ``overrides``: the one resolver."""
    chosen = get_preset(preset)
    file = read_config_file(config_file) if config_file else {}
    unknown = sorted(set(file) - set(SECTIONS))
    require(not unknown, "--config", f"unknown section {unknown[0] if unknown else ''!r}; allowed: model, train")
    routed = route_overrides(overrides)
    model_cfg = load(ModelConfig, overrides=routed["model"], base={**chosen.model, **file.get("model", {})})
    train_cfg = load(TrainConfig, overrides=routed["train"], base={**chosen.train, **file.get("train", {})})
    return model_cfg, train_cfg


def overrides_from(model: Iterable[str] = (), train: Mapping[str, Any] | None = None) -> tuple[str, ...]:
    """Overrides from ModelConfig ``key=value`` strings and a mapping of TrainConfig fields (values as JSON,
    which is YAML, so they parse back exactly)."""
    return (*(f"model.{item}" for item in model),
            *(f"train.{key}={json.dumps(value)}" for key, value in (train or {}).items()))


@dataclass(frozen=True)
class TrainJob:
    """One training run: what to read, where to write, and the settings."""

    data: str  # preprocessed data directory (local, gs:// or s3://)
    output: str  # model artifact directory to write
    preset: str = "baseline"  # trainer.presets name
    overrides: tuple[str, ...] = ()  # key=value for ModelConfig / TrainConfig fields, applied in order
    config_file: str | None = None  # JSON/YAML with model: and train: sections
    # Resumable training state; None: <output>/checkpoints. A stable URI here lets a retried task resume.
    checkpoint_dir: str | None = None
    restart: bool = False  # ignore (and replace) checkpoints of an earlier run instead of resuming it

    def configs(self) -> tuple[ModelConfig, TrainConfig]:
        return resolve_configs(self.preset, self.overrides, self.config_file)

    def argv(self) -> list[str]:
        """The training command's arguments (what ``add_arguments`` parses back into this job)."""
        argv = ["--data", self.data, "--output", self.output, "--preset", self.preset]
        if self.config_file:
            argv += ["--config", self.config_file]
        for item in self.overrides:
            argv += ["--set", item]
        if self.checkpoint_dir:
            argv += ["--checkpoint-dir", self.checkpoint_dir]
        if self.restart:
            argv.append("--restart")
        return argv


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of a training job (``interest train`` and the torchrun worker)."""
    parser.add_argument("--data", required=True, help="preprocessed data directory (local, gs:// or s3://)")
    parser.add_argument("--output", required=True, help="model artifact directory (local, gs:// or s3://)")
    parser.add_argument("--preset", default="baseline", help=f"one of {', '.join(PRESETS)} (default baseline)")
    parser.add_argument("--config", help="JSON/YAML file with 'model:' and 'train:' sections")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a ModelConfig or TrainConfig field, e.g. --set lr=3e-4 --set d_model=128")
    horizon = parser.add_mutually_exclusive_group()
    horizon.add_argument("--epochs", type=int, help="train for N epochs (the LR schedule spans them)")
    horizon.add_argument("--max-steps", type=int, help="train for N optimizer steps (the LR schedule spans them)")
    parser.add_argument("--time-budget", type=float, metavar="SECONDS",
                        help="stop after this many seconds of training (summed over resumes)")
    parser.add_argument("--checkpoint-dir", default=None,
                        help="resumable training state (default OUTPUT/checkpoints); a stable URI lets a retried "
                        "job resume")
    parser.add_argument("--restart", action="store_true",
                        help="start over, replacing the checkpoints of an earlier run in the checkpoint directory")


def job_from_args(args: argparse.Namespace) -> TrainJob:
    """The job ``add_arguments`` flags describe; --epochs/--max-steps/--time-budget become overrides."""
    overrides = list(args.set)
    if args.epochs is not None:
        overrides += [f"train.epochs={args.epochs}", "train.max_steps=null"]
    if args.max_steps is not None:
        overrides += [f"train.max_steps={args.max_steps}", "train.epochs=null"]
    if args.time_budget is not None:
        overrides.append(f"train.time_budget_seconds={args.time_budget}")
    return TrainJob(args.data, args.output, args.preset, tuple(overrides), args.config, args.checkpoint_dir,
                    args.restart)


def torchrun_command(job: TrainJob, nproc: int | str, rendezvous: Sequence[str] = (),
                     python: str = sys.executable) -> list[str]:
    """``python -m torch.distributed.run`` running ``nproc`` training processes of ``job``.

    Without ``rendezvous`` flags the job is one machine (``--standalone``); with them (``--nnodes 2
    --node-rank 0 --rdzv-backend c10d --rdzv-endpoint HOST:PORT --rdzv-id JOB``) it joins a multi-node job.
    """
    launcher = [python, "-m", "torch.distributed.run", *(rendezvous or ["--standalone"]),
                f"--nproc-per-node={nproc}"]
    return [*launcher, "-m", "trainer.train", *job.argv()]


def worker_main(argv: Sequence[str]) -> int:
    """``python -m trainer.train ARGS``: one process (or one torchrun rank) of ``job_from_args(ARGS)``."""
    import logging
    import os

    from trainer.train import train_job

    parser = argparse.ArgumentParser(prog="python -m trainer.train", description="one training process")
    add_arguments(parser)
    job = job_from_args(parser.parse_args(list(argv)))
    logging.basicConfig(level=logging.INFO if int(os.environ.get("RANK", "0")) == 0 else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        summary = train_job(job)
    except ConfigError as exc:
        print(f"train: error: {exc}", file=sys.stderr)
        return 2
    if summary:
        print(json.dumps({k: summary[k] for k in ("steps", "train_seconds", "tokens_per_second", "best", "stopped")}))
    return 0
