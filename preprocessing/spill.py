"""Shuffle through files (``PreprocessConfig.shuffle = "files"``): event tables go to Parquet files in a
directory beside the output and Beam's shuffle and stage boundaries carry only ``(bucket, path)`` pairs.

Why: Beam's in-process runner holds every GroupByKey and every materialised PCollection in memory (about 0.3 GB
per million events here), so one machine runs out at about 80M events. With the events in files, memory is about
one user bucket's events at a time plus the vocabulary and user index. A cluster runner (Dataflow, Flink, Spark)
spills its shuffle to disk itself; there ``shuffle="beam"`` is the natural choice, and either works.

Every file name is a function of what it holds (the bucket, the source file and a part number), so a retried
element rewrites the same files and never adds a second copy.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from core import storage
from preprocessing import tables

# Rows a parsing element buffers (over all buckets) before it writes them out as one part per bucket.
FLUSH_ROWS = 1 << 20


def write_table(uri: str, table: pa.Table) -> str:
    """One Parquet file, written whole (atomically; local or an object store)."""
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    storage.write_bytes(uri, buffer.getvalue())
    return uri


def read_tables(uris: Iterable[str]) -> pa.Table:
    """The tables of ``uris`` (sorted, so the same files always give the same table), concatenated."""
    return pa.concat_tables([pq.read_table(io.BytesIO(storage.read_bytes(uri))) for uri in sorted(uris)])


def events_of(value: pa.Table | str) -> pa.Table:
    """An element's events: the table itself, or the spilled table a path names."""
    return read_tables([value]) if isinstance(value, str) else value


class BucketSpiller:
    """Splits the event tables of one source file by user bucket and writes them out every ``FLUSH_ROWS`` rows
    as ``<directory>/parsed/bucket-BBBBB/source-SSSSS-part-PPPPP.parquet``; ``flush`` yields ``(bucket, path)``."""

    def __init__(self, directory: str, source_index: int, num_buckets: int):
        self.directory, self.source_index, self.num_buckets = directory, source_index, num_buckets
        self.pending: dict[int, list[pa.Table]] = {}
        self.rows = self.part = 0

    def add(self, events: pa.Table) -> Iterator[tuple[int, str]]:
        for bucket, part in tables.split_by_bucket(events, self.num_buckets):
            self.pending.setdefault(bucket, []).append(part)
            self.rows += part.num_rows
        if self.rows >= FLUSH_ROWS:
            yield from self.flush()

    def flush(self) -> Iterator[tuple[int, str]]:
        for bucket, parts in sorted(self.pending.items()):
            name = f"parsed/bucket-{bucket:05d}/source-{self.source_index:05d}-part-{self.part:05d}.parquet"
            yield bucket, write_table(storage.join(self.directory, name), pa.concat_tables(parts))
        self.pending, self.rows, self.part = {}, 0, self.part + 1


def spill_bucket(element: tuple[int, pa.Table], directory: str, stage: str) -> tuple[int, str]:
    """``(bucket, table)`` -> ``(bucket, path)`` of ``<directory>/<stage>/bucket-BBBBB.parquet`` (after the
    GroupByKey a bucket is one element, so the name is unique)."""
    bucket, events = element
    return bucket, write_table(storage.join(directory, f"{stage}/bucket-{bucket:05d}.parquet"), events)
