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

VARIANT_KEY = "variant"  # artifact metadata key naming the variant an artifact belongs to
# Blessing input roles select_and_gate copies into its evidence artifact for the push (the candidate's own travel
# as the candidate and candidate_evaluation artifacts).
EVIDENCE_ROLES = ("baseline_model", "baseline_test", "champion_model", "champion_test")
__all__ = ["EVIDENCE_ROLES", "SPLITS", "VARIANT_KEY", "by_variant", "finished_variants", "load_variants", "log_metrics",
           "move_tensorboard", "numbers", "record_variant", "replicate_of", "run_root", "set_torch_threads"]


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


def by_variant(artifacts: Iterable, kind: str) -> dict[str, Any]:
    """Map the variant name in each artifact's metadata to the artifact (Collected lists come in any order)."""
    found: dict[str, Any] = {}
    for artifact in artifacts:
        name = artifact.metadata.get(VARIANT_KEY)
        if not name:
            raise ValueError(f"{kind} artifact {artifact.uri} has no {VARIANT_KEY!r} in its metadata")
        if name in found:
            raise ValueError(f"two {kind} artifacts for variant {name!r}: {found[name].uri} and {artifact.uri}")
        found[name] = artifact
    return found


def load_variants(models: Iterable, evaluations: Iterable) -> list:
    """``release.records.Variant`` records of Collected model and evaluation artifacts."""
    from release.records import Variant

    evaluation_dirs = {name: a.path for name, a in by_variant(evaluations, "evaluation").items()}
    return [Variant.load(name, model.path, *(os.path.join(evaluation_dirs[name], split) for split in SPLITS),
                         **replicate_of(model.metadata))
            for name, model in by_variant(models, "model").items()]


def replicate_of(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """``variant_name`` and ``seed`` of a train task's artifact metadata (KFP may hand ints back as floats; seed -1:
    the preset's own)."""
    seed = metadata.get("seed")
    seed = int(seed) if isinstance(seed, int | float) and seed >= 0 else None
    return {"variant_name": metadata.get("variant_name") or None, "seed": seed}


def set_torch_threads(threads: int) -> None:
    """Use ``threads`` intra-op threads (0: torch's default, every core of the pod), so that tasks running side
    by side on one machine do not oversubscribe its cores."""
    if threads > 0:
        import torch

        torch.set_num_threads(threads)
        os.environ["OMP_NUM_THREADS"] = str(threads)


def move_tensorboard(model_dir: str, tensorboard_dir: str, variant: str) -> None:
    """Move the trainer's ``tensorboard/`` out of the model artifact into the TensorBoard artifact, as
    ``<tensorboard_dir>/<variant>/`` (so TensorBoard names the run after the variant, and the model artifact
    that gets pushed to the registry stays free of logs)."""
    source = os.path.join(model_dir, TENSORBOARD)
    if not os.path.isdir(source):
        raise FileNotFoundError(f"training wrote no TensorBoard logs: {source} is missing")
    os.makedirs(tensorboard_dir, exist_ok=True)
    shutil.move(source, os.path.join(tensorboard_dir, variant))


# ------------------------------------------------------------------------ the run's own place in the pipeline root
# Artifact URIs change with every attempt and are only known to the tasks that receive them; what must outlive a
# task (a retried train task's checkpoints) or be found without the KFP API (the exit task's record, TensorBoard
# over every variant) lives at <pipeline root>/runs/<run id>/ instead:
#   checkpoints/<variant>/   resumable training state (TrainJob.checkpoint_dir)
#   tensorboard/<variant>/   each variant's TensorBoard logs (`interest tensorboard --kubeflow RUN` serves them)
#   variants/<variant>.json  a finished variant's model and evaluation artifact URIs (written by evaluate)
#   run.json, run.md         the run's final status and its finished variants (the exit handler's task)
RUNS = "runs"


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


def record_variant(root: str, variant: str, model_uri: str, evaluation_uri: str) -> str:
    """Note that ``variant`` finished (trained and evaluated), with its artifacts' URIs; returns the record's URI."""
    from core import storage

    uri = storage.join(root, "variants", f"{variant}.json")
    storage.write_json(uri, {"variant": variant, "model": model_uri, "evaluation": evaluation_uri})
    return uri


def finished_variants(root: str) -> dict[str, dict[str, Any]]:
    """Every variant ``record_variant`` noted below ``root``: name -> {model, evaluation, valid, test} with the
    validation and test metrics read back; a variant whose evaluation is not readable (its upload failed) is left
    out with a warning."""
    from core import contract, storage
    from core.configs import ConfigError

    found = {}
    for uri in storage.list_files(storage.join(root, "variants")):
        record = storage.read_json(uri)
        try:
            metrics = {split: contract.read_json(storage.join(record["evaluation"], split), contract.METRICS)
                       for split in SPLITS}
        except (ConfigError, OSError) as exc:  # IncompleteOutput is a ConfigError
            log.warning("variant %s finished but its evaluation cannot be read: %s", record["variant"], exc)
            continue
        found[record["variant"]] = {**record, **metrics}
    return found
