"""What one training run is: ``TrainJob``, the ONE place a preset plus overrides becomes typed configs, and the
ONE builder of the training command line (``interest train``, torchrun workers, PyTorchJob and Vertex nodes).

Precedence of settings: preset < config file (``model:`` / ``train:`` sections) < overrides, in order.
An override is ``key=value`` (the value is YAML: ``128``, ``1e-3``, ``null``, ``[0.9, 0.95]``); ``key`` is a
``ModelConfig``, ``ObjectiveConfig`` or ``TrainConfig`` field, made explicit with a ``model.``, ``objective.`` or
``train.`` prefix (``model.`` before an objective field still reaches the objective: the field's old place).

The worker side of every launcher is ``python -m trainer ARGS`` (``trainer/__main__.py``) with ``ARGS =
job.argv()``; it parses them with the same ``add_arguments`` that ``interest train`` uses, so the command line
cannot drift from its parser. This module never imports the training loop (``trainer.train`` imports it).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from core.configs import ConfigError, load, read_config_file, require
from trainer.model_config import ModelConfig
from trainer.objective import MOVED_FROM_MODEL, ObjectiveConfig, split_legacy
from trainer.presets import PRESETS, get_preset
from trainer.train_config import TrainConfig

SECTIONS = {"model": ModelConfig, "objective": ObjectiveConfig, "train": TrainConfig}
WORKER_ERROR = "train: error: "  # how a worker (trainer/__main__.py) reports a bad setting: one line on stderr


class Configs(NamedTuple):
    """The typed configs of one training run."""

    model: ModelConfig  # the forward pass and the weights' shapes
    objective: ObjectiveConfig  # what training minimises
    train: TrainConfig  # how it is trained


def route_overrides(items: Iterable[str]) -> dict[str, list[str]]:
    """Send each ``key=value`` to the config section that has the field ``key`` (``model.``/``objective.``/
    ``train.`` prefixes make it explicit); an unknown field is a ConfigError listing the known ones."""
    fields = {name: {f.name for f in dataclasses.fields(cls)} for name, cls in SECTIONS.items()}
    routed: dict[str, list[str]] = {name: [] for name in SECTIONS}
    for item in items:
        key, sep, value = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not dot:
            name = key.strip()
            section = next((s for s, names in fields.items() if name in names), "")
        elif section == "model" and name in MOVED_FROM_MODEL:
            section = "objective"  # model.penalty=...: overrides written before the objective had its section
        if not sep or name not in fields.get(section, ()):
            known = sorted(set().union(*fields.values()))
            raise ConfigError(f"--set {key}: not a ModelConfig, ObjectiveConfig or TrainConfig field; known: "
                              f"{', '.join(known)}")
        routed[section].append(f"{name}={value}")
    return routed


def resolve_configs(preset: str, overrides: Sequence[str] = (), config_file: str | None = None) -> Configs:
    """The typed configs of ``preset`` updated by ``config_file`` then ``overrides``: the one resolver."""
    chosen = get_preset(preset)
    file = read_config_file(config_file) if config_file else {}
    unknown = sorted(set(file) - set(SECTIONS))
    require(not unknown, "--config", f"unknown section {unknown[0] if unknown else ''!r}; allowed: "
            f"{', '.join(SECTIONS)}")
    file_model, file_objective = split_legacy(file.get("model", {}))  # a model: section may hold objective fields
    routed = route_overrides(overrides)
    return Configs(
        model=load(ModelConfig, overrides=routed["model"], base={**chosen.model, **file_model}),
        objective=load(ObjectiveConfig, overrides=routed["objective"],
                       base={**chosen.objective, **file_objective, **file.get("objective", {})}),
        train=load(TrainConfig, overrides=routed["train"], base={**chosen.train, **file.get("train", {})}))


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
    config_file: str | None = None  # JSON/YAML with model:, objective: and train: sections
    # Resumable training state; None: <output>/checkpoints. A stable URI here lets a retried task resume.
    checkpoint_dir: str | None = None
    restart: bool = False  # ignore (and replace) checkpoints of an earlier run instead of resuming it

    def configs(self) -> Configs:
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
    parser.add_argument("--config", help="JSON/YAML file with 'model:', 'objective:' and 'train:' sections")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a ModelConfig, ObjectiveConfig or TrainConfig field, e.g. --set lr=3e-4 "
                        "--set d_model=128 --set objective.penalty=l2")
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
    return [*launcher, "-m", "trainer", *job.argv()]

