"""How the ranking cuts its work: users into batches and the catalogue into item blocks (trainer/metrics.py).
Plain Python, no torch: configs (``TrainConfig.eval_item_block``) check against these without importing torch."""

from __future__ import annotations

# Items scored at a time: a batch of 512 users holds 512 x 65,536 float32 scores (128 MiB) whatever the catalogue;
# ML-1M's 3,417 rows fit one block, so its ranking is the one-matrix ranking it always was.
DEFAULT_ITEM_BLOCK = 65_536
MIN_ITEM_BLOCK = 64  # narrower blocks would take the matmul kernels of thin matrices, which round differently


def even_blocks(total: int, size: int) -> list[tuple[int, int]]:
    """``[lo, hi)`` ranges covering ``0..total`` in ``ceil(total / size)`` blocks of near-equal size (users of a
    batch, items of a block): no thin last block, whose matmul would take another kernel and round differently."""
    count = -(-total // size)
    bounds = [total * i // count for i in range(count + 1)] if count else [0]
    return list(zip(bounds[:-1], bounds[1:], strict=True))
