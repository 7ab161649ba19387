"""The same search on a cluster: a Katib Experiment (kubeflow.org/v1beta1) from an ``interest tune`` space.

    interest tune --katib --space space.yaml --trials 24 --budget 1200 --data gs://B/data --output gs://B/tune \\
        --image REGISTRY/interest-pipeline:TAG > experiment.yaml && kubectl apply -f experiment.yaml

Katib's suggestion service draws the parameters (``tpe``, Katib's hyperopt TPE), each trial is a batch/v1 Job
running ``interest tune-trial`` (the same trainer and budget as a local trial) which prints
``valid_recall_at_10=V`` after every validation, Katib's StdOut metrics collector reads those lines (its
default filter ``([\\w|-]+)\\s*=\\s*...``, pkg/metricscollector/v1beta1/common/const.go) and ``medianstop``
stops trials below the median of the others at the same report. Checked against Katib v0.19.0's OpenAPI
definitions and its admission webhook's rules (tests/pipelines/test_katib.py).
"""

from __future__ import annotations

import json
import re
from typing import Any

from core import storage
from core.configs import require
from trainer.tune_space import PRESET, Distribution, TuneSpace

API_VERSION = "kubeflow.org/v1beta1"
METRIC = "valid_recall_at_10"  # Katib's default filter accepts [\w|-]+ names only: no '@'
CONTAINER = "training"
# Katib's webhook: lower-case alphanumerics and '-', starting with a letter, at most 40 characters.
NAME_RE = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
# GJSON conditions on the batch/v1 Job's status (Katib's documented values for a Job trial).
SUCCESS = 'status.conditions.#(type=="Complete")#|#(status=="True")#'
FAILURE = 'status.conditions.#(type=="Failed")#|#(status=="True")#'


def parameter_name(key: str) -> str:
    """A --set key as a Katib parameter name (model.d_model -> model-d-model)."""
    return re.sub(r"[^a-z0-9]+", "-", key.lower()).strip("-")


def _value(value: Any) -> str:
    """A YAML scalar as Katib's string, parsed back by --set (strings bare, others as JSON)."""
    return value if isinstance(value, str) else json.dumps(value)


def parameter_spec(key: str, d: Distribution) -> dict[str, Any]:
    if d.type == "categorical":
        return {"name": parameter_name(key), "parameterType": "categorical",
                "feasibleSpace": {"list": [_value(c) for c in d.choices]}}
    space: dict[str, Any] = {"min": _value(int(d.low) if d.type == "int" else float(d.low)),
                             "max": _value(int(d.high) if d.type == "int" else float(d.high))}
    if d.step is not None:
        space["step"] = _value(int(d.step) if d.type == "int" else float(d.step))
    space["distribution"] = "logUniform" if d.type == "log-float" else "uniform"
    return {"name": parameter_name(key), "parameterType": "int" if d.type == "int" else "double",
            "feasibleSpace": space}


def experiment(space: TuneSpace, name: str, data: str, output: str, image: str, trials: int,
               budget_seconds: float | None = None, budget_steps: int | None = None, parallel: int = 2,
               namespace: str = "kubeflow") -> dict[str, Any]:
    """The Experiment running ``space`` with ``trials`` trials of the given budget, ``parallel`` at a time."""
    require(NAME_RE.fullmatch(name) is not None and len(name) <= 40, "--study-name",
            f"{name!r}: a Katib Experiment name is lower-case letters, digits and '-', starting with a letter, "
            "at most 40 characters")
    require(trials >= 1 and parallel >= 1, "--trials/--parallel", "must be >= 1")
    require((budget_seconds is None) != (budget_steps is None), "--budget",
            "give exactly one of --budget SECONDS and --budget-steps N")
    for uri, flag in ((data, "--data"), (output, "--output")):
        require(storage.is_remote(uri), flag, f"a cluster trial needs gs:// or s3:// storage, got {uri!r}")
    names = {key: parameter_name(key) for key in space.params}
    require(len(set(names.values())) == len(names), "params",
            f"two keys map to one Katib parameter name: {names}")
    args = ["tune-trial", "--data", data, "--output", storage.join(output, "${trialParameters.trialName}")]
    args += ["--time-budget", _value(budget_seconds)] if budget_seconds is not None \
        else ["--max-steps", _value(budget_steps)]
    preset = space.fixed.get(PRESET)
    args += ["--preset", "${trialParameters.preset}" if PRESET in space.params else str(preset)]
    for item in space.overrides({}):  # the fixed settings
        args += ["--set", item]
    for key in space.params:
        if key != PRESET:
            args += ["--set", f"{key}=${{trialParameters.{names[key]}}}"]
    trial_parameters = [{"name": "trialName", "description": "the trial's run directory",
                         "reference": "${trialSpec.Name}"}]
    trial_parameters += [{"name": names[key], "description": f"--set {key}" if key != PRESET else "the preset",
                          "reference": names[key]} for key in space.params]
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "spec": {"backoffLimit": 0, "template": {"spec": {
            "restartPolicy": "Never",
            "containers": [{"name": CONTAINER, "image": image, "command": ["interest"], "args": args,
                            "env": [{"name": "OMP_NUM_THREADS", "value": "1"}]}],
        }}},
    }
    return {
        "apiVersion": API_VERSION,
        "kind": "Experiment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "objective": {"type": "maximize", "objectiveMetricName": METRIC,
                          "metricStrategies": [{"name": METRIC, "value": "max"}]},
            # hyperopt's TPE settings (pkg/suggestion/v1beta1/hyperopt/service.py): gamma, prior_weight,
            # n_EI_candidates, random_state; it has no count of random start-up trials.
            "algorithm": {"algorithmName": "tpe",
                          "algorithmSettings": [{"name": "random_state", "value": str(space.sampler.seed)}]},
            "earlyStopping": {"algorithmName": "medianstop",
                              "algorithmSettings": [{"name": "min_trials_required", "value": "3"}]},
            "parallelTrialCount": min(parallel, trials),
            "maxTrialCount": trials,
            "maxFailedTrialCount": trials,
            "metricsCollectorSpec": {"collector": {"kind": "StdOut"}},
            "parameters": [parameter_spec(key, d) for key, d in space.params.items()],
            "trialTemplate": {"primaryContainerName": CONTAINER, "successCondition": SUCCESS,
                              "failureCondition": FAILURE, "trialParameters": trial_parameters, "trialSpec": job},
        },
    }


def report_line(history: list[dict[str, Any]]) -> str:
    """What a Katib trial prints after a validation: the newest point in the collector's name=value format."""
    return f"{METRIC}={history[-1]['valid_recall@10']:.6f}"
