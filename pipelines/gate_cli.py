"""``interest gate``, ``interest push`` and ``interest report``: decide, ship, show.

    interest gate --variant name=baseline,model=runs/b/model,valid=runs/b/eval-valid,test=runs/b/eval-test \\
                  --variant name=swiglu,model=... --registry gs://bucket/registry --output runs/blessing.json
    interest push --blessing runs/blessing.json --registry gs://bucket/registry --data runs/data
    interest report --variant ... --blessing runs/blessing.json --html runs/report.html --markdown runs/report.md

``interest push`` exits 3 when the champion changed since the gate ("champion changed, re-gate").
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys

from pipelines import storage
from pipelines.configs import ConfigError, load
from pipelines.gate import GateConfig, gate, load_variant, select_champion, valid_recall
from pipelines.registry import ChampionChanged, push, read_champion

EXIT_CHAMPION_CHANGED = 3
VARIANT_KEYS = ("name", "model", "valid", "test")


def parse_variant(text: str) -> dict:
    """``name=N,model=DIR[,valid=DIR][,test=DIR]`` -> a variant record (pipelines.gate.load_variant)."""
    fields = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep or key not in VARIANT_KEYS or not value:
            raise ConfigError(f"--variant {text!r}: expected comma-separated key=value with keys "
                              f"{', '.join(VARIANT_KEYS)} (name and model required)")
        fields[key] = value
    if "name" not in fields or "model" not in fields:
        raise ConfigError(f"--variant {text!r}: name= and model= are required")
    return load_variant(fields["name"], fields["model"], fields.get("valid"), fields.get("test"))


def _variants(args: argparse.Namespace) -> list[dict]:
    variants = [parse_variant(text) for text in args.variant]
    names = [v["name"] for v in variants]
    if len(set(names)) != len(names):
        raise ConfigError(f"--variant: names must be unique, got {', '.join(names)}")
    return variants


def _baseline(variants: list[dict], name: str) -> dict | None:
    if name == "none":
        return None
    for v in variants:
        if v["name"] == name:
            return v
    raise ConfigError(f"--baseline: no variant named {name!r}; variants: "
                      f"{', '.join(v['name'] for v in variants)} (or --baseline none)")


def _add_variant_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--variant", action="append", required=True, metavar="name=N,model=DIR,valid=DIR,test=DIR",
                        help="a trained variant: its model dir and `interest evaluate` dirs (repeat per variant)")
    parser.add_argument("--baseline", default="baseline",
                        help="the variant relative changes are measured against ('none': no baseline)")


def register(subparsers: argparse._SubParsersAction) -> None:
    g = subparsers.add_parser("gate", help="pick the run's best variant and gate it against the champion",
                              description="Select the variant with the best validation Recall@10 and check it "
                              "(value thresholds, change vs champion and baseline, paired bootstrap); writes the "
                              "blessing JSON with every check.")
    _add_variant_flags(g)
    g.add_argument("--registry", required=True, help="model registry root (local dir or gs://bucket/prefix)")
    g.add_argument("--model-name", default="interest", help="model name in the registry")
    g.add_argument("--champion-eval", default=None,
                   help="`interest evaluate` output of the champion (its registry version dir is a model dir) on "
                   "this run's test split; without it the metrics stored at its push are used, which only compare "
                   "(and pair users) when the data is the same")
    g.add_argument("--config", default=None, help="GateConfig file (JSON/YAML)")
    g.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a GateConfig field")
    g.add_argument("--output", required=True, help="where the blessing JSON goes")
    g.set_defaults(func=run_gate)

    p = subparsers.add_parser("push", help="copy a blessed model into the registry and make it the champion",
                              description="Push only on a blessing; exits 3 if the champion changed since the gate.")
    p.add_argument("--blessing", required=True, help="`interest gate` output")
    p.add_argument("--registry", required=True, help="model registry root (local dir or gs://bucket/prefix)")
    p.add_argument("--model-name", default="interest", help="model name in the registry")
    p.add_argument("--version", default=None, help="version name (default: m-<sha256 of model.pt, 12 hex>)")
    p.add_argument("--data", default=None, help="preprocessed data dir, for the lineage (stats, split, config)")
    p.set_defaults(func=run_push)

    r = subparsers.add_parser("report", help="HTML + Markdown comparison of a run's variants and the gate")
    _add_variant_flags(r)
    r.add_argument("--blessing", required=True, help="`interest gate` output")
    r.add_argument("--html", required=True, help="output HTML page (self-contained)")
    r.add_argument("--markdown", required=True, help="output Markdown (for the KFP UI)")
    r.add_argument("--plots-dir", default=None, help="also write each plot as a PNG here")
    r.set_defaults(func=run_report)


def run_gate(args: argparse.Namespace) -> int:
    config = load(GateConfig, args.config, args.set)
    variants = _variants(args)
    baseline = _baseline(variants, args.baseline)
    candidate = select_champion(variants)
    champion = read_champion(args.registry, args.model_name)
    if champion and args.champion_eval:
        fresh = load_variant(champion["name"], champion["uri"], test_dir=args.champion_eval)
        champion.update(test=fresh["test"], per_user=fresh["per_user"], test_dir=args.champion_eval)
    blessing = gate(candidate, baseline, champion, config)
    # The evidence of the selection, in the blessing (NaN as null: strict JSON).
    blessing["variants"] = {v["name"]: {"valid_recall@10": valid_recall(v) if math.isfinite(valid_recall(v)) else None}
                            for v in variants}
    storage.write_json(args.output, blessing)
    for check in blessing["checks"]:
        print(f"{'pass' if check['passed'] else 'FAIL'}  {check['name']}: {check['reason']}")
    print(f"{'BLESSED' if blessing['blessed'] else 'NOT BLESSED'}: {candidate['name']} -> {args.output}")
    return 0


def run_push(args: argparse.Namespace) -> int:
    blessing = storage.read_json(args.blessing)
    try:
        result = push(blessing, args.registry, args.model_name, args.version, data_dir=args.data)
    except ChampionChanged as exc:
        print(f"interest push: {exc}", file=sys.stderr)
        return EXIT_CHAMPION_CHANGED
    print(json.dumps(dataclasses.asdict(result)))
    return 0


def run_report(args: argparse.Namespace) -> int:
    blessing = storage.read_json(args.blessing)
    variants = _variants(args)
    _baseline(variants, args.baseline)
    from pipelines.report import write_report  # matplotlib: only for this subcommand

    write_report(variants, blessing, args.html, args.markdown, args.plots_dir, args.baseline)
    print(args.html)
    return 0
