"""The full-catalogue ranking as it was before the catalogue was streamed in blocks (trainer/metrics.py at commit
bc11075): one (users x N+1) score matrix per user batch. The test oracle that the blocked ranking must equal."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from trainer.metrics import DEFAULT_KS, TOP_ITEMS, TOP_N, _check_inputs, _max_norm


@torch.no_grad()
def full_matrix_ranking(user_emb: Tensor, item_emb: Tensor, targets: Tensor, history: tuple[Tensor, Tensor],
                         ks: Sequence[int] = DEFAULT_KS, batch_size: int = 1024,
                         excluded: Tensor | None = None, keep_target: bool = True) -> dict[str, Tensor]:
    """Per-user full-catalogue metrics, on the CPU, in user order.

    user_emb (U,D), item_emb (N+1,D) with row 0 = padding, targets (U,) in 1..N, history = ``(indptr, indices)``;
    ``excluded`` (N+1,) bool marks items the model cannot score (never seen in training): scored -inf like
    padding, so a target among them ranks last.
    Returns ``rank`` (U,) long, ``recall@k`` for each k (U,) float (= HR@k: one target per user), ``ndcg@10``,
    ``rr`` (1/rank) (U,) float, and ``top_items`` (U,10) long: the 10 best candidates (0 where a user has fewer
    candidates scored above -inf).
    """
    indptr, indices = (t.to(torch.long) for t in history)
    _check_inputs(user_emb, item_emb, targets, indptr, indices, ks)
    device = user_emb.device
    num_items = item_emb.shape[0] - 1
    items_t = item_emb.detach().to(device=device, dtype=torch.float32).t()  # (D, N+1)
    indptr, indices, targets = indptr.to(device), indices.to(device), targets.to(device=device, dtype=torch.long)
    # |score| <= |u| |i| (Cauchy-Schwarz): below this bound no score can be NaN or infinite, and the NaN pass over
    # every batch is skipped.
    bound = _max_norm(user_emb) * _max_norm(item_emb)
    scores_finite = bound < torch.finfo(torch.float32).max / 2
    ranks, tops = [], []
    for start in range(0, user_emb.shape[0], batch_size):
        stop = min(start + batch_size, user_emb.shape[0])
        rows = torch.arange(stop - start, device=device)
        scores = user_emb[start:stop].detach().float() @ items_t  # (B, N+1)
        if not scores_finite:
            scores.masked_fill_(scores.isnan(), float("-inf"))
        if excluded is not None:
            scores[:, excluded.to(device)] = float("-inf")
        batch_targets = targets[start:stop]
        target_scores = scores[rows, batch_targets]  # (B,)
        # Non-candidates get -inf: padding, then the history, then the target is put back.
        scores[:, 0] = float("-inf")
        seen_rows = torch.repeat_interleave(rows, indptr[start + 1:stop + 1] - indptr[start:stop])
        scores[seen_rows, indices[indptr[start]:indptr[stop]]] = float("-inf")
        if keep_target:
            scores[rows, batch_targets] = target_scores
        else:  # a target among the masked items is no candidate: a miss at every cut-off
            masked_target = torch.isneginf(scores[rows, batch_targets]) & ~torch.isneginf(target_scores)
        rank = (scores >= target_scores.unsqueeze(1)).sum(1)
        # A target scored -inf would also tie with the masked items: every candidate outranks it, it comes last.
        for row in (target_scores == float("-inf")).nonzero().flatten().tolist():
            seen = set(indices[indptr[start + row]:indptr[start + row + 1]].tolist()) - {0, int(batch_targets[row])}
            rank[row] = num_items - len(seen)
        if not keep_target:
            rank[masked_target] = num_items + 1
        ranks.append(rank.cpu())
        top_scores, top = scores.topk(min(TOP_N, scores.shape[1]), dim=1)
        top = top.masked_fill(top_scores == float("-inf"), 0)
        tops.append(torch.nn.functional.pad(top, (0, TOP_N - top.shape[1])).cpu())  # catalogues under 10 items
    rank = torch.cat(ranks) if ranks else torch.zeros(0, dtype=torch.long)
    top_items = torch.cat(tops) if tops else torch.zeros(0, TOP_N, dtype=torch.long)
    rank_f = rank.double()
    out: dict[str, Tensor] = {"rank": rank}
    for k in sorted({int(k) for k in ks}):
        out[f"recall@{k}"] = (rank <= k).double()
    out[f"ndcg@{TOP_N}"] = torch.where(rank <= TOP_N, 1.0 / torch.log2(rank_f + 1.0), torch.zeros_like(rank_f))
    out["rr"] = 1.0 / rank_f
    out[TOP_ITEMS] = top_items
    return out
