"""``interest presets``: list the experiment presets with their parameter counts and the seed's findings."""

from __future__ import annotations

import argparse
import json

from core.configs import require
from trainer.job import resolve_configs
from trainer.presets import PRESETS

ML_1M_ITEMS = 3416  # MovieLens-1M items with >= 5 ratings (the usual SASRec catalogue)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "presets",
        help="list the model/training presets (one per seed experiment) with parameter counts",
        description="List every preset: its name, parameter count for a catalogue of --num-items items, "
        "the ModelConfig/TrainConfig fields it changes from the baseline, and the seed's finding.",
    )
    parser.add_argument("--num-items", type=int, default=ML_1M_ITEMS,
                        help=f"catalogue size used to count parameters (default {ML_1M_ITEMS}, MovieLens-1M)")
    parser.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    parser.set_defaults(func=run_presets)


def preset_rows(num_items: int) -> list[dict]:
    from trainer.model import InterestModel  # torch: imported only when a command needs it

    return [
        {"name": p.name, "params": InterestModel(resolve_configs(p.name)[0], num_items).num_parameters(),
         "model": p.model, "train": p.train, "note": p.note}
        for p in PRESETS.values()
    ]


def run_presets(args: argparse.Namespace) -> int:
    require(args.num_items >= 1, "--num-items", f"must be >= 1, got {args.num_items}")
    rows = preset_rows(args.num_items)
    if args.json:
        print(json.dumps({"num_items": args.num_items, "presets": rows}, indent=2))
        return 0
    print(f"presets (params with num_items={args.num_items}"
          f"{', the MovieLens-1M catalogue' if args.num_items == ML_1M_ITEMS else ''})")
    print(f"{'name':14s} {'params':>9s}  note")
    for row in rows:
        print(f"{row['name']:14s} {row['params']:>9,d}  {row['note']}")
    return 0
