"""What verifying a published directory costs its readers (core.rundir.open_complete): every listed file hashed
against its marker, against the check readers made before (the marker and each file's size), on the real ML-1M
data directory and a ``best``-preset model directory, median of ``--rounds`` opens each, files in the page cache.

    .venv/bin/interest data fetch --dataset ml-1m --cache DIR && .venv/bin/interest preprocess \\
        --input DIR/ml-1m.parquet --output DIR/data
    .venv/bin/interest train --data DIR/data --preset best --output DIR/model --max-steps 2
    .venv/bin/python -m benchmarks.read_verification --data DIR/data --model DIR/model   # results/read_verification.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

from core import rundir, storage


def sizes_only(target: str) -> None:
    """The check before digests were verified: the marker, and every listed file present with its size."""
    complete = rundir.Complete(target, target, rundir.read_marker(target))
    present = storage.file_sizes(target)
    for name, entry in complete.files.items():
        assert present[storage.join(target, name)] == entry["size"]


def median_seconds(open_it, target: str, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        open_it(target)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a preprocessed ML-1M directory")
    parser.add_argument("--model", required=True, help="a model directory trained on it")
    parser.add_argument("--rounds", type=int, default=20, help="opens of each directory per method (median)")
    parser.add_argument("--output", default="benchmarks/results/read_verification.json", help="the JSON result")
    args = parser.parse_args()
    results = {}
    for label, target in (("data", args.data), ("model", args.model)):
        complete = rundir.open_complete(target)  # warm the page cache once
        size = sum(entry["size"] for entry in complete.files.values())
        verified = median_seconds(rundir.open_complete, target, args.rounds)
        before = median_seconds(sizes_only, target, args.rounds)
        results[label] = {"dir": target, "files": len(complete.files), "bytes": size, "verified_seconds": verified,
                          "sizes_only_seconds": before, "added_seconds": verified - before,
                          "verified_mb_per_second": size / 1e6 / verified}
        print(f"{label}: {len(complete.files)} files, {size / 1e6:.1f} MB: verified {verified * 1e3:.1f} ms, sizes "
              f"only {before * 1e3:.1f} ms ({size / 1e6 / verified:.0f} MB/s hashed)")
    storage.write_json(args.output, {"command": "python -m benchmarks.read_verification", "rounds": args.rounds,
                                     "machine": platform.platform(), "results": results})
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
