"""Each composite PTransform on its own, on DirectRunner's engine, with TestPipeline + assert_that."""

from __future__ import annotations

import datetime

import apache_beam as beam
import pyarrow as pa
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from preprocessing import schema, tables
from preprocessing.config import PreprocessConfig
from preprocessing.sources import list_sources
from preprocessing.stats import PreprocessError, finalize
from preprocessing.transforms import (
    COUNTS,
    DEAD_LETTERS,
    EVENTS,
    AddTemporalFeatures,
    AssignSplit,
    DeduplicateEvents,
    FilterSparse,
    GroupByUserBucket,
    GroupPerUser,
    ParseAndValidate,
    SortedDistinct,
    Summarize,
    TimeRange,
    _FrequentItems,
    _SortedDistinct,
)


def pipeline():
    return BeamTestPipeline(runner="FnApiRunner")


def events(*rows) -> pa.Table:
    """Events from (user, item, timestamp, row) tuples, all in file 0."""
    users, items, stamps, positions = zip(*rows, strict=True) if rows else ((), (), (), ())
    return pa.Table.from_arrays(
        [pa.array(users, pa.string()), pa.array(items, pa.string()), pa.array(stamps, pa.int64()),
         pa.array([0] * len(rows), pa.int32()), pa.array(positions, pa.int64())],
        schema=schema.EVENT_SCHEMA,
    )


def rows(pcoll, *columns):
    """A PCollection of tables (or (key, table) pairs) -> tuples of ``columns`` per row."""
    def explode(element):
        table = element[1] if isinstance(element, tuple) else element
        return [tuple(r[c] for c in columns) for r in table.to_pylist()]
    return pcoll | beam.FlatMap(explode)


def keyed(table: pa.Table, bucket: int = 0):
    return [(bucket, table)]


def test_parse_and_validate_reads_every_file_with_dead_letters_and_counts(tmp_path):
    (tmp_path / "a.csv").write_text("user_id,item_id,timestamp\nü,映画,5\nu2,i2,-1\n")
    (tmp_path / "b.csv").write_bytes(b"garbage\n\xff\xfe\x00\n\n")  # all bad: foreign header, binary
    sources = list_sources(str(tmp_path / "*.csv"), "auto")
    with pipeline() as p:
        out = p | ParseAndValidate(sources, PreprocessConfig(max_timestamp=10**9))
        assert_that(rows(out[EVENTS], "user", "item", "timestamp", "file", "row"),
                    equal_to([("ü", "映画", 5, 0, 2)]), label="events")
        assert_that(out[DEAD_LETTERS] | beam.Map(lambda d: (d["source"].rsplit("/", 1)[1], d["line"], d["reason"])),
                    equal_to([("a.csv", 3, "timestamp_negative"), ("b.csv", 1, "header_mismatch"),
                              ("b.csv", 2, "undecodable_bytes")]), label="dead")
        rows_read = out[COUNTS] | beam.Map(lambda c: c.get("input_rows", 0)) | beam.CombineGlobally(sum)
        assert_that(rows_read, equal_to([4]), label="counts")


def test_group_by_user_bucket_puts_each_user_in_one_element():
    batch1 = events(("a", "x", 1, 1), ("b", "x", 2, 2), ("c", "y", 3, 3))
    batch2 = events(("a", "y", 4, 4), ("c", "z", 5, 5))
    with pipeline() as p:
        grouped = p | beam.Create([batch1, batch2]) | GroupByUserBucket(num_buckets=2)
        users_per_bucket = grouped | beam.MapTuple(lambda b, t: sorted(set(t.column("user").to_pylist())))
        assert_that(users_per_bucket | beam.FlatMap(lambda users: users), equal_to(["a", "b", "c"]), label="once")
        assert_that(rows(grouped, "user", "row"), equal_to([("a", 1), ("b", 2), ("c", 3), ("a", 4), ("c", 5)]))


def test_deduplicate_keeps_the_first_copy_and_counts_the_rest():
    table = events(("u", "i", 5, 9), ("u", "i", 5, 2), ("u", "i", 6, 3), ("u", "j", 5, 4), ("v", "i", 5, 5),
                   ("u", "i", 5, 7))
    with pipeline() as p:
        out = p | beam.Create(keyed(table)) | DeduplicateEvents()
        assert_that(rows(out[EVENTS], "user", "item", "timestamp", "row"),
                    equal_to([("u", "i", 5, 2), ("u", "i", 6, 3), ("u", "j", 5, 4), ("v", "i", 5, 5)]))
        assert_that(out[COUNTS], equal_to([{"duplicate_rows": 2}]), label="counts")


def test_filter_sparse_counts_items_over_all_buckets_then_users():
    # item "x" has 2 events, but in two buckets: it must survive min_item_count=2. User "s" (single event)
    # and user "b" (whose only other item "rare" is dropped) fall under min_user_events=2.
    bucket0 = events(("a", "x", 1, 1), ("a", "y", 2, 2), ("s", "y", 3, 3))
    bucket1 = events(("b", "x", 4, 4), ("b", "rare", 5, 5), ("c", "y", 6, 6), ("c", "y", 7, 7))
    with pipeline() as p:
        out = p | beam.Create([(0, bucket0), (1, bucket1)]) | FilterSparse(None, 2, 2)
        assert_that(rows(out[EVENTS], "user", "item"), equal_to([("a", "x"), ("a", "y"), ("c", "y"), ("c", "y")]))
        totals = out[COUNTS] | beam.FlatMap(lambda c: c["filtered_reasons"].items()) | beam.CombinePerKey(sum)
        assert_that(totals, equal_to([("min_rating", 0), ("min_item_count", 1), ("min_user_events", 2)]),
                    label="counts")


def test_filter_sparse_min_rating():
    table = events(("a", "x", 1, 1), ("a", "y", 2, 2)).append_column("rating", pa.array([5.0, 2.0]))
    with pipeline() as p:
        out = p | beam.Create(keyed(table)) | FilterSparse(4.0, 1, 1)
        assert_that(rows(out[EVENTS], "item"), equal_to([("x",)]))


def test_sorted_distinct_and_time_range_are_global():
    b0 = events(("é", "b", 30, 1), ("a", "ä", 10, 2))
    b1 = events(("z", "B", 20, 3), ("a2", "b", 40, 4))
    with pipeline() as p:
        buckets = p | beam.Create([(0, b0), (1, b1)])
        vocab = buckets | "Items" >> SortedDistinct("item")
        assert_that(vocab | beam.Map(lambda a: a.to_pylist()), equal_to([["B", "b", "ä"]]), label="vocab")
        assert_that(buckets | TimeRange(), equal_to([(10, 40)]), label="range")


def test_empty_input_gives_empty_vocabulary_and_no_time_range():
    with pipeline() as p:
        nothing = p | beam.Create([(0, events())])
        assert_that(nothing | SortedDistinct("item") | beam.Map(len), equal_to([0]), label="vocab")
        assert_that(nothing | TimeRange(), equal_to([(None, None)]), label="range")


def test_group_per_user_orders_ties_by_input_position():
    # Three events at t=5 for user "u": input order 3, 1, 2 -> items c, a, b; "w" is a single-event user.
    table = events(("u", "c", 5, 3), ("w", "a", 1, 9), ("u", "a", 5, 1), ("u", "z", 2, 8), ("u", "b", 5, 2))
    with pipeline() as p:
        vocab = p | "Vocab" >> beam.Create([pa.array(["a", "b", "c", "z"])])
        users = p | "Users" >> beam.Create([pa.array(["u", "w"])])
        seqs = p | beam.Create(keyed(table)) | GroupPerUser(vocab, users)
        assert_that(rows(seqs, "user_index", "user_id", "item_index", "timestamp"),
                    equal_to([(0, "u", [4, 1, 2, 3], [2, 5, 5, 5]), (1, "w", [1], [1])]))


def sequences_table(*timestamps: list[int]) -> pa.Table:
    return pa.table({
        "user_index": pa.array(range(len(timestamps)), pa.int64()),
        "user_id": pa.array([f"u{i}" for i in range(len(timestamps))]),
        "item_index": pa.array([[1] * len(t) for t in timestamps], pa.list_(pa.int32())),
        "timestamp": pa.array(timestamps, pa.list_(pa.int64())),
    })


def test_temporal_features():
    monday_noon = int(datetime.datetime(2024, 1, 1, 12, tzinfo=datetime.UTC).timestamp())
    stamps = [monday_noon, monday_noon + 7200, monday_noon + 7200 + 86400 * 6]
    with pipeline() as p:
        bounds = p | "Bounds" >> beam.Create([(monday_noon, stamps[-1])])
        out = p | beam.Create([sequences_table(stamps, [monday_noon])]) | AddTemporalFeatures(bounds)
        assert_that(rows(out, "seconds_since_prev", "hour_of_day", "day_of_week", "timestamp_normalized"), equal_to([
            ([0, 7200, 518400], [12, 14, 14], [0, 0, 6], [0.0, pytest.approx(7200 / 525600), 1.0]),
            ([0], [12], [0], [0.0]),
        ]))
        assert_that(out | beam.FlatMap(lambda t: t.column("log_hours_since_prev").to_pylist()),
                    equal_to([[0.0, pytest.approx(1.0986123, rel=1e-6), pytest.approx(4.9767337, rel=1e-6)], [0.0]]),
                    label="log_hours")


@pytest.mark.parametrize("method, cutoff, expected", [
    ("leave_one_out", None, [(1, 2), (0, 0), (0, 1)]),
    ("temporal", 25, [(1, 2), (0, 1), (0, 0)]),
    ("temporal", 5, [(0, 0), (0, 0), (0, 0)]),
])
def test_assign_split(method, cutoff, expected):
    seqs = sequences_table([10, 20, 30], [10], [30, 40])
    seqs = seqs.append_column("timestamp_normalized", pa.array([[0.0] * 3, [0.0], [0.0] * 2], pa.list_(pa.float32())))
    for name, kind in [("seconds_since_prev", pa.int64()), ("log_hours_since_prev", pa.float32()),
                       ("hour_of_day", pa.int8()), ("day_of_week", pa.int8())]:
        seqs = seqs.append_column(name, pa.array([[0] * 3, [0], [0] * 2], pa.list_(kind)))
    with pipeline() as p:
        out = p | beam.Create([seqs]) | AssignSplit(method, cutoff)
        assert_that(out | beam.Map(lambda t: t.schema.equals(schema.SEQUENCE_SCHEMA)), equal_to([True]), label="schema")
        assert_that(rows(out, "train_end", "valid_end"), equal_to(expected))


def test_summarize_derives_stats_and_checks_conservation():
    counts = [{"input_files": 1, "input_rows": 7, "dead_letter_reasons": {"empty_user": 1}},
              {"duplicate_rows": 1}, {"filtered_reasons": {"min_item_count": 1}},
              {"items": 2, "sequence_length_hist": {2: 1}}, {"sequence_length_hist": {2: 1}}]
    with pipeline() as p:
        stats = p | "Counts" >> beam.Create(counts) | Summarize(p | "Range" >> beam.Create([(3, 9)]))
        assert_that(stats | beam.Map(lambda s: (s["input_rows"], s["interactions"], s["users"], s["dead_letter_rows"],
                                                s["sequence_length"]["p50"], s["timestamp_min"])),
                    equal_to([(7, 4, 2, 1, 2, 3)]))
    with pytest.raises(PreprocessError, match="row accounting broken: input_rows 8"):
        finalize({"input_rows": 8, "sequence_length_hist": {2: 2}}, (1, 2))


def combine(fn: beam.CombineFn, partials: list[list]):
    """Run ``fn`` the way a runner does over several bundles: one accumulator per partial, then one merge."""
    accumulators = []
    for inputs in partials:
        accumulator = fn.create_accumulator()
        for value in inputs:
            accumulator = fn.add_input(accumulator, value)
        accumulators.append(accumulator)
    return fn.extract_output(fn.merge_accumulators(iter(accumulators)))


def item_counts(*items: str) -> pa.Table:
    return tables.item_counts(events(*((f"u{n}", item, n, n) for n, item in enumerate(items))))


@pytest.mark.parametrize("fn, inputs, expected", [
    # "x" and "y" reach min_count 3 only over three partials, "z" never (2), "w" within one partial.
    (_FrequentItems(3), [item_counts("x", "y"), item_counts("x", "y", "z"), item_counts("x", "y", "z"),
                         item_counts("w", "w", "w")], {"w", "x", "y"}),
    # Sorted by code point over every partial.
    (_SortedDistinct(), [pa.array(["b", "a"]), pa.array(["é", "a"]), pa.array(["B", "c"]), pa.array(["c"])],
     ["B", "a", "b", "c", "é"]),
])
def test_combiners_merge_several_partial_accumulators_like_one(fn, inputs, expected):
    """Every split of the inputs into non-empty partials gives what one accumulator over all of them gives."""
    def output(partials):
        values = combine(fn, partials).to_pylist()
        return set(values) if isinstance(expected, set) else values

    assert output([inputs]) == expected
    for partials in ([[v] for v in inputs], [inputs[:1], inputs[1:3], inputs[3:]], [inputs[2:], inputs[:2]]):
        assert output(partials) == expected, partials
