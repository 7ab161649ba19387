"""The KFP open-source backend's rules for a compiled pipeline spec, as its driver applies them at run time.

kfp.local resolves every placeholder and passes parameters without type checks, so a spec that runs locally can
still fail on a cluster. These checks carry the driver's own rules, read from kubeflow/pipelines at tag 2.17.0
(commit 2.17.0 of ``backend/src/v2/driver/``):

- ``resolve.go`` ``resolveInputParameter`` (the ``RuntimeValue`` constant case): a task input whose constant is a
  ``{{$.…}}`` placeholder is resolved only when it equals one of ``RESOLVED_PLACEHOLDERS`` exactly (a ``switch``
  on the whole string), or contains ``{{$.workspace_path}}``; anything else, ``{{$.pipeline_root}}`` included,
  reaches the component as the literal text.
- ``resolve.go`` ``handleParamTypeValidationAndConversion``: an input of type STRING accepts any value (converted
  to JSON text); every other type must receive its own kind (``type mismatch: expect STRUCT, got string``). A
  DAG's STRING input therefore turns a struct into text, and a STRUCT input of a task inside it then fails.
- ``resolve.go`` ``resolvePodSpecInputRuntimeParameter`` reads a resource field or the image bound to a
  parameter with ``GetStringValue()``: a number gives "" and ``driver.go`` (``initPodSpecPatch``) then sets no
  limit at all (no ``nvidia.com/gpu``), so such parameters must be STRING.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

SOURCE = "kubeflow/pipelines 2.17.0 backend/src/v2/driver/resolve.go"
# resolve.go, resolveInputParameter: the only whole-string placeholders the driver substitutes.
RESOLVED_PLACEHOLDERS = frozenset({
    "{{$.pipeline_job_name}}", "{{$.pipeline_job_resource_name}}", "{{$.pipeline_job_uuid}}",
    "{{$.pipeline_task_name}}", "{{$.pipeline_task_uuid}}", "{{$.pipeline_job_create_time_utc}}",
    "{{$.pipeline_job_schedule_time_utc}}",
})
WORKSPACE_PLACEHOLDER = "{{$.workspace_path}}"
# driver.go initPodSpecPatch: container fields resolved through resolvePodSpecInputRuntimeParameter.
POD_SPEC_FIELDS = ("resourceCpuLimit", "resourceCpuRequest", "resourceMemoryLimit", "resourceMemoryRequest")
INPUT_PARAMETER = re.compile(r"^\{\{\$\.inputs\.parameters\['([^']+)'\]\}\}$")
NUMBERS = {"NUMBER_INTEGER", "NUMBER_DOUBLE"}


def _dags(spec: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    yield "root", spec["root"]
    for name, component in spec["components"].items():
        if "dag" in component:
            yield name, component


def _input_types(component: dict[str, Any]) -> dict[str, str]:
    return {name: p["parameterType"]
            for name, p in component.get("inputDefinitions", {}).get("parameters", {}).items()}


def _accepts(consumer: str, producer: str) -> bool:
    """handleParamTypeValidationAndConversion: STRING takes anything; numbers take numbers; the rest their own."""
    return consumer == "STRING" or consumer == producer or (consumer in NUMBERS and producer in NUMBERS)


def _task_inputs(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any], dict[str, Any], str, Any]]:
    """(where, input name, task, its DAG, the type the driver hands over, the input's spec) of every parameter input
    of every task; the type is the enclosing DAG's declared type, the producer's output type, or a constant's."""
    components = spec["components"]
    for dag_name, dag in _dags(spec):
        declared = _input_types(dag)
        for task_name, task in dag["dag"]["tasks"].items():
            for name, value in task.get("inputs", {}).get("parameters", {}).items():
                if "componentInputParameter" in value:
                    given = declared.get(value["componentInputParameter"])
                elif "taskOutputParameter" in value:
                    source = value["taskOutputParameter"]
                    producer = components[dag["dag"]["tasks"][source["producerTask"]]["componentRef"]["name"]]
                    given = producer.get("outputDefinitions", {}).get("parameters", {}).get(
                        source["outputParameterKey"], {}).get("parameterType")
                elif "runtimeValue" in value:
                    constant = value["runtimeValue"].get("constant")
                    given = "STRING" if isinstance(constant, str) else None
                else:
                    given = None
                yield f"{dag_name}/{task_name}.{name}", name, task, dag, given, value


def unresolved_placeholders(spec: dict[str, Any]) -> list[str]:
    """Inputs a component declares whose runtime constant holds a placeholder the driver leaves as literal text."""
    found = []
    for where, name, task, _, _, value in _task_inputs(spec):
        constant = value.get("runtimeValue", {}).get("constant")
        reads = name in _input_types(spec["components"][task["componentRef"]["name"]])
        if (reads and isinstance(constant, str) and "{{$." in constant and constant not in RESOLVED_PLACEHOLDERS
                and WORKSPACE_PLACEHOLDER not in constant):
            found.append(f"{where} = {constant!r}")
    return found


def type_mismatches(spec: dict[str, Any]) -> list[str]:
    """Task inputs fed a type the driver refuses (after a STRING DAG input has turned a value into text). Loop
    items have the type the compiler declared for ``pipelinechannel--X-loop-item`` in the loop's DAG."""
    found = []
    for where, name, task, _, given, _ in _task_inputs(spec):
        expected = _input_types(spec["components"][task["componentRef"]["name"]]).get(name)
        if expected and given and not _accepts(expected, given):
            found.append(f"{where}: expects {expected}, gets {given}")
    return found


def non_string_pod_spec_parameters(spec: dict[str, Any]) -> list[str]:
    """Resource fields, accelerator type/count and images bound to a parameter that reaches the task as anything
    but a STRING."""
    found = []
    executors = spec["deploymentSpec"]["executors"]
    for where, name, task, _, given, _ in _task_inputs(spec):
        executor = executors.get(spec["components"][task["componentRef"]["name"]].get("executorLabel"), {})
        container = executor.get("container")
        if not container:
            continue
        resources = container.get("resources", {})
        accelerator = resources.get("accelerator", {})
        fields = {key: resources.get(key) for key in POD_SPEC_FIELDS}
        fields |= {"accelerator.resourceType": accelerator.get("resourceType"),
                   "accelerator.resourceCount": accelerator.get("resourceCount"), "image": container.get("image")}
        for field, bound in fields.items():
            match = INPUT_PARAMETER.match(bound or "")
            if match and match.group(1) == name and given != "STRING":
                found.append(f"{where} sets {field} but is {given}")
    return found


def driver_violations(spec: dict[str, Any]) -> list[str]:
    """Every rule above, as one list (empty: the driver runs this spec as compiled)."""
    return [*unresolved_placeholders(spec), *type_mismatches(spec), *non_string_pod_spec_parameters(spec)]
