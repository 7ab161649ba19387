"""Learning-rate schedules, built only from ``torch.optim.lr_scheduler`` and stepped once per optimizer step.

- ``constant``: the peak LR throughout (the seed's baseline).
- ``cosine``: linear warm-up over ``warmup_fraction`` of the total steps, then cosine decay to
  ``min_lr_ratio * lr`` at the last step (the seed: 5% warm-up, max steps = total steps, floor 1% of the peak).
- ``cosine_restarts``: the same warm-up, then cosine cycles of ``restart_period_steps`` that each restart at the
  peak LR (SGDR); the seed found it strong early and weaker at the end.

The horizon follows the run's real length (``RunSchedule``): a run bounded by steps or epochs steps the scheduler
once per optimizer step over ``total_steps``; a run with a time budget cannot know how many steps fit, so its
scheduler spans ``PROGRESS_TICKS`` ticks and is advanced, after every step, to the share of the run done: the
larger of steps / total_steps and training seconds / budget. Either way the last step runs at the floor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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


# Resolution of a time-budgeted schedule: its scheduler spans this many ticks of progress (0.01% each).
PROGRESS_TICKS = 10_000


@dataclass
class RunSchedule:
    """The LR scheduler of one run, stepped by steps or by progress (see the module docstring)."""

    scheduler: LRScheduler
    total_steps: int  # the step horizon (epochs or max_steps)
    time_budget_seconds: float | None  # None: the schedule counts steps

    @staticmethod
    def horizon_of(total_steps: int, time_budget_seconds: float | None) -> int:
        """How many scheduler steps the schedule spans: progress ticks under a time budget, else the steps."""
        return PROGRESS_TICKS if time_budget_seconds is not None else total_steps

    @classmethod
    def build(cls, optimizer: Optimizer, cfg: TrainConfig, total_steps: int) -> RunSchedule:
        horizon = cls.horizon_of(total_steps, cfg.time_budget_seconds)
        return cls(build_scheduler(optimizer, cfg, horizon), total_steps, cfg.time_budget_seconds)

    def position(self, step: int, train_seconds: float) -> int:
        """Where the scheduler belongs after ``step`` steps and ``train_seconds`` of training."""
        if self.time_budget_seconds is None:
            return step
        done = max(step / self.total_steps, train_seconds / self.time_budget_seconds)
        return min(PROGRESS_TICKS - 1, int(done * PROGRESS_TICKS))

    def advance(self, position: int) -> None:
        """Step the scheduler up to ``position`` (never back): the next optimizer step runs at its LR."""
        while self.scheduler.last_epoch < position:
            self.scheduler.step()

    @property
    def lr(self) -> float:
        return self.scheduler.get_last_lr()[0]

    def done(self) -> float:
        """Share of the schedule behind the run (1.0: the last step ran at the end of it)."""
        horizon = self.horizon_of(self.total_steps, self.time_budget_seconds)
        return min(1.0, (self.scheduler.last_epoch + 1) / horizon)
