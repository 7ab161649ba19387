"""The catalogue streamed in item blocks with a running top 10 ranks exactly as the one-matrix ranking did
(tests/support/full_matrix.py, trainer/metrics.py before the blocks): same ranks, metrics and top lists, ties,
history masking, excluded items and NaN scores included, on real MovieLens-100K histories."""

from __future__ import annotations

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch

from tests.support.full_matrix import full_matrix_ranking
from trainer.blocks import even_blocks
from trainer.metrics import TOP_ITEMS, full_ranking_metrics, history_csr

BLOCKS = [64, 100, 1000, 1682, 1683, 100_000]  # the narrowest block allowed .. ML-100K's 1,683 rows in one


@pytest.fixture(scope="module")
def movielens(ml100k):
    """Per user (time order, ties by file row): the last event is the target, everything before the history; and
    rank-16 factors of the user-item matrix as embeddings, whose scores have MovieLens's popularity structure."""
    table = pq.read_table(ml100k)
    users = pc.cast(table.column("user_id"), "int64").to_pylist()
    items = pc.cast(table.column("item_id"), "int64").to_pylist()
    times = table.column("timestamp").to_pylist()
    events: dict[int, list[tuple[int, int, int]]] = {}
    for row, (user, item, ts) in enumerate(zip(users, items, times, strict=True)):
        events.setdefault(user, []).append((ts, row, item))
    num_items = max(items)
    histories, targets, matrix = [], [], torch.zeros(len(events), num_items + 1)
    for u, user in enumerate(sorted(events)):
        sequence = [item for _, _, item in sorted(events[user])]
        histories.append(sequence[:-1])
        targets.append(sequence[-1])
        matrix[u, sequence[:-1]] = 1.0
    torch.manual_seed(0)  # svd_lowrank's random projection
    left, singular, right = torch.svd_lowrank(matrix, q=16, niter=4, M=None)
    return left * singular, right, torch.tensor(targets), histories


def assert_same(blocked: dict, full: dict) -> None:
    assert blocked.keys() == full.keys()
    for name in full:
        assert torch.equal(blocked[name], full[name]), name


@pytest.mark.parametrize("item_block", BLOCKS)
@pytest.mark.parametrize("keep_target", [True, False])
def test_blocks_rank_real_histories_exactly_as_one_matrix(movielens, item_block, keep_target):
    user_emb, item_emb, targets, histories = movielens
    history = history_csr(histories)
    full = full_matrix_ranking(user_emb, item_emb, targets, history, batch_size=128, keep_target=keep_target)
    blocked = full_ranking_metrics(user_emb, item_emb, targets, history, batch_size=128, keep_target=keep_target,
                                   item_block=item_block)
    assert_same(blocked, full)
    assert 1 < int(full["rank"].median()) < 1682  # a real spread of ranks, not a degenerate case


@pytest.mark.parametrize("item_block", [64, 65, 600])
def test_blocks_keep_ties_excluded_items_nan_and_rewatched_targets(movielens, item_block):
    """Embeddings rounded to a coarse grid tie often; some items are excluded (a model that never saw them),
    some users' scores are NaN, and some targets are also in their history (re-consumption)."""
    user_emb, item_emb, targets, histories = movielens
    user_emb, item_emb = (user_emb * 2).round(), (item_emb * 20).round()
    user_emb[::50] = float("nan")
    excluded = torch.zeros(item_emb.shape[0], dtype=torch.bool)
    excluded[0] = excluded[targets[::7]] = excluded[500:520] = True
    histories = [h + [int(t)] if u % 5 == 0 else h for u, (h, t) in enumerate(zip(histories, targets, strict=True))]
    history = history_csr(histories)
    for keep_target in (True, False):
        full = full_matrix_ranking(user_emb, item_emb, targets, history, batch_size=100, excluded=excluded,
                                   keep_target=keep_target)
        blocked = full_ranking_metrics(user_emb, item_emb, targets, history, batch_size=100, excluded=excluded,
                                       keep_target=keep_target, item_block=item_block)
        assert torch.equal(blocked["rank"], full["rank"]) and torch.equal(blocked["rr"], full["rr"])
        assert torch.equal(blocked["ndcg@10"], full["ndcg@10"])
        # Ties inside a top 10 may come in another order (topk does not order ties): the same scores, candidates
        # only, no repeats.
        scores = (user_emb @ item_emb.t()).nan_to_num(float("-inf"))
        for u in range(0, len(histories), 37):
            top = blocked[TOP_ITEMS][u][blocked[TOP_ITEMS][u] > 0]
            assert torch.equal((blocked[TOP_ITEMS][u] > 0), (full[TOP_ITEMS][u] > 0))
            assert sorted(scores[u, top].tolist()) == sorted(scores[u, full[TOP_ITEMS][u][full[TOP_ITEMS][u] > 0]].tolist())
            assert len(set(top.tolist())) == top.numel() and not excluded[top].any()
    ties = (scores.gather(1, targets[:, None]) == scores).sum(1) > 1
    assert ties.float().mean() > 0.2  # the grid really ties


@pytest.mark.parametrize(("width", "block"), [(1683, 64), (1683, 1682), (65, 64), (64, 64), (100_001, 65_536)])
def test_even_blocks_cover_the_catalogue_without_a_narrow_last_block(width, block):
    assert even_blocks(0, block) == []
    blocks = even_blocks(width, block)
    assert blocks[0][0] == 0 and blocks[-1][1] == width and len(blocks) == -(-width // block)
    assert all(a[1] == b[0] for a, b in zip(blocks, blocks[1:], strict=False))
    assert all(block // 2 <= hi - lo <= block for lo, hi in blocks)


def test_an_item_block_below_the_minimum_is_refused():
    with pytest.raises(ValueError, match="item_block: must be >= 64"):
        full_ranking_metrics(torch.ones(1, 2), torch.ones(3, 2), torch.tensor([1]), history_csr([[]]), item_block=63)
