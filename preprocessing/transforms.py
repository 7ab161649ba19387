"""The preprocessing stages as named composite PTransforms, each usable and testable on its own.

Elements are Arrow tables, not single events: parsing yields one table per block of rows, and after
``GroupByUserBucket`` an element is ``(bucket, table)`` holding every event of the users hashed to that bucket,
so a million events cross the shuffle as about a thousand elements. With ``shuffle="files"`` the events go
to Parquet files between the grouping stages and the elements that cross are ``(bucket, path)`` pairs
(preprocessing/spill.py). Every stage that drops rows counts them twice: in Beam metrics (namespace
``preprocess``) for the runner's UI, and as data on its ``counts`` output, which becomes stats.json.

    ParseAndValidate -> GroupByUserBucket -> DeduplicateEvents -> FilterSparse -+-> BuildVocabulary (SortedDistinct)
                                                                               +-> IndexUsers (SortedDistinct)
                                                                               +-> TimeRange
                                         GroupPerUser -> AddTemporalFeatures -> AssignSplit -> WriteOutputs
"""

from __future__ import annotations

import json
import logging

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.metrics import Metrics
from apache_beam.pvalue import AsSingleton, TaggedOutput

from core import storage
from core.contract import DEAD_LETTER_PREFIX, SEQUENCES_PREFIX, STATS, VOCAB
from preprocessing import tables
from preprocessing.config import PreprocessConfig
from preprocessing.schema import PADDING_INDEX, SEQUENCE_SCHEMA
from preprocessing.sources import Source, read_source
from preprocessing.spill import BucketSpiller, events_of, read_tables, spill_bucket, write_table
from preprocessing.stats import finalize, merge_counts

log = logging.getLogger(__name__)

NAMESPACE = "preprocess"
EVENTS, DEAD_LETTERS, COUNTS = "events", "dead_letters", "counts"


def _count(name: str, n: int) -> None:
    if n:
        Metrics.counter(NAMESPACE, name).inc(n)


# ---------------------------------------------------------------------------------------- parse & validate


class _ReadAndParse(beam.DoFn):
    def __init__(self, cfg: PreprocessConfig, spill: str | None):
        self.cfg, self.spill = cfg, spill

    def process(self, source: Source):
        rows = dead = 0
        spiller = BucketSpiller(self.spill, source.index, self.cfg.user_buckets) if self.spill else None
        for block in read_source(source, self.cfg):
            counts = block.counts()
            rows += block.input_rows
            dead += len(block.dead_letters)
            _count("input_rows", block.input_rows)
            _count("dead_letter_rows", len(block.dead_letters))
            for reason, n in counts["dead_letter_reasons"].items():
                _count(f"dead_letter_{reason}", n)
            if block.events.num_rows:
                yield from spiller.add(block.events) if spiller else [block.events]
            for letter in block.dead_letters:
                yield TaggedOutput(DEAD_LETTERS, letter)
            yield TaggedOutput(COUNTS, counts)
        if spiller:
            yield from spiller.flush()
        yield TaggedOutput(COUNTS, {"input_files": 1})
        log.info("parsed %s: %d rows, %d dead letters", source.path, rows, dead)


class ParseAndValidate(beam.PTransform):
    """Files -> ``{"events": tables of valid events, "dead_letters": dicts, "counts": dicts}``; with ``spill`` (a
    directory) the events go to files there and "events" holds ``(bucket, path)`` pairs (preprocessing/spill.py)."""

    def __init__(self, sources: list[Source], cfg: PreprocessConfig, spill: str | None = None):
        super().__init__()
        self.sources, self.cfg, self.spill = sources, cfg, spill

    def expand(self, pbegin):
        out = (
            pbegin
            | "Files" >> beam.Create(self.sources)
            | "SpreadFiles" >> beam.Reshuffle()
            | "ReadAndParse" >> beam.ParDo(_ReadAndParse(self.cfg, self.spill)).with_outputs(DEAD_LETTERS, COUNTS, main=EVENTS)
        )
        return {EVENTS: out[EVENTS], DEAD_LETTERS: out[DEAD_LETTERS], COUNTS: out[COUNTS]}


# ------------------------------------------------------------------------------------ group, dedup, filter


def _concat(bucket: int, parts) -> tuple[int, pa.Table]:
    return bucket, pa.concat_tables(list(parts))


def _read_bucket(bucket: int, paths) -> tuple[int, pa.Table]:
    return bucket, read_tables(paths)


class GroupByUserBucket(beam.PTransform):
    """Tables of events -> ``(bucket, table)``: all events of the users hashed to a bucket, one element each.
    ``spilled``: the input is ``(bucket, path)`` pairs of ParseAndValidate's spill, and only paths are shuffled."""

    def __init__(self, num_buckets: int, spilled: bool = False):
        super().__init__()
        self.num_buckets, self.spilled = num_buckets, spilled

    def expand(self, events):
        if self.spilled:
            return events | "GroupByBucket" >> beam.GroupByKey() | "ReadBucket" >> beam.MapTuple(_read_bucket)
        return (
            events
            | "SplitByBucket" >> beam.FlatMap(tables.split_by_bucket, self.num_buckets)
            | "GroupByBucket" >> beam.GroupByKey()
            | "Concat" >> beam.MapTuple(_concat)
        )


def _deduplicate(bucket: int, events: pa.Table):
    kept, duplicates = tables.deduplicate(events)
    _count("duplicate_rows", duplicates)
    yield bucket, kept
    yield TaggedOutput(COUNTS, {"duplicate_rows": duplicates})


class DeduplicateEvents(beam.PTransform):
    """``(bucket, table)`` -> ``{"events", "counts"}`` without exact duplicates (user, item, timestamp)."""

    def expand(self, buckets):
        out = buckets | "Deduplicate" >> beam.FlatMapTuple(_deduplicate).with_outputs(COUNTS, main=EVENTS)
        return {EVENTS: out[EVENTS], COUNTS: out[COUNTS]}


def _filtered(bucket: int, step: str, result: tuple[pa.Table, int]):
    """Yield the kept events and, on the counts output, how many rows ``step`` removed."""
    kept, removed = result
    _count(f"filtered_{step}", removed)
    yield bucket, kept
    yield TaggedOutput(COUNTS, {"filtered_reasons": {step: removed}})


def _min_rating(element: tuple[int, pa.Table], min_rating: float | None):
    return _filtered(element[0], "min_rating", tables.filter_rating(element[1], min_rating))


def _min_item_count(element: tuple[int, pa.Table | str], frequent: pa.Array):
    return _filtered(element[0], "min_item_count", tables.keep_items(events_of(element[1]), frequent))


def _min_user_events(element: tuple[int, pa.Table], min_events: int):
    return _filtered(element[0], "min_user_events", tables.keep_active_users(element[1], min_events))


class _FrequentItems(beam.CombineFn):
    """Per-bucket ``item, count`` tables -> the items with at least ``min_count`` events in all buckets."""

    def __init__(self, min_count: int):
        self.min_count = min_count

    def create_accumulator(self):
        return tables.ITEM_COUNTS.empty_table()

    def add_input(self, total, counts):
        return tables.sum_item_counts([total, counts])

    def merge_accumulators(self, totals):
        return tables.sum_item_counts(list(totals))

    def extract_output(self, total):
        return total.filter(pc.greater_equal(total.column("count"), self.min_count)).column("item").combine_chunks()


class FilterSparse(beam.PTransform):
    """``(bucket, table)`` -> ``{"events", "counts"}``: events rated >= min_rating, then of items with at
    least min_item_count events (in all buckets), then of users with at least min_user_events of those. With
    ``spill`` (a directory) the rated events wait for the item counts in files, not in the runner's memory."""

    def __init__(self, min_rating: float | None, min_item_count: int, min_user_events: int,
                 spill: str | None = None):
        super().__init__()
        self.min_rating, self.min_item_count, self.min_user_events = min_rating, min_item_count, min_user_events
        self.spill = spill

    def expand(self, buckets):
        rated = buckets | "MinRating" >> beam.FlatMap(_min_rating, self.min_rating).with_outputs(
            COUNTS, main=EVENTS)
        frequent_items = (
            rated[EVENTS]
            | "CountItems" >> beam.MapTuple(lambda bucket, events: tables.item_counts(events))
            | "FrequentItems" >> beam.CombineGlobally(_FrequentItems(self.min_item_count))
        )
        waiting = rated[EVENTS]
        if self.spill:
            waiting = waiting | "SpillRated" >> beam.Map(spill_bucket, self.spill, "rated")
        frequent = waiting | "MinItemCount" >> beam.FlatMap(
            _min_item_count, AsSingleton(frequent_items)).with_outputs(COUNTS, main=EVENTS)
        active = frequent[EVENTS] | "MinUserEvents" >> beam.FlatMap(
            _min_user_events, self.min_user_events).with_outputs(COUNTS, main=EVENTS)
        counts = (rated[COUNTS], frequent[COUNTS], active[COUNTS]) | "Counts" >> beam.Flatten()
        return {EVENTS: active[EVENTS], COUNTS: counts}


# ------------------------------------------------------------------------------------- vocabularies, range


class _SortedDistinct(beam.CombineFn):
    def create_accumulator(self):
        return pa.array([], pa.string())

    def add_input(self, distinct, values):
        return pc.unique(pa.concat_arrays([distinct, values]))

    def merge_accumulators(self, accumulators):
        return pc.unique(pa.concat_arrays(list(accumulators)))

    def extract_output(self, distinct):
        return distinct.take(pc.sort_indices(distinct))


def _distinct(element: tuple[int, pa.Table], column: str) -> pa.Array:
    return pc.unique(element[1].column(column).combine_chunks())


class SortedDistinct(beam.PTransform):
    """``(bucket, table)`` -> one Arrow array: the distinct values of ``column``, sorted by code point.

    On items it builds the vocabulary (item index = position + 1; 0 is padding), on users the user index.
    """

    def __init__(self, column: str):
        super().__init__()
        self.column = column

    def expand(self, buckets):
        return (
            buckets
            | "Distinct" >> beam.Map(_distinct, self.column)
            | "MergeSorted" >> beam.CombineGlobally(_SortedDistinct())
        )


def _bucket_range(bucket: int, events: pa.Table) -> tuple[int | None, int | None]:
    bounds = pc.min_max(events.column("timestamp")).as_py()
    return bounds["min"], bounds["max"]


def _merge_ranges(ranges) -> tuple[int | None, int | None]:
    ranges = [r for r in ranges if r[0] is not None]
    if not ranges:
        return None, None
    return min(r[0] for r in ranges), max(r[1] for r in ranges)


class TimeRange(beam.PTransform):
    """``(bucket, table)`` -> one ``(timestamp_min, timestamp_max)`` of all events, ``(None, None)`` if none."""

    def expand(self, buckets):
        return (
            buckets
            | "BucketRange" >> beam.MapTuple(_bucket_range)
            | "MergeRanges" >> beam.CombineGlobally(_merge_ranges)
        )


# ---------------------------------------------------------------------------------------------- sequences


class GroupPerUser(beam.PTransform):
    """``(bucket, table)`` (or ``(bucket, path)`` of a spilled table) -> tables with one row per user
    (``user_index, user_id, item_index, timestamp``), events in (timestamp, input position) order. ``vocab`` and
    ``users`` are SortedDistinct outputs."""

    def __init__(self, vocab, users):
        super().__init__()
        self.vocab, self.users = vocab, users

    def expand(self, buckets):
        return buckets | "Sequences" >> beam.Map(
            lambda element, vocab, users: tables.sequences(events_of(element[1]), vocab, users),
            vocab=AsSingleton(self.vocab), users=AsSingleton(self.users),
        )


class AddTemporalFeatures(beam.PTransform):
    """Sequence tables -> the same with the contract's time features; ``time_range`` is a TimeRange output."""

    def __init__(self, time_range):
        super().__init__()
        self.time_range = time_range

    def expand(self, seqs):
        return seqs | "Features" >> beam.Map(
            lambda t, bounds: tables.add_temporal_features(t, *bounds), bounds=AsSingleton(self.time_range)
        )


class AssignSplit(beam.PTransform):
    """Sequence tables -> final rows (``SEQUENCE_SCHEMA``) with ``train_end`` and ``valid_end``."""

    def __init__(self, method: str, cutoff: int | None):
        super().__init__()
        self.method, self.cutoff = method, cutoff

    def expand(self, seqs):
        return seqs | "Split" >> beam.Map(tables.assign_split, self.method, self.cutoff)


# ------------------------------------------------------------------------------------------ stats, outputs


class Summarize(beam.PTransform):
    """Partial counts of every stage -> one stats.json mapping (conservation identity asserted)."""

    def __init__(self, time_range):
        super().__init__()
        self.time_range = time_range

    def expand(self, counts):
        return (
            counts
            | "MergeCounts" >> beam.CombineGlobally(merge_counts)
            | "Finalize" >> beam.Map(finalize, time_range=AsSingleton(self.time_range))
        )


def vocab_json(vocab: pa.Array) -> str:
    return json.dumps({"padding_index": PADDING_INDEX, "items": vocab.to_pylist()}, ensure_ascii=False)


def _write_small_file(text: str, path: str) -> str:
    """One small file written whole (atomically, local or gs://); a retried bundle rewrites the same bytes."""
    storage.write_text(path, text + "\n")
    return path


def _write_bucket_sequences(seqs: pa.Table, output: str, num_buckets: int):
    """One bucket's sequences as ``sequences-BBBBB-of-NNNNN.parquet`` (the bucket of its users), written as the
    bucket completes; a bucket left without users writes nothing."""
    if seqs.num_rows:
        bucket = int(tables.user_buckets(seqs.column("user_id").combine_chunks()[:1], num_buckets)[0])
        yield write_table(storage.join(output, f"{SEQUENCES_PREFIX}-{bucket:05d}-of-{num_buckets:05d}.parquet"), seqs)


class WriteOutputs(beam.PTransform):
    """``{"sequences", "dead_letters", "vocab", "stats"}`` -> the files of docs/contracts.md in ``output``.
    ``bucket_files`` (the number of user buckets): one sequences file per bucket, written where it is made,
    instead of ``num_shards`` files assembled through a GroupByKey."""

    def __init__(self, output: str, num_shards: int, bucket_files: int | None = None):
        super().__init__()
        self.output, self.num_shards, self.bucket_files = output, num_shards, bucket_files

    def expand(self, outputs):
        out = self.output
        if self.bucket_files:
            write_sequences = "WriteSequences" >> beam.FlatMap(_write_bucket_sequences, out, self.bucket_files)
        else:
            write_sequences = "WriteSequences" >> beam.io.WriteToParquetBatched(
                storage.join(out, SEQUENCES_PREFIX), schema=SEQUENCE_SCHEMA, codec="snappy",
                file_name_suffix=".parquet", num_shards=self.num_shards)
        return {
            "sequences": outputs["sequences"] | write_sequences,
            "dead_letters": outputs["dead_letters"]
            | "DeadLetterJson" >> beam.Map(json.dumps, ensure_ascii=False)
            | "WriteDeadLetters" >> beam.io.WriteToText(storage.join(out, DEAD_LETTER_PREFIX),
                                                        file_name_suffix=".jsonl"),
            "vocab": outputs["vocab"] | "VocabJson" >> beam.Map(vocab_json)
            | "WriteVocab" >> beam.Map(_write_small_file, storage.join(out, VOCAB)),
            "stats": outputs["stats"] | "StatsJson" >> beam.Map(json.dumps, indent=2)
            | "WriteStats" >> beam.Map(_write_small_file, storage.join(out, STATS)),
        }
