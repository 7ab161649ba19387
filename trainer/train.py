"""Train an ``InterestModel`` on a preprocessed data directory and export a model artifact directory.

One process (CPU or one GPU)::

    interest train --data DATA --preset baseline --output OUT [--time-budget 300]

Several processes on one machine (DDP; gloo on CPU, NCCL on GPU), launched through torchrun::

    interest train --data DATA --preset baseline --output OUT --nproc 2
    # = python -m torch.distributed.run --standalone --nproc-per-node 2 -m trainer.train --data DATA ...

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
import math
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from pipelines import storage
from pipelines.configs import ConfigError, load, save, to_dict
from trainer import checkpoint
from trainer.config import ModelConfig
from trainer.data import EvalSet, TrainBatch, TrainingSet, epoch_loader, load_sequences
from trainer.distributed import Distributed, setup
from trainer.evaluate import evaluate_model
from trainer.losses import loss_terms
from trainer.model import InterestModel
from trainer.monitor import Monitor
from trainer.presets import get_preset
from trainer.schedules import build_scheduler
from trainer.training_config import RESUMABLE_CHANGES, TrainConfig

log = logging.getLogger("trainer")

CHECKPOINTS = "checkpoints"
BEST_MODEL = "best-model.pt"  # in checkpoints/: the weights of the best validation so far


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


def check_resumable(saved: dict[str, Any], model_cfg: ModelConfig, train_cfg: TrainConfig, output_dir: str) -> None:
    """A checkpoint only resumes the run that wrote it: the same model and training config (except
    ``RESUMABLE_CHANGES``)."""
    now = {"model": to_dict(model_cfg), "train": to_dict(train_cfg)}
    before = {"model": json.loads(saved["model_config"]), "train": json.loads(saved["train_config"])}
    for section in ("model", "train"):
        for key in sorted(set(now[section]) | set(before[section])):
            if section == "train" and key in RESUMABLE_CHANGES:
                continue
            if now[section].get(key) != before[section].get(key):
                raise ConfigError(
                    f"--output: {output_dir} holds a run with {section} {key}={before[section].get(key)!r}, now "
                    f"{now[section].get(key)!r}; rerun with the same settings to resume it, or use a new --output")


def train(data_dir: str, output_dir: str, preset: str = "baseline", model_overrides: Sequence[str] = (),
          train_config: TrainConfig | None = None, model_config: ModelConfig | None = None) -> dict[str, Any]:
    """Train (or resume) a model; returns the summary that is also written to ``OUT/summary.json``.

    ``model_config`` defaults to the preset's with ``model_overrides`` (``"d_model=128"``) applied;
    ``train_config`` defaults to the preset's ``train`` fields over the ``TrainConfig`` defaults.
    Under torchrun (or inside an existing process group) this process is one rank of a DDP job.
    """
    chosen = get_preset(preset)
    model_cfg = model_config or chosen.model_config(model_overrides)
    train_cfg = train_config or load(TrainConfig, base=chosen.train)
    ddp = setup()
    try:
        return Trainer(data_dir, output_dir, preset, model_cfg, train_cfg, ddp).run()
    finally:
        ddp.close()


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
                 ddp: Distributed):
        self.output_dir, self.preset, self.model_cfg, self.cfg, self.ddp = output_dir, preset, model_cfg, cfg, ddp
        self.device = ddp.device
        self.checkpoints = storage.join(output_dir, CHECKPOINTS)
        if cfg.batch_size < ddp.world_size:
            raise ConfigError(f"batch_size: {cfg.batch_size} is smaller than the {ddp.world_size} processes")
        self.seqs = load_sequences(data_dir)
        self.data = TrainingSet(self.seqs, model_cfg.max_len)
        self.steps_per_epoch = self.data.steps_per_epoch(cfg.batch_size)
        if self.steps_per_epoch < 1:
            raise ConfigError(f"batch_size: {cfg.batch_size} exceeds the {len(self.data)} training sequences "
                              f"of {data_dir}")
        self.total_steps = cfg.total_steps(self.steps_per_epoch)
        self.valid = EvalSet.build(self.seqs, "valid", model_cfg.max_len)
        self.item_frequencies = self.data.item_frequencies().to(self.device)
        seed_everything(cfg.seed)  # the same initial weights on every rank
        self.model = InterestModel(model_cfg, self.seqs.num_items).to(self.device)
        torch.manual_seed(cfg.seed + ddp.rank)  # then each rank its own dropout stream
        self.optimizer = build_optimizer(self.model, cfg, self.device)
        self.scheduler = build_scheduler(self.optimizer, cfg, self.total_steps)
        self.bf16 = uses_bf16(cfg, self.device)
        self.progress = Progress()
        self.last_checkpoint: tuple[int, str] | None = None  # (step, uri)
        self._resume()
        forward: nn.Module = torch.compile(self.model) if cfg.compile else self.model
        if ddp.active:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            forward = DistributedDataParallel(forward, device_ids=device_ids)
        self.forward = forward
        self.monitor = Monitor(output_dir, self.total_steps, self.progress.step, cfg.log_every_steps) \
            if ddp.is_main else None

    # ---------------------------------------------------------------- resume and checkpoints

    def _resume(self) -> None:
        if self.ddp.is_main:
            checkpoint.remove_stale_temp_files(self.checkpoints)
        found = checkpoint.load_latest(self.checkpoints)
        if found is None:
            return
        state, uri = found
        check_resumable(state, self.model_cfg, self.cfg, self.output_dir)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
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
            "scheduler": self.scheduler.state_dict(),
            "rng": rng,
            "model_config": json.dumps(to_dict(self.model_cfg)),
            "train_config": json.dumps(to_dict(self.cfg)),
            "progress": dataclasses.asdict(self.progress),
        }
        checkpoint.save(self.checkpoints, self.progress.step, state, self.cfg.keep_checkpoints)

    # ---------------------------------------------------------------- one step

    def _step(self, batch: TrainBatch) -> tuple[float, float, float] | None:
        """Forward, backward and update on this rank's share of one global batch.

        Returns the global mean (loss, penalty, grad norm), or None when the step was skipped for a NaN/Inf.
        """
        inputs = {k: v.to(self.device, non_blocking=True) for k, v in batch.inputs.items()}
        targets = batch.targets.to(self.device, non_blocking=True)
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16) if self.bf16 else contextlib.nullcontext()
        with autocast:
            hidden = self.forward(inputs)
            terms = loss_terms(self.model, hidden, targets, self.model_cfg, self.item_frequencies)
        total = terms.total.float()
        # One collective per step: the token-weighted loss sums for logging and whether any rank saw a NaN/Inf,
        # so every rank takes the same branch below (a rank skipping backward alone would hang DDP).
        local = torch.stack([terms.task.detach().float() * batch.tokens, terms.penalty.detach().float() * batch.tokens,
                             (~torch.isfinite(total.detach())).float()])
        sums = self.ddp.all_sum(local.cpu())
        loss, penalty = (sums[:2] / batch.global_tokens).tolist()
        if sums[2] > 0:
            return self._non_finite(f"loss is {loss}")
        # This rank's share of the global mean; DDP averages gradients over ranks, hence the world size.
        (total * (batch.tokens * self.ddp.world_size / batch.global_tokens)).backward()
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip or math.inf))
        if not math.isfinite(grad_norm):  # the same on every rank: gradients are already averaged
            self.optimizer.zero_grad(set_to_none=True)
            return self._non_finite(f"gradient norm is {grad_norm}")
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss, penalty, grad_norm

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
        """Rank 0 ranks the validation targets, records the point and keeps the best weights; returns a fresh
        window for the next validation's train-loss mean."""
        if self.ddp.is_main and len(self.valid):
            self._record_validation(window)
            self.progress.train_seconds = time.monotonic() - loop_started
        return Window()

    def _record_validation(self, window: Window) -> None:
        _, metrics = evaluate_model(self.model, self.valid, self.cfg.eval_batch_size, self.device, self.bf16)
        p = self.progress
        recall, ndcg = metrics["recall@10"], metrics["ndcg@10"]
        p.history.append({"step": p.step, "wall_seconds": round(p.train_seconds, 3),
                          "train_loss": window.mean("loss"), "penalty": window.mean("penalty"),
                          "lr": self.scheduler.get_last_lr()[0], "valid_recall@10": recall, "valid_ndcg@10": ndcg,
                          "user_norm_mean": metrics["user_norm_mean"]})
        self.monitor.valid(p.step, p.train_seconds, metrics)
        if recall > p.best_recall:
            p.best_step, p.best_recall, p.best_ndcg, p.bad_evals = p.step, recall, ndcg, 0
            storage.write_bytes(storage.join(self.checkpoints, BEST_MODEL), checkpoint.to_bytes(self.model.state_dict()))
        else:
            p.bad_evals += 1

    # ---------------------------------------------------------------- the loop

    def _stop_reason(self) -> str | None:
        """Why the run stops now, decided by rank 0 (its clock, its validations) for every rank."""
        p, cfg = self.progress, self.cfg
        reasons = [
            (p.step >= self.total_steps, "max_steps" if cfg.max_steps == self.total_steps else "epochs"),
            (cfg.time_budget_seconds is not None and p.train_seconds >= cfg.time_budget_seconds, "time_budget"),
            (cfg.patience > 0 and p.bad_evals >= cfg.patience, "early_stopping"),
        ]
        reason = next((why for hit, why in reasons if hit), None)
        if not self.ddp.agree(self.ddp.is_main and reason is not None):
            return None
        return reason or "stopped by rank 0"

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
        stopped = self._stop_reason()
        while stopped is None:
            epoch, first_batch = divmod(p.step, self.steps_per_epoch)
            loader = epoch_loader(self.data, cfg.batch_size, cfg.bucket_batches, cfg.seed, epoch, first_batch,
                                  self.ddp.rank, self.ddp.world_size, cfg.num_workers,
                                  pin_memory=self.device.type == "cuda")
            step_started = time.monotonic()
            for batch in loader:
                result = self._step(batch)
                self.scheduler.step()
                p.step += 1
                now = time.monotonic()
                p.step_seconds += now - step_started
                p.tokens += batch.global_tokens
                p.train_seconds = now - loop_started
                for window in (log_window, eval_window):
                    window.add(result, batch.global_tokens, now - step_started)
                if self.monitor and (p.step % cfg.log_every_steps == 0 or p.step == self.total_steps):
                    self.monitor.train(p.step, log_window.mean("loss"), log_window.mean("penalty"),
                                       self.scheduler.get_last_lr()[0], log_window.mean("grad_norm"),
                                       log_window.tokens / max(log_window.seconds, 1e-9), log_window.steps)
                    log_window = Window()
                validated = p.step % cfg.eval_every_steps == 0
                if validated:
                    eval_window = self._validate(eval_window, loop_started)
                stopped = self._stop_reason()
                if stopped and not validated:  # the last weights are always validated
                    eval_window = self._validate(eval_window, loop_started)
                if p.step % cfg.checkpoint_every_steps == 0 or stopped:
                    self._save_checkpoint()
                if stopped:
                    break
                step_started = time.monotonic()
        return self._export(stopped) if self.ddp.is_main else {}

    # ---------------------------------------------------------------- export

    def _export(self, stopped: str) -> dict[str, Any]:
        """Write the model artifact directory (docs/contracts.md); model.pt holds the best validated weights."""
        p, out = self.progress, self.output_dir
        best_uri = storage.join(self.checkpoints, BEST_MODEL)
        weights = (storage.read_bytes(best_uri) if p.best_step is not None
                   else checkpoint.to_bytes(self.model.state_dict()))
        storage.write_bytes(storage.join(out, "model.pt"), weights)
        save(self.model_cfg, storage.join(out, "model_config.json"))
        save(self.cfg, storage.join(out, "train_config.json"))
        storage.write_json(storage.join(out, "vocab.json"), self.seqs.vocab)
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
            "total_steps": self.total_steps,
            "tokens": p.tokens,
            "skipped_steps": p.skipped_steps,
            "world_size": self.ddp.world_size,
            "device": str(self.device),
            "resumed_from": p.resumed_from,
        }
        storage.write_json(storage.join(out, "summary.json"), summary)
        hparams = {k: (v if isinstance(v, (int, float, str, bool)) else json.dumps(v))
                   for k, v in {**to_dict(self.model_cfg), **to_dict(self.cfg)}.items() if v is not None}
        self.monitor.hparams({"preset": self.preset, **hparams},
                             {"hparam/valid_recall@10": max(p.best_recall, 0.0), "hparam/valid_ndcg@10": p.best_ndcg})
        log.info("done after %d steps (%s): best valid recall@10 %.4f at step %s; wrote %s", p.step, stopped,
                 max(p.best_recall, 0.0), p.best_step, out)
        return summary


if __name__ == "__main__":  # torchrun -m trainer.train ARGS: the worker side of `interest train --nproc N`
    from pipelines.cli import main

    sys.exit(main(["train", *sys.argv[1:]]))
