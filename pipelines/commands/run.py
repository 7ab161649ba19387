"""``interest compile | run | submit | schedule | tensorboard``: the pipeline from the command line.

    interest compile --output pipeline.yaml [--image REPO:TAG] [--parallelism N]
    interest run [--profile smoke|quick|full] [--dataset ml-1m|ml-100k|PATH] [--variants a,b] [--output runs/]
    interest submit --host URL [--experiment NAME] --registry gs://... [--param key=value ...]
    interest submit --vertex --project P --region R --pipeline-root gs://... --registry gs://...
    interest schedule --host URL --cron "0 3 * * *" --registry gs://...
    interest schedule list|pause|resume --host URL [ID]
    interest tensorboard RUN_DIR [--port 6006]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path
from typing import Any

from components.image import IMAGE
from core.configs import ConfigError, require
from pipelines import arguments as pipeline_args
from pipelines import kubeflow_runner, local_runner, vertex_runner
from pipelines.pipeline import compile_pipeline
from pipelines.profiles import PROFILES, get_profile
from preprocessing.datasets import DATASETS
from trainer import grids
from trainer.variants import VariantSpec, parse_variants


def register(subparsers: argparse._SubParsersAction) -> None:
    compile_ = subparsers.add_parser("compile", help="compile the KFP pipeline to YAML (Kubeflow / Vertex AI)",
                                     description="Compile the pipeline to KFP IR YAML.")
    compile_.add_argument("--output", default="pipeline.yaml", help="YAML file to write (default pipeline.yaml)")
    _add_build_flags(compile_)
    compile_.set_defaults(func=run_compile)

    run = subparsers.add_parser(
        "run", help="run the whole pipeline locally (kfp.local)",
        description="Compile the pipeline and execute it on this machine with kfp.local's SubprocessRunner. "
        "Profiles: " + "; ".join(f"{p.name}: {p.description}" for p in PROFILES.values()),
    )
    _add_argument_flags(run, default_profile="quick")
    run.add_argument("--output", default="runs", help="directory for run outputs (default runs/)")
    run.add_argument("--parallelism", type=int, default=None,
                     help="variants trained at once (default: the profile's; kfp.local runs at most 2)")
    # SUPPRESS: absent, it leaves `interest --verbose run` alone (a subparser's default would overwrite it).
    run.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                     help="also show kfp.local's output (executor inputs/outputs, every task's log), which otherwise "
                     "goes to RUN_DIR/kfp-local.log only")
    run.set_defaults(func=run_run)

    submit = subparsers.add_parser("submit", help="submit the pipeline to Kubeflow Pipelines or Vertex AI",
                                   description="Compile the pipeline and create one run of it.")
    _add_argument_flags(submit, default_profile="full")
    _add_build_flags(submit)
    _add_kfp_flags(submit, host_required=False)
    submit.add_argument("--run-name", default=None, help="run name (default: pipeline name and time)")
    submit.add_argument("--no-cache", action="store_true", help="run every task even where a cached result exists")
    submit.add_argument("--vertex", action="store_true", help="submit a Vertex AI PipelineJob instead (gcp extra)")
    submit.add_argument("--project", default=None, help="--vertex: Google Cloud project")
    submit.add_argument("--region", default=None, help="--vertex: region, e.g. us-central1")
    submit.add_argument("--service-account", default=None, help="--vertex: service account the job runs as")
    submit.set_defaults(func=run_submit)

    sched = subparsers.add_parser(
        "schedule", help="schedule the pipeline on Kubeflow Pipelines (cron), list/pause/resume schedules",
        description="Without an action: create a recurring run (max 1 concurrent run, no catch-up).",
    )
    _add_argument_flags(sched, default_profile="full")
    _add_build_flags(sched)
    _add_kfp_flags(sched, host_required=False)
    sched.add_argument("--cron", default=None, help='standard 5-field cron in UTC, e.g. "0 3 * * *"')
    sched.add_argument("--name", default="interest-nightly", help="recurring run name (default interest-nightly)")
    actions = sched.add_subparsers(dest="schedule_action", metavar="ACTION")
    listing = actions.add_parser("list", help="list recurring runs")
    _add_kfp_flags(listing, host_required=False, suppress=True)
    for verb, what in (("pause", "disable"), ("resume", "enable")):
        action = actions.add_parser(verb, help=f"{what} a recurring run")
        action.add_argument("recurring_run_id", help="id printed by `interest schedule` / `schedule list`")
        _add_kfp_flags(action, host_required=False, suppress=True)
    sched.set_defaults(func=run_schedule)

    board = subparsers.add_parser("tensorboard", help="TensorBoard on 127.0.0.1 over every variant of a run",
                                  description="Start TensorBoard over every variant's logs of an `interest run`.")
    board.add_argument("run_dir", metavar="RUN_DIR", help="a run directory printed by `interest run`")
    board.add_argument("--port", type=int, default=6006, help="port on 127.0.0.1 (default 6006)")
    board.set_defaults(func=run_tensorboard)


def _add_build_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image", default=IMAGE, help=f"container image of every task (default {IMAGE})")
    parser.add_argument("--parallelism", type=int, default=0,
                        help="variants trained at once on the cluster (default 0: all)")


def _add_argument_flags(parser: argparse.ArgumentParser, default_profile: str) -> None:
    parser.add_argument("--profile", default=default_profile, help=f"{'|'.join(PROFILES)} (default {default_profile})")
    parser.add_argument("--dataset", default=None, help="ml-1m, ml-100k or an events file path/URI")
    parser.add_argument("--variants", default=None, help="comma-separated presets (default: the profile's)")
    parser.add_argument("--grid", default=None, metavar="NAME|FILE",
                        help="train a grid's variants instead: a built-in grid (`interest grids`) or a YAML/JSON "
                        "file (a list of variants, or a mapping with variants: and seeds:)")
    parser.add_argument("--seeds", default=None, metavar="1,2,3",
                        help="train every variant once per seed (replaces a grid's seeds; 'none': once each)")
    parser.add_argument("--unpenalised-norm", type=float, default=None, metavar="NORM",
                        help="the unpenalised model's mean user norm, for grids with relative hinge targets "
                        "(tau_ratio)")
    parser.add_argument("--steps", type=int, default=None,
                        help="optimizer steps per variant (train_config.max_steps; no time budget, no early "
                        "stopping: every variant trains exactly this many)")
    parser.add_argument("--registry", default=None, help="model registry root: a directory or gs://bucket/prefix")
    parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                        help="any pipeline parameter, value as YAML (repeatable): --param train_config={max_steps: 50}")


def _add_kfp_flags(parser: argparse.ArgumentParser, host_required: bool, suppress: bool = False) -> None:
    # Sub-actions repeat the flags; SUPPRESS keeps their absent defaults from hiding a value given before them.
    default = argparse.SUPPRESS if suppress else None
    parser.add_argument("--host", required=host_required, default=default,
                        help="Kubeflow Pipelines API endpoint, e.g. http://localhost:8080")
    parser.add_argument("--namespace", default=default, help="Kubeflow namespace (multi-user deployments)")
    if not suppress:
        parser.add_argument("--experiment", default=kubeflow_runner.DEFAULT_EXPERIMENT,
                            help=f"experiment name (default {kubeflow_runner.DEFAULT_EXPERIMENT})")
        parser.add_argument("--pipeline-root", default=None, help="where artifacts go, e.g. gs://bucket/runs")


def pipeline_arguments(args: argparse.Namespace, default_registry: str | None, remote: bool) -> dict[str, Any]:
    """The profile's arguments, then --dataset/--variants/--registry, then --param; validated. ``remote``: for a
    cluster, which cannot read this machine's files."""
    arguments = pipeline_args.profile_arguments(get_profile(args.profile), args.registry or default_registry or "")
    if args.dataset:
        arguments["dataset"] = args.dataset
    _set_variants(arguments, args)
    if args.steps is not None:
        require(args.steps >= 1, "--steps", f"must be >= 1, got {args.steps}")
        arguments["train_config"] = {**{k: v for k, v in arguments["train_config"].items()
                                        if k not in ("time_budget_seconds", "patience")},
                                     "max_steps": args.steps, "patience": 0}
    arguments.update(pipeline_args.parse_params(args.param))
    require(bool(arguments["registry"]), "--registry", "is required: a directory or gs://bucket/prefix")
    for name in ("dataset", "registry"):
        value = arguments[name]
        if isinstance(value, str) and value not in DATASETS and "://" not in value:
            require(not remote, f"--{name}", f"{value!r} is a path on this machine; a cluster run needs a URI (gs://...)")
            arguments[name] = str(Path(value).resolve())  # task subprocesses may run elsewhere
    return pipeline_args.validate_arguments(arguments)


def _parse_seeds(text: str | None) -> list[int] | None:
    if text is None:
        return None
    if text.strip() == "none":
        return []
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"--seeds: expected comma-separated integers or 'none', got {text!r}") from None


def _set_variants(arguments: dict[str, Any], args: argparse.Namespace) -> None:
    """--grid or --variants (each with --seeds) into the ``variants`` and ``baseline_preset`` arguments."""
    seeds = _parse_seeds(args.seeds)
    if args.grid:
        require(not args.variants, "--grid", "give --grid or --variants, not both")
        grid = grids.load_grid(args.grid)
        arguments["variants"] = [spec.to_json() for spec in grid.expand(seeds, args.unpenalised_norm)]
        arguments["baseline_preset"] = grid.baseline
        return
    if args.variants:
        arguments["variants"] = [v.strip() for v in args.variants.split(",") if v.strip()]
    if seeds:
        specs = parse_variants(arguments["variants"])
        require(all(spec.seed is None for spec in specs), "--seeds", "the variants already carry seeds")
        arguments["variants"] = [VariantSpec(s.name, s.preset, s.set, seed).to_json() for s in specs for seed in seeds]


def run_compile(args: argparse.Namespace) -> int:
    path = compile_pipeline(args.output, image=args.image, parallelism=args.parallelism)
    print(path)
    return 0


def run_run(args: argparse.Namespace) -> int:
    profile = get_profile(args.profile)
    output = Path(args.output)
    arguments = pipeline_arguments(args, default_registry=str(output / "registry"), remote=False)
    run_dir = local_runner.new_run_dir(output, profile.name)
    runs = len(arguments["variants"])
    variants = len({spec["name"] for spec in arguments["variants"]})
    print(f"interest run: profile {profile.name}, {variants} variants" + (f" ({runs} runs with seeds)" if runs > variants
          else "") + f", output {run_dir}", flush=True)
    print(f"kfp.local's own output: {run_dir / local_runner.LOG_NAME}" + ("" if args.verbose else " (--verbose shows it)"),
          flush=True)
    result = local_runner.run_local(arguments, run_dir, parallelism=args.parallelism or profile.local_parallelism,
                                    verbose=args.verbose)
    print_summary(result)
    return 0


def _mean_text(interval: dict[str, Any]) -> str:
    """``0.0912`` or, across seeds, ``0.0912±0.0031`` (the half-width of the report's interval)."""
    mean, low, high = interval.get("mean"), interval.get("low"), interval.get("high")
    if mean is None:
        return "NaN"
    return f"{mean:.4f}" if low is None or high is None else f"{mean:.4f}±{(high - low) / 2:.4f}"


def summary_rows(comparison: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The final table: per variant, Recall@10 (mean over seeds), the test difference to the baseline with its
    paired bootstrap interval and whether it is significant, steps and training seconds."""
    baseline = comparison.get("baseline") or "baseline"
    header = ["variant", "seeds", "valid Recall@10", "test Recall@10", f"test vs {baseline} [95% CI]", "significance",
              "steps", "train s"]
    rows = []
    for v in comparison["variants"]:
        delta = v.get("test_delta")
        seeds = [s for s in v["seeds"] if s is not None]
        rows.append([v["name"], ",".join(map(str, seeds)) or "-", _mean_text(v["valid_recall@10"]),
                     _mean_text(v["test_recall@10"]),
                     "reference" if v["baseline"] else (delta["text"] if delta else "-"),
                     "" if v["baseline"] else (delta["label"] if delta else "-"),
                     "-" if v["steps"] is None else f"{v['steps']:,.0f}",
                     "-" if v["train_seconds"] is None else f"{v['train_seconds']:.{0 if v['train_seconds'] >= 10 else 1}f}"])
    return header, rows


def print_summary(run: local_runner.LocalRun) -> None:
    header, rows = summary_rows(run.comparison)
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    candidate_variant = run.comparison.get("candidate_variant")
    print()
    print("  ".join(h.ljust(w) if i < 2 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths, strict=True))))
    for row in rows:
        cells = "  ".join(c.ljust(w) if i in (0, 1, 5) else c.rjust(w)
                          for i, (c, w) in enumerate(zip(row, widths, strict=True)))
        mark = ""
        if row[0] == candidate_variant:
            mark = "  <- candidate" + (f" ({run.candidate})" if run.candidate != candidate_variant else "")
        print(f"{cells.rstrip()}{mark}")
    if not run.comparison.get("equal_steps", True):
        print("note: the runs trained different numbers of steps: differences mix the variants with their speed")
    print()
    print(f"gate:            {'BLESSED' if run.blessed else 'not blessed'} ({run.candidate})")
    print(f"report:          {run.report_html}")
    print(f"                 {run.report_markdown}")
    print(f"tensorboard:     {run.tensorboard}  (interest tensorboard {run.run_dir})")
    stays = f"; the registry's champion stays {run.production_model}" if run.production_model else ""
    print(f"blessed model:   {run.pushed_model or f'none (not pushed{stays})'}")
    print(f"pipeline:        {run.pipeline_yaml}")
    print(f"log:             {run.log}")


def run_submit(args: argparse.Namespace) -> int:
    arguments = pipeline_arguments(args, default_registry=None, remote=True)
    with tempfile.TemporaryDirectory(prefix="interest-compile-") as tmp:
        package = compile_pipeline(Path(tmp, "pipeline.yaml"), image=args.image, parallelism=args.parallelism)
        caching = False if args.no_cache else None
        if args.vertex:
            require(bool(args.project), "--project", "is required with --vertex")
            require(bool(args.region), "--region", "is required with --vertex")
            require(bool(args.pipeline_root), "--pipeline-root", "is required with --vertex (gs://bucket/path)")
            name = vertex_runner.submit_vertex(package, arguments, args.project, args.region, args.pipeline_root,
                                        enable_caching=caching, service_account=args.service_account)
            print(f"submitted Vertex AI PipelineJob {name}")
            return 0
        require(bool(args.host), "--host", "is required (or use --vertex)")
        run_id = kubeflow_runner.submit(args.host, package, arguments, experiment=args.experiment, run_name=args.run_name,
                               pipeline_root=args.pipeline_root, enable_caching=caching, namespace=args.namespace)
    print(f"submitted run {run_id}")
    return 0


def run_schedule(args: argparse.Namespace) -> int:
    require(bool(args.host), "--host", "is required: the Kubeflow Pipelines API endpoint")
    if args.schedule_action == "list":
        rows = kubeflow_runner.list_schedules(args.host, args.namespace)
        print(f"{'id':38s} {'name':24s} {'cron':16s} {'mode':8s}")
        for row in rows:
            print(f"{row['id']:38s} {row['name']:24s} {row['cron'] or '-':16s} {row['mode']}")
        return 0
    if args.schedule_action in ("pause", "resume"):
        kubeflow_runner.set_schedule_enabled(args.host, args.recurring_run_id, args.schedule_action == "resume", args.namespace)
        print(f"{args.schedule_action}d {args.recurring_run_id}")
        return 0
    require(bool(args.cron), "--cron", 'is required to create a schedule, e.g. --cron "0 3 * * *"')
    arguments = pipeline_arguments(args, default_registry=None, remote=True)
    with tempfile.TemporaryDirectory(prefix="interest-compile-") as tmp:
        package = compile_pipeline(Path(tmp, "pipeline.yaml"), image=args.image, parallelism=args.parallelism)
        recurring_id = kubeflow_runner.schedule(args.host, package, arguments, cron=args.cron, name=args.name,
                                       experiment=args.experiment, pipeline_root=args.pipeline_root,
                                       namespace=args.namespace)
    print(f"scheduled recurring run {recurring_id} ({args.cron}, at most one run at a time, no catch-up)")
    return 0


def run_tensorboard(args: argparse.Namespace) -> int:
    cmd = local_runner.tensorboard_command(args.run_dir, args.port)
    print(f"TensorBoard on http://127.0.0.1:{args.port} (Ctrl-C stops it)", flush=True)
    # Become TensorBoard (no child left running when this process is stopped).
    os.execv(cmd[0], cmd)
