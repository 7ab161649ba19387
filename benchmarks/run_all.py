"""``make bench``: preprocessing, training and evaluation benchmarks in one run, then one Markdown table.

    .venv/bin/python -m benchmarks.run_all                 # writes benchmarks/results/{preprocess,train,eval}.json
    .venv/bin/python -m benchmarks.run_all --train-args "--presets baseline --steps 4"

Each benchmark is its module's ``main(argv)``, which writes its own JSON and returns the same dict; the table
(benchmarks/report.py) is also written to benchmarks/results/summary.md.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import shlex
from types import ModuleType

from benchmarks.report import markdown_table
from pipelines import storage

log = logging.getLogger("benchmarks")

SUMMARY = "benchmarks/results/summary.md"
BENCHMARKS = ("preprocess", "train", "eval")


def bench_module(name: str) -> ModuleType | None:
    """benchmarks/NAME_bench.py, or None when that file does not exist (yet)."""
    module = f"benchmarks.{name}_bench"
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name != module:  # the benchmark exists but something it imports does not
            raise
        return None


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in BENCHMARKS:
        parser.add_argument(f"--{name}-args", default="", help=f"arguments passed to benchmarks/{name}_bench.py")
    parser.add_argument("--skip", default="", help="comma-separated benchmarks not to run: preprocess,train,eval")
    args = parser.parse_args(argv)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    unknown = skip - set(BENCHMARKS)
    if unknown:
        raise SystemExit(f"--skip: unknown {', '.join(sorted(unknown))}; choose from {', '.join(BENCHMARKS)}")
    results = {}
    for name in BENCHMARKS:
        module = None if name in skip else bench_module(name)
        if module is None:
            log.warning("benchmarks/%s_bench.py %s: left out of the table", name,
                        "skipped" if name in skip else "does not exist")
            continue
        log.info("running benchmarks/%s_bench.py", name)
        results[name] = module.main(shlex.split(getattr(args, f"{name}_args")))
    table = markdown_table(results.get("train"), results.get("preprocess"), results.get("eval"))
    storage.write_text(SUMMARY, table + "\n")
    print(table)
    return table


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    main()
