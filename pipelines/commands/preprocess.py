"""``interest preprocess``: raw interaction logs -> per-user sequences (docs/contracts.md), with Apache Beam."""

from __future__ import annotations

import argparse
import datetime
import json
import logging
from typing import get_args

from core import configs
from core.configs import ConfigError
from core.protocols import PROTOCOLS
from preprocessing.config import PreprocessConfig, Split, TimestampUnit

EXAMPLES = """examples:
  interest preprocess --input ~/.cache/interest-pipeline/ml-1m.parquet --output runs/ml1m-prep
  interest preprocess --input 'logs/*.csv' --output prep --columns user=uid,item=sku,timestamp=ts --timestamp-unit ms
  interest preprocess --input events.tsv --output prep --split temporal --cutoff 2003-01-01 --set min_item_count=10
  interest preprocess --input ~/.cache/interest-pipeline/ml-1m.parquet --output runs/ml1m-gr --protocol generative-recommenders
  interest preprocess --input 'gs://b/logs/*.csv.gz' --output gs://b/prep -- --runner=DataflowRunner \\
      --project=P --region=us-central1 --temp_location=gs://b/tmp
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "preprocess",
        help="turn raw interaction logs into per-user sequences (Apache Beam)",
        description="Parse and validate raw events (dead letters for bad rows), deduplicate, drop rare items and "
        "inactive users, build the item vocabulary, and write per-user time-ordered sequences with temporal "
        "features and split boundaries. Arguments after a bare -- go to Beam's PipelineOptions unchanged "
        "(default: Beam's in-process runner).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--input", required=True, help="events file, directory or glob (local or gs://)")
    parser.add_argument("--output", required=True, help="output directory (local or gs://)")
    parser.add_argument("--format", choices=["auto", "csv", "tsv", "parquet"],
                        help="input format (default: from the file extension)")
    parser.add_argument("--columns", metavar="ROLE=NAME,...",
                        help="input column of each role: user, item, timestamp, rating "
                        "(default user=user_id,item=item_id,timestamp=timestamp,rating=rating)")
    parser.add_argument("--config", help="PreprocessConfig as a JSON/YAML file (local or gs://)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a PreprocessConfig field, e.g. --set min_item_count=10 (repeatable)")
    parser.add_argument("--protocol", choices=list(PROTOCOLS),
                        help="evaluation protocol the data is made for (default ours; docs/protocols.md): "
                        + "; ".join(f"{p.name}: {p.note}" for p in PROTOCOLS.values()))
    parser.add_argument("--split", choices=list(get_args(Split)),
                        help="how to split (default: the protocol's, leave_one_out for ours)")
    parser.add_argument("--cutoff", help="temporal split cutoff: seconds since the epoch or an ISO date/time (UTC)")
    parser.add_argument("--timestamp-unit", choices=get_args(TimestampUnit),
                        help="unit of input timestamps (default s)")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier run's files in --output")
    parser.set_defaults(func=run_preprocess)


def run_preprocess(args: argparse.Namespace) -> int:
    from preprocessing import pipeline

    if not args.verbose:
        logging.getLogger("apache_beam").setLevel(logging.WARNING)
    cfg = config_from_args(args)
    stats = pipeline.run(args.input, args.output, cfg, args.passthrough, overwrite=args.overwrite)
    print(json.dumps({k: stats[k] for k in ("input_rows", "dead_letter_rows", "duplicate_rows", "filtered_rows",
                                             "interactions", "users", "items")}))
    return 0


def config_from_args(args: argparse.Namespace) -> PreprocessConfig:
    """The config file, then the dedicated flags, then ``--set`` overrides, each winning over the last."""
    data = configs.read_config_file(args.config) if args.config else {}
    if args.columns:
        data["columns"] = {**data.get("columns", {}), **parse_columns(args.columns)}
    for key, value in (("format", args.format), ("protocol", args.protocol), ("split", args.split),
                       ("timestamp_unit", args.timestamp_unit),
                       ("cutoff", parse_cutoff(args.cutoff) if args.cutoff else None)):
        if value is not None:
            data[key] = value
    return configs.from_dict(PreprocessConfig, configs.apply_overrides(data, args.set))


def parse_columns(text: str) -> dict[str, str]:
    """``user=uid,item=sku`` -> ``{"user": "uid", "item": "sku"}``."""
    columns = {}
    for part in text.split(","):
        role, sep, name = part.partition("=")
        if not sep or not role.strip() or not name.strip():
            raise ConfigError(f"--columns: expected ROLE=NAME pairs separated by commas, got {part!r}")
        columns[role.strip()] = name.strip()
    return columns


def parse_cutoff(text: str) -> int:
    """Seconds since the epoch, or an ISO 8601 date/time (UTC unless it carries an offset)."""
    if text.strip().lstrip("-").isdigit():
        return int(text)
    try:
        moment = datetime.datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise ConfigError(f"--cutoff: expected seconds since the epoch or an ISO date like 2003-01-01, "
                          f"got {text!r}") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return int(moment.timestamp())
