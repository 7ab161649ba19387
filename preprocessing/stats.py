"""stats.json: counts emitted as data by every stage, merged, finalised and checked.

Every stage emits partial counts (``{"input_rows": 3, "dead_letter_reasons": {"empty_user": 1}}``);
``merge_counts`` sums them (it is associative and commutative, so Beam may combine in any order) and
``finalize`` derives the contract's fields and asserts the conservation identity
``input_rows == interactions + dead_letter_rows + duplicate_rows + filtered_rows``.
"""

from __future__ import annotations

from collections.abc import Iterable

PERCENTILES = (50, 90, 99)
# The input is unusable as a whole when at least this share of its rows has timestamps of another unit.
WRONG_UNIT_SHARE = 0.5
UNIT_NAMES = {"s": "seconds", "ms": "milliseconds", "us": "microseconds"}


class PreprocessError(RuntimeError):
    """The input cannot produce a usable data set as a whole, or the pipeline broke an invariant."""


def merge_counts(parts: Iterable[dict]) -> dict:
    """Sum numbers key by key, recursively for nested dicts."""
    total: dict = {}
    for part in parts:
        for key, value in part.items():
            if isinstance(value, dict):
                total[key] = merge_counts([total.get(key, {}), value])
            else:
                total[key] = total.get(key, 0) + value
    return total


def finalize(counts: dict, time_range: tuple[int | None, int | None]) -> dict:
    """The stats.json mapping from merged counts and the timestamp range of the kept events."""
    reasons = dict(sorted(counts.get("dead_letter_reasons", {}).items()))
    filtered = counts.get("filtered_reasons", {})
    lengths = {int(k): v for k, v in counts.get("sequence_length_hist", {}).items()}
    digest = counts.get("content_digest", 0) % (1 << 256)
    users = sum(lengths.values())
    interactions = sum(n * c for n, c in lengths.items())
    stats = {
        "input_files": counts.get("input_files", 0),
        "input_rows": counts.get("input_rows", 0),
        "dead_letter_rows": sum(reasons.values()),
        "dead_letter_reasons": reasons,
        "duplicate_rows": counts.get("duplicate_rows", 0),
        "filtered_rows": sum(filtered.values()),
        "filtered_reasons": {k: filtered.get(k, 0) for k in ("min_rating", "min_item_count", "min_user_events")},
        "interactions": interactions,
        "users": users,
        "items": counts.get("items", 0),
        "timestamp_min": time_range[0],
        "timestamp_max": time_range[1],
        "sequence_length": sequence_length_summary(lengths),
        "blank_lines": counts.get("blank_lines", 0),
        # Order-independent digest of the kept rows (preprocessing.tables.content_digest): the data lineage.
        "content_digest": f"{digest:064x}",
    }
    check_conservation(stats)
    return stats


def sequence_length_summary(histogram: dict[int, int]) -> dict:
    """p50/p90/p99 (the smallest length covering that share of users), max and mean of sequence lengths."""
    users = sum(histogram.values())
    if not users:
        return {**{f"p{q}": 0 for q in PERCENTILES}, "max": 0, "mean": 0.0}
    summary = {}
    for q in PERCENTILES:
        covered = 0
        for length in sorted(histogram):
            covered += histogram[length]
            if covered * 100 >= q * users:
                summary[f"p{q}"] = length
                break
    summary["max"] = max(histogram)
    summary["mean"] = round(sum(n * c for n, c in histogram.items()) / users, 3)
    return summary


def check_conservation(stats: dict) -> None:
    """Every input row is an interaction, a dead letter, a duplicate or filtered: nothing is lost."""
    accounted = stats["interactions"] + stats["dead_letter_rows"] + stats["duplicate_rows"] + stats["filtered_rows"]
    if stats["input_rows"] != accounted:
        raise PreprocessError(
            f"row accounting broken: input_rows {stats['input_rows']} != interactions {stats['interactions']} "
            f"+ dead_letter_rows {stats['dead_letter_rows']} + duplicate_rows {stats['duplicate_rows']} "
            f"+ filtered_rows {stats['filtered_rows']} = {accounted}"
        )


def check_usable(stats: dict, output: str, min_item_count: int, min_user_events: int) -> None:
    """Raise PreprocessError with what to do when the input as a whole gives no data set; ``output`` is where
    the run's dead letters are."""
    rows = stats["input_rows"]
    reasons = stats["dead_letter_reasons"]
    dead_letters = f"{output.rstrip('/')}/dead_letter-*.jsonl"
    if rows == 0:
        raise PreprocessError(
            f"no rows in the input: {stats['input_files']} file(s) hold no data rows "
            f"({stats['blank_lines']} blank lines)"
        )
    for unit, name in UNIT_NAMES.items():
        wrong = reasons.get(f"timestamp_looks_like_{unit}", 0)
        if wrong >= WRONG_UNIT_SHARE * rows:
            raise PreprocessError(
                f"timestamps look like {name}: use --timestamp-unit {unit} ({wrong} of {rows} rows are implausible "
                f"in the configured unit but plausible in {name}; see {dead_letters})"
            )
    if stats["dead_letter_rows"] == rows:
        top = ", ".join(f"{r}: {n}" for r, n in sorted(reasons.items(), key=lambda kv: -kv[1])[:3])
        raise PreprocessError(f"no valid rows: all {rows} rows are dead letters ({top}); see {dead_letters}")
    if stats["interactions"] == 0:
        raise PreprocessError(
            f"no interactions left after filtering: {rows - stats['dead_letter_rows']} valid rows, "
            f"{stats['duplicate_rows']} duplicates, {stats['filtered_rows']} filtered "
            f"(min_item_count={min_item_count}, min_user_events={min_user_events}); lower them with --set"
        )
