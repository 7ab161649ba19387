"""Losses: full CE equals a hand-written reference, sampled losses train, penalties match the seed's formulas."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from trainer import losses
from trainer.losses import embedding_penalty, loss_terms, task_loss
from trainer.model import InterestModel
from trainer.objective import ObjectiveConfig

FULL_CE = ObjectiveConfig()


def test_full_ce_equals_reference_over_target_positions(model_kit):
    cfg = model_kit.tiny()
    model = InterestModel(cfg, model_kit.num_items)
    batch = model_kit.make_batch([7, 3, 5], T=7)
    targets = model_kit.next_item_targets(batch["items"])
    hidden = model(batch)
    # reference: logits everywhere over the catalogue (padding excluded), averaged where a target exists
    logits = hidden @ model.item_embeddings()[1:].T  # (B, T, N)
    per_position = F.cross_entropy(logits.transpose(1, 2), (targets - 1).clamp(min=0), reduction="none")
    reference = per_position[targets > 0].mean()
    assert torch.allclose(task_loss(model, hidden, targets, FULL_CE), reference, atol=1e-6)
    assert (targets > 0).sum() == 6 + 2 + 4


@pytest.mark.parametrize("chunk_rows", [4, 7, 1000])
def test_fused_cross_entropy_matches_autograd_of_the_plain_one(monkeypatch, chunk_rows):
    """Loss and both gradients equal F.cross_entropy's, whatever the chunking (rows 10 = 4+4+2, 7+3, 10)."""
    monkeypatch.setitem(losses.CE_CHUNK_ROWS, "cpu", chunk_rows)
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(10, 8, generator=g, requires_grad=True)
    weight = torch.randn(13, 8, generator=g, requires_grad=True)
    classes = torch.randint(0, 12, (10,), generator=g)
    plain = F.cross_entropy(hidden @ weight[1:].T, classes) * 3.0
    plain_grads = torch.autograd.grad(plain, (hidden, weight))
    fused = losses.LinearCrossEntropy.apply(hidden, weight[1:], classes) * 3.0
    fused_grads = torch.autograd.grad(fused, (hidden, weight))
    assert torch.allclose(fused, plain, atol=1e-6)
    for a, b in zip(fused_grads, plain_grads, strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    assert fused_grads[1][0].abs().sum() == 0  # the padding row gets no gradient


def test_fused_cross_entropy_under_bf16_autocast(model_kit):
    """The trainer's GPU path (bf16 autocast) exercised on CPU: fp32 gradients, close to the fp32 loss."""
    cfg = model_kit.tiny()
    model = InterestModel(cfg, model_kit.num_items)
    batch = model_kit.make_batch([6, 6], T=6)
    targets = model_kit.next_item_targets(batch["items"])
    exact = task_loss(model, model(batch), targets, FULL_CE)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = task_loss(model, model(batch), targets, FULL_CE)
    mixed.backward()
    assert torch.allclose(mixed.float(), exact, rtol=2e-2)
    assert model.item_embedding.weight.grad.dtype == torch.float32
    assert torch.isfinite(model.item_embedding.weight.grad).all()


def test_full_ce_without_grad_takes_the_plain_path(model_kit):
    cfg = model_kit.tiny()
    model = InterestModel(cfg, model_kit.num_items)
    batch = model_kit.make_batch([5, 4], T=5)
    targets = model_kit.next_item_targets(batch["items"])
    with torch.no_grad():
        hidden = model(batch)
        assert task_loss(model, hidden, targets, FULL_CE).grad_fn is None
    assert torch.allclose(task_loss(model, hidden, targets, FULL_CE),
                          task_loss(model, hidden.requires_grad_(), targets, FULL_CE), atol=1e-6)


@pytest.mark.parametrize("loss", ["full_ce", "sampled_softmax", "bce"])
def test_losses_are_finite_and_decrease(model_kit, loss):
    model = InterestModel(model_kit.tiny(), 20)
    history = model_kit.train_losses(model, ObjectiveConfig(loss=loss, num_negatives=8), model_kit.learnable_batch(),
                                      steps=30)
    assert all(torch.isfinite(torch.tensor(history)))
    assert sum(history[-5:]) < 0.75 * sum(history[:5]), history


def test_sampled_softmax_with_item_frequencies_and_accidental_hits(model_kit):
    """Drawing from a skewed distribution (many hits on the target) stays finite and trains."""
    cfg = ObjectiveConfig(loss="sampled_softmax", num_negatives=16)
    model = InterestModel(model_kit.tiny(), 3)
    batch = model_kit.make_batch([6, 6], T=6, num_items=3)
    targets = model_kit.next_item_targets(batch["items"])
    frequencies = torch.tensor([0.0, 100.0, 1.0, 1.0])  # index 0 (padding) is never drawn
    loss = task_loss(model, model(batch), targets, cfg, item_frequencies=frequencies)
    assert torch.isfinite(loss) and loss > 0
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_sampled_softmax_logq_correction_estimates_full_softmax(model_kit):
    """With log Q subtracted, K negatives drawn from any proposal Q estimate the full softmax loss up to the
    known offset log(K Q(target)): sum_k exp(s_k - log Q_k) ~ K sum_j exp(s_j). Without the correction this
    1000:1 skewed proposal misses by about 1 nat (measured), three times the tolerance."""
    K = 20000
    cfg_full, cfg_sampled = FULL_CE, ObjectiveConfig(loss="sampled_softmax", num_negatives=K)
    model = InterestModel(model_kit.tiny(), model_kit.num_items)
    with torch.no_grad():
        model.item_embedding.weight.mul_(20)  # spread the logits so the softmax is far from uniform
        batch = model_kit.make_batch([6, 6], T=6)
        targets = model_kit.next_item_targets(batch["items"])
        hidden = model(batch)
        full = task_loss(model, hidden, targets, cfg_full)
        frequencies = torch.logspace(0, 3, model_kit.num_items + 1)
        sampled = task_loss(model, hidden, targets, cfg_sampled, item_frequencies=frequencies)
    q = frequencies[1:] / frequencies[1:].sum()
    offset = torch.log(K * q[targets[targets > 0] - 1]).mean()
    assert abs(sampled - (full + offset)) < 0.3, (sampled, full, offset)


def test_penalties_match_hand_computed_values():
    user_values = torch.tensor([[3.0, 4.0], [6.0, 8.0]])  # norms 5 and 10, mean 7.5
    none = ObjectiveConfig()
    l2 = ObjectiveConfig(penalty="l2", penalty_lambda=0.1)
    hinge = ObjectiveConfig(penalty="hinge", penalty_lambda=0.1, penalty_tau=5.0)
    hinge_below = ObjectiveConfig(penalty="hinge", penalty_lambda=0.1, penalty_tau=8.0)
    assert embedding_penalty(user_values, none).item() == 0.0
    assert embedding_penalty(user_values, l2).item() == pytest.approx(0.75)
    assert embedding_penalty(user_values, hinge).item() == pytest.approx(0.1 * 2.5 ** 2)
    assert embedding_penalty(user_values, hinge_below).item() == 0.0
    # the seed's exact expressions
    norms = torch.norm(user_values, p=2, dim=-1)
    assert embedding_penalty(user_values, l2) == 0.1 * norms.mean()
    assert embedding_penalty(user_values, hinge) == 0.1 * torch.clamp(norms.mean() - 5.0, min=0.0) ** 2


def test_loss_terms_report_task_and_penalty_apart(model_kit):
    cfg = ObjectiveConfig(penalty="l2", penalty_lambda=0.5)
    model = InterestModel(model_kit.tiny(), model_kit.num_items)
    batch = model_kit.make_batch([5, 4], T=5)
    targets = model_kit.next_item_targets(batch["items"])
    hidden = model(batch)
    terms = loss_terms(model, hidden, targets, cfg)
    assert torch.allclose(terms.task, task_loss(model, hidden, targets, cfg))
    # one user embedding per sequence: the one InterestModel.user_embedding returns (evaluation's user_norm_*)
    assert torch.allclose(terms.penalty, embedding_penalty(model.user_embedding(batch), cfg))
    assert terms.penalty == 0.5 * model.user_embedding(batch).norm(dim=-1).mean()
    assert terms.penalty > 0
    assert torch.allclose(terms.total, terms.task + terms.penalty)


def test_l2_penalty_shrinks_user_norms(model_kit):
    """Trained with a strong l2 penalty, user embeddings end up smaller than without it."""
    batch = model_kit.learnable_batch()
    norms = {}
    for penalty, strength in (("none", 0.0), ("l2", 1.0)):
        torch.manual_seed(0)
        model = InterestModel(model_kit.tiny(), 20)
        model_kit.train_losses(model, ObjectiveConfig(penalty=penalty, penalty_lambda=strength), batch, steps=30)
        with torch.no_grad():
            norms[penalty] = model.eval().user_embedding(batch).norm(dim=-1).mean().item()
    assert norms["l2"] < 0.8 * norms["none"], norms


@pytest.mark.parametrize("penalty", ["l2", "hinge"])
def test_penalty_gradient_reaches_the_user_tower(model_kit, penalty):
    """The penalty alone moves the head, the blocks and the input embeddings (not only a constant)."""
    cfg = ObjectiveConfig(penalty=penalty, penalty_lambda=1.0, penalty_tau=1.0)
    model = InterestModel(model_kit.tiny(), model_kit.num_items)
    batch = model_kit.make_batch([5, 4, 2], T=5)
    loss_terms(model, model(batch), model_kit.next_item_targets(batch["items"]), cfg).penalty.backward()
    for name in ("user_head.log_scale.weight", "user_head.log_scale.bias", "user_head.norm.weight",
                 "blocks.0.mlp.fc.weight", "item_embedding.weight"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_hinge_is_zero_below_tau_and_positive_above(model_kit):
    """Around the batch's mean user norm: exactly 0 (and no gradient) below it, lambda * excess^2 above."""
    cfg = model_kit.tiny()
    model = InterestModel(cfg, model_kit.num_items)
    batch = model_kit.make_batch([5, 4, 2], T=5)
    with torch.no_grad():
        mean_norm = float(model.user_embedding(batch).norm(dim=-1).mean())
    for tau, expected in ((mean_norm + 1.0, 0.0), (mean_norm - 1.0, 0.1 * 1.0 ** 2)):
        hinge = ObjectiveConfig(penalty="hinge", penalty_lambda=0.1, penalty_tau=tau)
        model.zero_grad()
        value = embedding_penalty(model.user_embedding(batch), hinge)
        value.backward()
        assert value.item() == pytest.approx(expected, rel=1e-4)
        moved = model.user_head.log_scale.weight.grad.abs().sum()
        assert (moved > 0) == (expected > 0)
