"""``interest gate``, ``interest push``, ``interest report`` and ``interest registry``: decide, ship, show.

    interest evaluate --model registry:gs://bucket/registry --data runs/data --split test --output runs/champion-test
    interest gate --run name=baseline,model=runs/b/model,valid=runs/b/eval-valid,test=runs/b/eval-test \\
                  --run name=swiglu,model=... --registry gs://bucket/registry --champion-eval runs/champion-test \\
                  --output runs/blessing.json
    interest push --blessing runs/blessing.json --registry gs://bucket/registry --data runs/data
    interest report --run ... --blessing runs/blessing.json --output runs/report
    interest registry list --registry gs://bucket/registry

``interest push`` exits 3 when it refuses the blessing (a judged file changed, or the verdict does not follow
from its checks) or when the champion changed since the gate ("champion changed, re-gate"); it writes nothing then.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from core import storage
from core.configs import ConfigError, load, safe_yaml
from release import registry
from release.gate import BlessingInvalid, GateConfig, decide
from release.records import Blessing, Run

EXIT_REFUSED = 3
RUN_KEYS = ("name", "model", "valid", "test", "variant", "seed")


def parse_run(text: str) -> dict[str, str]:
    """``name=N,model=DIR[,valid=DIR][,test=DIR][,variant=V,seed=S]`` -> its fields (checked, not read yet);
    ``variant``/``seed``: this run is seed S of variant V (replicates are grouped in the report and the gate;
    without ``variant`` the run is its own variant)."""
    fields = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep or key not in RUN_KEYS or not value:
            raise ConfigError(f"--run {text!r}: expected comma-separated key=value with keys "
                              f"{', '.join(RUN_KEYS)} (name and model required)")
        fields[key] = value
    if "name" not in fields or "model" not in fields:
        raise ConfigError(f"--run {text!r}: name= and model= are required")
    if "seed" in fields and not fields["seed"].lstrip("-").isdigit():
        raise ConfigError(f"--run {text!r}: seed= must be an integer")
    return fields


def _runs(args: argparse.Namespace) -> list[Run]:
    """Every --run, its flags checked first, then read from its directories."""
    specs = [parse_run(text) for text in args.run]
    names = [spec["name"] for spec in specs]
    if len(set(names)) != len(names):
        raise ConfigError(f"--run: names must be unique, got {', '.join(names)}")
    variants = list(dict.fromkeys(s.get("variant", s["name"]) for s in specs))
    if args.baseline != "none" and args.baseline not in variants:
        raise ConfigError(f"--baseline: no variant named {args.baseline!r}; variants: {', '.join(variants)} "
                          "(or --baseline none)")
    return [Run.load(name=spec["name"], model_dir=spec["model"], valid_dir=spec.get("valid"),
                     test_dir=spec.get("test"), variant=spec.get("variant", ""),
                     seed=int(spec["seed"]) if "seed" in spec else None) for spec in specs]


def read_blessing(uri: str) -> Blessing:
    try:
        text = storage.read_text(uri)
    except FileNotFoundError:
        raise ConfigError(f"--blessing: file not found: {uri}") from None
    return Blessing.from_json(safe_yaml(text, f"--blessing {uri}"), f"--blessing {uri}")


def _add_run_flags(parser: argparse.ArgumentParser) -> None:
    # --variant: the flag's name before runs had their own noun (it always named one trained model).
    parser.add_argument("--run", "--variant", dest="run", action="append", required=True,
                        metavar="name=N,model=DIR,valid=DIR,test=DIR",
                        help="a run (one trained model): its model dir and `interest evaluate` dirs (repeat per run); "
                        "add variant=V,seed=S to mark it as seed S of variant V (replicates are grouped)")
    parser.add_argument("--baseline", default="baseline",
                        help="the variant relative changes are measured against ('none': no baseline)")


def register(subparsers: argparse._SubParsersAction) -> None:
    g = subparsers.add_parser("gate", help="pick the candidate run and gate it against the champion and baseline",
                              description="Select the candidate (the best-validated run of the variant with the "
                              "best mean validation Recall@10) and check it "
                              "(value thresholds, change vs champion and baseline, paired bootstrap); writes the "
                              "blessing JSON with every check and the sha256 of every file judged.")
    _add_run_flags(g)
    g.add_argument("--registry", required=True, help="model registry root (directory, gs:// or s3://)")
    g.add_argument("--model-name", default="interest", help="model name in the registry")
    g.add_argument("--champion-eval", default=None,
                   help="`interest evaluate --model registry:ROOT` output on this run's test split; without it the "
                   "metrics stored at the champion's push are used, which only pair users on the same data")
    g.add_argument("--config", default=None, help="GateConfig file (JSON/YAML)")
    g.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a GateConfig field")
    g.add_argument("--output", required=True, help="where the blessing JSON goes")
    g.set_defaults(func=run_gate)

    p = subparsers.add_parser("push", help="copy a blessed model into the registry and make it the champion",
                              description="Verify the blessing (the judged files' sha256, the verdict re-derived "
                              "from its checks), then push; exits 3 when it refuses or the champion changed.")
    p.add_argument("--blessing", required=True, help="`interest gate` output")
    p.add_argument("--registry", required=True, help="model registry root (directory, gs:// or s3://)")
    p.add_argument("--model-name", default="interest", help="model name in the registry")
    p.add_argument("--version", default=None, help="version name (default: m-<sha256 of model.pt, 12 hex>)")
    p.add_argument("--data", default=None, help="preprocessed data dir the blessing's evaluations must have measured "
                   "(and the lineage's stats, split, fingerprint)")
    p.add_argument("--config", default=None, help="the release policy's GateConfig file (JSON/YAML): the blessing "
                   "must have been judged by exactly it (default: the policy recorded with the registry, else the "
                   "GateConfig defaults)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a policy GateConfig field")
    p.add_argument("--baseline", default=None, help="the baseline variant the policy requires ('none': none)")
    p.set_defaults(func=run_push)

    r = subparsers.add_parser("report", help="HTML + Markdown comparison of a run's variants and the gate",
                              description="Write report.html (prints its path: open it in a browser), report.md, "
                              "comparison.json and plots/*.png into --output.")
    _add_run_flags(r)
    r.add_argument("--blessing", required=True, help="`interest gate` output")
    r.add_argument("--output", required=True, help="directory for report.html, report.md and the PNG plots")
    r.add_argument("--overwrite", action="store_true",
                   help="replace --output even when it holds something other than a report")
    r.set_defaults(func=run_report)

    reg = subparsers.add_parser("registry", help="list a registry's versions (complete or not) and its champion")
    actions = reg.add_subparsers(dest="registry_action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="every version with its status; the champion marked")
    listing.add_argument("--registry", required=True, help="model registry root")
    listing.add_argument("--model-name", default="interest", help="model name in the registry")
    listing.set_defaults(func=run_registry_list)


def run_gate(args: argparse.Namespace) -> int:
    config = load(GateConfig, args.config, args.set)
    runs = _runs(args)
    champion = registry.read_champion(args.registry, args.model_name)
    blessing = decide(runs, None if args.baseline == "none" else args.baseline, champion, config,
                      champion_evaluation=args.champion_eval if champion else None)
    storage.write_json(args.output, blessing.to_json())
    for check in blessing.checks:
        print(f"{'pass' if check.passed else 'FAIL'}  {check.name}: {check.reason}")
    print(f"{'BLESSED' if blessing.blessed else 'NOT BLESSED'}: {blessing.candidate['name']} -> {args.output}")
    return 0


def push_policy(args: argparse.Namespace) -> registry.Policy | None:
    """The policy from --config/--set/--baseline; None (the registry's recorded policy) when none is given."""
    if args.config is None and not args.set and args.baseline is None:
        return None
    return registry.Policy(load(GateConfig, args.config, args.set),
                           None if args.baseline in (None, "none") else args.baseline)


def run_push(args: argparse.Namespace) -> int:
    blessing = read_blessing(args.blessing)
    policy = push_policy(args)
    try:
        result = registry.push(blessing, args.registry, args.model_name, args.version, data_dir=args.data,
                               policy=policy)
    except (BlessingInvalid, registry.ChampionChanged) as exc:
        print(f"interest push: refused: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    print(json.dumps(dataclasses.asdict(result)))
    return 0


def run_report(args: argparse.Namespace) -> int:
    blessing = read_blessing(args.blessing)
    runs = _runs(args)
    from release.report import write_report_dir  # matplotlib: only for this subcommand

    print(write_report_dir(runs, blessing, args.output, args.baseline, args.overwrite))
    return 0


def run_registry_list(args: argparse.Namespace) -> int:
    rows = registry.list_versions(args.registry, args.model_name)
    print(f"{'version':24s} {'status':11s} champion")
    for row in rows:
        print(f"{row['version']:24s} {row['status']:11s} {'*' if row['champion'] else ''}")
    return 0
