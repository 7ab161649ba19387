"""Full-catalogue ranking metrics: the ONE evaluation function used by training validation, ``interest evaluate``
and the benchmarks. Pure tensor code: it gets embeddings, never a model or a data set.

Like HSTU and gSASRec, every user is scored against *every* real item (``user_emb @ item_emb.T``), with no sampled
negatives. The scores are streamed: batches of users against blocks of ``item_block`` items, counting the items
that outrank the target and keeping a running top 10, so memory is set by the two sizes, not by the catalogue. Candidates are items 1..N minus the masked history (the whole history, or only
the model's input window: ``core.protocols``); the padding row 0 is never a candidate. The target stays a
candidate even when it also occurs in the masked history (re-consumption) unless ``keep_target`` is False, as in
the generative-recommenders evaluation, where such a target is masked and counts as a miss (rank N + 1).

Ranks and ties: ``rank`` = the number of candidates whose score is >= the target's score, the target included.
Every tie counts against the target, so a model that gives all items the same score ranks its targets last, not
first. NaN scores count as -inf for the same reason (a model that emits NaN must not look perfect).

History is CSR: ``(indptr, indices)`` LongTensors; user u's seen items are ``indices[indptr[u]:indptr[u+1]]``
(``history_csr`` builds it from per-user lists; duplicates and 0 are allowed).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

from trainer.blocks import DEFAULT_ITEM_BLOCK, MIN_ITEM_BLOCK, even_blocks

DEFAULT_KS = (1, 5, 10, 20, 50)
TOP_N = 10  # length of the per-user top list kept for coverage@10 (and NDCG@10)
TOP_ITEMS = "top_items"  # the one per-user value that is (U, TOP_N) instead of (U,)
TARGET_CHUNK = 64  # users whose target scores one small matmul computes (its diagonal)


def history_csr(histories: Iterable[Sequence[int]]) -> tuple[Tensor, Tensor]:
    """Per-user lists of seen item indices -> ``(indptr, indices)`` LongTensors."""
    lengths, flat = [0], []
    for items in histories:
        lengths.append(len(items))
        flat.extend(int(i) for i in items)
    indptr = torch.cumsum(torch.tensor(lengths, dtype=torch.long), 0)
    return indptr, torch.tensor(flat, dtype=torch.long)


def _check_inputs(user_emb: Tensor, item_emb: Tensor, targets: Tensor, indptr: Tensor, indices: Tensor,
                  ks: Sequence[int]) -> None:
    if user_emb.dim() != 2 or item_emb.dim() != 2 or user_emb.shape[1] != item_emb.shape[1]:
        raise ValueError(f"user_emb (U,D) and item_emb (N+1,D) must share D; got {tuple(user_emb.shape)} "
                         f"and {tuple(item_emb.shape)}")
    num_users, num_items = user_emb.shape[0], item_emb.shape[0] - 1
    if num_items < 1:
        raise ValueError("item_emb: needs the padding row 0 and at least one real item")
    if targets.shape != (num_users,):
        raise ValueError(f"targets: expected shape ({num_users},), got {tuple(targets.shape)}")
    if num_users and not bool(((targets >= 1) & (targets <= num_items)).all()):
        raise ValueError(f"targets: item indices must lie in 1..{num_items} (0 is padding)")
    if indptr.shape != (num_users + 1,) or int(indptr[0]) != 0 or int(indptr[-1]) != indices.numel():
        raise ValueError(f"history: indptr must have {num_users + 1} entries from 0 to len(indices)="
                         f"{indices.numel()}, got shape {tuple(indptr.shape)}")
    if bool((indptr[1:] < indptr[:-1]).any()):
        raise ValueError("history: indptr must be non-decreasing")
    if indices.numel() and not bool(((indices >= 0) & (indices <= num_items)).all()):
        raise ValueError(f"history: item indices must lie in 0..{num_items}")
    if not ks or any(int(k) < 1 for k in ks):
        raise ValueError(f"ks: expected positive cut-offs such as {DEFAULT_KS}, got {tuple(ks)}")


def row_norms(emb: Tensor, rows: int = DEFAULT_ITEM_BLOCK) -> Tensor:
    """(n,) float64 L2 norm of each row of ``emb`` (n, D), ``rows`` rows at a time: a float64 copy of a
    million-item table at once would outweigh the score blocks."""
    emb = emb.detach()
    parts = [emb[lo:hi].double().norm(dim=1) for lo, hi in even_blocks(emb.shape[0], rows)]
    return torch.cat(parts) if parts else emb.new_zeros(0, dtype=torch.float64)


def _max_norm(emb: Tensor) -> float:
    """Largest row L2 norm (inf when any value is NaN or infinite; 0 for no rows)."""
    if emb.numel() == 0:
        return 0.0
    norm = float(row_norms(emb).max())
    return norm if norm == norm else float("inf")


def _target_scores(user_emb: Tensor, items_t: Tensor, targets: Tensor) -> Tensor:
    """(B,) each user's score of its own target, as an entry of a ``users @ items`` matmul of ``TARGET_CHUNK``
    users by ``TARGET_CHUNK`` items (their targets; the last chunk overlaps the one before, and padding fills a
    short one): on the CPU that entry is bitwise the one a wide score block holds (matmuls under about a dozen
    items or rows take other kernels and round differently), so ties with the target are judged as the
    one-matrix ranking judged them."""
    num_rows = user_emb.shape[0]
    out = user_emb.new_empty(num_rows)
    for start in range(0, num_rows, TARGET_CHUNK):
        start = max(0, min(start, num_rows - TARGET_CHUNK))
        chunk = slice(start, start + TARGET_CHUNK)
        columns = torch.nn.functional.pad(targets[chunk], (0, TARGET_CHUNK - targets[chunk].numel()))
        out[chunk] = (user_emb[chunk] @ items_t[:, columns]).diagonal()[:num_rows - start]
    return out


def _rank_batch(user_emb: Tensor, items_t: Tensor, targets: Tensor, seen_rows: Tensor, seen_items: Tensor,
                excluded: Tensor | None, keep_target: bool, scores_finite: bool,
                item_block: int) -> tuple[Tensor, Tensor, Tensor]:
    """One batch of users against the catalogue, ``item_block`` items at a time: ``(rank, top_scores, top)``.

    ``seen_rows``/``seen_items``: the batch's masked history as (row, item) pairs. Every block gets the masks in
    the order a single score matrix would (NaN and excluded -> -inf, then padding and history -> -inf, then the
    target put back if it stays a candidate); the candidates scoring >= the target are counted and the block's
    best merged into a running top ``TOP_N``, so memory is ``B x item_block`` scores at any catalogue size.
    """
    num_rows, width = user_emb.shape[0], items_t.shape[1]
    num_items = width - 1
    rows = torch.arange(num_rows, device=user_emb.device)
    target_scores = _target_scores(user_emb, items_t, targets)  # (B,)
    if not scores_finite:
        target_scores.masked_fill_(target_scores.isnan(), float("-inf"))
    if excluded is not None:
        target_scores.masked_fill_(excluded[targets], float("-inf"))
    in_history = torch.zeros(num_rows, dtype=torch.bool, device=user_emb.device)
    in_history[seen_rows[seen_items == targets[seen_rows]]] = True
    candidate = in_history.logical_not() | keep_target  # the target's own cell holds its score, not -inf
    rank = torch.zeros(num_rows, dtype=torch.long, device=user_emb.device)
    top_scores = user_emb.new_empty(num_rows, 0)
    top = torch.zeros(num_rows, 0, dtype=torch.long, device=user_emb.device)
    for lo, hi in even_blocks(width, item_block):
        scores = user_emb @ items_t[:, lo:hi]  # (B, block)
        if not scores_finite:
            scores.masked_fill_(scores.isnan(), float("-inf"))
        if excluded is not None:
            scores[:, excluded[lo:hi]] = float("-inf")
        if lo == 0:
            scores[:, 0] = float("-inf")  # padding
        here = (seen_items >= lo) & (seen_items < hi)
        scores[seen_rows[here], seen_items[here] - lo] = float("-inf")
        back = candidate & (targets >= lo) & (targets < hi)
        scores[rows[back], targets[back] - lo] = target_scores[back]
        rank += (scores >= target_scores.unsqueeze(1)).sum(1)
        block_scores, block_top = scores.topk(min(TOP_N, hi - lo), dim=1)
        top_scores, best = torch.cat([top_scores, block_scores], 1).topk(min(TOP_N, hi), dim=1)
        top = torch.cat([top, block_top + lo], 1).gather(1, best)
    # A target scored -inf would also tie with the masked items: every candidate outranks it, it comes last.
    for row in (target_scores == float("-inf")).nonzero().flatten().tolist():
        seen = set(seen_items[seen_rows == row].tolist()) - {0, int(targets[row])}
        rank[row] = num_items - len(seen)
    if not keep_target:  # a target among the masked items is no candidate: a miss at every cut-off
        rank[in_history & ~torch.isneginf(target_scores)] = num_items + 1
    return rank, top_scores, top


@torch.no_grad()
def full_ranking_metrics(user_emb: Tensor, item_emb: Tensor, targets: Tensor, history: tuple[Tensor, Tensor],
                         ks: Sequence[int] = DEFAULT_KS, batch_size: int = 1024,
                         excluded: Tensor | None = None, keep_target: bool = True,
                         item_block: int = DEFAULT_ITEM_BLOCK) -> dict[str, Tensor]:
    """Per-user full-catalogue metrics, on the CPU, in user order.

    user_emb (U,D), item_emb (N+1,D) with row 0 = padding, targets (U,) in 1..N, history = ``(indptr, indices)``;
    ``excluded`` (N+1,) bool marks items the model cannot score (never seen in training): scored -inf like
    padding, so a target among them ranks last. Up to ``batch_size`` users (batches of near-equal size) are scored
    against up to ``item_block`` items at a time: the score buffer is at most ``batch_size x item_block`` floats,
    and neither setting changes the result.
    Returns ``rank`` (U,) long, ``recall@k`` for each k (U,) float (= HR@k: one target per user), ``ndcg@10``,
    ``rr`` (1/rank) (U,) float, and ``top_items`` (U,10) long: the 10 best candidates (0 where a user has fewer
    candidates scored above -inf).
    """
    if item_block < MIN_ITEM_BLOCK:
        raise ValueError(f"item_block: must be >= {MIN_ITEM_BLOCK} (items scored at a time), got {item_block}")
    indptr, indices = (t.to(torch.long) for t in history)
    _check_inputs(user_emb, item_emb, targets, indptr, indices, ks)
    device = user_emb.device
    items_t = item_emb.detach().to(device=device, dtype=torch.float32).t()  # (D, N+1)
    indptr, indices, targets = indptr.to(device), indices.to(device), targets.to(device=device, dtype=torch.long)
    excluded = excluded.to(device) if excluded is not None else None
    # |score| <= |u| |i| (Cauchy-Schwarz): below this bound no score can be NaN or infinite, and the NaN pass over
    # every block is skipped.
    bound = _max_norm(user_emb) * _max_norm(item_emb)
    scores_finite = bound < torch.finfo(torch.float32).max / 2
    ranks, tops = [], []
    for start, stop in even_blocks(user_emb.shape[0], batch_size):
        rows = torch.arange(stop - start, device=device)
        seen_rows = torch.repeat_interleave(rows, indptr[start + 1:stop + 1] - indptr[start:stop])
        rank, top_scores, top = _rank_batch(user_emb[start:stop].detach().float(), items_t, targets[start:stop],
                                            seen_rows, indices[indptr[start]:indptr[stop]], excluded, keep_target,
                                            scores_finite, item_block)
        ranks.append(rank.cpu())
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


def summarize(per_user: dict[str, Tensor], num_items: int) -> dict[str, float | int]:
    """Means of the per-user values (``recall@k``, ``ndcg@10``, ``mrr``), ``coverage@10`` (share of the N real
    items that appear in at least one user's top 10) and ``users``. Means over zero users are NaN."""
    users = int(per_user["rank"].numel())
    out: dict[str, float | int] = {}
    for name, values in per_user.items():
        if name.startswith(("recall@", "ndcg@")):
            out[name] = float(values.double().mean()) if users else float("nan")
    out["mrr"] = float(per_user["rr"].double().mean()) if users else float("nan")
    top = per_user[TOP_ITEMS]
    out[f"coverage@{TOP_N}"] = int(torch.unique(top[top > 0]).numel()) / num_items
    out["users"] = users
    return out


def norm_stats(emb: Tensor, prefix: str) -> dict[str, float]:
    """L2-norm statistics of the rows of ``emb``: ``{prefix}_mean, _std`` (population), ``_p50, _p95, _max``.

    Pass item embeddings without the padding row (``item_emb[1:]``). NaN rows make every statistic NaN.
    """
    return stats_of_norms(row_norms(emb).cpu(), prefix)


def stats_of_norms(norms: Tensor, prefix: str) -> dict[str, float]:
    """``norm_stats`` of norms already computed (float64), e.g. gathered from the ranks that hold the users."""
    if norms.numel() == 0 or bool(norms.isnan().any()):
        return {f"{prefix}_{s}": float("nan") for s in ("mean", "std", "p50", "p95", "max")}
    p50, p95 = torch.quantile(norms, torch.tensor([0.5, 0.95], dtype=torch.float64)).tolist()
    return {
        f"{prefix}_mean": float(norms.mean()),
        f"{prefix}_std": float(norms.std(correction=0)),
        f"{prefix}_p50": p50,
        f"{prefix}_p95": p95,
        f"{prefix}_max": float(norms.max()),
    }
