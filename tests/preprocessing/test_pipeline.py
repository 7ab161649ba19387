"""``preprocessing.pipeline.run`` end to end on DirectRunner's engine: the output directory of docs/contracts.md
against an independent reference, hostile inputs, and whole-input failures with clear messages."""

from __future__ import annotations

import collections
import json
import random
import tempfile
from pathlib import Path

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.metrics.metric import MetricsFilter
from hypothesis import given, settings
from hypothesis import strategies as st

from core.configs import ConfigError
from preprocessing import transforms
from preprocessing.config import PreprocessConfig
from preprocessing.pipeline import PreprocessError, build, pipeline_options, remote_runner, run
from preprocessing.schema import SEQUENCE_SCHEMA
from preprocessing.sources import list_sources
from preprocessing.transforms import NAMESPACE

NOW = 2_000_000_000  # max_timestamp for every test, so results do not depend on the clock
HEADER = "user_id,item_id,timestamp"


def config(**kw) -> PreprocessConfig:
    return PreprocessConfig(max_timestamp=NOW, **kw)


def read_output(out: Path) -> dict:
    """Everything a consumer reads from a preprocessed directory."""
    files = sorted(out.glob("sequences-*.parquet"))
    dead = [json.loads(line) for f in sorted(out.glob("dead_letter-*.jsonl")) for line in f.read_text().splitlines()]
    return {
        "names": sorted(p.name for p in out.iterdir()),
        "sequences": pq.read_table(files).sort_by("user_index"),
        "schema": pq.read_schema(files[0]),
        "vocab": json.loads((out / "vocab.json").read_text()),
        "split": json.loads((out / "split.json").read_text()),
        "stats": json.loads((out / "stats.json").read_text()),
        "config": json.loads(config.read_text()) if (config := out / "preprocess_config.json").exists() else None,
        "dead": dead,
    }


def assert_accounted(stats: dict, dead: list[dict]) -> None:
    assert stats["input_rows"] == (stats["interactions"] + stats["dead_letter_rows"] + stats["duplicate_rows"]
                                   + stats["filtered_rows"])
    assert collections.Counter(d["reason"] for d in dead) == stats["dead_letter_reasons"]


def reference(rows: list[tuple[str, str, int, tuple[int, int]]], min_items: int, min_events: int):
    """Plain-Python preprocessing of (user, item, timestamp, position) rows: per-user (item, timestamp) lists."""
    seen, unique = set(), []
    for row in sorted(rows, key=lambda r: r[3]):
        if row[:3] not in seen:
            seen.add(row[:3])
            unique.append(row)
    item_count = collections.Counter(r[1] for r in unique)
    unique = [r for r in unique if item_count[r[1]] >= min_items]
    user_count = collections.Counter(r[0] for r in unique)
    unique = [r for r in unique if user_count[r[0]] >= min_events]
    per_user = collections.defaultdict(list)
    for user, item, stamp, position in unique:
        per_user[user].append((stamp, position, item))
    return {user: sorted(events) for user, events in per_user.items()}, len(rows) - len(seen)


def test_matches_an_independent_reference_on_two_files(tmp_path):
    rng = random.Random(7)
    users = ["u1", "u2", "ü", "用户", "u5", "solo"]
    items = [f"i{k}" for k in range(8)] + ["Heat, The (1995)"]
    rows, lines = [], {"a.csv": [HEADER], "b.csv": [HEADER]}
    for n in range(300):
        name = "a.csv" if n < 170 else "b.csv"
        user = "solo" if n == 5 else rng.choice(users[:-1])
        row = (user, rng.choice(items[: 2 + n % 8] + items[-1:]), rng.randrange(1000, 1040))  # many ties
        for _ in range(2 if n % 17 == 0 else 1):  # exact duplicates
            lines[name].append(",".join(f'"{v}"' if "," in str(v) else str(v) for v in row))
            rows.append((*row, (0 if name == "a.csv" else 1, len(lines[name]))))
    lines["b.csv"].append("u1,i1,not-a-time")
    for name, content in lines.items():
        (tmp_path / name).write_text("\r\n".join(content) + "\r\n")
    out = tmp_path / "out"

    stats = run(str(tmp_path / "*.csv"), str(out), config(min_item_count=3, min_user_events=2))

    expected, duplicates = reference(rows, 3, 2)
    got = read_output(out)
    assert got["stats"] == stats and got["schema"].equals(SEQUENCE_SCHEMA)
    assert got["vocab"] == {"padding_index": 0, "items": sorted({e[2] for ev in expected.values() for e in ev})}
    index = {item: k + 1 for k, item in enumerate(got["vocab"]["items"])}
    seqs = got["sequences"].to_pylist()
    assert [s["user_id"] for s in seqs] == sorted(expected) and [s["user_index"] for s in seqs] == list(range(len(seqs)))
    for s in seqs:
        assert s["item_index"] == [index[e[2]] for e in expected[s["user_id"]]]
        assert s["timestamp"] == [e[0] for e in expected[s["user_id"]]]
        assert (s["train_end"], s["valid_end"]) == (len(s["timestamp"]) - 2, len(s["timestamp"]) - 1)
    assert stats["duplicate_rows"] == duplicates > 0
    assert stats["dead_letter_reasons"] == {"timestamp_not_numeric": 1}
    assert stats["input_rows"] == len(rows) + 1 and stats["input_files"] == 2
    assert "solo" not in expected
    assert_accounted(stats, got["dead"])
    assert got["dead"] == [{"source": str(tmp_path / "b.csv"), "line": len(lines["b.csv"]), "raw": "u1,i1,not-a-time",
                            "reason": "timestamp_not_numeric"}]
    assert got["split"] == {"method": "leave_one_out", "cutoff": None, "protocol": "ours"}
    assert got["config"]["min_item_count"] == 3 and got["config"]["max_timestamp"] == NOW



def probed(combine_fn: type[beam.CombineFn], log: Path) -> type[beam.CombineFn]:
    """A test-only probe: ``combine_fn`` that appends to ``log`` how many non-empty accumulators each merge got."""
    class Probed(combine_fn):
        def merge_accumulators(self, accumulators):
            accumulators = list(accumulators)
            with open(log, "a") as f:
                f.write(f"{combine_fn.__name__} {sum(len(a) > 0 for a in accumulators)}\n")
            return super().merge_accumulators(accumulators)
    return Probed


def test_global_combiners_merge_bundles_into_the_reference_result(tmp_path, monkeypatch):
    """With ``--direct_num_workers=3`` the FnApiRunner cuts the bucket elements after the GroupByKey into three
    bundles, each pre-combined on its own, so the item counts and the distinct items and users reach
    ``merge_accumulators`` as several non-empty partials (the probe shows it); the output must still be the
    plain-Python reference. Items reach min_item_count only summed over users of different buckets."""
    log = tmp_path / "merges.log"
    monkeypatch.setattr(transforms, "_FrequentItems", probed(transforms._FrequentItems, log))
    monkeypatch.setattr(transforms, "_SortedDistinct", probed(transforms._SortedDistinct, log))
    rng = random.Random(3)
    rows = []
    for file in range(3):
        lines = [HEADER]
        for _ in range(80):
            row = (f"user{rng.randrange(40)}", f"item{min(rng.randrange(30), rng.randrange(30))}",
                   rng.randrange(1000, 1100))
            lines.append(",".join(map(str, row)))
            rows.append((*row, (file, len(lines))))
        (tmp_path / f"part-{file}.csv").write_text("\n".join(lines) + "\n")

    run(str(tmp_path / "part-*.csv"), str(tmp_path / "out"), config(min_item_count=4, min_user_events=3),
        beam_args=["--direct_num_workers=3"])

    expected, _ = reference(rows, 4, 3)
    got = read_output(tmp_path / "out")
    assert got["vocab"]["items"] == sorted({e[2] for events in expected.values() for e in events})
    index = {item: k + 1 for k, item in enumerate(got["vocab"]["items"])}
    assert {s["user_id"]: s["item_index"] for s in got["sequences"].to_pylist()} == {
        user: [index[e[2]] for e in events] for user, events in expected.items()}
    merged = collections.Counter(line.split()[0] for line in log.read_text().splitlines() if int(line.split()[1]) > 1)
    assert merged["_FrequentItems"] >= 1 and merged["_SortedDistinct"] >= 2, log.read_text()

def test_parquet_input_temporal_split_and_no_leftovers(tmp_path, monkeypatch):
    system_temp = tmp_path / "system-temp"
    system_temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(system_temp))
    pq.write_table(pa.table({
        "user_id": ["a"] * 4 + ["b"] * 3,
        "item_id": ["x", "y", "x", "y", "x", "y", "x"],
        "timestamp": pa.array([10, 20, 30, 40, 15, 25, 35], pa.int64()),
    }), tmp_path / "events.parquet")
    out = tmp_path / "out"

    stats = run(str(tmp_path / "events.parquet"), str(out), config(min_item_count=1, split="temporal", cutoff=26))

    got = read_output(out)
    assert [(s["user_id"], s["train_end"], s["valid_end"]) for s in got["sequences"].to_pylist()] == [
        ("a", 1, 2), ("b", 1, 2)]
    assert got["split"] == {"method": "temporal", "cutoff": 26, "protocol": "ours"}
    assert (stats["timestamp_min"], stats["timestamp_max"], stats["users"], stats["items"]) == (10, 40, 2, 2)
    assert got["names"] == ["_SUCCESS.json", "dead_letter-00000-of-00001.jsonl", "fingerprint.json",
                            "preprocess_config.json", *[f"sequences-0000{k}-of-00004.parquet" for k in range(4)],
                            "split.json", "stats.json", "vocab.json"]
    assert list(system_temp.iterdir()) == []  # no beam-temp directories left behind

    with pytest.raises(ConfigError, match="already holds preprocessed data"):
        run(str(tmp_path / "events.parquet"), str(out), config())


def hostile_corpus(root: Path) -> None:
    """One directory of the inputs a nightly job meets."""
    root.mkdir()
    good = [f"u{n % 4},i{n % 3},{1_000_000 + n}" for n in range(40)]
    (root / "01-clean.csv").write_text("\n".join([HEADER, *good]) + "\n")
    (root / "02-crlf-dup-headers.csv").write_bytes(
        ("\r\n".join([HEADER, *good[:5], HEADER, *good[5:10], HEADER]) + "\r\n").encode())
    (root / "03-malformed.csv").write_text("\n".join([
        HEADER, "u1,i1", "u1,i1,5,6", ",i1,5", "u1,,5", "u1,i1,NaN", "u1,i1,-3", "u1,i1,9e99", 'u1,"i1,5',
        "u1,i1,soon"]) + "\n")
    (root / "04-giant-fields.csv").write_text(f"{HEADER}\nu1,{'i' * 100_000},5\n{'u' * 2000},i1,5\nu1,i1,7\n")
    garbage = bytes(b for b in range(256) if b not in b"\r\n") * 4
    (root / "05-binary.csv").write_bytes(HEADER.encode() + b"\n" + garbage + b"\n\x00\xff,\x80,1\n")
    (root / "06-empty.csv").write_bytes(b"")
    (root / "07-ms.csv").write_text(f"{HEADER}\nu1,i1,1700000000000\n")


def test_hostile_corpus_is_fully_accounted_for(tmp_path):
    hostile_corpus(tmp_path / "in")
    out = tmp_path / "out"

    stats = run(str(tmp_path / "in"), str(out), config(min_item_count=1, min_user_events=1))

    got = read_output(out)
    assert_accounted(stats, got["dead"])
    assert stats["input_files"] == 7 and stats["interactions"] == 41 and stats["users"] == 4
    assert stats["duplicate_rows"] == 10  # 02 repeats rows of 01
    assert stats["dead_letter_reasons"] == {
        "empty_item": 1, "empty_user": 1, "id_too_long": 1, "line_too_long": 1, "malformed_quotes": 1,
        "repeated_header": 2, "timestamp_in_future": 1, "timestamp_looks_like_ms": 1, "timestamp_negative": 1,
        "timestamp_not_finite": 1, "timestamp_not_numeric": 1, "undecodable_bytes": 2, "wrong_field_count": 2,
    }
    giant = next(d for d in got["dead"] if d["reason"] == "line_too_long")
    assert giant["source"].endswith("04-giant-fields.csv") and giant["line"] == 2 and len(giant["raw"]) == 2000


@pytest.mark.parametrize("content, cfg, message", [
    (b"", {}, r"no rows in the input: 1 file\(s\) hold no data rows"),
    (f"{HEADER}\n\n".encode(), {}, r"no rows in the input"),
    (f"{HEADER}\nu1,i1,1700000000000\nu1,i2,1700000001000\n".encode(), {},
     "timestamps look like milliseconds: use --timestamp-unit ms"),
    (f"{HEADER}\nu1,i1,x\n,i2,5\n".encode(), {}, r"no valid rows: all 2 rows are dead letters"),
    (f"{HEADER}\nu1,i1,5\nu1,i2,6\nu1,i3,7\n".encode(), {}, "no interactions left after filtering"),
])
def test_unusable_input_fails_clearly_after_writing_dead_letters(tmp_path, content, cfg, message):
    (tmp_path / "events.csv").write_bytes(content)
    with pytest.raises(PreprocessError, match=message):
        run(str(tmp_path / "events.csv"), str(tmp_path / "out"), config(**cfg))
    # An unusable input never replaces the output: its dead letters and stats are kept aside for a person.
    assert not (tmp_path / "out").exists()
    got = read_output(tmp_path / "out.rejected")
    assert_accounted(got["stats"], got["dead"])
    assert got["config"] is None and "_SUCCESS.json" not in got["names"]


def test_all_rows_from_one_user(tmp_path):
    lines = [HEADER] + [f"only,i{n % 3},{100 + n}" for n in range(15)]
    (tmp_path / "one.csv").write_text("\n".join(lines))  # no final newline
    stats = run(str(tmp_path / "one.csv"), str(tmp_path / "out"), config())
    assert (stats["users"], stats["items"], stats["interactions"]) == (1, 3, 15)


def test_usage_errors_before_any_work(tmp_path):
    (tmp_path / "e.csv").write_text(f"{HEADER}\nu,i,1\n")
    with pytest.raises(ConfigError, match="no files match"):
        run(str(tmp_path / "*.tsv"), str(tmp_path / "out"), config())
    with pytest.raises(ConfigError, match="columns found: 'user_id', 'item_id', 'timestamp'"):
        run(str(tmp_path / "e.csv"), str(tmp_path / "out"), config(columns={"item": "sku"}))
    (tmp_path / "e.txt").write_text("x")
    with pytest.raises(ConfigError, match="pass --format csv, tsv or parquet"):
        run(str(tmp_path / "e.txt"), str(tmp_path / "out"), config())
    assert not (tmp_path / "out").exists()


LINE = st.one_of(
    st.builds(lambda u, i, t: f"{u},{i},{t}", st.sampled_from(["a", "b", "ü"]), st.sampled_from(["x", "y"]),
              st.integers(-5, 10**13)),
    st.text(alphabet=st.sampled_from(list('ab,"\r 9.é')), max_size=12),
    st.just(HEADER),
)


@settings(max_examples=5, deadline=None)
@given(lines=st.lists(LINE, max_size=25), files=st.integers(1, 2))
def test_fuzzed_corpus_never_crashes_and_every_row_is_accounted_for(lines, files):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for k in range(files):
            (root / f"in-{k}.csv").write_text("\n".join([HEADER, *lines[k::files]]) + "\n")
        out = root / "out"
        try:
            run(str(root / "in-*.csv"), str(out), config(min_item_count=1, min_user_events=1))
        except PreprocessError as exc:
            assert str(exc).startswith(("no rows", "no valid rows", "timestamps look like", "no interactions"))
            out = root / "out.rejected"  # kept aside, never published
        got = read_output(out)
        assert_accounted(got["stats"], got["dead"])


def test_beam_counters_agree_with_stats(tmp_path):
    (tmp_path / "e.csv").write_text("\n".join([
        HEADER, "a,x,1", "a,x,1", "a,y,2", "b,x,3", "b,rare,4", "c,x,5", "c,y,7", "bad,row", ",x,6", "a,x,1e99"]) + "\n")
    cfg = config(min_item_count=2, min_user_events=2)
    pipeline = beam.Pipeline(options=pipeline_options([]))
    build(pipeline, list_sources(str(tmp_path / "e.csv"), "auto"), str(tmp_path / "out"), cfg)
    result = pipeline.run()
    result.wait_until_finish()
    counters = {c.key.metric.name: c.committed for c in result.metrics().query(
        MetricsFilter().with_namespace(NAMESPACE))["counters"]}
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert counters == {
        "input_rows": stats["input_rows"], "dead_letter_rows": 3, "dead_letter_wrong_field_count": 1,
        "dead_letter_empty_user": 1, "dead_letter_timestamp_in_future": 1, "duplicate_rows": 1,
        "filtered_min_item_count": 1, "filtered_min_user_events": 1,
    }
    assert (stats["input_rows"], stats["interactions"]) == (10, 4)  # "rare" goes, then "b" has one event left


@pytest.mark.parametrize("beam_args, remote", [
    ((), None), (("--runner=DirectRunner",), None), (("--runner", "PrismRunner"), None),
    (("--runner=DataflowRunner", "--project=p", "--region=r"), "DataflowRunner"),
    (("--runner", "FlinkRunner"), "FlinkRunner"),
])
def test_which_runners_write_the_artifacts_uri(beam_args, remote):
    """A runner whose workers are other machines cannot write a task's local path (components/preprocess.py)."""
    assert remote_runner(beam_args) == remote
