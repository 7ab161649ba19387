"""Parse and validate blocks of raw rows, vectorised with pyarrow.compute.

A block (a few MiB of CSV/TSV lines, or a Parquet record batch) becomes a ``ParsedBlock``: the valid events as
an Arrow table (``schema.EVENT_SCHEMA``) and a dead letter for every other row, so that
``rows == events + dead letters`` holds for every block. Lines are cut into fields by Arrow's CSV reader;
Python loops run only over bad rows, and over a whole block only when Arrow cannot keep one row per line (a stray
quote or a carriage return inside a line). Nothing here does I/O or knows about Beam.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from core.configs import ConfigError
from preprocessing.config import PreprocessConfig
from preprocessing.schema import EVENT_SCHEMA, RATING, REASONS, dead_letter

# Strings Arrow's float cast accepts and nothing else (no spaces, hex, underscores).
_NUMBER = r"(?i)^[+-]?((\d+\.?\d*|\.\d+)(e[+-]?\d+)?|nan|inf|infinity)$"
# C0 controls, DEL, C1 controls and the Unicode line/paragraph separators: never part of a real id (NUL ends C
# strings, the others hide in logs or break lines in JSON-lines readers and str.splitlines).
_CONTROL = "[\\x00-\\x1f\\x7f-\\x9f\u2028\u2029]"
UNIT_SECONDS = {"s": 1.0, "ms": 1e3, "us": 1e6}
# Read in another unit, a timestamp is plausible from here to max_timestamp (older logs in ms/us are rare; a
# seconds value read as ms lands in January 1970).
PLAUSIBLE_SINCE = 315_532_800  # 1980-01-01
_REASON_CODES = list(REASONS)


@dataclass
class ParsedBlock:
    events: pa.Table  # valid events, schema.EVENT_SCHEMA (+ rating when min_rating is set)
    dead_letters: list[dict] = field(default_factory=list)  # schema.dead_letter records
    blank_lines: int = 0  # empty or whitespace-only lines: not rows, counted apart

    @property
    def input_rows(self) -> int:
        return self.events.num_rows + len(self.dead_letters)

    def counts(self) -> dict:
        """This block's share of stats.json."""
        return {
            "input_rows": self.input_rows,
            "blank_lines": self.blank_lines,
            "dead_letter_reasons": dict(Counter(d["reason"] for d in self.dead_letters)),
        }


def event_schema(cfg: PreprocessConfig) -> pa.Schema:
    return EVENT_SCHEMA.append(RATING) if cfg.min_rating is not None else EVENT_SCHEMA


def empty_block(cfg: PreprocessConfig, dead_letters: list[dict] | None = None) -> ParsedBlock:
    return ParsedBlock(event_schema(cfg).empty_table(), dead_letters or [])


# ----------------------------------------------------------------------------------------------- columns


def find_columns(found: list[str], cfg: PreprocessConfig, source: str) -> dict[str, int]:
    """Role -> field position, from a header (or, with header=False, from the configured positions).

    A column matches its exact name or, for RecBole atomic files (``user_id:token``), the part before ':'.
    Raises ConfigError naming the missing column and listing the columns found.
    """
    if not cfg.header:
        return {role: int(cfg.columns[role]) for role in cfg.roles}
    names = [name.strip().lstrip("\ufeff") for name in found]
    stems = [name.split(":")[0] for name in names]
    positions = {}
    for role in cfg.roles:
        wanted = cfg.columns[role]
        if wanted in names:
            positions[role] = names.index(wanted)
        elif wanted in stems:
            positions[role] = stems.index(wanted)
        else:
            shown = ", ".join(repr(n[:40]) for n in names[:20]) + (", ..." if len(names) > 20 else "")
            raise ConfigError(
                f"--columns: no column {wanted!r} for {role} in {source}; columns found: {shown}"
            )
    return positions


@dataclass(frozen=True)
class TextLayout:
    """How to cut one CSV/TSV file's lines into fields, learnt from its first non-blank line."""

    delimiter: str
    quoting: bool  # CSV honours double quotes; TSV splits on every tab
    positions: dict[str, int]  # role -> field position
    field_count: int  # fields per row: those of the header, or (header=False) of the first row
    header: str | None  # the header line; later copies of it are dead letters

    @classmethod
    def for_file(cls, fmt: str, cfg: PreprocessConfig, first_line: str, source: str) -> TextLayout:
        delimiter, quoting = ("\t", False) if fmt == "tsv" else (",", True)
        found = split_fields(first_line, delimiter, quoting) or []
        positions = find_columns(found, cfg, source)
        if max(positions.values()) >= len(found):
            raise ConfigError(f"--columns: field positions {positions} but the first line of {source} has "
                              f"{len(found)} fields")
        return cls(delimiter, quoting, positions, len(found), first_line if cfg.header else None)


def split_fields(line: str, delimiter: str, quoting: bool) -> list[str] | None:
    """One line's fields; None if its CSV quoting is broken."""
    if not (quoting and '"' in line):
        return line.split(delimiter)
    try:
        return next(csv.reader([line], delimiter=delimiter, strict=True), [])
    except csv.Error:
        return None


# ------------------------------------------------------------------------------------------------- text


def decode_lines(block: bytes) -> tuple[pa.StringArray, list[tuple[int, str]]]:
    """The lines of a block of whole lines, without line ends (null where not UTF-8), and the position and
    escaped text of each undecodable line."""
    try:
        block.decode("utf-8")
    except UnicodeDecodeError:
        return _decode_line_by_line(block)
    # Valid UTF-8: the lines are zero-copy slices of the block (each keeps its line end until the rtrim).
    ends = np.flatnonzero(np.frombuffer(block, np.uint8) == ord("\n")) + 1
    if not block.endswith(b"\n"):
        ends = np.append(ends, len(block))
    offsets = np.concatenate([[0], ends]).astype(np.int32)
    lines = pa.StringArray.from_buffers(len(ends), pa.py_buffer(offsets), pa.py_buffer(block))
    return pc.utf8_rtrim(lines, characters="\r\n"), []


def _decode_line_by_line(block: bytes) -> tuple[pa.StringArray, list[tuple[int, str]]]:
    pieces = block.split(b"\n")
    if block.endswith(b"\n"):
        pieces.pop()
    decoded: list[str | None] = []
    bad = []
    for i, piece in enumerate(pieces):
        try:
            decoded.append(piece.decode("utf-8").rstrip("\r"))
        except UnicodeDecodeError:
            decoded.append(None)
            bad.append((i, piece.decode("utf-8", "backslashreplace")))
    return pa.array(decoded, pa.string()), bad


class TextFileParser:
    """Parses one CSV/TSV file block by block, in order. Its first non-blank line is the header (or, with
    header=False, the first row, which fixes the field count).

    A file whose header lacks a configured column has every line, the header included, dead-lettered as
    ``header_mismatch`` (the first file is checked before the pipeline starts, as a usage error).
    """

    def __init__(self, fmt: str, cfg: PreprocessConfig, file_index: int, source: str):
        self.fmt, self.cfg, self.file_index, self.source = fmt, cfg, file_index, source
        self.layout: TextLayout | None = None
        self.mismatch: ConfigError | None = None  # why the header does not fit, once known

    def parse(self, block: bytes, first_line: int) -> ParsedBlock:
        """Parse ``block`` (whole lines; line numbers from ``first_line``)."""
        cfg, source = self.cfg, self.source
        text, undecodable = decode_lines(block)
        dead = [dead_letter(source, first_line + i, raw, "undecodable_bytes") for i, raw in undecodable]
        numbers = np.arange(first_line, first_line + len(text), dtype=np.int64)
        present = _true(pc.is_valid(text))
        blank = present & _true(pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(text)), 0))
        rows = present & ~blank
        if self.layout is None and self.mismatch is None and rows.any():
            first = int(np.argmax(rows))
            try:
                self.layout = TextLayout.for_file(self.fmt, cfg, text[first].as_py(), source)
                rows[first] = not cfg.header  # a header is not a row
            except ConfigError as exc:
                self.mismatch = exc
        header = self.layout.header if self.layout is not None else None
        problems = [
            ("line_too_long", _true(pc.greater(pc.binary_length(text), cfg.max_line_bytes))),
            ("repeated_header", _true(pc.equal(text, header)) if header is not None else None),
            ("header_mismatch", np.full(len(text), self.mismatch is not None)),
        ]
        reason = _first_reason(len(text), problems)
        bad = rows & (reason >= 0)
        keep = np.flatnonzero(rows & ~bad)
        if len(keep):  # rows exist, so the layout is known
            # A carriage return inside a line would end a row for Arrow's CSV reader.
            stray_cr = block.count(b"\r") != block.count(b"\r\n")
            out, reason[keep] = _split(text.take(keep), numbers[keep], self.layout, stray_cr)
        else:
            out = RawColumns({}, numbers[keep], text.take(keep))
        bad = rows & (reason >= 0)
        dead += [dead_letter(source, int(numbers[i]), text[int(i)].as_py(), _REASON_CODES[reason[i]])
                 for i in np.flatnonzero(bad)]
        block_out = validate(out, cfg, self.file_index, source) if out.columns else empty_block(cfg)
        block_out.dead_letters[:0] = dead
        block_out.blank_lines = int(blank.sum())
        return block_out


def _split(text: pa.Array, numbers: np.ndarray, layout: TextLayout, stray_cr: bool) -> tuple[RawColumns, np.ndarray]:
    """Cut lines into the role columns of the rows that fit, and a reason code per line (-1: it fits)."""
    cut = None if stray_cr else _split_arrow(text, layout)
    columns, reason = cut if cut is not None else _split_python(text, layout)
    fits = reason < 0
    return RawColumns(columns, numbers[fits], text.filter(pa.array(fits))), reason


def _split_arrow(text: pa.Array, layout: TextLayout) -> tuple[dict[str, pa.Array], np.ndarray] | None:
    """Arrow's CSV reader on the lines, joined again. None if it did not return one row per line (a stray
    quote can make it read on across a line end): the caller then parses line by line in Python."""
    names = [f"f{i}" for i in range(layout.field_count)]
    misfits: list[int | None] = []

    def skip(row) -> str:
        misfits.append(row.number)
        return "skip"

    joined = pc.binary_join(pa.ListArray.from_arrays(pa.array([0, len(text)], pa.int32()), text), "\n")
    try:
        table = _read_csv(joined[0].as_buffer(), names, layout, skip)
    except pa.ArrowInvalid:  # e.g. a lone byte order mark reads as an empty file
        return None
    if table.num_rows + len(misfits) != len(text) or None in misfits:
        return None
    reason = np.full(len(text), -1, np.int16)
    reason[np.array(misfits, np.int64) - 1] = _REASON_CODES.index("wrong_field_count")
    columns = {role: table.column(names[pos]).combine_chunks() for role, pos in layout.positions.items()}
    return columns, reason


def _read_csv(data: pa.Buffer, names: list[str], layout: TextLayout, skip) -> pa.Table:
    """Arrow's CSV reader: every field a string, one row per line, misfit rows passed to ``skip``."""
    return pacsv.read_csv(
        pa.BufferReader(data),
        read_options=pacsv.ReadOptions(column_names=names, use_threads=False, block_size=1 << 30),
        parse_options=pacsv.ParseOptions(delimiter=layout.delimiter, quote_char='"' if layout.quoting else False,
                                         newlines_in_values=False, ignore_empty_lines=False,
                                         invalid_row_handler=skip),
        convert_options=pacsv.ConvertOptions(
            column_types=dict.fromkeys(names, pa.string()), strings_can_be_null=False,
            quoted_strings_can_be_null=False,
            include_columns=[names[pos] for pos in dict.fromkeys(layout.positions.values())]),
    )


def _split_python(text: pa.Array, layout: TextLayout) -> tuple[dict[str, pa.Array], np.ndarray]:
    """Python's csv module, one line at a time, so a stray quote never eats the next line."""
    values: dict[str, list[str]] = {role: [] for role in layout.positions}
    reason = np.full(len(text), -1, np.int16)
    for i, line in enumerate(text.to_pylist()):
        fields = split_fields(line, layout.delimiter, layout.quoting)
        if fields is None:
            reason[i] = _REASON_CODES.index("malformed_quotes")
        elif len(fields) != layout.field_count:
            reason[i] = _REASON_CODES.index("wrong_field_count")
        else:
            for role, pos in layout.positions.items():
                values[role].append(fields[pos])
    return {role: pa.array(v, pa.string()) for role, v in values.items()}, reason


# ---------------------------------------------------------------------------------------------- parquet


def parse_record_batch(batch: pa.RecordBatch, names: dict[str, str] | None, first_row: int,
                       cfg: PreprocessConfig, file_index: int, source: str) -> ParsedBlock:
    """Validate one Parquet record batch; ``names`` maps role -> column name (None: the file's schema lacks a
    configured column, so every row is a ``header_mismatch``); rows are numbered from ``first_row``."""
    numbers = np.arange(first_row, first_row + batch.num_rows, dtype=np.int64)
    if names is None:
        raw = RawColumns({}, numbers, batch)
        return empty_block(cfg, [dead_letter(source, int(numbers[i]), raw.raw_text(i), "header_mismatch")
                                 for i in range(batch.num_rows)])
    columns = {role: batch.column(name) for role, name in names.items()}
    return validate(RawColumns(columns, numbers, batch), cfg, file_index, source)


# --------------------------------------------------------------------------------------------- validate


@dataclass
class RawColumns:
    """Role columns of rows that have the right shape, before their values are checked."""

    columns: dict[str, pa.Array]  # role -> values as read (strings for CSV/TSV, typed for Parquet)
    rows: np.ndarray  # (n,) int64 line or row numbers
    source_rows: pa.Array | pa.RecordBatch  # each row's text (CSV/TSV) or source columns (Parquet, shown as JSON)

    def raw_text(self, i: int) -> str:
        if isinstance(self.source_rows, pa.RecordBatch):
            return json.dumps(self.source_rows.slice(i, 1).to_pylist()[0], default=str, ensure_ascii=False)
        return self.source_rows[i].as_py()


def validate(raw: RawColumns, cfg: PreprocessConfig, file_index: int, source: str) -> ParsedBlock:
    """Check ids, timestamps (and ratings); valid rows become events, the others dead letters."""
    n = len(raw.rows)
    user = _ids(raw.columns["user"])
    item = _ids(raw.columns["item"])
    value, numeric = to_float(raw.columns["timestamp"])
    with np.errstate(invalid="ignore", over="ignore"):
        seconds = np.floor(value / UNIT_SECONDS[cfg.timestamp_unit])
        future = numeric & (seconds > cfg.max_timestamp)
        # Implausible as read: in the future, or (ms/us) before 1980; it may be plausible in another unit.
        implausible = future | (numeric & (seconds < PLAUSIBLE_SINCE) & (cfg.timestamp_unit != "s"))

        def looks_like(unit: str) -> np.ndarray | None:
            if unit == cfg.timestamp_unit:
                return None
            other = value / UNIT_SECONDS[unit]
            return implausible & (other >= PLAUSIBLE_SINCE) & (other <= cfg.max_timestamp)

        problems = [
            ("empty_user", _true(pc.equal(pc.utf8_length(user), 0))),
            ("empty_item", _true(pc.equal(pc.utf8_length(item), 0))),
            ("id_too_long", _true(pc.greater(pc.utf8_length(user), cfg.max_id_chars))
             | _true(pc.greater(pc.utf8_length(item), cfg.max_id_chars))),
            ("id_control_characters", _true(pc.match_substring_regex(user, _CONTROL))
             | _true(pc.match_substring_regex(item, _CONTROL))),
            ("timestamp_not_numeric", ~numeric),
            ("timestamp_not_finite", ~np.isfinite(value)),
            ("timestamp_negative", value < 0),
            *((f"timestamp_looks_like_{unit}", looks_like(unit)) for unit in UNIT_SECONDS),
            ("timestamp_in_future", future),
        ]
        if cfg.min_rating is not None:
            rating, rating_numeric = to_float(raw.columns["rating"])
            problems.append(("rating_not_numeric", ~(rating_numeric & np.isfinite(rating))))
    reason = _first_reason(n, problems)
    good = reason < 0
    keep = pa.array(good)
    columns = [
        user.filter(keep),
        item.filter(keep),
        pa.array(seconds[good].astype(np.int64)),
        pa.array(np.full(int(good.sum()), file_index, np.int32)),
        pa.array(raw.rows[good]),
    ]
    if cfg.min_rating is not None:
        columns.append(pa.array(rating[good]))
    events = pa.Table.from_arrays(columns, schema=event_schema(cfg))
    dead = [dead_letter(source, int(raw.rows[i]), raw.raw_text(int(i)), _REASON_CODES[reason[i]])
            for i in np.flatnonzero(~good)]
    return ParsedBlock(events, dead)


def to_float(values: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(float64 values, mask of entries that are numbers) for numeric, timestamp or string columns."""
    kind = values.type
    if pa.types.is_dictionary(kind):
        values, kind = values.dictionary_decode(), kind.value_type
    if pa.types.is_timestamp(kind):
        values = pc.cast(pc.cast(values, pa.timestamp("s"), safe=False), pa.int64())
    elif pa.types.is_string(kind) or pa.types.is_large_string(kind):
        values = pc.utf8_trim_whitespace(values)
        try:
            values = pc.cast(values, pa.float64())
        except pa.ArrowInvalid:  # some entries are not numbers: cast only the ones that are
            ok = pc.fill_null(pc.match_substring_regex(values, _NUMBER), False)
            values = pc.cast(pc.if_else(ok, values, pa.scalar(None, pa.string())), pa.float64())
    elif not (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind)):
        return np.full(len(values), np.nan), np.zeros(len(values), bool)
    numbers = pc.cast(values, pa.float64())
    return pc.fill_null(numbers, np.nan).to_numpy(zero_copy_only=False), _true(pc.is_valid(numbers))


def _ids(values: pa.Array) -> pa.Array:
    """Ids as trimmed strings; a missing id becomes '' (so it fails the empty-id check)."""
    if pa.types.is_dictionary(values.type):
        values = values.dictionary_decode()
    return pc.fill_null(pc.utf8_trim_whitespace(pc.cast(values, pa.string())), "")


def _first_reason(n: int, problems: list[tuple[str, np.ndarray | None]]) -> np.ndarray:
    """Per row, the index in REASONS of the first problem that applies, or -1."""
    reason = np.full(n, -1, np.int16)
    for name, mask in reversed(problems):
        if mask is not None:
            reason[mask] = _REASON_CODES.index(name)
    return reason


def _true(mask: pa.Array) -> np.ndarray:
    """A boolean Arrow array as numpy, nulls as False."""
    return pc.fill_null(mask, False).to_numpy(zero_copy_only=False)
