"""Issue 27's smallest reproduction, in Beam alone: its local runner with several gRPC workers loses elements.

    .venv/bin/python -m benchmarks.beam_local_workers                       # every mode, 3 runs each
    .venv/bin/python -m benchmarks.beam_local_workers --modes multi_threading --runs 5

``--pieces`` inputs each emit ``--keys`` elements ``(key, Arrow table of --rows rows)``; a GroupByKey gathers them
and the pipeline counts the values and rows that arrive (and, through a tagged output, the inputs). On one worker
and with ``in_memory`` workers every element arrives; with ``--direct_num_workers=2`` and
``multi_threading`` or ``multi_processing`` (the modes whose workers talk to the runner over gRPC) some runs
lose values or fail to decode the runner's input ("Invalid PaneInfoEncoding"). The same pipeline with ``bytes``
values of the same size lost nothing here. No code of this project is involved; preprocessing.pipeline refuses
those two modes with several workers.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from pathlib import Path

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.pvalue import AsSingleton, TaggedOutput

from core import storage

MODES = {"one worker": [], "in_memory": ["--direct_num_workers=2", "--direct_running_mode=in_memory"],
         "multi_threading": ["--direct_num_workers=2", "--direct_running_mode=multi_threading"],
         "multi_processing": ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]}


def _emit(piece: int, keys: int, rows: int):
    for key in range(keys):
        yield key, pa.table({"user": pa.array(np.arange(rows).astype(str)), "row": np.arange(rows)})
    yield TaggedOutput("inputs", 1)


def _write(groups: list, inputs: int, path: str) -> None:
    storage.write_json(path, {"keys": len(groups), "values": sum(n for _, n, _ in groups),
                              "rows": sum(r for _, _, r in groups), "inputs": inputs})


def run_once(beam_args: list[str], pieces: int, keys: int, rows: int, path: str) -> dict:
    """What arrived, or the error's last line."""
    options = PipelineOptions(["--runner=FnApiRunner", "--no_pipeline_type_check", *beam_args])
    try:
        with beam.Pipeline(options=options) as p:
            parts = (p | beam.Create(range(pieces)) | beam.Reshuffle()
                     | beam.FlatMap(_emit, keys, rows).with_outputs("inputs", main="tables"))
            inputs = parts.inputs | "CountInputs" >> beam.CombineGlobally(sum)
            _ = (parts.tables | beam.GroupByKey()
                 | beam.MapTuple(lambda key, tables: (key, len(list(tables)), sum(t.num_rows for t in tables)))
                 | beam.combiners.ToList() | beam.Map(_write, AsSingleton(inputs), path))
    except Exception as exc:  # noqa: BLE001 - the runner's failure is the finding
        return {"error": str(exc).strip().splitlines()[-1][:300]}
    return json.loads(Path(path).read_text())


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated subset of {', '.join(MODES)}")
    parser.add_argument("--runs", type=int, default=3, help="runs per mode")
    parser.add_argument("--pieces", type=int, default=460, help="inputs (like parsed blocks of 64k rows)")
    parser.add_argument("--keys", type=int, default=64, help="keys per input (like user buckets)")
    parser.add_argument("--rows", type=int, default=1024, help="rows of each value's Arrow table")
    parser.add_argument("--output", default="benchmarks/results/beam_local_workers.json", help="the JSON result")
    args = parser.parse_args(argv)
    logging.getLogger("apache_beam").setLevel(logging.ERROR)
    expected = {"keys": args.keys, "values": args.keys * args.pieces, "rows": args.keys * args.pieces * args.rows,
                "inputs": args.pieces}
    results: dict = {"expected": expected, "modes": {}}
    with tempfile.TemporaryDirectory(prefix="beam-local-workers-") as tmp:
        for mode in [m.strip() for m in args.modes.split(",") if m.strip()]:
            runs = [run_once(MODES[mode], args.pieces, args.keys, args.rows, f"{tmp}/{mode}-{i}.json")
                    for i in range(args.runs)]
            results["modes"][mode] = {"runs": runs, "complete": sum(r == expected for r in runs)}
            print(f"{mode}: {results['modes'][mode]['complete']} of {args.runs} runs complete; {runs}")
    storage.write_json(args.output, results)
    return results


if __name__ == "__main__":
    main()
