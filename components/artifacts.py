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
__all__ = ["SPLITS", "VARIANT_KEY", "by_variant", "load_variants", "log_metrics", "move_tensorboard", "numbers",
           "replicate_of", "set_torch_threads"]


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
