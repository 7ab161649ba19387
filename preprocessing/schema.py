"""The preprocessed data directory's schemas (docs/contracts.md; its file names are ``core.contract``'s), and the
dead-letter reasons."""

from __future__ import annotations

import pyarrow as pa

PADDING_INDEX = 0

# One row per user.
SEQUENCE_SCHEMA = pa.schema([
    ("user_index", pa.int64()),
    ("user_id", pa.string()),
    ("item_index", pa.list_(pa.int32())),
    ("timestamp", pa.list_(pa.int64())),
    ("timestamp_normalized", pa.list_(pa.float32())),
    ("seconds_since_prev", pa.list_(pa.int64())),
    ("log_hours_since_prev", pa.list_(pa.float32())),
    ("hour_of_day", pa.list_(pa.int8())),
    ("day_of_week", pa.list_(pa.int8())),
    ("train_end", pa.int32()),
    ("valid_end", pa.int32()),
])

# Valid events between stages, one row per event. (file, row) is the event's position in the input: files in
# sorted order, row = line number (CSV/TSV) or 1-based row number (Parquet); it breaks timestamp ties.
EVENT_SCHEMA = pa.schema([
    ("user", pa.string()),
    ("item", pa.string()),
    ("timestamp", pa.int64()),
    ("file", pa.int32()),
    ("row", pa.int64()),
])
RATING = pa.field("rating", pa.float64())  # appended to EVENT_SCHEMA when min_rating is set

# Dead-letter reason codes, in the order they are checked (a row gets the first that applies).
REASONS = {
    "unreadable_file": "the file could not be opened or decoded as its format (one dead letter per file)",
    "line_too_long": "a CSV/TSV line longer than max_line_bytes",
    "undecodable_bytes": "a line that is not valid UTF-8",
    "repeated_header": "a copy of the header line after the first",
    "header_mismatch": "any line of a file whose header lacks a configured column, the header included",
    "malformed_quotes": "a CSV line whose quoting cannot be parsed",
    "wrong_field_count": "a different number of fields than the header",
    "empty_user": "missing or blank user id",
    "empty_item": "missing or blank item id",
    "id_too_long": "a user or item id longer than max_id_chars",
    "id_control_characters": "a user or item id holding control characters (C0, DEL, C1, U+2028/U+2029: NUL, "
                             "\\x01, \\x7f, ...)",
    "timestamp_not_numeric": "missing or non-numeric timestamp",
    "timestamp_not_finite": "NaN or infinite timestamp",
    "timestamp_negative": "timestamp before 1970",
    "timestamp_looks_like_s": "read as ms/us it falls before 1980, read as seconds it is plausible",
    "timestamp_looks_like_ms": "implausible in the configured unit but plausible in milliseconds",
    "timestamp_looks_like_us": "implausible in the configured unit but plausible in microseconds",
    "timestamp_in_future": "after max_timestamp",
    "rating_not_numeric": "missing or non-numeric rating (only read when min_rating is set)",
}
# Longest excerpt of a bad row kept in a dead letter.
MAX_RAW_CHARS = 2_000


def dead_letter(source: str, line: int, raw: str, reason: str) -> dict:
    """One dead-letter record as written to dead_letter-*.jsonl."""
    return {"source": source, "line": line, "raw": raw[:MAX_RAW_CHARS], "reason": reason}
