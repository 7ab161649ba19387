"""Every LR schedule against its definition at key steps, and its state surviving a weights_only checkpoint."""

from __future__ import annotations

import math

import pytest
import torch

from core.configs import ConfigError
from trainer import checkpoint
from trainer.schedules import PROGRESS_TICKS, RunSchedule, build_scheduler
from trainer.train_config import TrainConfig

TOTAL = 200
PEAK = 1e-3


def lr_curve(cfg: TrainConfig, total: int = TOTAL) -> list[float]:
    """The LR each of ``total`` optimizer steps runs at."""
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([param], lr=cfg.lr)
    scheduler = build_scheduler(optimizer, cfg, total)
    lrs = []
    for _ in range(total):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def cosine(t: float, period: float, floor: float) -> float:
    return floor + (PEAK - floor) * (1 + math.cos(math.pi * t / period)) / 2


def test_constant_is_the_peak_throughout():
    assert lr_curve(TrainConfig(lr=PEAK, max_steps=TOTAL)) == pytest.approx([PEAK] * TOTAL)


def test_cosine_warms_up_then_decays_to_the_floor_at_the_last_step():
    cfg = TrainConfig(lr=PEAK, schedule="cosine", warmup_fraction=0.05, min_lr_ratio=0.01, max_steps=TOTAL)
    lrs = lr_curve(cfg)
    warmup, floor = 10, 0.01 * PEAK  # 5% of 200 steps; 1% of the peak
    assert lrs[0] == pytest.approx(PEAK / (warmup + 1))  # never zero
    assert lrs[4] == pytest.approx(PEAK * 5 / (warmup + 1))  # linear
    assert lrs[warmup - 1] == pytest.approx(PEAK * warmup / (warmup + 1))
    assert lrs[warmup] == pytest.approx(PEAK)  # the peak as the decay starts
    decay_steps = TOTAL - warmup - 1
    for step in (warmup + 1, 50, 105, 150, 199):
        assert lrs[step] == pytest.approx(cosine(step - warmup, decay_steps, floor), rel=1e-6), step
    assert lrs[TOTAL - 1] == pytest.approx(floor)
    assert max(lrs) == pytest.approx(PEAK)
    assert all(a >= b - 1e-15 for a, b in zip(lrs[warmup:], lrs[warmup + 1:], strict=False))  # monotone decay


def test_cosine_with_warm_restarts_restarts_at_the_peak_every_period():
    cfg = TrainConfig(lr=PEAK, schedule="cosine_restarts", warmup_fraction=0.05, min_lr_ratio=0.01,
                      restart_period_steps=40, max_steps=TOTAL)
    lrs = lr_curve(cfg)
    warmup, period, floor = 10, 40, 0.01 * PEAK
    assert lrs[0] == pytest.approx(PEAK / (warmup + 1))
    assert lrs[warmup] == pytest.approx(PEAK)
    for restart in (warmup + period, warmup + 2 * period, warmup + 4 * period):
        assert lrs[restart] == pytest.approx(PEAK), restart
        assert lrs[restart - 1] < 0.05 * PEAK  # the step before a restart is near the floor
    for step in (15, 30, 49, 77, 123):
        assert lrs[step] == pytest.approx(cosine((step - warmup) % period, period, floor), rel=1e-6), step


def test_restart_period_defaults_to_four_cycles_after_the_warmup():
    lrs = lr_curve(TrainConfig(lr=PEAK, schedule="cosine_restarts", max_steps=TOTAL))
    restarts = [t for t in range(1, TOTAL) if lrs[t] > lrs[t - 1] and lrs[t] == pytest.approx(PEAK)]
    assert restarts == [10, 58, 106, 154]  # ceil((200 - 10) / 4) = 48 steps per cycle


def test_zero_warmup_starts_at_the_peak():
    lrs = lr_curve(TrainConfig(lr=PEAK, schedule="cosine", warmup_fraction=0.0, max_steps=TOTAL))
    assert lrs[0] == pytest.approx(PEAK)
    assert lrs[-1] == pytest.approx(0.01 * PEAK)


@pytest.mark.parametrize("schedule", ["constant", "cosine", "cosine_restarts"])
def test_scheduler_state_survives_a_weights_only_round_trip(schedule):
    """Resume: a scheduler restored from a checkpoint continues the curve exactly."""
    cfg = TrainConfig(lr=PEAK, schedule=schedule, restart_period_steps=30, max_steps=TOTAL)
    full = lr_curve(cfg)
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([param], lr=cfg.lr)
    scheduler = build_scheduler(optimizer, cfg, TOTAL)
    for _ in range(37):
        optimizer.step()
        scheduler.step()
    state = checkpoint.from_bytes(checkpoint.to_bytes({"optimizer": optimizer.state_dict(),
                                                       "scheduler": scheduler.state_dict()}))
    optimizer2 = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    scheduler2 = build_scheduler(optimizer2, cfg, TOTAL)
    optimizer2.load_state_dict(state["optimizer"])
    scheduler2.load_state_dict(state["scheduler"])
    resumed = []
    for _ in range(37, TOTAL):
        resumed.append(optimizer2.param_groups[0]["lr"])
        optimizer2.step()
        scheduler2.step()
    assert resumed == pytest.approx(full[37:], rel=1e-9)


@pytest.mark.parametrize(("field", "value", "message"), [
    ("schedule", "linear", "choose one of 'constant', 'cosine', 'cosine_restarts'"),
    ("warmup_fraction", 1.5, "warmup_fraction: must be in [0, 1)"),
    ("min_lr_ratio", -0.1, "min_lr_ratio: must be in [0, 1]"),
    ("restart_period_steps", 0, "restart_period_steps: must be >= 1"),
    ("amp", "fp16", "choose one of 'auto', 'bf16', 'off'"),
    ("nan_policy", "ignore", "choose one of 'stop', 'skip'"),
    ("batch_size", 0, "batch_size: must be >= 1"),
])
def test_bad_train_config_names_the_field_and_the_allowed_values(field, value, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        TrainConfig(**{field: value})


def test_a_run_needs_a_step_horizon():
    with pytest.raises(ConfigError, match="epochs: set epochs or max_steps"):
        TrainConfig(epochs=None, max_steps=None, time_budget_seconds=60)
    assert TrainConfig(epochs=3, max_steps=100).total_steps(steps_per_epoch=10) == 30  # the first limit wins


def test_a_time_budgeted_schedule_follows_the_clock_to_its_floor():
    """Steps of uneven duration (a fake clock): the LR follows the share of the budget used, whatever the step
    count, and the step that crosses the budget's end runs at the floor."""
    cfg = TrainConfig(lr=PEAK, schedule="cosine", warmup_fraction=0.05, min_lr_ratio=0.01, epochs=1000,
                      time_budget_seconds=100.0)
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([param], lr=cfg.lr)
    schedule = RunSchedule.build(optimizer, cfg, total_steps=1_000_000)
    seconds, lrs, step = 0.0, {}, 0
    while seconds < 100.0:
        lrs[seconds] = schedule.lr
        optimizer.step()
        step, seconds = step + 1, seconds + (0.7 if step % 3 else 2.1)
        schedule.advance(schedule.position(step, seconds))
    floor = 0.01 * PEAK
    assert schedule.lr == pytest.approx(floor) and schedule.done() == 1.0
    for at, lr in lrs.items():  # each step ran at the cosine of the budget share used before it
        if at >= 5.0 + 0.05:  # after the warm-up (5% of the budget)
            share = int(at / 100.0 * PROGRESS_TICKS)
            warmup = 0.05 * PROGRESS_TICKS
            assert lr == pytest.approx(cosine(share - warmup, PROGRESS_TICKS - warmup - 1, floor), rel=1e-6), at
    assert max(lrs.values()) == pytest.approx(PEAK, rel=1e-3)


def test_a_step_bounded_schedule_counts_steps_exactly_as_before():
    cfg = TrainConfig(lr=PEAK, schedule="cosine", max_steps=TOTAL)
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([param], lr=cfg.lr)
    schedule = RunSchedule.build(optimizer, cfg, TOTAL)
    lrs = []
    for step in range(1, TOTAL + 1):
        lrs.append(schedule.lr)
        optimizer.step()
        schedule.advance(schedule.position(step, train_seconds=1e9))  # the clock plays no part
    assert lrs == pytest.approx(lr_curve(cfg), rel=1e-12)


def test_restart_periods_in_steps_do_not_mix_with_a_time_budget():
    with pytest.raises(ConfigError, match="restart_period_steps: a time-budgeted schedule follows time"):
        TrainConfig(schedule="cosine_restarts", restart_period_steps=10, time_budget_seconds=60)
