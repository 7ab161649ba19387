"""Parsing and validation of raw rows: every row becomes an event or a dead letter with a reason."""

from __future__ import annotations

import tempfile
from pathlib import Path
from unittest import mock

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.configs import ConfigError
from preprocessing import sources
from preprocessing.config import PreprocessConfig
from preprocessing.parsing import TextFileParser, TextLayout, parse_record_batch
from preprocessing.schema import REASONS
from preprocessing.sources import Source, read_source

CFG = PreprocessConfig(max_timestamp=2_000_000_000)
HEADER = "user_id,item_id,timestamp"


def parse(text: str | bytes, fmt: str = "csv", cfg: PreprocessConfig = CFG):
    data = text.encode() if isinstance(text, str) else text
    return TextFileParser(fmt, cfg, 0, "f.csv").parse(data, 1)


def reasons(block) -> dict[int, str]:
    return {d["line"]: d["reason"] for d in block.dead_letters}


def test_clean_rows_with_crlf_bom_quotes_and_unicode():
    block = parse('user_id,item_id,timestamp\r\nu1,"Heat, The (1995)",10\r\n  ü☃ , 映画 , 12.9 \r\n\r\n')
    assert block.events.to_pylist() == [
        {"user": "u1", "item": "Heat, The (1995)", "timestamp": 10, "file": 0, "row": 2},
        {"user": "ü☃", "item": "映画", "timestamp": 12, "file": 0, "row": 3},
    ]
    assert block.dead_letters == [] and block.blank_lines == 1 and block.input_rows == 2


@pytest.mark.parametrize("line, reason", [
    ("user_id,item_id,timestamp", "repeated_header"),
    ("u1,i1", "wrong_field_count"),
    ("u1,i1,5,extra", "wrong_field_count"),
    ('u1,"unterminated,5', "malformed_quotes"),
    (",i1,5", "empty_user"),
    ("u1,  ,5", "empty_item"),
    ("u1,i1,", "timestamp_not_numeric"),
    ("u1,i1,yesterday", "timestamp_not_numeric"),
    ("u1,i1,0x10", "timestamp_not_numeric"),
    ("u1,i1,NaN", "timestamp_not_finite"),
    ("u1,i1,1e400", "timestamp_not_finite"),
    ("u1,i1,-1", "timestamp_negative"),
    ("u1,i1,1700000000000", "timestamp_looks_like_ms"),
    ("u1,i1,9e18", "timestamp_in_future"),
    ("u1," + "x" * 1025 + ",5", "id_too_long"),
    ("u1,i1,5" + " " * 70_000, "line_too_long"),
])
def test_each_bad_row_is_a_dead_letter_with_its_reason(line, reason):
    block = parse(f"{HEADER}\nu0,i0,1\n{line}\nu2,i2,2\n")
    assert reasons(block) == {3: reason}
    assert [r["row"] for r in block.events.to_pylist()] == [2, 4]
    assert block.dead_letters[0]["source"] == "f.csv" and block.dead_letters[0]["raw"].startswith(line[:50])


def test_undecodable_bytes_keep_their_line_and_escaped_text():
    block = parse(b"user_id,item_id,timestamp\nu\xff1,i1,5\nu2,i2,6\n")
    assert block.dead_letters == [{"source": "f.csv", "line": 2, "raw": "u\\xff1,i1,5", "reason": "undecodable_bytes"}]
    assert block.events.column("row").to_pylist() == [3]


def test_unknown_column_is_a_usage_error_listing_the_columns_found():
    cfg = PreprocessConfig(columns={"user": "uid"})
    with pytest.raises(ConfigError, match=r"no column 'uid' for user in f.csv; columns found: 'user_id', 'item_id'"):
        TextLayout.for_file("csv", cfg, HEADER, "f.csv")


def test_a_later_file_with_a_foreign_header_is_dead_lettered_whole():
    block = parse("a,b,c\n1,2,3\n")
    assert sorted(reasons(block).items()) == [(1, "header_mismatch"), (2, "header_mismatch")]


def test_recbole_type_suffixes_and_tsv():
    block = parse("user_id:token\titem_id:token\trating:float\ttimestamp:float\n1\t2\t5\t978300760\n", fmt="tsv")
    assert block.events.to_pylist() == [{"user": "1", "item": "2", "timestamp": 978300760, "file": 0, "row": 2}]


def test_headerless_file_uses_positions_and_first_row_field_count():
    cfg = PreprocessConfig(header=False, columns={"user": "0", "item": "1", "timestamp": "3"},
                           max_timestamp=2_000_000_000)
    block = parse("u1\ti1\t4\t100\nu2\ti2\t5\nu3\ti3\t3\t300\n", fmt="tsv", cfg=cfg)
    assert [(r["user"], r["timestamp"], r["row"]) for r in block.events.to_pylist()] == [("u1", 100, 1), ("u3", 300, 3)]
    assert reasons(block) == {2: "wrong_field_count"}


def test_millisecond_unit_floors_to_seconds():
    cfg = PreprocessConfig(timestamp_unit="ms", max_timestamp=2_000_000_000)
    block = parse(f"{HEADER}\nu1,i1,1700000000999\nu1,i1,1700000000000.5\n", cfg=cfg)
    assert block.events.column("timestamp").to_pylist() == [1_700_000_000, 1_700_000_000]


def test_min_rating_reads_and_checks_the_rating_column():
    cfg = PreprocessConfig(min_rating=4.0, max_timestamp=2_000_000_000)
    block = parse("user_id,item_id,timestamp,rating\nu1,i1,5,4.5\nu1,i2,6,n/a\n", cfg=cfg)
    assert block.events.column("rating").to_pylist() == [4.5]
    assert reasons(block) == {3: "rating_not_numeric"}


def test_parquet_batch_with_typed_and_missing_values():
    batch = pa.record_batch({
        "user_id": pa.array([1, 2, None, 4], pa.int64()),
        "item_id": pa.array(["a", None, "c", "d"]),
        "timestamp": pa.array([10.0, 11.0, 12.0, float("nan")]),
    })
    names = {"user": "user_id", "item": "item_id", "timestamp": "timestamp"}
    block = parse_record_batch(batch, names, 1, CFG, 3, "e.parquet")
    assert block.events.to_pylist() == [{"user": "1", "item": "a", "timestamp": 10, "file": 3, "row": 1}]
    assert reasons(block) == {2: "empty_item", 3: "empty_user", 4: "timestamp_not_finite"}
    assert block.dead_letters[0]["raw"] == '{"user_id": 2, "item_id": null, "timestamp": 11.0}'


def write(path: Path, data: bytes) -> Source:
    path.write_bytes(data)
    return Source(0, str(path), "csv")


def test_giant_line_is_skipped_without_holding_it(tmp_path):
    giant = b"u9,i9," + b"7" * 300_000
    source = write(tmp_path / "g.csv", b"user_id,item_id,timestamp\nu1,i1,5\n" + giant + b"\nu2,i2,6\n")
    with mock.patch.object(sources, "BLOCK_BYTES", 1000):
        blocks = list(read_source(source, PreprocessConfig(max_line_bytes=5000, max_timestamp=2_000_000_000)))
    dead = [d for b in blocks for d in b.dead_letters]
    assert [(d["line"], d["reason"]) for d in dead] == [(3, "line_too_long")]
    assert len(dead[0]["raw"]) == 2000 and dead[0]["raw"].startswith("u9,i9,777")
    assert [r for b in blocks for r in b.events.column("row").to_pylist()] == [2, 4]


def test_a_damaged_parquet_file_is_one_dead_letter(tmp_path):
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 not really parquet")
    blocks = list(read_source(Source(0, str(tmp_path / "bad.parquet"), "parquet"), CFG))
    assert [(d["line"], d["reason"]) for b in blocks for d in b.dead_letters] == [(1, "unreadable_file")]


# Lines a hostile producer might write: valid rows, near-misses, quotes, tabs, CRs, binary, header copies.
LINES = st.one_of(
    st.builds(lambda u, i, t: f"{u},{i},{t}".encode(), st.text(min_size=0, max_size=6),
              st.text(min_size=0, max_size=6), st.integers(-10, 10**13)),
    st.text(alphabet=st.sampled_from(list('ab,"\t\r x1.e-é☃\x00')), max_size=40).map(str.encode),
    st.binary(max_size=40),
    st.just(HEADER.encode()),
    st.just(b""),
    st.binary(min_size=70, max_size=300).map(lambda b: b.replace(b"\n", b"x")),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines=st.lists(LINES.map(lambda b: b.replace(b"\n", b" ")), max_size=30), crlf=st.booleans(),
       block_bytes=st.sampled_from([16, 64, 1 << 20]))
def test_random_rows_never_crash_and_are_all_accounted_for(lines, crlf, block_bytes):
    end = b"\r\n" if crlf else b"\n"
    data = HEADER.encode() + end + end.join(lines) + (end if lines else b"")
    cfg = PreprocessConfig(max_line_bytes=64, max_id_chars=4, max_timestamp=2_000_000_000)
    with tempfile.TemporaryDirectory() as tmp, mock.patch.object(sources, "BLOCK_BYTES", block_bytes):
        blocks = list(read_source(write(Path(tmp) / "r.csv", data), cfg))
    events = [r for b in blocks for r in b.events.column("row").to_pylist()]
    dead = [d for b in blocks for d in b.dead_letters]
    blank = sum(b.blank_lines for b in blocks)
    assert sum(b.input_rows for b in blocks) == len(events) + len(dead) == len(lines) - blank
    seen = events + [d["line"] for d in dead]
    assert len(set(seen)) == len(seen) and all(2 <= n <= len(lines) + 1 for n in seen)
    assert all(d["reason"] in REASONS for d in dead)


@pytest.mark.parametrize("control", ["\x00", "\x01", "\x7f", "\x85", "\u2028", "\u2029"],
                         ids=["NUL", "SOH", "DEL", "NEL", "LS", "PS"])
def test_ids_with_control_characters_are_dead_letters(tmp_path, control):
    """C0 (NUL, \\x01), DEL, C1 (\\x85) and U+2028/U+2029 (line breaks to str.splitlines) inside user or item
    ids, in CSV on Arrow's fast path, in CSV on the line-by-line path a stray quote forces, and in Parquet."""
    rows = [f"u{control}1,i1,5", f'u2,"i{control}2",6']
    for name, extra in (("fast.csv", []), ("slow.csv", ['u3,"unterminated,7'])):
        source = write(tmp_path / name, "\n".join([HEADER, "u0,i0,1", *rows, *extra, "u9,i9,9"]).encode() + b"\n")
        blocks = list(read_source(source, CFG))
        dead = {d["line"]: d["reason"] for b in blocks for d in b.dead_letters}
        assert {line: dead[line] for line in (3, 4)} == {3: "id_control_characters", 4: "id_control_characters"}
        assert sorted(r for b in blocks for r in b.events.column("row").to_pylist()) == [2, 5 + len(extra)]
    batch = pa.record_batch({"user_id": [f"u{control}1", "u2", "u3"], "item_id": ["i1", f"i{control}2", "i3"],
                             "timestamp": [5, 6, 7]})
    block = parse_record_batch(batch, {"user": "user_id", "item": "item_id", "timestamp": "timestamp"}, 1, CFG, 0,
                               "e.parquet")
    assert reasons(block) == {1: "id_control_characters", 2: "id_control_characters"}
    assert block.events.column("user").to_pylist() == ["u3"]
