"""``make bench``: preprocessing, training and evaluation benchmarks in one run, then one Markdown table.

    .venv/bin/python -m benchmarks.run_all                 # writes benchmarks/results/{preprocess,train,eval}.json
    .venv/bin/python -m benchmarks.run_all --train-args "--presets baseline --steps 8 --rounds 2"

Each benchmark is its module's ``main(argv)``, which writes its own JSON and returns the same dict; the table
(benchmarks/report.py) is also written to benchmarks/results/summary.md.
"""

from __future__ import annotations

import argparse
import logging
import shlex

from benchmarks import eval_bench, preprocess_bench, train_bench
from benchmarks.report import markdown_table
from core import storage

log = logging.getLogger("benchmarks")

SUMMARY = "benchmarks/results/summary.md"
BENCHMARKS = {"preprocess": preprocess_bench, "train": train_bench, "eval": eval_bench}


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
    for name, module in BENCHMARKS.items():
        if name in skip:
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
