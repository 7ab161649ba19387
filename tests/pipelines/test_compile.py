"""The compiled pipeline YAML (KFP IR): the DAG's shape, task settings and image, as a cluster would read them."""

from __future__ import annotations

import pytest
import yaml

from components.image import IMAGE
from pipelines.pipeline import compile_pipeline

CUSTOM_IMAGE = "registry.example.com/team/interest-pipeline:3f2a9c1"
STEPS = {
    "preprocess": "Preprocess events",
    "train": "Train variant",
    "evaluate": "Evaluate variant",
    "evaluate-champion": "Evaluate production champion",
    "select-and-gate": "Select candidate and gate",
    "push": "Push to registry",
    "report": "Report",
}


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    path = compile_pipeline(tmp_path_factory.mktemp("compiled") / "pipeline.yaml", image=CUSTOM_IMAGE, parallelism=3)
    return yaml.safe_load(path.read_text())


def all_tasks(spec) -> dict[str, dict]:
    """Every task of every DAG (root, loop body, condition body), by task name."""
    tasks = dict(spec["root"]["dag"]["tasks"])
    for component in spec["components"].values():
        tasks.update(component.get("dag", {}).get("tasks", {}))
    return tasks


def loop_task(spec) -> dict:
    loops = [t for t in spec["root"]["dag"]["tasks"].values() if "parameterIterator" in t]
    assert len(loops) == 1
    return loops[0]


def test_loop_over_variants_with_parallelism(spec):
    loop = loop_task(spec)
    assert loop["parameterIterator"]["items"] == {"inputParameter": "pipelinechannel--variants"}
    assert loop["inputs"]["parameters"]["pipelinechannel--variants"] == {"componentInputParameter": "variants"}
    assert loop["iteratorPolicy"] == {"parallelismLimit": 3}
    body = spec["components"][loop["componentRef"]["name"]]["dag"]["tasks"]
    assert set(body) == {"train", "evaluate"}
    assert body["train"]["inputs"]["parameters"]["variant"]["componentInputParameter"].endswith("loop-item")
    assert body["evaluate"]["inputs"]["artifacts"]["model"]["taskOutputArtifact"] == {
        "outputArtifactKey": "model", "producerTask": "train"}


def test_gate_collects_every_variant_after_the_loop(spec):
    root = spec["root"]["dag"]["tasks"]
    loop_name = next(name for name, t in root.items() if "parameterIterator" in t)
    gate = root["select-and-gate"]
    assert sorted(gate["dependentTasks"]) == sorted([loop_name, "evaluate-champion"])
    # The champion is judged on this run's data: its evaluation reads the preprocess output.
    assert root["evaluate-champion"]["inputs"]["artifacts"]["data"]["taskOutputArtifact"]["producerTask"] == (
        "preprocess")
    assert gate["inputs"]["artifacts"]["champion_evaluation"]["taskOutputArtifact"] == {
        "outputArtifactKey": "champion_evaluation", "producerTask": "evaluate-champion"}
    for name in ("models", "evaluations"):
        assert gate["inputs"]["artifacts"][name]["taskOutputArtifact"]["producerTask"] == loop_name
        assert spec["components"]["comp-select-and-gate"]["inputDefinitions"]["artifacts"][name]["isArtifactList"]
    loop_outputs = spec["components"][root[loop_name]["componentRef"]["name"]]["dag"]["outputs"]["artifacts"]
    assert {s["producerSubtask"] for o in loop_outputs.values() for s in o["artifactSelectors"]} == {"train", "evaluate"}


def test_push_runs_only_when_blessed_and_report_always(spec):
    root = spec["root"]["dag"]["tasks"]
    conditions = [t for t in root.values() if "triggerPolicy" in t]
    assert len(conditions) == 1
    condition = conditions[0]
    assert condition["triggerPolicy"]["condition"] == (
        "inputs.parameter_values['pipelinechannel--select-and-gate-Output'] == true")
    assert condition["inputs"]["parameters"]["pipelinechannel--select-and-gate-Output"]["taskOutputParameter"] == {
        "outputParameterKey": "Output", "producerTask": "select-and-gate"}
    assert set(spec["components"][condition["componentRef"]["name"]]["dag"]["tasks"]) == {"push"}
    assert "push" not in root and "triggerPolicy" not in root["report"]
    assert spec["components"]["comp-select-and-gate"]["outputDefinitions"]["parameters"]["Output"] == {
        "parameterType": "BOOLEAN"}


def test_display_names(spec):
    tasks = all_tasks(spec)
    assert {name: tasks[name]["taskInfo"]["name"] for name in STEPS} == STEPS


def test_every_task_runs_the_given_image_with_resources(spec):
    executors = spec["deploymentSpec"]["executors"]
    assert len(executors) == len(STEPS)
    for name, executor in executors.items():
        container = executor["container"]
        assert container["image"] == CUSTOM_IMAGE, name
        assert container["resources"]["resourceCpuRequest"], name
        assert container["resources"]["resourceMemoryRequest"], name
        # install_kfp_package=False: the image already has kfp; no pip install at task start.
        assert "pip install" not in " ".join(container["command"]), name


def test_train_resources_and_accelerators_come_from_parameters(spec):
    resources = spec["deploymentSpec"]["executors"]["exec-train"]["container"]["resources"]
    assert resources["accelerator"] == {
        "resourceCount": "{{$.inputs.parameters['pipelinechannel--accelerator_count']}}",
        "resourceType": "{{$.inputs.parameters['pipelinechannel--accelerator_type']}}",
    }
    assert (resources["resourceCpuRequest"], resources["resourceMemoryRequest"]) == ("4", "16G")
    train = all_tasks(spec)["train"]
    # the train step's own `gpus` input carries the same parameter (torchrun processes per pod)
    assert train["inputs"]["parameters"]["gpus"]["componentInputParameter"] == "pipelinechannel--accelerator_count"
    assert train["inputs"]["parameters"]["accelerator"]["componentInputParameter"] == (
        "pipelinechannel--accelerator_type")
    assert train["inputs"]["parameters"]["image"]["runtimeValue"]["constant"] == CUSTOM_IMAGE


def test_every_input_a_task_reads_from_its_dag_is_declared_there(spec):
    """A task may only read parameters its enclosing DAG declares (the KFP compiler leaves out parameters that
    only resource settings inside a loop use; the backend and kfp.local then fail to resolve them)."""
    dags = {"root": spec["root"], **{n: c for n, c in spec["components"].items() if "dag" in c}}
    for dag_name, dag in dags.items():
        declared = set(dag.get("inputDefinitions", {}).get("parameters", {}))
        declared_artifacts = set(dag.get("inputDefinitions", {}).get("artifacts", {}))
        for task_name, task in dag["dag"]["tasks"].items():
            for name, value in task.get("inputs", {}).get("parameters", {}).items():
                if "componentInputParameter" in value:
                    assert value["componentInputParameter"] in declared, (dag_name, task_name, name)
            for name, value in task.get("inputs", {}).get("artifacts", {}).items():
                if "componentInputArtifact" in value:
                    assert value["componentInputArtifact"] in declared_artifacts, (dag_name, task_name, name)


def test_tasks_size_their_thread_pools_to_their_cpu_request(spec):
    for name, executor in spec["deploymentSpec"]["executors"].items():
        container = executor["container"]
        omp = {"name": "OMP_NUM_THREADS", "value": container["resources"]["resourceCpuRequest"]}
        assert omp in container["env"], name


def test_caching_off_only_where_reuse_would_be_wrong(spec):
    tasks = all_tasks(spec)
    cached = {name: tasks[name].get("cachingOptions", {}).get("enableCache", False) for name in STEPS}
    assert cached == {"preprocess": False, "train": True, "evaluate": True, "evaluate-champion": False,
                      "select-and-gate": False, "push": False, "report": True}


def test_parameters_registry_required_rest_defaulted(spec):
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert "defaultValue" not in params["registry"] and not params["registry"].get("isOptional")
    assert params["accelerator_count"]["parameterType"] == "NUMBER_INTEGER"
    assert params["variants"]["parameterType"] == "LIST"
    assert "baseline" in [v["name"] for v in params["variants"]["defaultValue"]]
    assert {"report_html", "report_markdown", "comparison", "blessing", "candidate", "tensorboard",
            "evaluations"} == set(
        spec["root"]["outputDefinitions"]["artifacts"])


def test_default_image_is_the_package_version(tmp_path):
    from importlib.metadata import version

    assert IMAGE == f"interest-pipeline:{version('interest-pipeline')}"
    spec = yaml.safe_load(compile_pipeline(tmp_path / "p.yaml").read_text())
    assert {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()} == {IMAGE}


def artifact_source(spec, dag_name: str, task_name: str, input_name: str) -> tuple[str, str]:
    """(producer task, output key) in the root DAG that feeds ``input_name`` of ``task_name`` in ``dag_name``,
    followed up through the sub-DAGs (loop body, condition body) that pass it on as a component input."""
    dags = {"root": spec["root"], **{n: c for n, c in spec["components"].items() if "dag" in c}}
    callers = {task["componentRef"]["name"]: (name, task_name_) for name, dag in dags.items()
               for task_name_, task in dag["dag"]["tasks"].items()}
    source = dags[dag_name]["dag"]["tasks"][task_name]["inputs"]["artifacts"][input_name]
    while "componentInputArtifact" in source:
        dag_name, caller = callers[dag_name]
        source = dags[dag_name]["dag"]["tasks"][caller]["inputs"]["artifacts"][source["componentInputArtifact"]]
    assert dag_name == "root", dag_name
    return source["taskOutputArtifact"]["producerTask"], source["taskOutputArtifact"]["outputArtifactKey"]


def test_every_consumer_of_the_preprocessed_data_gets_it_from_preprocess(spec):
    """train and evaluate (in the loop body), evaluate-champion (root) and push (in the condition body) read the
    data set `data`; each must trace back to the preprocess task's own output, and no other task reads one."""
    dags = {"root": spec["root"], **{n: c for n, c in spec["components"].items() if "dag" in c}}
    readers = {}
    for dag_name, dag in dags.items():
        for task_name, task in dag["dag"]["tasks"].items():
            executor = spec["components"][task["componentRef"]["name"]].get("executorLabel")
            if executor and "data" in task.get("inputs", {}).get("artifacts", {}):
                readers[task_name] = artifact_source(spec, dag_name, task_name, "data")
    assert readers == {name: ("preprocess", "data") for name in ("train", "evaluate", "evaluate-champion", "push")}
    for name in readers:
        assert spec["components"][f"comp-{name}"]["inputDefinitions"]["artifacts"]["data"]["artifactType"][
            "schemaTitle"] == "system.Dataset", name
