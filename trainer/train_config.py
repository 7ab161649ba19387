"""``TrainConfig``: how a model is trained (optimizer, schedule, stopping, validation, checkpoints, precision).

The model itself is described by ``trainer.model_config.ModelConfig``; a preset (``trainer.presets``) carries both a
model config and ``train`` overrides of the fields below. ``trainer.job.resolve_configs(preset, overrides)`` is
the one place a preset plus overrides becomes this config.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from core.configs import check_literals, require
from trainer.blocks import DEFAULT_ITEM_BLOCK, MIN_ITEM_BLOCK

# Fields a resumed run may change: they decide how long it runs or what it logs and keeps, not the weights a
# step computes (e.g. resume a preempted job with a longer time budget).
# A time budget also sets the LR schedule's horizon: a longer one stretches what is left of a decaying schedule.
RESUMABLE_CHANGES = ("time_budget_seconds", "pause_after_seconds", "log_every_steps", "checkpoint_every_steps",
                     "keep_checkpoints", "num_workers", "eval_batch_size", "init_from", "eval_item_block")


@dataclass(frozen=True)
class TrainConfig:
    # --- optimization (AdamW) ---
    batch_size: int = 128  # GLOBAL sequences per optimizer step, split over the ranks: same result for any world size
    lr: float = 1e-3  # peak learning rate
    weight_decay: float = 0.01  # AdamW decoupled weight decay, as in the seed
    decay_all_parameters: bool = False  # False: no decay on norms, biases and embeddings (the usual AdamW recipe)
    betas: tuple[float, float] = (0.9, 0.98)  # AdamW betas; 0.98 as in SASRec/Transformer training
    eps: float = 1e-8  # AdamW epsilon
    grad_clip: float = 1.0  # clip the global gradient norm to this; 0 disables clipping (the norm is still logged)
    # --- learning-rate schedule (trainer/schedules.py) ---
    schedule: Literal["constant", "cosine", "cosine_restarts"] = "constant"  # constant: the seed's baseline
    warmup_fraction: float = 0.05  # cosine schedules: linear warm-up over this share of the total steps
    min_lr_ratio: float = 0.01  # cosine schedules: the LR floor as a share of the peak LR
    restart_period_steps: int | None = None  # cosine_restarts: steps per cycle; None: a quarter of the run
    # --- how long to train: the first limit reached stops the run ---
    epochs: int | None = 200  # passes over the training sequences; None: no epoch limit
    max_steps: int | None = None  # optimizer steps; None: epochs decide (one of the two must be set)
    # Wall-clock training seconds (summed over resumes); None: no budget. With a budget the LR schedule spans the
    # budget (trainer/schedules.py RunSchedule), so a cosine run ends at its floor when the budget ends.
    time_budget_seconds: float | None = None
    # Stop this invocation after this many training seconds (summed over resumes) WITHOUT ending the run: the
    # schedule still spans the budget, rerunning the command resumes (benchmarks/time_to_quality.py trains so).
    pause_after_seconds: float | None = None
    # --- validation and early stopping ---
    eval_every_steps: int = 250  # validate on the validation targets every N steps (and at the end)
    eval_batch_size: int = 512  # users per forward pass when computing validation embeddings
    # Validate on a fixed random sample of this many of the validation users (0: all of them), drawn once with
    # validation_seed, so a validation costs the same at any catalogue size; the default keeps ML-1M's 6,040
    # users (and any set up to 10,000) whole, so those results are the full validation. `interest evaluate`
    # always ranks every user.
    validation_users: int = 10_000
    validation_seed: int = 0  # draws the validation sample: the same users at every validation and world size
    eval_item_block: int = DEFAULT_ITEM_BLOCK  # items scored at a time when validating: memory, not results
    patience: int = 10  # stop after this many validations without a better Recall@10; 0 disables early stopping
    # --- data ---
    bucket_batches: int = 50  # sort sequences by length within windows of this many batches: little padding
    # Round each batch's width up to a multiple of this (capped at max_len): ~13 shapes per run instead of ~200,
    # which torch.compile and GPU kernels want; on CPU it measured neutral (within noise) against exact widths.
    batch_width_multiple: int = 16
    num_workers: int = 0  # DataLoader worker processes assembling batches; 0: in the training process
    # --- checkpoints ---
    checkpoint_every_steps: int = 500  # write a resumable checkpoint every N steps (and at the end)
    keep_checkpoints: int = 2  # most recent checkpoints kept; older ones are deleted (the best model is kept apart)
    # --- numerics and speed ---
    seed: int = 42  # seeds torch, numpy and python; the data order derives from it and the epoch
    amp: Literal["auto", "bf16", "off"] = "auto"  # auto: bf16 autocast on GPU, full fp32 on CPU
    compile: bool = False  # torch.compile the model (first step compiles for ~25 s; faster afterwards)
    nan_policy: Literal["stop", "skip"] = "stop"  # a NaN/Inf loss: stop with an error, or skip that step
    max_skipped_steps: int = 100  # nan_policy=skip: give up after this many skipped steps in one run
    log_every_steps: int = 20  # TensorBoard scalars and plain log lines (or the tqdm postfix) every N steps
    # --- warm start (trainer/warm_start.py) ---
    # Start from an exported model dir (item rows matched by item_id, same architecture required) instead of a
    # fresh initialisation; `registry:ROOT[#MODEL]` (the champion) is resolved by the CLI or the DAG before
    # training. Used at step 0 only: a resumed run continues from its checkpoint.
    init_from: str | None = None

    def __post_init__(self) -> None:
        check_literals(self)
        require(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        require(self.lr > 0 and math.isfinite(self.lr), "lr", f"must be a positive number, got {self.lr}")
        require(self.weight_decay >= 0, "weight_decay", f"must be >= 0, got {self.weight_decay}")
        require(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), "betas",
                f"must be two numbers in [0, 1), got {self.betas}")
        require(self.eps > 0, "eps", f"must be > 0, got {self.eps}")
        require(self.grad_clip >= 0, "grad_clip", f"must be >= 0 (0 disables clipping), got {self.grad_clip}")
        require(0 <= self.warmup_fraction < 1, "warmup_fraction", f"must be in [0, 1), got {self.warmup_fraction}")
        require(0 <= self.min_lr_ratio <= 1, "min_lr_ratio", f"must be in [0, 1], got {self.min_lr_ratio}")
        require(self.restart_period_steps is None or self.restart_period_steps >= 1, "restart_period_steps",
                f"must be >= 1 or null, got {self.restart_period_steps}")
        require(self.epochs is not None or self.max_steps is not None, "epochs",
                "set epochs or max_steps (the LR schedule needs a step horizon)")
        require(self.epochs is None or self.epochs >= 1, "epochs", f"must be >= 1 or null, got {self.epochs}")
        require(self.max_steps is None or self.max_steps >= 1, "max_steps",
                f"must be >= 1 or null, got {self.max_steps}")
        for name in ("time_budget_seconds", "pause_after_seconds"):
            value = getattr(self, name)
            require(value is None or value > 0, name, f"must be > 0 or null, got {value}")
        require(not (self.schedule == "cosine_restarts" and self.restart_period_steps is not None
                     and self.time_budget_seconds is not None), "restart_period_steps",
                "a time-budgeted schedule follows time, not steps: leave it null (four cycles over the budget) or "
                "drop the time budget")
        for name in ("eval_every_steps", "eval_batch_size", "bucket_batches", "batch_width_multiple",
                     "checkpoint_every_steps",
                     "keep_checkpoints", "log_every_steps"):
            value = getattr(self, name)
            require(value >= 1, name, f"must be >= 1, got {value}")
        require(self.validation_users >= 0, "validation_users",
                f"must be >= 0 (0: every validation user), got {self.validation_users}")
        require(self.eval_item_block >= MIN_ITEM_BLOCK, "eval_item_block",
                f"must be >= {MIN_ITEM_BLOCK} items, got {self.eval_item_block}")
        require(self.patience >= 0, "patience", f"must be >= 0 (0 disables early stopping), got {self.patience}")
        require(self.num_workers >= 0, "num_workers", f"must be >= 0, got {self.num_workers}")
        require(self.max_skipped_steps >= 0, "max_skipped_steps", f"must be >= 0, got {self.max_skipped_steps}")
        require(self.init_from is None or bool(self.init_from.strip()), "init_from",
                "must name a model directory or registry:ROOT, or be null")

    def total_steps(self, steps_per_epoch: int) -> int:
        """The step horizon of the run (the LR schedule spans it); the time budget may stop it earlier."""
        limits = [self.max_steps] if self.max_steps is not None else []
        if self.epochs is not None:
            limits.append(self.epochs * steps_per_epoch)
        return max(1, min(limits))
