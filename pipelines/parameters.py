"""The pipeline's runtime parameters, once: their names, types, defaults and meaning. The DAG's signature is built
from this record (pipelines.pipeline), and the argument checks read it (pipelines.arguments) without building the
graph. Defaults are the ``full`` profile's (pipelines.profiles); KFP defaults are literal values.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from dataclasses import dataclass, field
from typing import Any

from pipelines.profiles import PROFILES

_FULL = PROFILES["full"]
REQUIRED = inspect.Parameter.empty


@dataclass(frozen=True)
class PipelineParameters:
    # model registry root: a directory or gs://, s3://, minio:// prefix
    registry: str
    # the run's pipeline root: the tasks keep the run's own files below it (components.artifacts.run_root);
    # `interest submit|schedule` fill it from --pipeline-root (the KFP driver resolves no root placeholder)
    pipeline_root: str = ""
    # ml-1m, ml-100k or an events file path/URI
    dataset: str = _FULL.dataset
    # trainer.variants specs ({name, preset, set, seed}); a struct per loop item, as the driver wants
    variants: list[dict] = field(default_factory=_FULL.variant_specs)
    # PreprocessConfig fields
    preprocess_config: dict = field(default_factory=lambda: dict(_FULL.preprocess_config))
    # Beam pipeline options of the preprocess task (--runner=DataflowRunner, ...)
    beam_args: list[str] = field(default_factory=list)
    # ModelConfig key=value for every variant
    model_overrides: list[str] = field(default_factory=lambda: list(_FULL.model_overrides))
    # TrainConfig fields over each preset's
    train_config: dict = field(default_factory=lambda: dict(_FULL.train_config))
    # GateConfig fields
    gate_config: dict = field(default_factory=lambda: dict(_FULL.gate_config))
    # the variant changes are measured against
    baseline: str = "baseline"
    # the registry's model name
    model_name: str = "interest"
    # threads per train/evaluate task (0: OMP_NUM_THREADS, i.e. the task's CPU request)
    torch_threads: int = 0
    # GPU type of each train task's pod: nvidia.com/gpu on Kubeflow, NVIDIA_L4 ... on Vertex AI; empty: CPU
    accelerator_type: str = ""
    # GPUs of each train task's pod (torchrun runs one process each); a string: the KFP driver reads resource
    # parameters as strings and sets no limit from a number
    accelerator_count: str = "0"
    # trainer.launch.ClusterConfig fields: train each variant as a multi-node PyTorchJob or Vertex job instead
    cluster: dict = field(default_factory=dict)
    # Kubernetes tolerations ({key, operator, value, effect}) of every train pod and PyTorchJob replica
    gpu_tolerations: list = field(default_factory=list)
    # Kubernetes node selector ({label: value}) of the same
    gpu_node_selector: dict = field(default_factory=dict)
    # every variant starts from the registry's champion (items matched by id), else from scratch
    warm_start: bool = False


NAMES = tuple(f.name for f in dataclasses.fields(PipelineParameters))


def defaults() -> dict[str, Any]:
    """Every parameter's default (a fresh copy); required ones are left out."""
    out = {}
    for f in dataclasses.fields(PipelineParameters):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


def signature(returns: Any = inspect.Signature.empty) -> inspect.Signature:
    """The pipeline function's signature: one parameter per field, typed, with its default."""
    hints = typing.get_type_hints(PipelineParameters)
    values = defaults()
    return inspect.Signature([
        inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=hints[name],
                          default=values.get(name, REQUIRED)) for name in NAMES
    ], return_annotation=returns)
