"""trainer.metrics against a brute-force reference and hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from trainer.metrics import TOP_ITEMS, full_ranking_metrics, history_csr, norm_stats, summarize


def reference(user_emb, item_emb, targets, histories):
    """One user at a time, in plain Python: candidates = items 1..N minus history, plus the target."""
    scores = (user_emb.double() @ item_emb.double().t()).numpy()
    scores = np.where(np.isnan(scores), -np.inf, scores)
    out = []
    for u, target in enumerate(targets.tolist()):
        candidates = (set(range(1, item_emb.shape[0])) - set(histories[u])) | {target}
        rank = sum(1 for c in candidates if scores[u, c] >= scores[u, target])
        best = sorted((scores[u, c] for c in candidates if scores[u, c] > -np.inf), reverse=True)[:10]
        out.append((rank, candidates, best))
    return scores, out


def random_case(seed, users=37, items=23, dim=3, tied=False):
    gen = torch.Generator().manual_seed(seed)
    if tied:  # small integer embeddings: exact, frequent score ties
        user_emb = torch.randint(-1, 2, (users, dim), generator=gen).float()
        item_emb = torch.randint(-1, 2, (items + 1, dim), generator=gen).float()
    else:
        user_emb, item_emb = torch.randn(users, dim, generator=gen), torch.randn(items + 1, dim, generator=gen)
    targets = torch.randint(1, items + 1, (users,), generator=gen)
    histories = []
    for u in range(users):
        seen = torch.randint(0, items + 1, (int(torch.randint(0, items, (1,), generator=gen)),), generator=gen)
        if u % 5 == 0:  # re-consumption: the target is also in the history
            seen = torch.cat([seen, targets[u:u + 1]])
        histories.append(seen.tolist())
    return user_emb, item_emb, targets, histories


@pytest.mark.parametrize("case", ["random", "tied", "nonfinite"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_brute_force(seed, case):
    user_emb, item_emb, targets, histories = random_case(seed, tied=case == "tied")
    if case == "nonfinite":  # NaN users, an infinite item: NaN scores count as -inf
        user_emb[:4] = float("nan")
        item_emb[5] = float("inf")
    per_user = full_ranking_metrics(user_emb, item_emb, targets, history_csr(histories), batch_size=8)
    scores, expected = reference(user_emb, item_emb, targets, histories)
    ranks = [r for r, _, _ in expected]
    assert per_user["rank"].tolist() == ranks
    for k in (1, 5, 10, 20, 50):
        assert per_user[f"recall@{k}"].tolist() == [float(r <= k) for r in ranks]
    assert per_user["ndcg@10"].tolist() == pytest.approx([1 / math.log2(r + 1) if r <= 10 else 0.0 for r in ranks])
    assert per_user["rr"].tolist() == pytest.approx([1 / r for r in ranks])
    for u, (_, candidates, best) in enumerate(expected):
        top = [i for i in per_user[TOP_ITEMS][u].tolist() if i > 0]
        assert set(top) <= candidates and len(top) == len(set(top)) == len(best)
        assert sorted((scores[u, i] for i in top), reverse=True) == best
    if case == "tied":
        assert any(r > 1 for r in ranks)


def test_batch_size_does_not_change_results():
    user_emb, item_emb, targets, histories = random_case(5, users=50)
    a = full_ranking_metrics(user_emb, item_emb, targets, history_csr(histories), batch_size=1)
    b = full_ranking_metrics(user_emb, item_emb, targets, history_csr(histories), batch_size=1024)
    assert torch.equal(a["rank"], b["rank"]) and torch.equal(a[TOP_ITEMS], b[TOP_ITEMS])


def test_hand_computed_case():
    # scores of items 0..4 for the one user: [0, 3, 2, 1, 2]; item 1 (score 3) is in the history.
    item_emb = torch.tensor([[0.0], [3.0], [2.0], [1.0], [2.0]])
    user_emb = torch.tensor([[1.0], [1.0], [1.0]])
    targets = torch.tensor([2, 2, 1])
    # user 0: candidates 2,3,4 -> items 2 and 4 tie at 2.0, the tie counts against the target: rank 2
    # user 1: target 2 is also in the history and stays a candidate: same rank 2
    # user 2: no history, target 1 has the best score: rank 1
    per_user = full_ranking_metrics(user_emb, item_emb, targets, history_csr([[1], [1, 2], []]))
    assert per_user["rank"].tolist() == [2, 2, 1]
    assert per_user["recall@1"].tolist() == [0.0, 0.0, 1.0]
    assert per_user["recall@5"].tolist() == [1.0, 1.0, 1.0]
    assert per_user["ndcg@10"].tolist() == pytest.approx([1 / math.log2(3), 1 / math.log2(3), 1.0])
    assert per_user["rr"].tolist() == [0.5, 0.5, 1.0]
    assert per_user[TOP_ITEMS][2, :4].tolist() == [1, 2, 4, 3] or per_user[TOP_ITEMS][2, :4].tolist() == [1, 4, 2, 3]
    assert per_user[TOP_ITEMS][0, 3:].tolist() == [0] * 7  # only 3 candidates: the rest is padding
    summary = summarize(per_user, num_items=4)
    assert summary["recall@1"] == pytest.approx(1 / 3)
    assert summary["mrr"] == pytest.approx(2 / 3)
    assert summary["coverage@10"] == 1.0  # user 2's top list holds all four items
    assert summary["users"] == 3


def test_constant_and_nan_scores_rank_last():
    item_emb = torch.ones(6, 2)
    user_emb = torch.tensor([[1.0, 1.0], [float("nan"), 0.0]])
    per_user = full_ranking_metrics(user_emb, item_emb, torch.tensor([3, 3]), history_csr([[1], [1, 3, 0, 1]]))
    assert per_user["rank"].tolist() == [4, 4]  # every candidate ties: the target is last, never first


def test_bad_inputs_name_the_field():
    item_emb, user_emb = torch.randn(5, 2), torch.randn(2, 2)
    with pytest.raises(ValueError, match="targets"):
        full_ranking_metrics(user_emb, item_emb, torch.tensor([0, 1]), history_csr([[], []]))
    with pytest.raises(ValueError, match="history"):
        full_ranking_metrics(user_emb, item_emb, torch.tensor([1, 1]), history_csr([[9], []]))
    with pytest.raises(ValueError, match="history"):
        full_ranking_metrics(user_emb, item_emb, torch.tensor([1, 1]), history_csr([[]]))
    with pytest.raises(ValueError, match="share D"):
        full_ranking_metrics(torch.randn(2, 3), item_emb, torch.tensor([1, 1]), history_csr([[], []]))


def test_norm_stats_hand_computed():
    stats = norm_stats(torch.tensor([[3.0, 0.0], [0.0, 4.0]]), "user_norm")
    assert stats == pytest.approx({"user_norm_mean": 3.5, "user_norm_std": 0.5, "user_norm_p50": 3.5,
                                   "user_norm_p95": 3.95, "user_norm_max": 4.0})
    assert all(math.isnan(v) for v in norm_stats(torch.tensor([[float("nan"), 1.0]]), "item_norm").values())


def test_empty_users_summarize_to_nan():
    per_user = full_ranking_metrics(torch.zeros(0, 2), torch.randn(4, 2), torch.zeros(0, dtype=torch.long),
                                    history_csr([]))
    summary = summarize(per_user, num_items=3)
    assert summary["users"] == 0 and math.isnan(summary["recall@10"]) and math.isnan(summary["mrr"])
