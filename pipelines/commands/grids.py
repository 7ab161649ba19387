"""``interest grids``: the built-in experiment grids (trainer/grids.py) with their variants and parameter counts.

    interest grids                       # every grid
    interest grids writeup-aspect        # one grid (or a grid file) with each variant's settings
    interest run --grid writeup-architecture --seeds 1,2,3
"""

from __future__ import annotations

import argparse
import json

from core.configs import require
from pipelines.commands.presets import ML_1M_ITEMS
from trainer.grids import GRIDS, Grid, load_grid, parameter_counts


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "grids", help="list the experiment grids (the write-up's comparisons) with their variants",
        description="List the built-in grids (or one grid, or a grid file): baseline, seeds, and every variant "
        "with its preset, the fields it sets and its parameter counts for a catalogue of --num-items items. "
        "Run one with `interest run --grid NAME`.",
    )
    parser.add_argument("grid", nargs="?", default=None, help="a built-in grid name or a grid file (default: all)")
    parser.add_argument("--num-items", type=int, default=ML_1M_ITEMS,
                        help=f"catalogue size used to count parameters (default {ML_1M_ITEMS}, MovieLens-1M)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.set_defaults(func=run_grids)


def grid_rows(grid: Grid, num_items: int) -> dict:
    variants = []
    for variant in grid.variants:
        total, blocks = parameter_counts(variant, num_items)
        variants.append({"name": variant.name, "preset": variant.preset, "set": dict(variant.set),
                         "tau_ratio": grid.tau_ratios.get(variant.name), "params": total,
                         "non_embedding_params": blocks})
    return {"name": grid.name, "note": grid.note, "baseline": grid.baseline, "seeds": list(grid.seeds),
            "runs": len(grid.variants) * max(1, len(grid.seeds)), "variants": variants}


def run_grids(args: argparse.Namespace) -> int:
    require(args.num_items >= 1, "--num-items", f"must be >= 1, got {args.num_items}")
    grids = [load_grid(args.grid)] if args.grid else list(GRIDS.values())
    rows = [grid_rows(grid, args.num_items) for grid in grids]
    if args.json:
        print(json.dumps({"num_items": args.num_items, "grids": rows}, indent=2))
        return 0
    print(f"params: all / non-embedding (Transformer blocks + final norm), num_items={args.num_items}")
    for row in rows:
        seeds = ", ".join(map(str, row["seeds"])) or "none (one run each)"
        print(f"\n{row['name']}: {row['note']}")
        print(f"  compared with {row['baseline']}; seeds {seeds}; {row['runs']} runs")
        for v in row["variants"]:
            settings = ", ".join(f"{k}={json.dumps(val)}" for k, val in v["set"].items())
            if v["tau_ratio"] is not None:
                settings += f"{', ' if settings else ''}objective.penalty_tau={v['tau_ratio']:g} x unpenalised norm"
            mark = " (baseline)" if v["name"] == row["baseline"] else ""
            print(f"  {v['name'] + mark:24s} {v['params']:>9,d} {v['non_embedding_params']:>9,d}  "
                  f"{v['preset']}{' + ' + settings if settings else ''}")
    return 0
