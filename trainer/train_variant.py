"""Train one run of a variant the way a pipeline task does, with no KFP in sight: the components/train.py task is
a thin wrapper over ``train_variant``, which a test calls directly.

The run's model ends up in ``model.path`` (the task's artifact directory), its TensorBoard logs in
``<tensorboard_dir>/<run>`` (out of the model, which gets pushed to the registry) and a copy of them in
``<run root>/tensorboard/<run>``, where `interest tensorboard --kubeflow RUN` finds every run of the pipeline run.
Checkpoints go to ``<run root>/checkpoints/<run>``, a place every attempt of the task shares, so a retried or
preempted task resumes instead of starting over.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Sequence
from typing import Any, Protocol

from core import storage
from core.contract import TENSORBOARD
from trainer import launch
from trainer.job import TrainJob
from trainer.variants import VariantSpec


class Place(Protocol):
    """Where an artifact is, both ways (a KFP artifact has both)."""

    path: str  # on this machine (the task's mounted or downloaded copy)
    uri: str  # in the object store (what the nodes of a cluster job read and write)


def cluster_settings(cluster: dict[str, Any], tolerations: Sequence[dict], node_selector: dict) -> launch.ClusterConfig:
    """The ``cluster`` parameter's ClusterConfig; its replicas go to the pipeline's GPU pool (``tolerations``,
    ``node_selector``) unless it names its own."""
    from core.configs import from_dict

    settings = from_dict(launch.ClusterConfig, cluster)
    return dataclasses.replace(settings, tolerations=settings.tolerations or tuple(tolerations),
                               node_selector=settings.node_selector or dict(node_selector))


def train_variant(spec: VariantSpec, overrides: Sequence[str], cluster: launch.ClusterConfig, *, data: Place,
                  model: Place, tensorboard_dir: str, run_root: str, run_id: str, image: str,
                  gpus: int) -> dict[str, Any]:
    """Train the run ``spec`` names (``overrides``: the pipeline run's ModelConfig/TrainConfig overrides, before
    the variant's own) with ``cluster``'s launcher: here with ``gpus`` processes, or as a PyTorchJob / Vertex
    CustomJob on ``image`` named from ``run_id`` and the run; returns the trainer's summary.json."""
    name = spec.run_name
    local = cluster.launcher == "local"
    job = TrainJob(data=data.path if local else data.uri, output=model.path if local else f"{model.uri}-job",
                   preset=spec.preset, overrides=(*overrides, *spec.overrides()),
                   checkpoint_dir=storage.join(run_root, "checkpoints", name))
    launch.train_on(cluster, launch.ClusterJob(launch.job_name(run_id, name), image, job), model.path,
                    local_gpus=gpus)
    move_tensorboard(model.path, tensorboard_dir, name)
    storage.copy_tree(os.path.join(tensorboard_dir, name), storage.join(run_root, "tensorboard", name))
    if cluster.vertex_tensorboard and local:  # a Vertex CustomJob streams its logs there itself
        launch.upload_to_vertex_tensorboard(cluster, tensorboard_dir, experiment=run_id)
    with open(os.path.join(model.path, "summary.json")) as f:
        return json.load(f)


def move_tensorboard(model_dir: str, tensorboard_dir: str, run: str) -> None:
    """Move the trainer's ``tensorboard/`` out of the model directory to ``<tensorboard_dir>/<run>/`` (so
    TensorBoard names the run, and the model that gets pushed to the registry stays free of logs)."""
    source = os.path.join(model_dir, TENSORBOARD)
    if not os.path.isdir(source):
        raise FileNotFoundError(f"training wrote no TensorBoard logs: {source} is missing")
    os.makedirs(tensorboard_dir, exist_ok=True)
    shutil.move(source, os.path.join(tensorboard_dir, run))
