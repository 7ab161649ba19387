"""``interest compile | run | submit | schedule | tensorboard``: the pipeline from the command line.

    interest compile --output pipeline.yaml --image REGISTRY/REPO:TAG [--parallelism N] [--vertex]
    interest run [--profile smoke|quick|full] [--dataset ml-1m|ml-100k|PATH] [--variants a,b] [--output runs/]
    interest submit --host URL [--token T | --cookies C] --image REGISTRY/... --pipeline-root s3://... \
        --dataset gs://... --registry gs://...
    interest submit --vertex --project P --region R --pipeline-root gs://... --image ... --registry gs://...
    interest schedule [--vertex ...] --host URL --cron "0 3 * * *" --image ... --registry gs://...
    interest schedule list|pause|resume --host URL [ID]
    interest tensorboard RUN_DIR | gs://... | s3://... [--port 6006]
    interest tensorboard --kubeflow RUN_ID --pipeline-root gs://... --namespace NS [--dashboard URL]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.configs import ConfigError, require
from pipelines import arguments as pipeline_args
from pipelines import kubeflow_runner, vertex_runner
from pipelines.profiles import PROFILES, get_profile
from preprocessing.datasets import DATASETS
from trainer import grids
from trainer.variants import VariantSpec, parse_variants

if TYPE_CHECKING:
    from pipelines import local_runner
# The DAG, its components (whose image tag asks git for the commit) and kfp.local load only in the commands that
# need them: `interest train` and `interest --help` start in a fraction of a second.


def register(subparsers: argparse._SubParsersAction) -> None:
    compile_ = subparsers.add_parser("compile", help="compile the KFP pipeline to YAML (Kubeflow / Vertex AI)",
                                     description="Compile the pipeline to KFP IR YAML.")
    compile_.add_argument("--output", default="pipeline.yaml", help="YAML file to write (default pipeline.yaml)")
    _add_build_flags(compile_)
    compile_.add_argument("--vertex", action="store_true",
                          help="the Vertex AI Pipelines form (one YAML document, no Kubernetes settings)")
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
    _add_store_check_flag(submit)
    _add_vertex_flags(submit, "submit a Vertex AI PipelineJob instead (gcp extra)")
    submit.set_defaults(func=run_submit)

    sched = subparsers.add_parser(
        "schedule", help="schedule the pipeline on Kubeflow Pipelines or Vertex AI (cron), list/pause/resume",
        description="Without an action: create (or move to this code) the recurring run NAME on the pipeline "
        "version of this commit (max 1 concurrent run, no catch-up).",
    )
    _add_argument_flags(sched, default_profile="full")
    _add_build_flags(sched)
    _add_kfp_flags(sched, host_required=False)
    _add_vertex_flags(sched, "create a Vertex AI PipelineJobSchedule instead (gcp extra)")
    _add_store_check_flag(sched)
    sched.add_argument("--cron", default=None, help='standard 5-field cron in UTC, e.g. "0 3 * * *"')
    sched.add_argument("--name", default="interest-nightly",
                       help="schedule name (default interest-nightly); an existing one of that name is moved here")
    actions = sched.add_subparsers(dest="schedule_action", metavar="ACTION")
    listing = actions.add_parser("list", help="list recurring runs")
    _add_kfp_flags(listing, host_required=False, suppress=True)
    for verb, what in (("pause", "disable"), ("resume", "enable")):
        action = actions.add_parser(verb, help=f"{what} a recurring run")
        action.add_argument("recurring_run_id", help="id printed by `interest schedule` / `schedule list`")
        _add_kfp_flags(action, host_required=False, suppress=True)
    sched.set_defaults(func=run_schedule)

    board = subparsers.add_parser(
        "tensorboard", help="TensorBoard over every variant of a run: local, on object storage, or on Kubeflow",
        description="Serve every variant's TensorBoard logs on 127.0.0.1: of an `interest run` directory, or of a "
        "gs:// / s3:// / minio:// prefix (a cluster run's <pipeline root>/runs/<run id>/tensorboard), mirrored "
        "through the same storage settings as the pipeline. With --kubeflow: create a Kubeflow Tensorboard over a "
        "cluster run's logs and print its URL.")
    board.add_argument("source", metavar="RUN_DIR|URI", nargs="?", help="a run directory or a gs:// / s3:// prefix")
    board.add_argument("--port", type=int, default=6006, help="port on 127.0.0.1 (default 6006)")
    board.add_argument("--reload-seconds", type=float, default=30.0,
                       help="object storage: mirror new events this often (default 30)")
    board.add_argument("--kubeflow", metavar="RUN_ID", default=None,
                       help="create a Kubeflow Tensorboard (tensorboard.kubeflow.org) over this run's logs")
    board.add_argument("--pipeline-root", default=None, help="--kubeflow: the run's pipeline root (gs://, s3://)")
    board.add_argument("--namespace", default=None, help="--kubeflow: the Kubeflow profile namespace")
    board.add_argument("--dashboard", default=None,
                       help="--kubeflow: the central dashboard URL, to print the Tensorboard's full URL")
    board.set_defaults(func=run_tensorboard)


def _add_build_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image", default=None,
                        help="container image of every task (default interest-pipeline:<12 hex digits of the "
                        "commit>, what `make image` tags; a cluster needs it pushed to a registry: "
                        "REGISTRY/interest-pipeline:TAG)")
    parser.add_argument("--parallelism", type=int, default=0,
                        help="variants trained at once on the cluster (default 0: all)")
    parser.add_argument("--s3-endpoint", default="",
                        help="S3-compatible endpoint every task uses (AWS_ENDPOINT_URL), e.g. Kubeflow's MinIO "
                        "http://minio-service.kubeflow:9000 for a minio:// pipeline root")
    parser.add_argument("--s3-secret", default="",
                        help="Kubernetes Secret with the S3 keys (accesskey, secretkey), e.g. mlpipeline-minio-artifact")


def _add_store_check_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-store-check", action="store_true",
                        help="do not probe an s3:// or minio:// pipeline root and registry for conditional writes "
                        "from here (when this machine cannot reach the store: run `interest doctor` in the cluster)")


def _check_stores(args: argparse.Namespace, arguments: dict[str, Any]) -> None:
    """Refuse an S3-compatible store that ignores If-None-Match (pipelines.preflight), before anything is sent."""
    from pipelines.preflight import check_conditional_writes

    if not args.no_store_check:
        for uri in dict.fromkeys((args.pipeline_root or "", arguments["registry"])):
            check_conditional_writes(uri)


def _add_vertex_flags(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--vertex", action="store_true", help=what)
    parser.add_argument("--project", default=None, help="--vertex: Google Cloud project")
    parser.add_argument("--region", default=None, help="--vertex: region, e.g. us-central1")
    parser.add_argument("--service-account", default=None,
                        help="who the run's tasks run as: a Kubernetes service account on Kubeflow, a Google "
                        "service account with --vertex")


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
    parser.add_argument("--token", default=default,
                        help="bearer token for an authenticated endpoint (IAP: gcloud auth print-identity-token "
                        "--audiences=CLIENT_ID)")
    parser.add_argument("--cookies", default=default,
                        help="Cookie header of a logged-in session for Dex / oauth2-proxy, e.g. "
                        "'authservice_session=...'")
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
    if remote:
        from pipelines.remote import check_cluster_arguments  # loads the DAG: only for cluster commands

        check_cluster_arguments(arguments, args.pipeline_root)
        # The tasks keep the run's own files below it: the KFP driver resolves no pipeline-root placeholder.
        arguments["pipeline_root"] = args.pipeline_root
    for name in ("dataset", "registry"):
        value = arguments[name]
        if isinstance(value, str) and value not in DATASETS and "://" not in value:
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
    """--grid or --variants (each with --seeds) into the ``variants`` and ``baseline`` arguments."""
    seeds = _parse_seeds(args.seeds)
    if args.grid:
        require(not args.variants, "--grid", "give --grid or --variants, not both")
        grid = grids.load_grid(args.grid)
        arguments["variants"] = [spec.to_json() for spec in grid.expand(seeds, args.unpenalised_norm)]
        arguments["baseline"] = grid.baseline
        return
    if args.variants:
        arguments["variants"] = [v.strip() for v in args.variants.split(",") if v.strip()]
    if seeds:
        specs = parse_variants(arguments["variants"])
        require(all(spec.seed is None for spec in specs), "--seeds", "the variants already carry seeds")
        arguments["variants"] = [VariantSpec(s.name, s.preset, s.set, seed).to_json() for s in specs for seed in seeds]


def _image(args: argparse.Namespace) -> str:
    """--image, or the image `make image` builds from this commit."""
    from components.image import IMAGE

    return args.image or IMAGE


def _compile_for_cluster(args: argparse.Namespace, output: str | Path) -> Path:
    from pipelines.compiler import compile_pipeline

    return compile_pipeline(output, image=_image(args), parallelism=args.parallelism,
                            target="vertex" if args.vertex else "kubeflow", s3_endpoint=args.s3_endpoint,
                            s3_secret=args.s3_secret)


def _endpoint(args: argparse.Namespace) -> kubeflow_runner.Endpoint:
    require(bool(args.host), "--host", "is required: the Kubeflow Pipelines API endpoint (or use --vertex)")
    return kubeflow_runner.Endpoint(args.host, args.namespace, args.token, args.cookies)


def _check_kubeflow_store(args: argparse.Namespace) -> None:
    """The tasks write checkpoints and the run's record below the pipeline root themselves, so they must be told
    it (a pipeline parameter: the KFP driver resolves no root placeholder) and reach it: Kubeflow's own store
    (SeaweedFS, or MinIO in older manifests) through --s3-endpoint, its keys through --s3-secret."""
    root = args.pipeline_root or ""
    require(bool(root), "--pipeline-root", "is required (gs://, s3://, or minio://mlpipeline/v2/artifacts/NAMESPACE "
            "with --s3-endpoint for Kubeflow's own store)")
    require(not root.startswith("minio://") or bool(args.s3_endpoint), "--s3-endpoint",
            f"is required with the pipeline root {root!r}, e.g. http://minio-service.kubeflow:9000")


def _vertex_target(args: argparse.Namespace) -> vertex_runner.VertexTarget:
    return vertex_runner.VertexTarget(args.project, args.region, args.pipeline_root or "", args.service_account)


def run_compile(args: argparse.Namespace) -> int:
    path = _compile_for_cluster(args, args.output)
    print(path)
    return 0


def run_run(args: argparse.Namespace) -> int:
    from pipelines import local_runner

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


def print_summary(run: local_runner.LocalRun) -> None:
    """The final table (release.comparison.summary_table of the report's comparison.json) and where things are."""
    from release.comparison import summary_table

    header, rows = summary_table(run.comparison)
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    candidate_variant = run.comparison.get("candidate_variant")
    print()
    print("  ".join(h.ljust(w) if i < 2 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths, strict=True))))
    for row in rows:
        cells = "  ".join(c.ljust(w) if i in (0, 1, 5) else c.rjust(w)
                          for i, (c, w) in enumerate(zip(row, widths, strict=True)))
        mark = ""
        if row[0] == candidate_variant:
            mark = "  <- candidate" + (f" ({run.candidate_run})" if run.candidate_run != candidate_variant else "")
        print(f"{cells.rstrip()}{mark}")
    if not run.comparison.get("equal_steps", True):
        print("note: the runs trained different numbers of steps: differences mix the variants with their speed")
    print()
    print(f"gate:            {'BLESSED' if run.blessed else 'not blessed'} ({run.candidate_run})")
    print(f"report:          {run.report_html}")
    print(f"                 {run.report_markdown}")
    if run.plots:
        print(f"plots:           {run.plots}")
    print(f"tensorboard:     {run.tensorboard}  (interest tensorboard {run.run_dir})")
    stays = f"; the registry's champion stays {run.production_model}" if run.production_model else ""
    print(f"blessed model:   {run.pushed_model or f'none (not pushed{stays})'}")
    print(f"pipeline:        {run.pipeline_yaml}")
    print(f"log:             {run.log}")


def _check_build_flags(args: argparse.Namespace) -> None:
    from components.image import check_cluster_image

    check_cluster_image(_image(args))
    require(not args.s3_endpoint or args.s3_endpoint.startswith(("http://", "https://")), "--s3-endpoint",
            f"must be an http(s):// URL, got {args.s3_endpoint!r}")


def run_submit(args: argparse.Namespace) -> int:
    _check_build_flags(args)
    target = _vertex_target(args) if args.vertex else None
    endpoint = None if args.vertex else _endpoint(args)
    if endpoint:
        _check_kubeflow_store(args)
    arguments = pipeline_arguments(args, default_registry=None, remote=True)
    _check_stores(args, arguments)
    caching = False if args.no_cache else None
    with tempfile.TemporaryDirectory(prefix="interest-compile-") as tmp:
        package = _compile_for_cluster(args, Path(tmp, "pipeline.yaml"))
        if target:
            name = vertex_runner.submit_vertex(target, package, arguments, enable_caching=caching)
            print(f"submitted Vertex AI PipelineJob {name}")
            return 0
        run_id, version = kubeflow_runner.submit(endpoint, package, arguments, experiment=args.experiment,
                                                 run_name=args.run_name, pipeline_root=args.pipeline_root,
                                                 enable_caching=caching, service_account=args.service_account)
    print(f"submitted run {run_id} of {kubeflow_runner.DEFAULT_PIPELINE} version {version}")
    return 0


def run_schedule(args: argparse.Namespace) -> int:
    if args.schedule_action in ("list", "pause", "resume"):
        endpoint = _endpoint(args)
        if args.schedule_action == "list":
            rows = kubeflow_runner.list_schedules(endpoint)
            print(f"{'id':38s} {'name':24s} {'cron':16s} {'mode':8s} version")
            for row in rows:
                print(f"{row['id']:38s} {row['name']:24s} {row['cron'] or '-':16s} {row['mode']:8s} "
                      f"{row['version_id'] or '-'}")
            return 0
        kubeflow_runner.set_schedule_enabled(endpoint, args.recurring_run_id, args.schedule_action == "resume")
        print(f"{args.schedule_action}d {args.recurring_run_id}")
        return 0
    require(bool(args.cron), "--cron", 'is required to create a schedule, e.g. --cron "0 3 * * *"')
    _check_build_flags(args)
    target = _vertex_target(args) if args.vertex else None
    endpoint = None if args.vertex else _endpoint(args)
    if endpoint:
        _check_kubeflow_store(args)
    # A bad cron fails before anything is compiled.
    vertex_runner.check_cron(args.cron) if target else kubeflow_runner.kfp_cron(args.cron)
    arguments = pipeline_arguments(args, default_registry=None, remote=True)
    _check_stores(args, arguments)
    with tempfile.TemporaryDirectory(prefix="interest-compile-") as tmp:
        package = _compile_for_cluster(args, Path(tmp, "pipeline.yaml"))
        if target:
            name, replaced = vertex_runner.schedule_vertex(target, package, arguments, cron=args.cron, name=args.name)
            print(f"scheduled Vertex AI PipelineJobSchedule {name} ({args.cron}, at most one run at a time)"
                  + (f"; replaced {', '.join(replaced)}" if replaced else ""))
            return 0
        done = kubeflow_runner.schedule(endpoint, package, arguments, cron=args.cron, name=args.name,
                                        experiment=args.experiment, pipeline_root=args.pipeline_root,
                                        service_account=args.service_account)
    moved = f"; moved from recurring run {', '.join(done.replaced)}" if done.replaced else ""
    print(f"scheduled recurring run {done.recurring_run_id} on version {done.version} ({args.cron}, at most one "
          f"run at a time, no catch-up){moved}")
    return 0


def run_tensorboard(args: argparse.Namespace) -> int:
    from pipelines import local_runner, tensorboard

    if args.kubeflow:
        require(bool(args.pipeline_root), "--pipeline-root", "is required with --kubeflow: the run's pipeline root")
        require(bool(args.namespace), "--namespace", "is required with --kubeflow: the Kubeflow profile namespace")
        name, logspath = tensorboard.create_kubeflow_tensorboard(args.kubeflow, args.pipeline_root, args.namespace)
        print(f"created Tensorboard {args.namespace}/{name} over {logspath}")
        print(tensorboard.kubeflow_url(args.dashboard, args.namespace, name))
        return 0
    require(bool(args.source), "RUN_DIR|URI", "is required (or --kubeflow RUN_ID)")
    if "://" in args.source:
        return tensorboard.serve_object_store(args.source, args.port, args.reload_seconds)
    cmd = local_runner.tensorboard_command(args.source, args.port)
    print(f"TensorBoard on http://127.0.0.1:{args.port} (Ctrl-C stops it)", flush=True)
    # Become TensorBoard (no child left running when this process is stopped).
    os.execv(cmd[0], cmd)
