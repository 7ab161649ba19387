"""Input files: list them, check the first one before any work starts, and read each one as parsed blocks.

All I/O goes through Beam's ``FileSystems``, so local paths, ``gs://`` URIs and compressed files
(``.gz``, ``.bz2``, ``.zst``, ...) work the same way on every runner. A file is read sequentially by one worker;
a large input parallelises across files (a glob of shards).
"""

from __future__ import annotations

import logging
import os
import posixpath
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from core.configs import ConfigError
from preprocessing.config import PreprocessConfig
from preprocessing.parsing import (
    ParsedBlock,
    TextFileParser,
    empty_block,
    find_columns,
    parse_record_batch,
)
from preprocessing.schema import MAX_RAW_CHARS, dead_letter

log = logging.getLogger(__name__)

FORMAT_BY_SUFFIX = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".inter": "tsv", ".parquet": "parquet", ".pq": "parquet"}
BLOCK_BYTES = 8 << 20  # CSV/TSV bytes parsed at once: big enough for vectorised parsing, small enough for memory
PARQUET_BATCH_ROWS = 1 << 16
_READ_ERRORS = (OSError, EOFError, zlib.error, pa.ArrowException)  # a damaged file, not a bug in this code
_STRING_TYPES = (pa.types.is_string, pa.types.is_large_string)
_ID_TYPES = (*_STRING_TYPES, pa.types.is_integer)
_NUMBER_TYPES = (*_STRING_TYPES, pa.types.is_integer, pa.types.is_floating, pa.types.is_timestamp,
                 pa.types.is_decimal)  # strings are parsed as numbers row by row


@dataclass(frozen=True)
class Source:
    index: int  # position in the sorted file list: the first part of every event's input position
    path: str
    format: str  # csv, tsv or parquet


def list_sources(pattern: str, fmt: str) -> list[Source]:
    """The files matching ``pattern`` (a path, directory or glob; local or gs://), sorted, with their format."""
    if "://" not in pattern and os.path.isdir(pattern):
        pattern = os.path.join(pattern, "*")
    try:
        matched = FileSystems.match([pattern])[0].metadata_list
    except Exception as exc:  # noqa: BLE001 - Beam raises BeamIOError/IOError variants for a bad pattern
        raise ConfigError(f"--input: cannot list {pattern}: {exc}") from exc
    paths = sorted(m.path for m in matched if not posixpath.basename(m.path).startswith("."))
    if not paths:
        raise ConfigError(f"--input: no files match {pattern}")
    return [Source(i, path, fmt if fmt != "auto" else infer_format(path)) for i, path in enumerate(paths)]


def infer_format(path: str) -> str:
    name = posixpath.basename(path).lower()
    if CompressionTypes.detect_compression_type(name) != CompressionTypes.UNCOMPRESSED:
        name = posixpath.splitext(name)[0]
    fmt = FORMAT_BY_SUFFIX.get(posixpath.splitext(name)[1])
    if fmt is None:
        raise ConfigError(
            f"--format: cannot tell the format of {path} from its name; pass --format csv, tsv or parquet"
        )
    return fmt


def check_first_source(sources: list[Source], cfg: PreprocessConfig) -> None:
    """Raise ConfigError now if the first non-empty file lacks a configured column (it lists those found).

    Later files are checked as they are read: a mismatch there dead-letters that file's rows.
    """
    for source in sources:
        try:
            if source.format == "parquet":
                with FileSystems.open(source.path) as f:
                    parquet_columns(pq.read_schema(f), cfg, source.path)
                return
            if not cfg.header:
                return
            parser = TextFileParser(source.format, cfg, source.index, source.path)
            for first_line, block, oversized in text_blocks(source.path, cfg.max_line_bytes):
                if not oversized:
                    parser.parse(block, first_line)
                if parser.layout is not None:
                    return
                if parser.mismatch is not None:
                    raise parser.mismatch
        except _READ_ERRORS:
            return  # unreadable: the pipeline dead-letters it


def parquet_columns(schema: pa.Schema, cfg: PreprocessConfig, source: str) -> dict[str, str]:
    """Role -> column name in a Parquet schema; ConfigError if a column is missing or of an unusable type."""
    positions = find_columns(schema.names, cfg, source)
    names = {}
    for role, pos in positions.items():
        kind = schema.field(pos).type
        value_kind = kind.value_type if pa.types.is_dictionary(kind) else kind
        is_id = role in ("user", "item")
        if not any(check(value_kind) for check in (_ID_TYPES if is_id else _NUMBER_TYPES)):
            allowed = "strings or integers" if is_id else "numbers, timestamps or numeric strings"
            raise ConfigError(f"--columns: column {schema.names[pos]!r} ({role}) of {source} has type {kind}; "
                              f"it must hold {allowed}")
        names[role] = schema.names[pos]
    return names


def read_source(source: Source, cfg: PreprocessConfig) -> Iterator[ParsedBlock]:
    """Every row of one file as parsed blocks; a file that cannot be read further ends with one
    ``unreadable_file`` dead letter (line = the first row not read)."""
    read = _read_parquet if source.format == "parquet" else _read_text
    yield from read(source, cfg)


def _unreadable(source: Source, cfg: PreprocessConfig, line: int, exc: Exception) -> ParsedBlock:
    log.warning("cannot read %s past row %d: %s", source.path, line, exc)
    return empty_block(cfg, [dead_letter(source.path, line, f"{type(exc).__name__}: {exc}", "unreadable_file")])


def _read_parquet(source: Source, cfg: PreprocessConfig) -> Iterator[ParsedBlock]:
    row = 1
    try:
        for names, batch in _guarded(_parquet_batches(source, cfg)):
            yield parse_record_batch(batch, names, row, cfg, source.index, source.path)
            row += batch.num_rows
    except _ReadFailed as failed:
        yield _unreadable(source, cfg, row, failed.__cause__)


def _parquet_batches(source: Source, cfg: PreprocessConfig) -> Iterator[tuple[dict[str, str] | None, pa.RecordBatch]]:
    """(role -> column name, or None when the schema lacks a configured column; record batch) pairs."""
    with FileSystems.open(source.path) as f:
        parquet = pq.ParquetFile(f)
        try:
            names = parquet_columns(parquet.schema_arrow, cfg, source.path)
        except ConfigError:
            names = None  # every row becomes a header_mismatch dead letter
        for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=_unique(names)):
            yield names, batch


def _read_text(source: Source, cfg: PreprocessConfig) -> Iterator[ParsedBlock]:
    parser = TextFileParser(source.format, cfg, source.index, source.path)
    line = 1
    try:
        for line, block, oversized in _guarded(text_blocks(source.path, cfg.max_line_bytes)):
            if oversized:
                raw = block.decode("utf-8", "backslashreplace")
                yield empty_block(cfg, [dead_letter(source.path, line, raw, "line_too_long")])
            else:
                yield parser.parse(block, line)
    except _ReadFailed as failed:
        yield _unreadable(source, cfg, line, failed.__cause__)


class _ReadFailed(Exception):
    """Reading (not parsing) a file failed; the cause is the I/O or format error."""


def _guarded(items: Iterator) -> Iterator:
    """``items``, with read errors raised as _ReadFailed, so that errors while parsing stay bugs, not dead letters."""
    while True:
        try:
            item = next(items)
        except StopIteration:
            return
        except _READ_ERRORS as exc:
            raise _ReadFailed() from exc
        yield item


def text_blocks(path: str, max_line_bytes: int) -> Iterator[tuple[int, bytes, bool]]:
    """Yield ``(first_line_number, block, oversized)``: blocks of whole lines, or (oversized=True) the start of
    one line longer than ``max_line_bytes``, whose rest is skipped without ever being held in memory."""
    line = 1
    carry = b""
    skipping = None  # (line number, first bytes) of an oversized line being skipped
    with FileSystems.open(path) as f:
        first = True
        while chunk := f.read(BLOCK_BYTES):
            if first and chunk.startswith(b"\xef\xbb\xbf"):  # UTF-8 byte order mark
                chunk = chunk[3:]
            first = False
            if skipping is not None:
                end = chunk.find(b"\n")
                if end < 0:
                    continue
                yield skipping[0], skipping[1], True
                line, skipping, chunk = line + 1, None, chunk[end + 1:]
            buffer = carry + chunk
            cut = buffer.rfind(b"\n") + 1
            block, carry = buffer[:cut], buffer[cut:]
            if block:
                yield line, block, False
                line += block.count(b"\n")
            if len(carry) > max_line_bytes:
                skipping, carry = (line, carry[: MAX_RAW_CHARS * 4]), b""
    if skipping is not None:
        yield skipping[0], skipping[1], True
    elif carry:
        yield line, carry, False


def _unique(names: dict[str, str] | None) -> list[str] | None:
    return None if names is None else list(dict.fromkeys(names.values()))
