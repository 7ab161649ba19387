"""Every compiled flavour of the pipeline against the KFP backend driver's own rules (tests/support/kfp_driver.py,
taken from kubeflow/pipelines 2.17.0 ``backend/src/v2/driver/resolve.go``): kfp.local resolves placeholders and
passes parameters untyped, so only these rules say whether a cluster runs the spec."""

from __future__ import annotations

import pytest
import yaml

from core.configs import ConfigError
from pipelines.compiler import TARGETS, compile_pipeline
from pipelines.remote import RETRY
from tests.support.kfp_driver import (
    RESOLVED_PLACEHOLDERS,
    non_string_pod_spec_parameters,
    type_mismatches,
    unresolved_placeholders,
)

IMAGE = "registry.example.com/team/interest-pipeline:3f2a9c1"


@pytest.fixture(scope="module", params=TARGETS)
def compiled(request, tmp_path_factory):
    """(target, YAML text, pipeline spec) of one flavour."""
    path = compile_pipeline(tmp_path_factory.mktemp(request.param) / "pipeline.yaml", image=IMAGE,
                            target=request.param, s3_endpoint="http://seaweedfs.kubeflow:8333",
                            s3_secret="mlpipeline-minio-artifact")
    text = path.read_text()
    return request.param, text, next(yaml.safe_load_all(text))


def test_no_runtime_placeholder_the_driver_leaves_unresolved(compiled):
    target, text, spec = compiled
    assert unresolved_placeholders(spec) == [], target
    assert "{{$.pipeline_root}}" not in text, target
    # The run id still comes from a placeholder, one the driver substitutes.
    train = next(c for n, c in spec["components"].items() if n.startswith("comp-for-loop"))["dag"]["tasks"]["train"]
    assert train["inputs"]["parameters"]["run_id"]["runtimeValue"]["constant"] in RESOLVED_PLACEHOLDERS


def test_every_task_input_gets_a_type_the_driver_accepts(compiled):
    """The loop item is a STRUCT (List[dict]): a STRING loop item would reach train's ``variant: dict`` as text."""
    target, _, spec = compiled
    assert type_mismatches(spec) == [], target
    loop = next(c for n, c in spec["components"].items() if n.startswith("comp-for-loop"))
    item = loop["inputDefinitions"]["parameters"]["pipelinechannel--variants-loop-item"]
    assert item["parameterType"] == "STRUCT"


def test_resource_parameters_reach_the_pod_spec_as_strings(compiled):
    """The driver reads a resource parameter with GetStringValue(): a number would set no GPU limit at all."""
    target, _, spec = compiled
    assert non_string_pod_spec_parameters(spec) == [], target
    assert spec["root"]["inputDefinitions"]["parameters"]["accelerator_count"]["parameterType"] == "STRING"
    accelerator = spec["deploymentSpec"]["executors"]["exec-train"]["container"]["resources"]["accelerator"]
    assert accelerator["resourceCount"] == "{{$.inputs.parameters['pipelinechannel--accelerator_count']}}"


def test_the_run_root_is_a_pipeline_parameter(compiled):
    target, _, spec = compiled
    assert spec["root"]["inputDefinitions"]["parameters"]["pipeline_root"]["parameterType"] == "STRING"
    dags = [spec["root"], *(c for c in spec["components"].values() if "dag" in c)]
    readers = {name: task["inputs"]["parameters"]["pipeline_root"] for dag in dags
               for name, task in dag["dag"]["tasks"].items() if "pipeline_root" in task.get("inputs", {}).get(
                   "parameters", {})}
    assert set(readers) == ({"train", "evaluate", "record-run"} if target != "local" else {"train", "evaluate"})
    assert all(source == {"componentInputParameter": "pipelinechannel--pipeline_root"}
               or source == {"componentInputParameter": "pipeline_root"} for source in readers.values()), readers


def test_the_checker_catches_what_the_driver_refuses():
    """The rules fire on the mistakes they are for (so an empty list above means something)."""
    spec = {
        "root": {"inputDefinitions": {"parameters": {"n": {"parameterType": "NUMBER_INTEGER"}}},
                 "dag": {"tasks": {"t": {"componentRef": {"name": "comp-t"}, "inputs": {"parameters": {
                     "root": {"runtimeValue": {"constant": "{{$.pipeline_root}}"}},
                     "job": {"runtimeValue": {"constant": "{{$.pipeline_job_uuid}}"}},
                     "item": {"componentInputParameter": "s"},
                     "gpus": {"componentInputParameter": "n"}}}}}}},
        "components": {"comp-t": {"executorLabel": "exec-t", "inputDefinitions": {"parameters": {
            "root": {"parameterType": "STRING"}, "job": {"parameterType": "STRING"},
            "item": {"parameterType": "STRUCT"}, "gpus": {"parameterType": "NUMBER_INTEGER"}}}}},
        "deploymentSpec": {"executors": {"exec-t": {"container": {"image": "i", "resources": {"accelerator": {
            "resourceType": "nvidia.com/gpu", "resourceCount": "{{$.inputs.parameters['gpus']}}"}}}}}},
    }
    spec["root"]["inputDefinitions"]["parameters"]["s"] = {"parameterType": "STRING"}
    assert unresolved_placeholders(spec) == ["root/t.root = '{{$.pipeline_root}}'"]
    assert type_mismatches(spec) == ["root/t.item: expects STRUCT, gets STRING"]
    assert non_string_pod_spec_parameters(spec) == ["root/t.gpus sets accelerator.resourceCount but is NUMBER_INTEGER"]


def test_a_long_train_task_that_fails_late_is_still_retried():
    """Argo counts backoff.maxDuration from the first attempt's start: it must outlast every attempt at a cluster
    job's full deadline plus the waits between attempts."""
    from trainer.launch import ClusterConfig

    seconds = {key: float(RETRY[key].rstrip("s")) for key in ("backoff_duration", "backoff_max_duration")}
    waits = sum(seconds["backoff_duration"] * RETRY["backoff_factor"] ** i for i in range(RETRY["num_retries"]))
    attempts = RETRY["num_retries"] + 1
    assert seconds["backoff_max_duration"] >= attempts * ClusterConfig().timeout_seconds + waits


@pytest.mark.parametrize("target", ["kubeflow", "vertex"])
def test_a_cluster_compile_refuses_an_image_no_registry_serves(tmp_path, target):
    with pytest.raises(ConfigError, match="--image.*registry host"):
        compile_pipeline(tmp_path / "p.yaml", image="interest-pipeline:3f2a9c1", target=target)
    assert not (tmp_path / "p.yaml").exists()
