"""Train an ``InterestModel`` on a preprocessed data directory and export a model artifact directory.

One process (CPU or one GPU)::

    interest train --data DATA --preset baseline --output OUT [--time-budget 300]

Several processes on one machine (DDP; gloo on CPU, NCCL on GPU), launched through torchrun::

    interest train --data DATA --preset baseline --output OUT --nproc 2
    # = python -m torch.distributed.run --standalone --nproc-per-node=2 -m trainer --data DATA ...
    #   (trainer.job.torchrun_command; ``python -m trainer`` is the worker entry point: trainer/__main__.py)

Several machines (what a Kubeflow PyTorchJob or a Vertex custom job starts on each node)::

    interest train --data gs://B/data --preset baseline --output gs://B/run --nproc 8 -- \\
        --nnodes 2 --node-rank $RANK --rdzv-backend c10d --rdzv-endpoint $MASTER:29400 --rdzv-id run1

On a CPU shared with other work, ``OMP_NUM_THREADS=1`` (torchrun's default per worker) avoids intra-op threads
spinning against each other: on a busy 2-core box it made ML-1M steps about 10x faster than two threads.

Rerunning the same command resumes from the newest good checkpoint in ``OUT/checkpoints`` and, with the same
seed, ends with the same weights as a run that was never interrupted: the checkpoint holds the model,
optimizer, scheduler, every rank's RNG state and the step, and the data order is a pure function of
(seed, epoch), so the resumed run skips exactly the batches it had done.

The global batch (``TrainConfig.batch_size`` sequences) is the same for any world size: each rank takes its
share of every global batch and weights its loss by its share of the batch's target tokens, so the averaged
DDP gradient is the gradient of the global mean loss. Rank 0 alone validates, logs, checkpoints and exports.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from core import contract, rundir, storage
from core.configs import ConfigError, save, to_dict
from core.lineage import code_version
from trainer import checkpoint, warm_start
from trainer.data import EvalSet, Share, TrainingSet, epoch_loader, load_sequences
from trainer.distributed import Distributed, setup
from trainer.evaluate import evaluate_model
from trainer.job import Configs, TrainJob
from trainer.model import InterestModel
from trainer.model_config import ModelConfig
from trainer.monitor import Monitor
from trainer.objective import ObjectiveConfig, split_legacy
from trainer.schedules import RunSchedule
from trainer.step import StepContext, StepResult, train_step
from trainer.train_config import RESUMABLE_CHANGES, TrainConfig

log = logging.getLogger("trainer")

BEST_MODEL = "best-model.pt"  # in checkpoints/: the weights of the best validation so far
# Why a run stops (summary.json "stopped"), in the order they are checked.
STOP_REASONS = ("max_steps", "epochs", "time_budget", "paused", "early_stopping")
# Called on rank 0 after each validation with the run's whole validation history so far (newest last, a resumed
# run's earlier points included); an exception it raises stops the run unexported (a search pruning a trial).
ValidationHook = Callable[[list[dict[str, Any]]], None]


class NonFiniteLossError(RuntimeError):
    """The loss (or the gradient norm) became NaN/Inf and ``nan_policy`` is 'stop'."""


@dataclass
class Progress:
    """Everything about a run's position besides tensors; saved in each checkpoint as plain values."""

    step: int = 0  # optimizer steps taken (skipped NaN steps included: they consume their batch)
    train_seconds: float = 0.0  # wall-clock of the training loop (steps, validation, checkpoints), over resumes
    step_seconds: float = 0.0  # the part spent in training steps: the basis of tokens/s
    tokens: int = 0  # real (non-padding) target tokens trained on
    skipped_steps: int = 0  # steps skipped for a NaN/Inf loss under nan_policy='skip'
    best_step: int | None = None
    best_recall: float = -1.0
    best_ndcg: float = 0.0
    bad_evals: int = 0  # validations since the best one (early stopping)
    history: list[dict[str, Any]] = field(default_factory=list)
    resumed_from: list[int] = field(default_factory=list)  # steps this run resumed at
    last_lr: float | None = None  # the LR the last step ran at
    init_from: dict[str, Any] | None = None  # the warm start's source (trainer.warm_start), None: fresh weights


def build_optimizer(model: nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW; matrices of Linear layers decay, while norms, biases and embeddings do not (unless
    ``decay_all_parameters``): decaying an embedding row pulls rare items to zero between their updates."""
    no_decay_ids = set()
    if not cfg.decay_all_parameters:
        for module in model.modules():
            for name, param in module.named_parameters(recurse=False):
                if isinstance(module, nn.Embedding) or param.dim() < 2 or name == "bias":
                    no_decay_ids.add(id(param))
    params = list(model.parameters())
    groups = [
        {"params": [p for p in params if id(p) not in no_decay_ids], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if id(p) in no_decay_ids], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr, betas=cfg.betas, eps=cfg.eps,
                             fused=device.type == "cuda")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def uses_bf16(cfg: TrainConfig, device: torch.device) -> bool:
    return cfg.amp == "bf16" or (cfg.amp == "auto" and device.type == "cuda")


def check_resumable(saved: dict[str, Any], model_cfg: ModelConfig, train_cfg: TrainConfig, data_digest: str,
                    where: str, objective: ObjectiveConfig = ObjectiveConfig()) -> None:
    """A checkpoint only resumes the run that wrote it: the same data (vocab and stats digests), the same model,
    the same objective and the same training config (except ``RESUMABLE_CHANGES``); ``--restart`` starts over on
    purpose. A checkpoint written before the objective had its own config holds it in its model config."""
    if saved.get("data_digest") != data_digest:
        raise ConfigError(
            f"--data: the checkpoints in {where} were trained on other data (vocab.json/stats.json differ); rerun "
            "with the same --data to resume, --restart to start over on this data, or use a new --output")
    now = {"model": to_dict(model_cfg), "objective": to_dict(objective), "train": to_dict(train_cfg)}
    model_before, objective_before = split_legacy(json.loads(saved["model_config"]))
    if "objective_config" in saved:
        objective_before = json.loads(saved["objective_config"])
    # A field added since the checkpoint was written counts as its default there (it behaved as the default).
    before = {"model": {**to_dict(ModelConfig()), **model_before},
              "objective": to_dict(ObjectiveConfig(**objective_before)),
              "train": {**to_dict(TrainConfig()), **json.loads(saved["train_config"])}}
    if train_cfg.schedule != "constant" and (
            (before["train"].get("time_budget_seconds") is None) != (train_cfg.time_budget_seconds is None)):
        counts = "time" if train_cfg.time_budget_seconds is None else "steps"
        raise ConfigError(f"--time-budget: the {train_cfg.schedule} schedule in {where} counts {counts} "
                          "(trainer/schedules.py RunSchedule); resume with a time budget if it had one, without if "
                          "not, or --restart")
    for section in ("model", "objective", "train"):
        for key in sorted(set(now[section]) | set(before[section])):
            if section == "train" and key in RESUMABLE_CHANGES:
                continue
            if now[section].get(key) != before[section].get(key):
                raise ConfigError(
                    f"--output: {where} holds a run with {section} {key}={before[section].get(key)!r}, now "
                    f"{now[section].get(key)!r}; rerun with the same settings to resume it, --restart to start "
                    "over, or use a new --output")


def train(data_dir: str, output_dir: str, model_cfg: ModelConfig, train_cfg: TrainConfig, name: str = "baseline",
          checkpoint_dir: str | None = None, restart: bool = False,
          objective: ObjectiveConfig = ObjectiveConfig(),
          on_validation: ValidationHook | None = None) -> dict[str, Any]:
    """Train (or resume) a model minimising ``objective``; returns the summary that is also written to
    ``OUT/summary.json``.

    ``name`` (the preset or variant) is recorded in the summary; ``checkpoint_dir`` (default
    ``OUT/checkpoints``) holds the resumable state, ``restart`` discards it; ``on_validation`` sees every validation
    (``ValidationHook``: trainer.tune reports them to Optuna). Rank 0 holds the writer lock of the
    output (and of a separate checkpoint directory) for the whole run, so a second run into either fails at once.
    Under torchrun (or inside an existing process group) this process is one rank of a DDP job.
    """
    storage.check_uri(output_dir, "--output")
    ddp = setup()
    finished = False
    try:
        with contextlib.ExitStack() as locks:
            if ddp.is_main:
                locks.enter_context(rundir.locked(output_dir))
                rundir.check_replaceable(output_dir, contract.MODEL_KIND, contract.MODEL_WORKING_STATE)
                if checkpoint_dir and rundir.normalize(checkpoint_dir) != rundir.normalize(
                        storage.join(output_dir, contract.CHECKPOINTS)):
                    locks.enter_context(rundir.locked(checkpoint_dir))
                if not storage.is_remote(output_dir):
                    rundir.recover(output_dir, contract.MODEL_WORKING_STATE)
            trainer = Trainer(data_dir, output_dir, name, model_cfg, train_cfg, ddp, checkpoint_dir, restart,
                              objective, on_validation)
            summary = trainer.run()
        finished = True
        return summary
    finally:
        ddp.close(barrier=finished)  # no barrier after a failure: the failed rank's peers may never arrive


def fit(job: TrainJob, configs: Configs | None = None,
        on_validation: ValidationHook | None = None) -> dict[str, Any]:
    """Train ``job`` with ``configs``, the job's own (``TrainJob.configs``) unless the caller resolved them already;
    ``on_validation`` as in ``train``."""
    configs = configs or job.configs()
    return train(job.data, job.output, configs.model, configs.train, name=job.preset,
                 checkpoint_dir=job.checkpoint_dir, restart=job.restart, objective=configs.objective,
                 on_validation=on_validation)


def summary_line(summary: dict[str, Any]) -> str:
    """The one JSON line a finished training prints (``interest train`` and every worker)."""
    return json.dumps({k: summary[k] for k in ("steps", "train_seconds", "tokens_per_second", "best", "stopped")})


@dataclass
class Window:
    """Sums over the steps since the last log line (or validation); means over the finite steps."""

    steps: int = 0  # steps taken, skipped ones included
    finite: int = 0  # steps with a finite loss
    loss: float = 0.0
    penalty: float = 0.0
    grad_norm: float = 0.0
    tokens: int = 0
    seconds: float = 0.0

    def add(self, result: tuple[float, float, float] | None, tokens: int, seconds: float) -> None:
        self.steps += 1
        self.tokens += tokens
        self.seconds += seconds
        if result is not None:
            self.finite += 1
            self.loss += result[0]
            self.penalty += result[1]
            self.grad_norm += result[2]

    def mean(self, name: str) -> float:
        return getattr(self, name) / self.finite if self.finite else float("nan")


class Trainer:
    """One rank's training run; ``run()`` trains, validates, checkpoints and (on rank 0) exports."""

    def __init__(self, data_dir: str, output_dir: str, preset: str, model_cfg: ModelConfig, cfg: TrainConfig,
                 ddp: Distributed, checkpoint_dir: str | None = None, restart: bool = False,
                 objective: ObjectiveConfig = ObjectiveConfig(), on_validation: ValidationHook | None = None):
        self.output_dir, self.preset, self.model_cfg, self.cfg, self.ddp = output_dir, preset, model_cfg, cfg, ddp
        self.objective, self.on_validation = objective, on_validation
        self.device = ddp.device
        self.data_dir, self.restart = data_dir, restart
        self.checkpoints = checkpoint_dir or storage.join(output_dir, contract.CHECKPOINTS)
        if cfg.batch_size < ddp.world_size:
            raise ConfigError(f"batch_size: {cfg.batch_size} is smaller than the {ddp.world_size} processes")
        self.seqs = load_sequences(data_dir, Share(ddp.rank, ddp.world_size))  # this rank's users' events only
        self.data = TrainingSet(self.seqs, model_cfg.max_len, cfg.batch_width_multiple)
        self.steps_per_epoch = self.data.steps_per_epoch(cfg.batch_size)
        if self.steps_per_epoch < 1:
            raise ConfigError(f"batch_size: {cfg.batch_size} exceeds the {len(self.data)} training sequences "
                              f"of {data_dir}")
        self.total_steps = cfg.total_steps(self.steps_per_epoch)
        self.valid = EvalSet.build(self.seqs, "valid", model_cfg.max_len, cfg.validation_users, cfg.validation_seed)
        self.item_frequencies = ddp.all_sum(self.data.item_frequencies()).to(self.device)
        events = self.seqs.columns["items"].numel() - 1
        held = [int(self.seqs.holds(torch.arange(self.seqs.num_users)).sum()), events,
                sum(column.nbytes for column in self.seqs.columns.values())]
        self.held_per_rank = [dict(zip(("users", "events", "bytes"), part.tolist(), strict=True))
                              for part in ddp.gather(torch.tensor(held))]
        seed_everything(cfg.seed)  # the same initial weights on every rank
        self.model = InterestModel(model_cfg, self.seqs.num_items)
        self.progress = Progress()
        if cfg.init_from and (restart or not checkpoint.published(self.checkpoints)):  # a resumed run has its own
            if cfg.init_from.startswith("registry:"):
                raise ConfigError(f"init_from: {cfg.init_from} must be resolved to the champion's directory before "
                                  "training (`interest train` and the pipeline do; release.registry.resolve)")
            self.progress.init_from = warm_start.initialize(self.model, cfg.init_from, self.seqs.vocab)
        self.model.to(self.device)
        torch.manual_seed(cfg.seed + ddp.rank)  # then each rank its own dropout stream
        self.optimizer = build_optimizer(self.model, cfg, self.device)
        self.schedule = RunSchedule.build(self.optimizer, cfg, self.total_steps)
        self.bf16 = uses_bf16(cfg, self.device)
        self.last_checkpoint: tuple[int, str] | None = None  # (step, uri)
        self._resume()
        forward: nn.Module = torch.compile(self.model) if cfg.compile else self.model
        if ddp.active:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            forward = DistributedDataParallel(forward, device_ids=device_ids)
        self.step_context = StepContext(self.model, forward, self.optimizer, objective, cfg.grad_clip, ddp, self.bf16,
                                        self.item_frequencies)
        self.monitor = Monitor(output_dir, self.total_steps, self.progress.step, cfg.log_every_steps) \
            if ddp.is_main else None

    # ---------------------------------------------------------------- resume and checkpoints

    def _resume(self) -> None:
        if self.ddp.is_main:
            checkpoint.remove_stale_temp_files(self.checkpoints)
            if self.restart:
                removed = checkpoint.remove_all(self.checkpoints)
                if removed:
                    log.info("--restart: removed %d checkpoint files of an earlier run in %s", removed,
                             self.checkpoints)
        if self.restart:
            return
        found = checkpoint.load_latest(self.checkpoints)
        if found is None:
            return
        state, uri = found
        check_resumable(state, self.model_cfg, self.cfg, self.seqs.data_digest, self.checkpoints, self.objective)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.scheduler.load_state_dict(state["scheduler"])
        self.progress = Progress(**state["progress"])
        self.progress.resumed_from.append(self.progress.step)
        rng = state["rng"]
        if self.ddp.rank < len(rng["torch"]):  # a run resumed on more ranks keeps fresh streams on the new ones
            checkpoint.restore_rng({**rng, "torch": rng["torch"][self.ddp.rank],
                                    "cuda": rng["cuda"][self.ddp.rank] if rng["cuda"] else None})
        self.last_checkpoint = (self.progress.step, uri)
        if self.ddp.is_main:
            log.info("resuming from %s (step %d of %d)", uri, self.progress.step, self.total_steps)

    def _save_checkpoint(self) -> None:
        """Collective (every rank contributes its RNG state); rank 0 writes."""
        rng = checkpoint.rng_state()
        rng["torch"] = self.ddp.gather(rng["torch"])
        rng["cuda"] = self.ddp.gather(rng["cuda"]) if rng["cuda"] is not None else None
        uri = storage.join(self.checkpoints, checkpoint.checkpoint_name(self.progress.step))
        self.last_checkpoint = (self.progress.step, uri)  # every rank names it in a NaN error
        if not self.ddp.is_main:
            return
        state = {
            "format": 1,
            "step": self.progress.step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.schedule.scheduler.state_dict(),
            "rng": rng,
            "model_config": json.dumps(to_dict(self.model_cfg)),
            "objective_config": json.dumps(to_dict(self.objective)),
            "train_config": json.dumps(to_dict(self.cfg)),
            "data_digest": self.seqs.data_digest,
            "progress": dataclasses.asdict(self.progress),
        }
        checkpoint.save(self.checkpoints, self.progress.step, state, self.cfg.keep_checkpoints)

    # ---------------------------------------------------------------- one step

    def _step(self, batch) -> tuple[float, float, float] | None:
        """One step (trainer.step.train_step); the global mean (loss, penalty, grad norm), or None when a NaN/Inf
        made it skip the update."""
        result: StepResult = train_step(self.step_context, batch)
        if result.non_finite is not None:
            return self._non_finite(result.non_finite)
        return result.loss, result.penalty, result.grad_norm

    def _non_finite(self, what: str) -> None:
        """Stop with an error naming the step and the last good checkpoint, or count a skipped step."""
        step = self.progress.step + 1
        skip = self.cfg.nan_policy == "skip" and self.progress.skipped_steps < self.cfg.max_skipped_steps
        if not skip:
            if self.last_checkpoint:
                resume = (f"the last good checkpoint is {self.last_checkpoint[1]} (step {self.last_checkpoint[0]}); "
                          "rerunning the command resumes from it")
            else:
                resume = "there is no checkpoint yet"
            why = (f" (skipped {self.progress.skipped_steps} steps already: max_skipped_steps)"
                   if self.cfg.nan_policy == "skip" else "; set nan_policy=skip to skip such steps")
            raise NonFiniteLossError(f"{what} at step {step} (epoch {(step - 1) // self.steps_per_epoch}){why}; "
                                     f"{resume}")
        self.progress.skipped_steps += 1
        if self.ddp.is_main:
            log.warning("%s at step %d: step skipped (nan_policy=skip, %d so far)", what, step,
                        self.progress.skipped_steps)
        return None

    # ---------------------------------------------------------------- validation

    def _validate(self, window: Window, loop_started: float) -> Window:
        """Every rank ranks the validation users it holds (a collective); rank 0 records the point and keeps the
        best weights. Returns a fresh window for the next validation's train-loss mean."""
        if len(self.valid):
            self._record_validation(window)
            if self.ddp.is_main:
                self.progress.train_seconds = time.monotonic() - loop_started
        return Window()

    def _record_validation(self, window: Window) -> None:
        started = time.monotonic()
        _, metrics = evaluate_model(self.model, self.valid, self.cfg.eval_batch_size, self.device, self.bf16,
                                    item_block=self.cfg.eval_item_block, ddp=self.ddp)
        if not self.ddp.is_main:
            return
        p = self.progress
        recall, ndcg = metrics["recall@10"], metrics["ndcg@10"]
        # validation_seconds: what this validation cost, against the training segment before it (wall_seconds).
        p.history.append({"step": p.step, "wall_seconds": round(p.train_seconds, 3),
                          "validation_seconds": round(time.monotonic() - started, 3),
                          "train_loss": window.mean("loss"), "penalty": window.mean("penalty"),
                          "lr": p.last_lr, "valid_recall@10": recall, "valid_ndcg@10": ndcg,
                          "user_norm_mean": metrics["user_norm_mean"]})
        self.monitor.valid(p.step, p.train_seconds, metrics)
        if recall > p.best_recall:
            p.best_step, p.best_recall, p.best_ndcg, p.bad_evals = p.step, recall, ndcg, 0
            storage.write_bytes(storage.join(self.checkpoints, BEST_MODEL), checkpoint.to_bytes(self.model.state_dict()))
        else:
            p.bad_evals += 1
        if self.on_validation:
            self.on_validation(p.history)

    # ---------------------------------------------------------------- the loop

    def _agree(self) -> str | None:
        """Whether the run stops now and where the LR schedule stands, decided by rank 0 (its clock, its
        validations) and shared in one collective, so every rank stops together and steps at the same LR.
        Advances the schedule for the next step."""
        p, cfg = self.progress, self.cfg
        reasons = [
            (p.step >= self.total_steps, "max_steps" if cfg.max_steps == self.total_steps else "epochs"),
            (cfg.time_budget_seconds is not None and p.train_seconds >= cfg.time_budget_seconds, "time_budget"),
            (cfg.pause_after_seconds is not None and p.train_seconds >= cfg.pause_after_seconds, "paused"),
            (cfg.patience > 0 and p.bad_evals >= cfg.patience, "early_stopping"),
        ]
        reason = next((why for hit, why in reasons if hit), None)
        mine = [STOP_REASONS.index(reason) + 1 if reason else 0, self.schedule.position(p.step, p.train_seconds)]
        code, position = (int(v) for v in self.ddp.all_sum(
            torch.tensor(mine if self.ddp.is_main else [0, 0], dtype=torch.float64)).tolist())
        self.schedule.advance(position)
        return STOP_REASONS[code - 1] if code else None

    def run(self) -> dict[str, Any]:
        try:
            return self._loop()
        finally:
            if self.monitor:
                self.monitor.close()

    def _loop(self) -> dict[str, Any]:
        cfg, p = self.cfg, self.progress
        loop_started = time.monotonic() - p.train_seconds
        log_window, eval_window = Window(), Window()
        stopped = self._agree()
        while stopped is None:
            epoch, first_batch = divmod(p.step, self.steps_per_epoch)
            loader = epoch_loader(self.data, cfg.batch_size, cfg.bucket_batches, cfg.seed, epoch, first_batch,
                                  self.ddp.rank, self.ddp.world_size, cfg.num_workers,
                                  pin_memory=self.device.type == "cuda")
            step_started = time.monotonic()
            for batch in loader:
                p.last_lr = self.schedule.lr
                result = self._step(batch)
                p.step += 1
                p.tokens += batch.global_tokens
                stepped = time.monotonic()
                for window in (log_window, eval_window):
                    window.add(result, batch.global_tokens, stepped - step_started)
                if self.monitor and (p.step % cfg.log_every_steps == 0 or p.step == self.total_steps):
                    self.monitor.train(p.step, log_window.mean("loss"), log_window.mean("penalty"), p.last_lr,
                                       log_window.mean("grad_norm"),
                                       log_window.tokens / max(log_window.seconds, 1e-9), log_window.steps)
                    log_window = Window()
                # Data, step and logging count towards tokens/s; validation and checkpoints do not.
                now = time.monotonic()
                p.step_seconds += now - step_started
                p.train_seconds = now - loop_started
                validated = p.step % cfg.eval_every_steps == 0
                if validated:
                    eval_window = self._validate(eval_window, loop_started)
                stopped = self._agree()
                if stopped and not validated:  # the last weights are always validated
                    eval_window = self._validate(eval_window, loop_started)
                if p.step % cfg.checkpoint_every_steps == 0 or stopped:
                    self._save_checkpoint()
                if stopped:
                    break
                step_started = time.monotonic()
        return self._export(stopped) if self.ddp.is_main else {}

    def _stop_note(self, stopped: str) -> str:
        """What stopped the run and where its LR schedule stood: an early stop is never silent about cutting a
        decaying schedule short."""
        p, cfg = self.progress, self.cfg
        floor = cfg.lr * (cfg.min_lr_ratio if cfg.schedule != "constant" else 1.0)
        last = p.last_lr if p.last_lr is not None else self.schedule.lr
        where = (f"the last step ran at LR {last:.3g} ({cfg.schedule} schedule, floor {floor:.3g}, "
                 f"{self.schedule.done():.0%} of it done)")
        notes = {
            "epochs": lambda: f"all {self.total_steps:,} steps of {cfg.epochs} epochs ran",
            "max_steps": lambda: f"all {self.total_steps:,} steps (max_steps) ran",
            "time_budget": lambda: f"the time budget of {cfg.time_budget_seconds:g} s ended after {p.step:,} steps; "
                                   "the schedule followed the budget",
            "paused": lambda: f"paused after {p.train_seconds:.0f} s (pause_after_seconds); rerunning resumes",
            "early_stopping": lambda: f"early stopping after {cfg.patience} validations without a better "
                                      f"Recall@10, at step {p.step:,}",
        }
        note = f"{notes[stopped]()}: {where}"
        if stopped == "early_stopping" and cfg.schedule != "constant" and last > floor * 1.01:
            note += "; the decaying schedule was cut short"
        if not len(self.valid):
            note += (f"; the data has no validation targets (protocol {self.seqs.protocol!r}): nothing was selected "
                     "or stopped early on, the last weights are exported")
        return note

    # ---------------------------------------------------------------- export

    def _lineage(self) -> dict[str, Any]:
        """What this model was trained on and from (data lineage; the registry copies it into each version)."""
        return {"data": {"dir": self.data_dir, "digest": self.seqs.data_digest, **self.seqs.lineage},
                "init_from": self.progress.init_from, "code_version": code_version()}

    def _export(self, stopped: str) -> dict[str, Any]:
        """Publish the model artifact directory (docs/contracts.md) whole, through core.rundir: staged, then
        swapped in with its manifest; model.pt holds the best validated weights. A kill before the swap leaves
        the previous export untouched."""
        p, out = self.progress, self.output_dir
        best_uri = storage.join(self.checkpoints, BEST_MODEL)
        weights = (storage.read_bytes(best_uri) if p.best_step is not None
                   else checkpoint.to_bytes(self.model.state_dict()))
        validated = p.best_step is not None
        summary = {
            "preset": self.preset,
            "params": self.model.num_parameters(),
            "steps": p.step,
            "epochs": round(p.step / self.steps_per_epoch, 3),
            "train_seconds": round(p.train_seconds, 3),
            "tokens_per_second": p.tokens / p.step_seconds if p.step_seconds else 0.0,
            "best": {"step": p.best_step, "valid_recall@10": p.best_recall if validated else None,
                     "valid_ndcg@10": p.best_ndcg if validated else None},
            "history": p.history,
            "stopped": stopped,
            "stop_note": self._stop_note(stopped),
            "final_lr": p.last_lr,
            "protocol": self.seqs.protocol,
            "total_steps": self.total_steps,
            "tokens": p.tokens,
            "skipped_steps": p.skipped_steps,
            "world_size": self.ddp.world_size,
            "held_per_rank": self.held_per_rank,  # users, events and bytes of event columns each rank loaded
            "validation": {"users": len(self.valid), "of": self.valid.eligible, "seed": self.cfg.validation_seed},
            "device": str(self.device),
            "resumed_from": p.resumed_from,
        }
        hparams = {k: (v if isinstance(v, (int, float, str, bool)) else json.dumps(v))
                   for k, v in {**to_dict(self.model_cfg), **to_dict(self.objective), **to_dict(self.cfg)}.items()
                   if v is not None}
        self.monitor.hparams({"preset": self.preset, **hparams},
                             {"hparam/valid_recall@10": max(p.best_recall, 0.0), "hparam/valid_ndcg@10": p.best_ndcg})
        self.monitor.flush()
        with rundir.publishing(out, contract.MODEL_KIND, carry=contract.MODEL_WORKING_STATE) as staging:
            storage.write_bytes(staging.join(contract.WEIGHTS), weights)
            save(self.model_cfg, staging.join(contract.MODEL_CONFIG))
            save(self.objective, staging.join(contract.OBJECTIVE_CONFIG))
            save(self.cfg, staging.join(contract.TRAIN_CONFIG))
            storage.write_json(staging.join(contract.VOCAB), self.seqs.vocab)
            storage.write_json(staging.join(contract.LINEAGE), self._lineage())
            storage.write_json(staging.join(contract.SUMMARY), summary)
        log.info("done after %d steps (%s): best valid recall@10 %.4f at step %s; wrote %s", p.step,
                 summary["stop_note"], max(p.best_recall, 0.0), p.best_step, out)
        return summary

