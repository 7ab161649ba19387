"""Learning-rate schedules, built only from ``torch.optim.lr_scheduler`` and stepped once per optimizer step.

- ``constant``: the peak LR throughout (the seed's baseline).
- ``cosine``: linear warm-up over ``warmup_fraction`` of the total steps, then cosine decay to
  ``min_lr_ratio * lr`` at the last step (the seed: 5% warm-up, max steps = total steps, floor 1% of the peak).
- ``cosine_restarts``: the same warm-up, then cosine cycles of ``restart_period_steps`` that each restart at the
  peak LR (SGDR); the seed found it strong early and weaker at the end.
"""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import (
    ConstantLR,
    CosineAnnealingLR,
    CosineAnnealingWarmRestarts,
    LinearLR,
    LRScheduler,
    SequentialLR,
)

from trainer.train_config import TrainConfig


def warmup_steps(cfg: TrainConfig, total_steps: int) -> int:
    return round(cfg.warmup_fraction * total_steps) if cfg.schedule != "constant" else 0


def restart_period(cfg: TrainConfig, total_steps: int) -> int:
    """Steps per cosine cycle; by default four cycles cover the steps after the warm-up (no short fifth one)."""
    if cfg.restart_period_steps is not None:
        return cfg.restart_period_steps
    return max(1, math.ceil((total_steps - warmup_steps(cfg, total_steps)) / 4))


def build_scheduler(optimizer: Optimizer, cfg: TrainConfig, total_steps: int) -> LRScheduler:
    """The schedule for ``total_steps`` optimizer steps; the optimizer's param groups hold the peak LR."""
    if cfg.schedule == "constant":
        return ConstantLR(optimizer, factor=1.0, total_iters=0)
    floor = cfg.min_lr_ratio * cfg.lr
    warmup = warmup_steps(cfg, total_steps)
    if cfg.schedule == "cosine":
        # The last step (total_steps - 1) runs exactly at the floor.
        decay = CosineAnnealingLR(optimizer, T_max=max(1, total_steps - warmup - 1), eta_min=floor)
    else:
        decay = CosineAnnealingWarmRestarts(optimizer, T_0=restart_period(cfg, total_steps), eta_min=floor)
    if warmup == 0:
        return decay
    # Step t < warmup runs at lr * (t + 1) / (warmup + 1): never zero, reaching the peak as the decay starts.
    ramp = LinearLR(optimizer, start_factor=1.0 / (warmup + 1), end_factor=1.0, total_iters=warmup)
    return SequentialLR(optimizer, schedulers=[ramp, decay], milestones=[warmup])
