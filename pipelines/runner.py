"""Compile the pipeline and run it: locally through kfp.local, on Kubeflow Pipelines (kfp.Client), on Vertex AI.

One runner module per orchestrator concern, as in the TFX templates: the DAG itself (``pipelines.pipeline``) knows
nothing of where it runs. Every entry point checks the pipeline arguments (names, presets, every config) before
any work starts, so a typo fails in a second instead of an hour into a cluster run.
"""

from __future__ import annotations

import builtins
import json
import logging
import os
import re
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from components.image import IMAGE
from pipelines.configs import ConfigError, apply_overrides, from_dict, require
from pipelines.profiles import Profile

log = logging.getLogger(__name__)

DEFAULT_EXPERIMENT = "interest"


def compile_pipeline(output: str | Path, image: str = IMAGE, parallelism: int = 0) -> Path:
    """Write the pipeline as KFP IR YAML (runs on Kubeflow Pipelines and Vertex AI Pipelines)."""
    from kfp import compiler

    from pipelines.pipeline import create_pipeline

    require(parallelism >= 0, "--parallelism", f"must be >= 0 (0: every variant at once), got {parallelism}")
    path = Path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    kfp_compiler = compiler.Compiler()
    kfp_compiler.compile(create_pipeline(image=image, parallelism=parallelism), package_path=str(path))
    return path


# KFP parameter type -> the Python values it accepts (bool is an int in Python: refused separately).
KFP_TYPES = {"String": str, "Integer": int, "Float": (int, float), "Boolean": bool, "Dict": dict,
             "List[String]": list}


def pipeline_parameters() -> dict[str, tuple[str, Any]]:
    """The pipeline's parameters: name -> (KFP type, default); required ones have the default ``None``."""
    from pipelines.pipeline import create_pipeline

    inputs = create_pipeline().component_spec.inputs or {}
    return {name: (spec.type, spec.default) for name, spec in inputs.items()}


def profile_arguments(profile: Profile, registry: str) -> dict[str, Any]:
    """The pipeline arguments a profile stands for."""
    return {
        "registry": registry,
        "dataset": profile.dataset,
        "variants": profile.variant_names(),
        "model_overrides": list(profile.model_overrides),
        "train_config": dict(profile.train_config),
        "preprocess_config": dict(profile.preprocess_config),
        "gate_config": dict(profile.gate_config),
    }


def parse_params(items: list[str]) -> dict[str, Any]:
    """``--param key=value`` pairs; values are YAML (``variants=[baseline, rope]``, ``train_config={max_steps: 9}``)."""
    for item in items:
        require("." not in item.partition("=")[0], f"--param {item}",
                "set a whole parameter (train_config={max_steps: 9}), not a field of one")
    return apply_overrides({}, items)


def validate_arguments(arguments: dict[str, Any]) -> dict[str, Any]:
    """Raise ConfigError naming the parameter if an argument is unknown, missing or invalid; else return every
    parameter's value (the pipeline's defaults filled in)."""
    from pipelines import cluster, gate, registry
    from pipelines.datasets import DATASETS
    from preprocessing.config import PreprocessConfig
    from trainer.presets import PRESETS, get_preset
    from trainer.training_config import TrainConfig

    known = pipeline_parameters()
    unknown = sorted(set(arguments) - set(known))
    require(not unknown, f"--param {unknown[0] if unknown else ''}",
            f"not a pipeline parameter; parameters: {', '.join(known)}")
    missing = [name for name, (_, default) in known.items() if default is None and name not in arguments]
    require(not missing, f"--param {missing[0] if missing else ''}", "is required")
    args = {**{k: default for k, (_, default) in known.items() if default is not None}, **arguments}
    for name, value in args.items():
        _refuse_nulls(value, name)
        kind = known[name][0]
        require(isinstance(value, KFP_TYPES[kind]) and not (isinstance(value, bool) and kind != "Boolean"), name,
                f"expected {kind}, got {value!r}")
        if kind == "List[String]":
            require(all(isinstance(v, str) for v in value), name, f"expected a list of strings, got {value!r}")

    registry.check_registry(args["registry"])
    registry.check_name(args["model_name"], "model_name")
    dataset = str(args["dataset"])
    require(dataset in DATASETS or "://" in dataset or Path(dataset).exists(), "dataset",
            f"{dataset!r} is neither a data set ({', '.join(DATASETS)}) nor an existing path or URI")
    variants = args["variants"]
    require(len(variants) > 0, "variants", "must be a non-empty list of presets")
    require(len(set(variants)) == len(variants), "variants", f"lists a preset twice: {variants}")
    for name in variants:
        preset = get_preset(name)
        preset.model_config(args["model_overrides"])
        from_dict(TrainConfig, {**preset.train, **args["train_config"]})
    require(args["baseline_preset"] in PRESETS, "baseline_preset",
            f"unknown preset {args['baseline_preset']!r}; choose one of {', '.join(PRESETS)}")
    from_dict(PreprocessConfig, args["preprocess_config"])
    from_dict(gate.GateConfig, args["gate_config"])
    from_dict(cluster.ClusterConfig, args["cluster"])
    for name in ("torch_threads", "accelerator_count"):
        require(args[name] >= 0, name, f"must be >= 0, got {args[name]}")
    return args


def _refuse_nulls(value: Any, path: str) -> None:
    """KFP parameters are protobuf values without a null: a None anywhere fails only when the run starts."""
    require(value is not None, path, "null cannot be a KFP pipeline argument; leave the field out to keep its default")
    if isinstance(value, dict):
        for key, item in value.items():
            _refuse_nulls(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _refuse_nulls(item, f"{path}[{i}]")


# --------------------------------------------------------------------------------------------- local (kfp.local)

@dataclass(frozen=True)
class LocalRun:
    run_dir: Path  # everything the run wrote: artifacts per task, pipeline.yaml, report.html, summary.json
    pipeline_yaml: Path  # the compiled DAG that ran
    report_html: Path
    report_markdown: Path
    tensorboard: Path  # one link per variant to its TensorBoard logs: tensorboard --logdir THIS
    recall: dict[str, dict[str, float]]  # variant -> {"valid": Recall@10, "test": Recall@10}
    champion: str  # the selected variant
    blessed: bool
    blessing: dict[str, Any]  # blessing.json
    pushed_model: str | None  # the champion's version directory in the registry, if it was blessed and pushed
    production_model: str | None  # the registry's champion after the run (the pushed one, or the one that stayed)


def new_run_dir(output: str | Path, profile: str) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    path = Path(output).resolve() / f"{stamp}-{profile}"
    require(not path.exists(), "--output", f"{path} already exists")
    return path


def run_local(arguments: dict[str, Any], run_dir: Path, parallelism: int) -> LocalRun:
    """Compile the DAG into ``run_dir/pipeline.yaml`` and execute that file with kfp.local's SubprocessRunner.

    Tasks run as subprocesses of this interpreter (the project is installed in it, so their imports work);
    ``parallelism`` variants train at once, each with ``cores // parallelism`` torch threads.
    """
    from kfp import components, local

    require(parallelism >= 1, "parallelism", f"must be >= 1 for a local run, got {parallelism}")
    arguments = dict(arguments)
    concurrent = min(parallelism, len(arguments["variants"]))
    if not arguments.get("torch_threads"):  # 0 means every core of the pod: here the cores are shared
        arguments["torch_threads"] = max(1, (os.cpu_count() or 1) // concurrent)
    arguments = validate_arguments(arguments)
    run_dir.mkdir(parents=True)
    package = compile_pipeline(run_dir / "pipeline.yaml", parallelism=parallelism)
    (run_dir / "arguments.json").write_text(json.dumps(arguments, indent=2) + "\n")
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(run_dir),
               workspace_root=str(run_dir / ".workspace"), raise_on_error=True)
    print_before = builtins.print
    try:
        with warnings.catch_warnings():
            # kfp.local runs every task in this environment: the image name and the cluster-only task settings
            # (display names, resources) do not apply here, and it says so once per task.
            warnings.filterwarnings("ignore", message=r".*(base image|have no effect in the current local runner).*")
            task = components.load_component_from_file(str(package))(**arguments)
    finally:
        # kfp.local swaps builtins.print for an indenting one around each task, not thread-safely: two loop
        # iterations finishing together can leave it swapped for good.
        builtins.print = print_before
    return collect_local_run(run_dir, package, task.outputs, arguments)


def collect_local_run(run_dir: Path, package: Path, outputs: dict[str, Any], arguments: dict[str, Any]) -> LocalRun:
    """Read what a finished local run produced and link the report at the top of ``run_dir``."""
    from components.artifacts import SPLITS, VARIANT_KEY
    from pipelines import registry

    recall = {}
    for evaluation in outputs["evaluations"]:
        recall[evaluation.metadata[VARIANT_KEY]] = {
            split: json.loads(Path(evaluation.path, split, "metrics.json").read_text())["recall@10"] for split in SPLITS
        }
    blessing_artifact = outputs["blessing"]
    blessing = json.loads(Path(blessing_artifact.path).read_text())
    blessed = bool(blessing_artifact.metadata["blessed"])
    pointer, _ = registry.read_pointer(arguments["registry"], arguments["model_name"])
    # The push moved the pointer to this model's version (unless another run moved it since).
    ours = blessed and pointer and pointer["version"] == registry.default_version(outputs["champion"].path)
    links = {}
    for name, key in (("report.html", "report_html"), ("report.md", "report_markdown")):
        link = run_dir / name
        link.symlink_to(os.path.relpath(outputs[key].path, run_dir))
        links[key] = link
    return LocalRun(
        run_dir=run_dir, pipeline_yaml=package, report_html=links["report_html"],
        report_markdown=links["report_markdown"], tensorboard=link_tensorboard_logs(run_dir), recall=recall,
        champion=blessing_artifact.metadata[VARIANT_KEY], blessed=blessed, blessing=blessing,
        pushed_model=pointer["uri"] if ours else None, production_model=pointer["uri"] if pointer else None,
    )


def tensorboard_runs(run_dir: str | Path) -> dict[str, Path]:
    """Every variant's TensorBoard logs below a local run directory: ``<artifact>/tensorboard/<variant>/``."""
    runs: dict[str, Path] = {}
    for events in sorted(Path(run_dir).rglob("events.out.tfevents.*")):  # does not follow the links below
        parts = events.relative_to(run_dir).parts
        if "tensorboard" not in parts[:-2]:
            continue
        at = len(parts) - 1 - parts[::-1].index("tensorboard")
        name, variant_dir = parts[at + 1], Path(run_dir, *parts[:at + 2])
        require(runs.get(name, variant_dir) == variant_dir, "RUN_DIR",
                f"two TensorBoard logs for variant {name!r}: {runs.get(name)} and {variant_dir}")
        runs[name] = variant_dir
    return runs


def link_tensorboard_logs(run_dir: str | Path) -> Path:
    """``<run_dir>/tensorboard/<variant>`` links to every variant's logs, so ``tensorboard --logdir`` on that
    one directory shows one run per variant, named after it."""
    runs = tensorboard_runs(run_dir)
    require(bool(runs), "RUN_DIR", f"no TensorBoard logs below {run_dir}: is it an `interest run` output?")
    board = Path(run_dir, "tensorboard")
    board.mkdir(exist_ok=True)
    for name, path in runs.items():
        link = board / name
        if not link.is_symlink():
            link.symlink_to(os.path.relpath(path, board), target_is_directory=True)
    return board


def tensorboard_command(run_dir: str | Path, port: int) -> list[str]:
    """TensorBoard over every variant's logs of a run, on 127.0.0.1 only."""
    import sys

    return [sys.executable, "-m", "tensorboard.main", "--logdir", str(link_tensorboard_logs(run_dir)),
            "--host", "127.0.0.1", "--port", str(port)]


# ------------------------------------------------------------------------------------------ Kubeflow Pipelines

def kfp_client(host: str, namespace: str | None = None):
    import kfp

    require(bool(re.match(r"https?://", host)), "--host", f"must be an http(s):// URL of the KFP API, got {host!r}")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)  # "only works with KFP v2.0.0-beta.2 and later"
        return kfp.Client(host=host, namespace=namespace) if namespace else kfp.Client(host=host)


def submit(host: str, package: str | Path, arguments: dict[str, Any], experiment: str = DEFAULT_EXPERIMENT,
           run_name: str | None = None, pipeline_root: str | None = None, enable_caching: bool | None = None,
           namespace: str | None = None) -> str:
    """Create a run of the compiled pipeline on a Kubeflow Pipelines API server; returns the run id."""
    client = kfp_client(host, namespace)
    result = client.create_run_from_pipeline_package(
        str(package), arguments=arguments, run_name=run_name, experiment_name=experiment, namespace=namespace,
        pipeline_root=pipeline_root, enable_caching=enable_caching,
    )
    return result.run_id


def kfp_cron(cron: str) -> str:
    """KFP's scheduler reads 6-field cron (seconds first): ``0 3 * * *`` -> ``0 0 3 * * *``."""
    fields = cron.split()
    require(len(fields) in (5, 6), "--cron", f"expected 5 fields (min hour day month weekday) or 6, got {cron!r}")
    return " ".join(["0", *fields] if len(fields) == 5 else fields)


def schedule(host: str, package: str | Path, arguments: dict[str, Any], cron: str, name: str,
             experiment: str = DEFAULT_EXPERIMENT, pipeline_root: str | None = None,
             namespace: str | None = None) -> str:
    """Create a recurring run: one at a time (a run never overlaps the previous one, which may still be moving
    the champion), no catch-up of missed slots after a pause. Returns the recurring run id."""
    cron = kfp_cron(cron)
    client = kfp_client(host, namespace)
    experiment_id = client.create_experiment(experiment, namespace=namespace).experiment_id
    recurring = client.create_recurring_run(
        experiment_id=experiment_id, job_name=name, cron_expression=cron, max_concurrency=1,
        no_catchup=True, params=arguments, pipeline_package_path=str(package), pipeline_root=pipeline_root,
    )
    return recurring.recurring_run_id


def list_schedules(host: str, namespace: str | None = None) -> list[dict[str, Any]]:
    """Every recurring run: id, name, cron, mode (ENABLE/DISABLE), max concurrency."""
    client = kfp_client(host, namespace)
    rows, token = [], ""
    while True:
        page = client.list_recurring_runs(page_token=token, page_size=100, namespace=namespace)
        for run in page.recurring_runs or []:
            cron = run.trigger.cron_schedule.cron if run.trigger and run.trigger.cron_schedule else None
            rows.append({"id": run.recurring_run_id, "name": run.display_name, "cron": cron, "mode": run.mode,
                         "max_concurrency": run.max_concurrency, "no_catchup": run.no_catchup})
        token = page.next_page_token
        if not token:
            return rows


def set_schedule_enabled(host: str, recurring_run_id: str, enabled: bool, namespace: str | None = None) -> None:
    client = kfp_client(host, namespace)
    if enabled:
        client.enable_recurring_run(recurring_run_id)
    else:
        client.disable_recurring_run(recurring_run_id)


# ----------------------------------------------------------------------------------------------------- Vertex AI

def submit_vertex(package: str | Path, arguments: dict[str, Any], project: str, region: str, pipeline_root: str,
                  display_name: str = "interest-pipeline", enable_caching: bool | None = None,
                  service_account: str | None = None) -> str:
    """Submit the compiled pipeline as a Vertex AI PipelineJob; returns its resource name."""
    try:
        from google.cloud import aiplatform
    except ImportError as exc:
        raise ConfigError("--vertex needs google-cloud-aiplatform: pip install 'interest-pipeline[gcp]'") from exc
    require(pipeline_root.startswith("gs://"), "--pipeline-root", f"Vertex needs a gs:// pipeline root, got {pipeline_root!r}")
    job = aiplatform.PipelineJob(
        display_name=display_name, template_path=str(package), pipeline_root=pipeline_root,
        parameter_values=arguments, enable_caching=enable_caching, project=project, location=region,
    )
    job.submit(service_account=service_account)
    return job.resource_name

