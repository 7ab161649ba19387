"""Vectorised steps on Arrow tables of events (``schema.EVENT_SCHEMA``) and of per-user sequences.

Each function takes and returns whole tables, so a Beam element is thousands of events, not one. The event
tables given to the per-user steps hold *every* event of their users (all users of one hash bucket).
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from preprocessing.schema import PADDING_INDEX, SEQUENCE_SCHEMA

SECONDS_PER_HOUR = 3_600
SECONDS_PER_DAY = 86_400
EPOCH_WEEKDAY = 3  # 1970-01-01 was a Thursday (Monday = 0)
ITEM_COUNTS = pa.schema([("item", pa.string()), ("count", pa.int64())])


def user_buckets(users: pa.Array, num_buckets: int) -> np.ndarray:
    """Bucket of each user: crc32 of the UTF-8 id, stable across processes and runs (unlike ``hash``)."""
    distinct = pc.unique(users)
    bucket_of = np.array([zlib.crc32(u.encode()) % num_buckets for u in distinct.to_pylist()], np.int64)
    return bucket_of[pc.index_in(users, value_set=distinct).to_numpy()]


def split_by_bucket(events: pa.Table, num_buckets: int) -> Iterator[tuple[int, pa.Table]]:
    """(bucket, that bucket's events) for every bucket present in ``events``."""
    if events.num_rows == 0:
        return
    bucket = user_buckets(events.column("user").combine_chunks(), num_buckets)
    order = np.argsort(bucket, kind="stable")
    starts = np.flatnonzero(np.diff(bucket[order], prepend=-1))
    for begin, end in zip(starts, [*starts[1:], len(order)], strict=True):
        yield int(bucket[order[begin]]), events.take(order[begin:end])


def deduplicate(events: pa.Table) -> tuple[pa.Table, int]:
    """Drop exact duplicate events (same user, item, timestamp), keeping the first in input order."""
    if events.num_rows == 0:
        return events, 0
    user = _codes(events, "user")
    item = _codes(events, "item")
    stamp = events.column("timestamp").to_numpy()
    order = np.lexsort((*_position(events), stamp, item, user))
    repeat = np.zeros(len(order), bool)
    repeat[1:] = ((user[order][1:] == user[order][:-1]) & (item[order][1:] == item[order][:-1])
                  & (stamp[order][1:] == stamp[order][:-1]))
    keep = np.sort(order[~repeat])
    return events.take(keep), int(repeat.sum())


def filter_rating(events: pa.Table, min_rating: float | None) -> tuple[pa.Table, int]:
    """Keep events rated >= ``min_rating`` (all of them when it is None)."""
    if min_rating is None:
        return events, 0
    kept = events.filter(pc.greater_equal(events.column("rating"), min_rating))
    return kept, events.num_rows - kept.num_rows


def item_counts(events: pa.Table) -> pa.Table:
    """``ITEM_COUNTS`` of every item in ``events``."""
    counts = events.group_by("item").aggregate([("item", "count")])
    return counts.select(["item", "item_count"]).rename_columns(["item", "count"])


def sum_item_counts(counts: list[pa.Table]) -> pa.Table:
    """Add up ``item, count`` tables."""
    total = pa.concat_tables(counts).group_by("item").aggregate([("count", "sum")])
    return total.select(["item", "count_sum"]).rename_columns(["item", "count"])


def keep_items(events: pa.Table, items: pa.Array) -> tuple[pa.Table, int]:
    """Keep events of ``items``."""
    kept = events.filter(pc.is_in(events.column("item"), value_set=items))
    return kept, events.num_rows - kept.num_rows


def keep_active_users(events: pa.Table, min_events: int) -> tuple[pa.Table, int]:
    """Keep users with at least ``min_events`` events (all their events are in ``events``)."""
    counts = events.group_by("user").aggregate([("user", "count")])
    active = counts.filter(pc.greater_equal(counts.column("user_count"), min_events)).column("user")
    kept = events.filter(pc.is_in(events.column("user"), value_set=active.combine_chunks()))
    return kept, events.num_rows - kept.num_rows


def sequences(events: pa.Table, vocab: pa.Array, users: pa.Array) -> pa.Table:
    """One row per user: ``user_index, user_id, item_index, timestamp``, events ordered by (timestamp,
    position in the input). ``vocab`` and ``users`` are the sorted distinct item and user ids of all events."""
    user = pc.index_in(events.column("user"), value_set=users).to_numpy()
    stamp = events.column("timestamp").to_numpy()
    order = np.lexsort((*_position(events), stamp, user))
    user = user[order]
    starts = np.flatnonzero(np.diff(user, prepend=-1)).astype(np.int32)
    offsets = pa.array(np.append(starts, len(order)).astype(np.int32))
    item_index = pc.add(pc.index_in(events.column("item").take(order), value_set=vocab), PADDING_INDEX + 1)
    return pa.table({
        "user_index": pa.array(user[starts].astype(np.int64)),
        "user_id": users.take(pa.array(user[starts])),
        "item_index": pa.ListArray.from_arrays(offsets, pc.cast(item_index, pa.int32()).combine_chunks()),
        "timestamp": pa.ListArray.from_arrays(offsets, pa.array(stamp[order])),
    })


def add_temporal_features(seqs: pa.Table, timestamp_min: int | None, timestamp_max: int | None) -> pa.Table:
    """Append the per-event time features of the contract to ``sequences`` output.

    timestamp_normalized uses the global bounds (0 when they are equal); seconds_since_prev is 0 for a user's
    first event; calendar features are UTC.
    """
    stamps = seqs.column("timestamp").combine_chunks()
    offsets, t = _flat(stamps)
    since_prev = np.diff(t, prepend=t[:1])
    since_prev[offsets[:-1]] = 0
    span = (timestamp_max - timestamp_min) if timestamp_min is not None else 0
    normalized = (t - timestamp_min) / span if span > 0 else np.zeros(len(t))
    offsets = pa.array(offsets.astype(np.int32))
    features = {
        "timestamp_normalized": normalized.astype(np.float32),
        "seconds_since_prev": since_prev.astype(np.int64),
        "log_hours_since_prev": np.log1p(since_prev / SECONDS_PER_HOUR).astype(np.float32),
        "hour_of_day": (t // SECONDS_PER_HOUR % 24).astype(np.int8),
        "day_of_week": ((t // SECONDS_PER_DAY + EPOCH_WEEKDAY) % 7).astype(np.int8),
    }
    for name, values in features.items():
        seqs = seqs.append_column(name, pa.ListArray.from_arrays(offsets, pa.array(values)))
    return seqs


def assign_split(seqs: pa.Table, method: str, cutoff: int | None) -> pa.Table:
    """Append ``train_end, valid_end`` (docs/contracts.md) and order the columns as ``SEQUENCE_SCHEMA``.

    leave_one_out: valid_end = len - 1; temporal: valid_end = events before ``cutoff``. train_end =
    valid_end - 1, but never below 0 (a user with one event, or none before the cutoff, has no validation target).
    last_event: valid_end = train_end = len - 1: the last event is the test target, every earlier one trains and
    no user has a validation target (the generative-recommenders protocol).
    """
    offsets, t = _flat(seqs.column("timestamp").combine_chunks())
    length = np.diff(offsets)
    if method in ("leave_one_out", "last_event"):
        valid_end = length - 1
    else:
        before = np.concatenate([[0], np.cumsum(t < cutoff)])
        valid_end = before[offsets[1:]] - before[offsets[:-1]]
    train_end = np.maximum(valid_end - (0 if method == "last_event" else 1), 0)
    seqs = seqs.append_column("train_end", pa.array(train_end.astype(np.int32)))
    seqs = seqs.append_column("valid_end", pa.array(valid_end.astype(np.int32)))
    return seqs.select(SEQUENCE_SCHEMA.names).cast(SEQUENCE_SCHEMA)


DIGEST_MODULUS = 1 << 256


def content_digest(seqs: pa.Table) -> int:
    """An order-independent digest of the rows a table of sequences holds: the sum, modulo 2**256, of
    sha256(user_id, its item indices, its timestamps) over users, so partial sums combine in any order (the data
    lineage's "same rows" test; equal digests mean equal kept rows with overwhelming probability)."""
    offsets, stamps = _flat(seqs.column("timestamp").combine_chunks())
    items = pc.list_flatten(seqs.column("item_index").combine_chunks()).to_numpy().astype(np.int32)
    stamps = stamps.astype(np.int64)
    total = 0
    for i, user in enumerate(seqs.column("user_id").to_pylist()):
        begin, end = offsets[i], offsets[i + 1]
        digest = hashlib.sha256(user.encode() + b"\0" + items[begin:end].tobytes() + stamps[begin:end].tobytes())
        total += int.from_bytes(digest.digest(), "big")
    return total % DIGEST_MODULUS


def length_histogram(seqs: pa.Table) -> dict[int, int]:
    """Sequence length -> number of users."""
    lengths, counts = np.unique(pc.list_value_length(seqs.column("item_index")).to_numpy(), return_counts=True)
    return {int(n): int(c) for n, c in zip(lengths, counts, strict=True)}


def _codes(events: pa.Table, column: str) -> np.ndarray:
    """Integer codes equal where the strings are equal (within this table)."""
    return pc.dictionary_encode(events.column(column).combine_chunks()).indices.to_numpy()


def _position(events: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """Sort keys (minor first, as np.lexsort wants them) for the event's position in the input: (row, file)."""
    return events.column("row").to_numpy(), events.column("file").to_numpy()


def _flat(lists: pa.ListArray) -> tuple[np.ndarray, np.ndarray]:
    """(offsets from 0, flat values) of a list array."""
    lengths = pc.list_value_length(lists).to_numpy()
    return np.concatenate([[0], np.cumsum(lengths)]), pc.list_flatten(lists).to_numpy()
