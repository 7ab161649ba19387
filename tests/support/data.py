"""A tiny preprocessed data directory (docs/contracts.md), published through core.rundir like the real one.

Users walk the catalogue in steps of +1 with a little noise, so a model learns something real in a few dozen
steps.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from core import contract, rundir

NUM_USERS = 48
NUM_ITEMS = 40


def write_preprocessed(directory: Path, num_users: int = NUM_USERS, num_items: int = NUM_ITEMS, seed: int = 0,
                       nan_user: int | None = None, item_prefix: str = "i", last_event: bool = False) -> Path:
    """Write sequences, vocab, split and stats files per the contract (leave-one-out split).

    ``nan_user``: that user's normalized timestamps are NaN (bad upstream data that makes the loss NaN);
    ``item_prefix``: the item ids are ``<prefix>1 .. <prefix>N`` (another prefix: other items, same count);
    ``last_event``: the generative-recommenders protocol's split (test target = last event, no validation target)
    and its split.json; otherwise a split.json written before protocols were recorded (read as ours).
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
            "train_end": length - (1 if last_event else 2), "valid_end": length - 1,
        })
    schema = pa.schema([
        ("user_index", pa.int64()), ("user_id", pa.string()), ("item_index", pa.list_(pa.int32())),
        ("timestamp", pa.list_(pa.int64())), ("timestamp_normalized", pa.list_(pa.float32())),
        ("seconds_since_prev", pa.list_(pa.int64())), ("log_hours_since_prev", pa.list_(pa.float32())),
        ("hour_of_day", pa.list_(pa.int8())), ("day_of_week", pa.list_(pa.int8())),
        ("train_end", pa.int32()), ("valid_end", pa.int32()),
    ])
    half = num_users // 2  # two shards, the second written first: the reader must sort by user_index
    interactions = sum(len(r["item_index"]) for r in rows)
    with rundir.writing(str(directory), contract.DATA_KIND) as staging:  # published whole, as preprocessing does
        out = Path(staging.path)
        for name, part in (("sequences-00000-of-00002.parquet", rows[half:]),
                           ("sequences-00001-of-00002.parquet", rows[:half])):
            pq.write_table(pa.Table.from_pylist(part, schema), out / name)
            staging.describe(name, rows=len(part))
        (out / "vocab.json").write_text(json.dumps({"padding_index": 0,
                                                    "items": [f"{item_prefix}{i}" for i in range(1, num_items + 1)]}))
        split = ({"method": "last_event", "cutoff": None, "protocol": "generative-recommenders"} if last_event
                 else {"method": "leave_one_out", "cutoff": None})
        (out / "split.json").write_text(json.dumps(split))
        (out / "stats.json").write_text(json.dumps({
            "input_rows": interactions, "dead_letter_rows": 0, "dead_letter_reasons": {}, "duplicate_rows": 0,
            "filtered_rows": 0, "interactions": interactions, "users": num_users, "items": num_items,
            "timestamp_min": t_min, "timestamp_max": t_max}))
    return directory
