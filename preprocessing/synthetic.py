"""Synthetic interaction logs shaped like a real catalogue, for scale benchmarks and multi-worker tests.

Item popularity is Zipf-like (the item of popularity rank r is drawn with probability proportional to
1 / (r + 1) ** ``zipf_exponent``), users have about ``events_per_user`` events each (1 + a geometric number, so a
long tail of heavy users), and every user's events are spread over ``span_days`` days ending at ``end``. The
events are written as Parquet files in the events contract (``user_id, item_id, timestamp``), a chunk of users
at a time, so a log of 100M events is made in bounded memory. The same config always gives the same files.

    python -m preprocessing.synthetic --events 10000000 --output /tmp/logs-10m
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from core.configs import require

SECONDS_PER_DAY = 86_400
END = 1_767_225_600  # 2026-01-01T00:00:00Z: the logs end before any run's default max_timestamp


@dataclass(frozen=True)
class SyntheticConfig:
    # Events in the whole log (exactly this many rows).
    events: int
    # Mean events per user (the number of users is about events / events_per_user).
    events_per_user: int = 50
    # Catalogue size; None: 20 * sqrt(events) (1M events -> 20k items, 30M -> 110k, 100M -> 200k).
    items: int | None = None
    # Exponent of the Zipf-like popularity: 1.0 is the classic web-catalogue shape.
    zipf_exponent: float = 1.0
    # Days the timestamps span, ending at END (two years by default).
    span_days: int = 730
    # Rows per Parquet file (the log is a glob of files, as a real export is).
    rows_per_file: int = 2_000_000
    # Seed of every random draw.
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("events", "events_per_user", "span_days", "rows_per_file"):
            require(getattr(self, name) >= 1, f"SyntheticConfig.{name}", f"must be >= 1, got {getattr(self, name)}")
        require(self.items is None or self.items >= 1, "SyntheticConfig.items", f"must be >= 1, got {self.items}")
        require(self.zipf_exponent > 0, "SyntheticConfig.zipf_exponent", f"must be > 0, got {self.zipf_exponent}")

    @property
    def catalogue(self) -> int:
        return self.items if self.items is not None else max(1, round(20 * math.sqrt(self.events)))


def generate(cfg: SyntheticConfig, output: str | Path) -> list[Path]:
    """Write the log as ``events-NNNNN.parquet`` files in ``output``; return their paths."""
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(cfg.seed)
    popularity = 1.0 / np.arange(1, cfg.catalogue + 1) ** cfg.zipf_exponent
    cdf = np.cumsum(popularity / popularity.sum())
    # Item ids are not in popularity order, as in a real catalogue (the vocabulary sorts ids as strings).
    item_ids = pa.array(rng.permutation(cfg.catalogue)).cast(pa.string())
    item_ids = pc.binary_join_element_wise("i", item_ids, "")
    paths, user, written = [], 0, 0
    while written < cfg.events:
        rows = min(cfg.rows_per_file, cfg.events - written)
        table, user = _chunk(rng, cdf, item_ids, user, rows, cfg)
        path = out / f"events-{len(paths):05d}.parquet"
        pq.write_table(table, path)
        paths.append(path)
        written += rows
    return paths


def _chunk(rng: np.random.Generator, cdf: np.ndarray, item_ids: pa.Array, first_user: int, rows: int,
           cfg: SyntheticConfig) -> tuple[pa.Table, int]:
    """``rows`` events of users numbered from ``first_user`` (the last user may be cut short); the next user."""
    lengths = rng.geometric(1.0 / cfg.events_per_user, size=rows // cfg.events_per_user * 2 + 16)
    lengths = lengths[: np.searchsorted(np.cumsum(lengths), rows) + 1]
    lengths[-1] -= lengths.sum() - rows
    users = np.repeat(np.arange(first_user, first_user + len(lengths)), lengths)
    span = cfg.span_days * SECONDS_PER_DAY
    start = END - span
    timestamps = start + (rng.random(rows) * span).astype(np.int64)
    timestamps = np.sort(timestamps + users * (span * 4)) - users * (span * 4)  # sorted within each user
    items = np.minimum(np.searchsorted(cdf, rng.random(rows)), len(cdf) - 1)
    user_ids = pc.binary_join_element_wise("u", pa.array(users).cast(pa.string()), "")
    table = pa.table({"user_id": user_ids, "item_id": item_ids.take(pa.array(items)),
                      "timestamp": pa.array(timestamps)})
    return table, first_user + len(lengths)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, required=True, help="rows in the whole log")
    parser.add_argument("--output", required=True, help="directory for events-NNNNN.parquet")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random draw")
    args = parser.parse_args(argv)
    for path in generate(SyntheticConfig(events=args.events, seed=args.seed), args.output):
        print(path)


if __name__ == "__main__":
    main()
