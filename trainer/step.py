"""The ONE training step: forward, loss, backward, clipping and the AdamW update on one rank's share of a global
batch. The trainer's loop and every speed benchmark call it, so what is benchmarked is what trains.

The phases are labelled for ``torch.profiler`` (``benchmarks/profile_step.py``); the labels cost nothing when no
profiler runs.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.autograd.profiler import record_function

from trainer.data import TrainBatch
from trainer.distributed import Distributed
from trainer.losses import loss_terms
from trainer.model import InterestModel
from trainer.objective import ObjectiveConfig


class StepResult(NamedTuple):
    loss: float  # global mean task loss of the batch
    penalty: float  # global mean norm penalty
    grad_norm: float  # global gradient norm before clipping
    non_finite: str | None  # why the update was NOT applied ("loss is nan"), None when it was


@dataclass
class StepContext:
    """What every step of one run shares."""

    model: InterestModel  # the module whose parameters the optimizer holds
    forward: nn.Module  # what runs the forward pass: the model, compiled and/or wrapped in DDP
    optimizer: torch.optim.Optimizer
    objective: ObjectiveConfig  # the loss and the penalty
    grad_clip: float  # 0: no clipping (the norm is still measured)
    ddp: Distributed
    bf16: bool  # bf16 autocast
    item_frequencies: Tensor | None = None  # proposal of sampled softmax


def autocast(device: torch.device, bf16: bool) -> contextlib.AbstractContextManager:
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def train_step(ctx: StepContext, batch: TrainBatch) -> StepResult:
    """Forward, backward and update on this rank's share of one global batch (a collective under DDP).

    Each rank weights its task loss by its share of the batch's target tokens, so the DDP-averaged gradient is the
    gradient of the global mean loss for any world size; the penalty is already global (``Distributed.global_mean``
    of the user norms), each rank's copy carrying the gradient of its own users. A NaN/Inf loss on any rank, or a
    non-finite gradient norm, skips the update on every rank alike and says why in ``non_finite``.
    """
    device, ddp = ctx.ddp.device, ctx.ddp
    with record_function("data"):
        inputs = {k: v.to(device, non_blocking=True) for k, v in batch.inputs.items()}
        targets = batch.targets.to(device, non_blocking=True)
    with autocast(device, ctx.bf16):
        with record_function("forward"):
            hidden = ctx.forward(inputs)
        with record_function("loss"):
            terms = loss_terms(ctx.model, hidden, targets, ctx.objective, ctx.item_frequencies, ddp.global_mean)
    total = terms.total.float()
    # One collective per step: the token-weighted task loss sum for logging and whether any rank saw a NaN/Inf,
    # so every rank takes the same branch below (a rank skipping backward alone would hang DDP). The penalty is
    # the same global value on every rank.
    local = torch.stack([terms.task.detach().float() * batch.tokens, (~torch.isfinite(total.detach())).float()])
    sums = ddp.all_sum(local.cpu())
    loss, penalty = float(sums[0] / batch.global_tokens), float(terms.penalty.detach())
    if sums[1] > 0:
        return StepResult(loss, penalty, math.nan, f"loss is {loss}")
    with record_function("backward"):
        # This rank's share of the global mean task loss, and its users' part of the global penalty; DDP averages
        # gradients over ranks, hence the world size.
        world = ddp.world_size
        (terms.task.float() * (batch.tokens * world / batch.global_tokens) + terms.penalty.float() * world).backward()
    with record_function("optimizer"):
        grad_norm = float(torch.nn.utils.clip_grad_norm_(ctx.model.parameters(), ctx.grad_clip or math.inf))
        if not math.isfinite(grad_norm):  # the same on every rank: gradients are already averaged
            ctx.optimizer.zero_grad(set_to_none=True)
            return StepResult(loss, penalty, grad_norm, f"gradient norm is {grad_norm}")
        ctx.optimizer.step()
        ctx.optimizer.zero_grad(set_to_none=True)
    return StepResult(loss, penalty, grad_norm, None)
