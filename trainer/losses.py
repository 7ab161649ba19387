"""Next-item losses and the seed's user-embedding norm penalty, kept apart so the trainer logs both.

Logits are computed only at positions that have a target: the hidden rows are gathered first, then projected
onto the catalogue, which skips the padded half of a left-padded batch (the output projection is the largest
matmul of the model).

The penalty reads the user embeddings, one per sequence of the batch (the model's output at the last real event:
what ``InterestModel.user_embedding`` returns and evaluation's user_norm_* describe), and averages their norms over
the GLOBAL batch: under DDP ``batch_mean`` is ``Distributed.global_mean``, whose value is the mean over every rank
and whose gradient reaches this rank's user tower.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from trainer.model import InterestModel
from trainer.objective import ObjectiveConfig


class LossTerms(NamedTuple):
    task: Tensor  # next-item loss, mean over positions with a target
    penalty: Tensor  # embedding_penalty of the batch's user embeddings (0 for penalty 'none')

    @property
    def total(self) -> Tensor:
        return self.task + self.penalty


# Rows per chunk of the fused cross-entropy. CPU: 256 rows (x 3,416 items) measured fastest of 256..8192 on a
# 2-core box (cache-sized chunks); accelerators: large chunks, few kernel launches.
CE_CHUNK_ROWS = {"cpu": 256}
CE_CHUNK_ROWS_ACCELERATOR = 16384


class LinearCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of ``softmax(hidden @ weight.T)``, one chunk of rows at a time, gradients made in forward.

    The plain path writes (M, N) logits, their log-softmax, a zero-filled (M, N) gradient and its log-softmax
    backward: several passes over the largest tensors of a step. Here each cache-sized chunk's logits turn into
    softmax numerators in place and are multiplied back into both gradients at once, so no (M, N) tensor is
    kept (the idea of Liger's fused linear cross-entropy). Matmul FLOPs are unchanged; the (M, N) side costs
    about 2x less time on CPU (measured).
    """

    @staticmethod
    def forward(ctx, hidden: Tensor, weight: Tensor, classes: Tensor) -> Tensor:
        rows = hidden.shape[0]
        grad_hidden = torch.empty_like(hidden)
        grad_weight = torch.zeros_like(weight, dtype=torch.float32)
        total = hidden.new_zeros((), dtype=torch.float32)
        chunk = CE_CHUNK_ROWS.get(hidden.device.type, CE_CHUNK_ROWS_ACCELERATOR)
        for start in range(0, rows, chunk):
            h, y = hidden[start:start + chunk], classes[start:start + chunk]
            logits = (h @ weight.T).float()  # (m, N)
            target_logits = logits.gather(1, y[:, None])  # (m, 1)
            row_max = logits.amax(dim=-1, keepdim=True)
            exps = logits.sub_(row_max).exp_()  # in place: softmax numerators
            row_sum = exps.sum(dim=-1, keepdim=True)
            total += (row_sum.log() + row_max - target_logits).sum()
            # d loss / d logits = exps / row_sum - onehot(y); the division and the one-hot are applied on the
            # (m, D) side of each product, sparing two passes over the (m, N) chunk.
            grad_hidden[start:start + chunk] = (exps @ weight) / row_sum - weight[y]
            grad_weight += exps.T @ (h / row_sum)
            grad_weight.index_add_(0, y, h.float(), alpha=-1.0)
        ctx.save_for_backward(grad_hidden, grad_weight)
        ctx.rows, ctx.weight_dtype = rows, weight.dtype
        return total / rows

    @staticmethod
    def backward(ctx, grad_output: Tensor) -> tuple[Tensor, Tensor, None]:
        grad_hidden, grad_weight = ctx.saved_tensors
        scale = grad_output / ctx.rows
        return grad_hidden * scale.to(grad_hidden.dtype), (grad_weight * scale).to(ctx.weight_dtype), None


def full_softmax_ce(model: InterestModel, hidden: Tensor, targets: Tensor, cfg: ObjectiveConfig,
                    item_frequencies: Tensor | None) -> Tensor:
    """Softmax cross-entropy over the whole catalogue (items 1..N; padding is not a class)."""
    weight = model.item_embeddings()[1:]  # (N, D)
    if torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad):
        return LinearCrossEntropy.apply(hidden, weight, targets - 1)
    return F.cross_entropy(hidden @ weight.T, targets - 1)


def sampled_softmax(model: InterestModel, hidden: Tensor, targets: Tensor, cfg: ObjectiveConfig,
                    item_frequencies: Tensor | None) -> Tensor:
    """Softmax over the target and ``num_negatives`` negatives shared by the batch, with logQ correction.

    Negatives are drawn from ``item_frequencies`` (N+1, index 0 ignored) or uniformly; subtracting log Q from
    every logit makes the sampled loss an unbiased-in-the-limit estimate of the full softmax. Negatives that
    happen to be a row's own target are masked out.
    """
    items = model.item_embeddings()
    if item_frequencies is None:
        proposal = torch.ones(model.num_items, device=hidden.device)
    else:
        proposal = item_frequencies[1:].to(device=hidden.device, dtype=torch.float32)
    log_q = torch.log(proposal / proposal.sum())  # (N,)
    negatives = torch.multinomial(proposal, cfg.num_negatives, replacement=True) + 1  # (K,) item indices
    positive_logits = (hidden * items[targets]).sum(-1) - log_q[targets - 1]  # (M,)
    negative_logits = hidden @ items[negatives].T - log_q[negatives - 1]  # (M, K)
    negative_logits = negative_logits.masked_fill(negatives == targets[:, None], float("-inf"))
    logits = torch.cat([positive_logits[:, None], negative_logits], dim=1)  # (M, 1+K), the target is column 0
    return F.cross_entropy(logits, torch.zeros_like(targets))


def sasrec_bce(model: InterestModel, hidden: Tensor, targets: Tensor, cfg: ObjectiveConfig,
               item_frequencies: Tensor | None) -> Tensor:
    """SASRec's binary cross-entropy: the target against one uniformly drawn other item per position."""
    items = model.item_embeddings()
    offsets = torch.randint(1, model.num_items, targets.shape, device=targets.device)
    negatives = (targets - 1 + offsets) % model.num_items + 1  # never the target itself
    positive_logits = (hidden * items[targets]).sum(-1)
    negative_logits = (hidden * items[negatives]).sum(-1)
    return (F.binary_cross_entropy_with_logits(positive_logits, torch.ones_like(positive_logits))
            + F.binary_cross_entropy_with_logits(negative_logits, torch.zeros_like(negative_logits)))


LossFn = Callable[[InterestModel, Tensor, Tensor, ObjectiveConfig, Tensor | None], Tensor]
LOSSES: dict[str, LossFn] = {
    "full_ce": full_softmax_ce,
    "sampled_softmax": sampled_softmax,
    "bce": sasrec_bce,
}


def _at_targets(hidden: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """(B, T, D), (B, T) -> the (M, D) hidden rows and (M,) targets of the M positions that have a target."""
    has_target = targets > 0
    return hidden[has_target], targets[has_target]


def task_loss(model: InterestModel, hidden: Tensor, targets: Tensor, cfg: ObjectiveConfig,
              item_frequencies: Tensor | None = None) -> Tensor:
    """Next-item loss ``cfg.loss`` averaged over positions with a target (``targets`` (B, T), 0 = none).

    ``item_frequencies`` (N+1,) is the sampling distribution of sampled_softmax (uniform when None).
    """
    rows, wanted = _at_targets(hidden, targets)
    return LOSSES[cfg.loss](model, rows, wanted, cfg, item_frequencies)


BatchMean = Callable[[Tensor], Tensor]  # (n,) values of this rank's users -> their mean over the global batch


def local_mean(values: Tensor) -> Tensor:
    """The batch mean of one process (the whole batch is here)."""
    return values.mean()


def _l2(mean_norm: Tensor, cfg: ObjectiveConfig) -> Tensor:
    return cfg.penalty_lambda * mean_norm


def _hinge(mean_norm: Tensor, cfg: ObjectiveConfig) -> Tensor:
    return cfg.penalty_lambda * torch.clamp(mean_norm - cfg.penalty_tau, min=0.0) ** 2


PENALTIES: dict[str, Callable[[Tensor, ObjectiveConfig], Tensor]] = {"l2": _l2, "hinge": _hinge}


def embedding_penalty(user_values: Tensor, cfg: ObjectiveConfig, batch_mean: BatchMean = local_mean) -> Tensor:
    """The seed's norm penalty on user embeddings ``user_values`` (B, D), one per user, with
    ``norm = torch.norm(user_values, p=2, dim=-1)`` averaged over the global batch by ``batch_mean``:
    l2 ``lambda * norm.mean()``, hinge ``lambda * clamp(norm.mean() - tau, min=0) ** 2``; 0 for 'none'."""
    if cfg.penalty == "none":
        return user_values.new_zeros(())
    return PENALTIES[cfg.penalty](batch_mean(torch.norm(user_values.float(), p=2, dim=-1)), cfg)


def user_vectors(hidden: Tensor) -> Tensor:
    """(B, T, D) left-padded model outputs -> (B, D) user embeddings: the last column is each row's last real
    event (``InterestModel.user_embedding`` of the same batch)."""
    return hidden[:, -1]


def loss_terms(model: InterestModel, hidden: Tensor, targets: Tensor, cfg: ObjectiveConfig,
               item_frequencies: Tensor | None = None, batch_mean: BatchMean = local_mean) -> LossTerms:
    """Task loss from one gather of the positions with a target, and the penalty of the batch's user embeddings
    (``batch_mean``: their mean over the global batch); optimize ``.total``."""
    rows, wanted = _at_targets(hidden, targets)
    return LossTerms(task=LOSSES[cfg.loss](model, rows, wanted, cfg, item_frequencies),
                     penalty=embedding_penalty(user_vectors(hidden), cfg, batch_mean))
