"""Helpers the component bodies share (they run in the task's process, so they live in an importable module).

Components are shipped to their task as the function's source alone; anything two of them need lives here.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
from collections.abc import Iterable, Mapping
from typing import Any

from core.contract import SPLITS, TENSORBOARD

log = logging.getLogger(__name__)

# Artifact metadata keys of a train task's outputs and what follows them (docs/contracts.md):
RUN_KEY = "run"  # the run's name (NAME-seedN, or the variant's name with the preset's seed)
VARIANT_KEY = "variant"  # the variant (recipe) the run trains
SEED_KEY = "seed"  # its TrainConfig.seed; -1: the preset's own
__all__ = ["RUN_KEY", "SEED_KEY", "SPLITS", "VARIANT_KEY", "by_run", "finished_runs", "identity", "load_runs",
           "log_metrics", "move_tensorboard", "numbers", "record_finished", "run_root", "set_torch_threads", "tag"]


def numbers(values: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Every finite number in a (nested) mapping, keys joined with '.'; booleans and strings are left out."""
    out: dict[str, float] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(numbers(value, f"{name}."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            if math.isfinite(value):
                out[name] = float(value)
            else:
                # KFP metadata is JSON for the UI and the backend: NaN/Inf cannot travel; the gate reads the
                # metrics files, where they stay and fail the gate.
                log.warning("metric %s is %s: not shown in the KFP UI", name, value)
    return out


def log_metrics(metrics, values: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Log every finite number of ``values`` on a KFP ``Metrics`` artifact; returns what was logged."""
    logged = numbers(values, prefix)
    for name, value in logged.items():
        metrics.log_metric(name, value)
    return logged


def identity(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """``{name, variant, seed}`` of a train task's artifact metadata (KFP may hand ints back as floats; seed -1: the
    preset's own, None here). Artifacts written before runs had their own key held the run's name under
    ``variant`` and the variant's under ``variant_name``; they read the same."""
    if RUN_KEY in metadata:
        name, variant = metadata[RUN_KEY], metadata.get(VARIANT_KEY)
    else:
        name, variant = metadata.get(VARIANT_KEY), metadata.get("variant_name")
    seed = metadata.get(SEED_KEY)
    seed = int(seed) if isinstance(seed, int | float) and seed >= 0 else None
    return {"name": name or None, "variant": variant or name or None, "seed": seed}


def tag(artifact, run: str, variant: str, seed: int | None) -> None:
    """Name the run (and its variant and seed) an artifact belongs to in its metadata."""
    artifact.metadata.update({RUN_KEY: run, VARIANT_KEY: variant, SEED_KEY: -1 if seed is None else seed})


def by_run(artifacts: Iterable, kind: str) -> dict[str, Any]:
    """Map the run named in each artifact's metadata to the artifact (Collected lists come in any order)."""
    found: dict[str, Any] = {}
    for artifact in artifacts:
        name = identity(artifact.metadata)["name"]
        if not name:
            raise ValueError(f"{kind} artifact {artifact.uri} has no {RUN_KEY!r} in its metadata")
        if name in found:
            raise ValueError(f"two {kind} artifacts for run {name!r}: {found[name].uri} and {artifact.uri}")
        found[name] = artifact
    return found


def load_runs(models: Iterable, evaluations: Iterable) -> list:
    """``release.records.Run`` records of Collected model and evaluation artifacts."""
    from release.records import Run

    evaluation_dirs = {name: a.path for name, a in by_run(evaluations, "evaluation").items()}
    runs = []
    for name, model in by_run(models, "model").items():
        valid_dir, test_dir = (os.path.join(evaluation_dirs[name], split) for split in SPLITS)
        who = identity(model.metadata)
        runs.append(Run.load(name=name, variant=who["variant"], seed=who["seed"], model_dir=model.path,
                             valid_dir=valid_dir, test_dir=test_dir))
    return runs


def set_torch_threads(threads: int) -> None:
    """Use ``threads`` intra-op threads (0: torch's default, every core of the pod), so that tasks running side
    by side on one machine do not oversubscribe its cores."""
    if threads > 0:
        import torch

        torch.set_num_threads(threads)
        os.environ["OMP_NUM_THREADS"] = str(threads)


def move_tensorboard(model_dir: str, tensorboard_dir: str, run: str) -> None:
    """Move the trainer's ``tensorboard/`` out of the model artifact into the TensorBoard artifact, as
    ``<tensorboard_dir>/<run>/`` (so TensorBoard names its run after ours, and the model artifact that gets pushed
    to the registry stays free of logs)."""
    source = os.path.join(model_dir, TENSORBOARD)
    if not os.path.isdir(source):
        raise FileNotFoundError(f"training wrote no TensorBoard logs: {source} is missing")
    os.makedirs(tensorboard_dir, exist_ok=True)
    shutil.move(source, os.path.join(tensorboard_dir, run))


# ------------------------------------------------------------------------ the run's own place in the pipeline root
# Artifact URIs change with every attempt and are only known to the tasks that receive them; what must outlive a
# task (a retried train task's checkpoints) or be found without the KFP API (the exit task's record, TensorBoard
# over every variant) lives at <pipeline root>/runs/<run id>/ instead:
# (a pipeline run's id; each trained model in it is a "run" named NAME or NAME-seedN):
#   checkpoints/<run>/   resumable training state (TrainJob.checkpoint_dir)
#   tensorboard/<run>/   each run's TensorBoard logs (`interest tensorboard --kubeflow RUN_ID` serves them)
#   finished/<run>.json  a finished run's name, variant, seed, model and evaluation artifact URIs (by evaluate)
#   run.json, run.md     the pipeline run's final status and its finished runs (the exit handler's task)
RUNS = "runs"
FINISHED = "finished"


def run_root(pipeline_root: str, run_id: str) -> str:
    """``<pipeline root>/runs/<run id>``; the two come from dsl.PIPELINE_ROOT_PLACEHOLDER and
    dsl.PIPELINE_JOB_ID_PLACEHOLDER, which the KFP backend (>= 2.5), Vertex AI and kfp.local resolve."""
    from core import storage
    from core.configs import require

    require("{{" not in pipeline_root + run_id, "pipeline root",
            f"the orchestrator left a placeholder unresolved ({pipeline_root!r}, {run_id!r}): a KFP backend >= 2.5 "
            "is needed")
    storage.check_uri(pipeline_root, "pipeline root")
    return storage.join(pipeline_root, RUNS, run_id)


def record_finished(root: str, run: str, variant: str, seed: int | None, model_uri: str, evaluation_uri: str) -> str:
    """Note that ``run`` finished (trained and evaluated), with its artifacts' URIs; returns the record's URI."""
    from core import storage

    uri = storage.join(root, FINISHED, f"{run}.json")
    storage.write_json(uri, {"run": run, "variant": variant, "seed": seed, "model": model_uri,
                             "evaluation": evaluation_uri})
    return uri


def finished_runs(root: str) -> list:
    """``release.records.Run`` records of every run ``record_finished`` noted below ``root``, read back from its
    model and evaluation artifacts; a run whose artifacts are not readable (an upload failed) is left out with a
    warning."""
    from core import storage
    from core.configs import ConfigError
    from release.records import Run

    found = []
    for uri in storage.list_files(storage.join(root, FINISHED)):
        record = storage.read_json(uri)
        valid_dir, test_dir = (storage.join(record["evaluation"], split) for split in SPLITS)
        try:
            found.append(Run.load(name=record["run"], variant=record["variant"], seed=record["seed"],
                                  model_dir=record["model"], valid_dir=valid_dir, test_dir=test_dir))
        except (ConfigError, OSError) as exc:  # IncompleteOutput is a ConfigError
            log.warning("run %s finished but its artifacts cannot be read: %s", record["run"], exc)
    return found
