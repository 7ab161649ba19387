"""``PreprocessConfig``: how raw interaction logs become per-user sequences (docs/contracts.md).

Every field changes what lands in the output directory; how fast it gets there is left to Beam's pipeline
options (``interest preprocess ... -- --runner=... --direct_num_workers=...``). The resolved config is saved
beside the outputs as ``preprocess_config.json``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Literal, get_args

from core.configs import check_literals, require
from core.protocols import PROTOCOLS, ProtocolName

Format = Literal["auto", "csv", "tsv", "parquet"]
Split = Literal["leave_one_out", "temporal", "last_event"]
Shuffle = Literal["beam", "files"]
TimestampUnit = Literal["s", "ms", "us"]

# Column roles -> names in the events contract (what `interest data fetch` writes).
DEFAULT_COLUMNS = {"user": "user_id", "item": "item_id", "timestamp": "timestamp", "rating": "rating"}
# Without max_timestamp, events later than the run's start plus this margin are "absurdly future".
FUTURE_MARGIN_SECONDS = 86_400
# Timestamps (seconds) a config may name: from the epoch to the year 3000; the int64 seconds of the outputs hold
# them with room to spare, unlike the 1e30 a typo can produce.
LATEST_TIMESTAMP = 32_503_680_000
# Upper bounds of the other numeric fields: far above any real use, low enough to keep memory and file counts sane.
LIMITS = {"min_item_count": 10**9, "min_user_events": 10**9, "num_shards": 10_000, "user_buckets": 1_000_000,
          "max_id_chars": 1 << 20, "max_line_bytes": 1 << 30}


@dataclass(frozen=True)
class PreprocessConfig:
    # Evaluation protocol the data is made for (core/protocols.py, docs/protocols.md): it resolves min_item_count,
    # min_user_events and split when they are unset; 'generative-recommenders' refuses other values of them.
    protocol: ProtocolName = "ours"
    # Input format; auto: from the file extension (.csv, .tsv/.tab/.inter, .parquet/.pq; .gz/.bz2 allowed).
    format: Format = "auto"
    # Column role -> column name in the input (header name for CSV/TSV, field name for Parquet). Roles: user,
    # item, timestamp, rating (read only when min_rating is set). Missing roles take the events-contract names.
    # With header=False the names are 0-based field positions ("0", "3").
    columns: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_COLUMNS))
    # CSV/TSV: the first non-blank line of each file names the columns; later copies of it are dead letters.
    header: bool = True
    # Keep only events rated >= this (explicit -> implicit feedback); None keeps every event.
    min_rating: float | None = None
    # Drop items with fewer events than this (counted after deduplication), then ... (None: the protocol's:
    # ours 5, generative-recommenders 1, i.e. every rated item)
    min_item_count: int | None = None
    # ... drop users with fewer remaining events than this (one pass, as the usual ML-1M statistics; None: the
    # protocol's: ours 3, generative-recommenders 1, no filter).
    min_user_events: int | None = None
    # leave_one_out: last event = test target, second last = validation target; temporal: the first event at
    # or after `cutoff` is the test target, the last one before it the validation target; last_event: the last
    # event is the test target and every earlier one trains (no validation target). None: the protocol's
    # (ours leave_one_out, generative-recommenders last_event).
    split: Split | None = None
    # Global cutoff in seconds since the epoch (UTC); required by split='temporal', refused otherwise.
    cutoff: int | None = None
    # Unit of numeric timestamps in the input (s, ms or us); outputs are always seconds. Fractions are floored.
    # A row whose value reads as a plausible time only in another unit is a dead letter naming that unit, and an
    # input where most rows are is refused with the --timestamp-unit to use.
    timestamp_unit: TimestampUnit = "s"
    # Events after this (seconds) are dead letters; None: the run's start + 1 day (the resolved value is saved).
    max_timestamp: int | None = None
    # CSV/TSV lines longer than this many bytes are dead letters (protects memory from giant fields).
    max_line_bytes: int = 65_536
    # User and item ids longer than this many characters are dead letters.
    max_id_chars: int = 1_024
    # Number of sequences-SSSSS-of-NNNNN.parquet files.
    num_shards: int = 4
    # Users are hashed into this many groups; each group is one element after the GroupByKey, so it bounds
    # both the work per element and the number of elements Beam shuffles.
    user_buckets: int = 64
    # What carries the events between the stages that group them by user: beam: Beam's own shuffle (a cluster
    # runner spills it to disk; the in-process runner holds all of it in memory, about 0.3 GB per million events);
    # files: Parquet files beside the output, Beam carrying only their paths (preprocessing/spill.py), so memory
    # on one machine is about one bucket's events, and the sequences are one file per user bucket
    # (sequences-BBBBB-of-NNNNN.parquet, NNNNN = user_buckets) instead of num_shards files. Same rows either way.
    shuffle: Shuffle = "beam"

    def __post_init__(self) -> None:
        check_literals(self)
        self._resolve_protocol()
        unknown = sorted(set(self.columns) - set(DEFAULT_COLUMNS))
        require(not unknown, "PreprocessConfig.columns",
                f"unknown role {unknown[0] if unknown else ''!r}; roles are {', '.join(DEFAULT_COLUMNS)}")
        columns = {**DEFAULT_COLUMNS, **{k: str(v).strip() for k, v in self.columns.items()}}
        object.__setattr__(self, "columns", columns)
        for role in self.roles:
            name = columns[role]
            require(bool(name), f"PreprocessConfig.columns.{role}", "must name a column")
            if not self.header:
                require(name.isdigit(), f"PreprocessConfig.columns.{role}",
                        f"with header=false columns are 0-based field positions, got {name!r}")
        for name in ("min_item_count", "min_user_events", "num_shards", "user_buckets", "max_id_chars"):
            value = getattr(self, name)
            require(value >= 1, f"PreprocessConfig.{name}", f"must be >= 1, got {value}")
            require(value <= LIMITS[name], f"PreprocessConfig.{name}", f"must be <= {LIMITS[name]}, got {value}")
        require(self.max_line_bytes >= 64, "PreprocessConfig.max_line_bytes",
                f"must be >= 64, got {self.max_line_bytes}")
        require(self.max_line_bytes <= LIMITS["max_line_bytes"], "PreprocessConfig.max_line_bytes",
                f"must be <= {LIMITS['max_line_bytes']}, got {self.max_line_bytes}")
        require(self.min_rating is None or math.isfinite(self.min_rating), "PreprocessConfig.min_rating",
                f"must be a finite number or null, got {self.min_rating}")
        if self.split == "temporal":
            require(self.cutoff is not None, "PreprocessConfig.cutoff",
                    "split='temporal' needs a cutoff (seconds since the epoch, or --cutoff YYYY-MM-DD)")
        else:
            require(self.cutoff is None, "PreprocessConfig.cutoff",
                    f"only used by split='temporal', but split={self.split!r}")
        for name in ("max_timestamp", "cutoff"):
            value = getattr(self, name)
            require(value is None or 0 <= value <= LATEST_TIMESTAMP, f"PreprocessConfig.{name}",
                    f"must be seconds since the epoch in [0, {LATEST_TIMESTAMP}] (the year 3000), got {value}")

    def _resolve_protocol(self) -> None:
        """Unset protocol fields take the protocol's values; a fixed protocol refuses other values."""
        protocol = PROTOCOLS[self.protocol]
        for name, wanted in protocol.preprocess.items():
            value = getattr(self, name)
            if value is None:
                object.__setattr__(self, name, wanted)
            elif protocol.fixed and value != wanted:
                require(False, f"PreprocessConfig.{name}",
                        f"protocol {self.protocol!r} needs {wanted!r} (or leave it unset), got {value!r}")
        allowed = get_args(Split)
        require(self.split in allowed, "PreprocessConfig.split",
                f"{self.split!r} is not allowed; choose one of {', '.join(repr(a) for a in allowed)}")

    @property
    def roles(self) -> tuple[str, ...]:
        """The column roles this config reads."""
        return ("user", "item", "timestamp") + (("rating",) if self.min_rating is not None else ())

    def resolved(self) -> PreprocessConfig:
        """This config with ``max_timestamp`` fixed, so a saved config reproduces the run exactly."""
        if self.max_timestamp is not None:
            return self
        return dataclasses.replace(self, max_timestamp=int(time.time()) + FUTURE_MARGIN_SECONDS)
