"""A tiny preprocessed data directory (docs/contracts.md) and tiny configs for the trainer tests.

Users walk the catalogue in steps of +1 with a little noise, so a model learns something real in a few dozen
steps. Tests get the helpers through fixtures (importlib import mode: test modules cannot import each other).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from trainer.config import ModelConfig
from trainer.training_config import TrainConfig

NUM_USERS = 48
NUM_ITEMS = 40
# Small, dropout-free (so DDP and one process compute the same thing), shorter than the longest user.
TINY_MODEL = ModelConfig(d_model=16, n_layer=1, n_head=2, max_len=12, dropout=0.0)


def write_preprocessed(directory: Path, num_users: int = NUM_USERS, num_items: int = NUM_ITEMS, seed: int = 0,
                       nan_user: int | None = None) -> Path:
    """Write sequences, vocab, split and stats files per the contract (leave-one-out split).

    ``nan_user``: that user's normalized timestamps are NaN (bad upstream data that makes the loss NaN).
    """
    rng = np.random.default_rng(seed)
    rows = []
    t_min, t_max = 1_000_000_000, 1_000_000_000 + 86_400 * 365
    for user in range(num_users):
        length = int(rng.integers(3, 20))
        start = int(rng.integers(0, num_items))
        items = [(start + i + int(rng.random() < 0.1) * int(rng.integers(1, num_items))) % num_items + 1
                 for i in range(length)]
        ts = np.sort(rng.integers(t_min, t_max, size=length))
        gaps = np.diff(ts, prepend=ts[0])
        norm = ((ts - t_min) / (t_max - t_min)).astype(np.float32)
        if user == nan_user:
            norm[:] = np.nan
        rows.append({
            "user_index": user, "user_id": f"u{user:04d}", "item_index": items, "timestamp": ts.tolist(),
            "timestamp_normalized": norm.tolist(), "seconds_since_prev": gaps.tolist(),
            "log_hours_since_prev": np.log1p(gaps / 3600).astype(np.float32).tolist(),
            "hour_of_day": ((ts // 3600) % 24).tolist(), "day_of_week": (((ts // 86400) + 3) % 7).tolist(),
            "train_end": length - 2, "valid_end": length - 1,
        })
    schema = pa.schema([
        ("user_index", pa.int64()), ("user_id", pa.string()), ("item_index", pa.list_(pa.int32())),
        ("timestamp", pa.list_(pa.int64())), ("timestamp_normalized", pa.list_(pa.float32())),
        ("seconds_since_prev", pa.list_(pa.int64())), ("log_hours_since_prev", pa.list_(pa.float32())),
        ("hour_of_day", pa.list_(pa.int8())), ("day_of_week", pa.list_(pa.int8())),
        ("train_end", pa.int32()), ("valid_end", pa.int32()),
    ])
    directory.mkdir(parents=True, exist_ok=True)
    half = num_users // 2  # two shards, the second written first: the reader must sort by user_index
    pq.write_table(pa.Table.from_pylist(rows[half:], schema), directory / "sequences-00000-of-00002.parquet")
    pq.write_table(pa.Table.from_pylist(rows[:half], schema), directory / "sequences-00001-of-00002.parquet")
    (directory / "vocab.json").write_text(json.dumps({"padding_index": 0,
                                                      "items": [f"i{i}" for i in range(1, num_items + 1)]}))
    (directory / "split.json").write_text(json.dumps({"method": "leave_one_out", "cutoff": None}))
    interactions = sum(len(r["item_index"]) for r in rows)
    (directory / "stats.json").write_text(json.dumps({
        "input_rows": interactions, "dead_letter_rows": 0, "dead_letter_reasons": {}, "duplicate_rows": 0,
        "filtered_rows": 0, "interactions": interactions, "users": num_users, "items": num_items,
        "timestamp_min": t_min, "timestamp_max": t_max}))
    return directory


def tiny_train(**overrides) -> TrainConfig:
    """A few seconds of CPU training: 8 steps per epoch of 6 sequences."""
    base = dict(batch_size=6, epochs=2, eval_every_steps=4, checkpoint_every_steps=4, log_every_steps=2,
                patience=0, lr=3e-3)
    return TrainConfig(**{**base, **overrides})


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    """One intra-op thread here and in the processes the tests start: on a busy 2-core box two spinning OpenMP
    threads make tiny ops 10-50x slower (measured), and equal thread counts keep runs bit-comparable."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    return write_preprocessed(tmp_path_factory.mktemp("tiny-data"))


@pytest.fixture(scope="session")
def kit() -> SimpleNamespace:
    return SimpleNamespace(write_preprocessed=write_preprocessed, tiny_train=tiny_train, TINY_MODEL=TINY_MODEL,
                           NUM_ITEMS=NUM_ITEMS, NUM_USERS=NUM_USERS)
