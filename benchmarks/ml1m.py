"""MovieLens-1M sequences for the benchmarks, as ``trainer.data.Sequences`` or a preprocessed directory.

A preprocessed directory (``interest preprocess`` output) is used when given, or when ``preprocessed()`` already
wrote one into the cache. Without one, the speed benchmarks still need ML-1M's real shapes (3,416 items, 6,040
users, their real sequence lengths), so the cached events file (``interest data fetch --dataset ml-1m``) is
turned into the same leave-one-out sequences here with numpy: items with >= 5 ratings kept, events ordered by
time with ties in file order, the contract's feature columns. Speed depends only on the shapes.
"""

from __future__ import annotations

import logging

import numpy as np
import pyarrow.parquet as pq
import torch

from pipelines import datasets
from trainer.data import INPUT_COLUMNS, Sequences, load_sequences

log = logging.getLogger(__name__)

PREPROCESSED = "ml-1m-sequences"  # in the data cache (~/.cache/interest-pipeline): `interest preprocess` output
DONE = "preprocess_config.json"  # preprocessing writes it last, after every sequence file

MIN_ITEM_RATINGS = 5  # the usual SASRec filter on ML-1M: 3,416 items, 999,611 events
THURSDAY = 3  # 1970-01-01, day 0 of the epoch, with Monday = 0


def preprocessed() -> str:
    """The cached ML-1M directory of ``interest preprocess`` (default PreprocessConfig), made on first use."""
    from preprocessing.config import PreprocessConfig
    from preprocessing.pipeline import run

    out = datasets.default_cache_dir() / PREPROCESSED
    if not (out / DONE).exists():
        log.info("preprocessing ML-1M into %s (once)", out)
        run(str(datasets.fetch(datasets.DATASETS["ml-1m"])), str(out), PreprocessConfig(), overwrite=True)
    return str(out)


def load(data_dir: str | None = None) -> Sequences:
    """Sequences from ``data_dir``, else the cached preprocessed directory, else built from the cached events."""
    cached = datasets.default_cache_dir() / PREPROCESSED
    if data_dir or (cached / DONE).exists():
        return load_sequences(data_dir or str(cached))
    events = pq.read_table(datasets.fetch(datasets.DATASETS["ml-1m"]))
    log.info("no --data directory: building ML-1M sequences from %d cached events", events.num_rows)
    return sequences_from_events(events.column("user_id").to_numpy(zero_copy_only=False),
                                 events.column("item_id").to_numpy(zero_copy_only=False),
                                 events.column("timestamp").to_numpy())


def sequences_from_events(users: np.ndarray, items: np.ndarray, stamps: np.ndarray) -> Sequences:
    """Leave-one-out ``Sequences`` of (user, item, timestamp) events in file order."""
    item_ids, item_codes, item_counts = np.unique(items, return_inverse=True, return_counts=True)
    keep = item_counts[item_codes] >= MIN_ITEM_RATINGS
    kept_ids = item_ids[item_counts >= MIN_ITEM_RATINGS]
    item_index = np.searchsorted(kept_ids, items[keep]) + 1  # 1..N, 0 is padding
    user_ids, user_codes = np.unique(users[keep], return_inverse=True)  # user_index: users sorted by id
    stamps = stamps[keep].astype(np.int64)
    order = np.lexsort((np.arange(len(stamps)), stamps, user_codes))  # by user, then time, then file order
    user_codes, item_index, stamps = user_codes[order], item_index[order], stamps[order]
    length = np.bincount(user_codes, minlength=len(user_ids))
    first = np.r_[True, user_codes[1:] != user_codes[:-1]]
    since_prev = np.where(first, 0, np.diff(stamps, prepend=stamps[0]))
    span = max(int(stamps.max() - stamps.min()), 1)
    flat = {
        "items": item_index,
        "timestamp": (stamps - stamps.min()) / span,
        "log_hours_since_prev": np.log1p(since_prev / 3600),
        "hour_of_day": stamps // 3600 % 24,
        "day_of_week": (stamps // 86400 + THURSDAY) % 7,
    }
    columns = {key: torch.cat([torch.zeros(1, dtype=dtype), torch.from_numpy(np.asarray(flat[key])).to(dtype)])
               for key, (_, dtype) in INPUT_COLUMNS.items()}
    length_t = torch.from_numpy(length.astype(np.int64))
    return Sequences(
        user_index=torch.arange(len(user_ids)),
        offsets=1 + torch.cumsum(length_t, 0) - length_t,
        length=length_t,
        train_end=(length_t - 2).clamp(min=0),
        valid_end=(length_t - 1).clamp(min=0),
        columns=columns,
        num_items=len(kept_ids),
        vocab={"padding_index": 0, "items": kept_ids.tolist()},
    )
