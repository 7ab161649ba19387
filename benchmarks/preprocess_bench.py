"""Throughput of the Beam preprocessing (``preprocessing.pipeline.run``) on MovieLens-1M, 1,000,209 rows.

The whole ``run`` is timed (pipeline construction, Beam's in-process runner, every output written), median of
``--repeats``. Target: at least 60k input rows/s on 2 cores (a simple per-element Beam pipeline does ~38k).
The run also checks the usual ML-1M statistics: 6,040 users, 3,416 items, 999,611 interactions.

    .venv/bin/python -m benchmarks.preprocess_bench                  # writes benchmarks/results/preprocess.json
    .venv/bin/python -m benchmarks.preprocess_bench --format csv     # the same events as a CSV file
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import apache_beam as beam
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from core import storage
from preprocessing import datasets
from preprocessing.config import PreprocessConfig
from preprocessing.pipeline import DEFAULT_RUNNER, run

TARGET_ROWS_PER_SECOND = 60_000
ML1M = {"users": 6_040, "items": 3_416, "interactions": 999_611}


def input_file(events: Path, fmt: str, tmp: Path) -> Path:
    """The events in ``fmt``: the cached Parquet itself, or a CSV/TSV copy of it with a header line."""
    if fmt == "parquet":
        return events
    table = pq.read_table(events)
    delimiter = "\t" if fmt == "tsv" else ","
    path = tmp / f"events.{fmt}"
    with open(path, "wb") as f:
        f.write((delimiter.join(table.column_names) + "\n").encode())
        pacsv.write_csv(table, f, pacsv.WriteOptions(delimiter=delimiter, include_header=False,
                                                     quoting_style="none" if fmt == "tsv" else "needed"))
    return path


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="ml-1m", choices=sorted(datasets.DATASETS), help="events to preprocess")
    parser.add_argument("--format", default="parquet", choices=["parquet", "csv", "tsv"], help="input format")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs; the median is reported")
    parser.add_argument("--output", default="benchmarks/results/preprocess.json", help="where the JSON result goes")
    args = parser.parse_args(argv)
    logging.getLogger("apache_beam").setLevel(logging.WARNING)
    events = datasets.fetch(datasets.DATASETS[args.dataset])
    timings, stats = [], {}
    with tempfile.TemporaryDirectory(prefix="preprocess-bench-") as tmp:
        source = input_file(events, args.format, Path(tmp))
        for repeat in range(args.repeats):
            start = time.perf_counter()
            stats = run(str(source), str(Path(tmp, f"out-{repeat}")), PreprocessConfig())
            timings.append(time.perf_counter() - start)
    seconds = statistics.median(timings)
    counts = {k: stats[k] for k in ML1M}
    if args.dataset == "ml-1m" and counts != ML1M:
        raise SystemExit(f"ML-1M statistics differ from the usual ones: got {counts}, expected {ML1M}")
    rate = stats["input_rows"] / seconds
    result = {
        "benchmark": "preprocess",
        "description": f"{args.dataset}, {stats['input_rows']:,} rows, {args.format}",
        "dataset": args.dataset, "format": args.format, "runner": DEFAULT_RUNNER,
        "input_rows": stats["input_rows"], **counts, "dead_letter_rows": stats["dead_letter_rows"],
        "seconds_median": seconds, "seconds_all": timings, "rows_per_second": rate,
        "target_rows_per_second": TARGET_ROWS_PER_SECOND, "meets_target": rate >= TARGET_ROWS_PER_SECOND,
        "cpus": os.cpu_count(), "platform": platform.platform(), "beam": beam.__version__, "pyarrow": pa.__version__,
    }
    storage.write_json(args.output, result)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    main()
