"""The compiled pipeline YAML (KFP IR) and its Kubernetes platform spec: the DAG's shape, task settings, retries,
exit handler, limits, GPU scheduling and image, as a cluster would read them; and the form kfp.local runs."""

from __future__ import annotations

import pytest
import yaml

from components.image import IMAGE
from pipelines.compiler import compile_pipeline
from pipelines.remote import RETRY

CUSTOM_IMAGE = "registry.example.com/team/interest-pipeline:3f2a9c1"
STEPS = {
    "record-run": "Record run",
    "preprocess": "Preprocess events",
    "train": "Train variant",
    "evaluate": "Evaluate variant",
    "evaluate-champion": "Evaluate production champion",
    "select-and-gate": "Select candidate and gate",
    "push": "Push to registry",
    "report": "Report",
}


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """(pipeline spec, Kubernetes platform spec) compiled for a cluster, with MinIO settings."""
    path = compile_pipeline(tmp_path_factory.mktemp("compiled") / "pipeline.yaml", image=CUSTOM_IMAGE, parallelism=3,
                            target="kubeflow", s3_endpoint="http://minio-service.kubeflow:9000",
                            s3_secret="mlpipeline-minio-artifact")
    spec, platform = yaml.safe_load_all(path.read_text())
    return spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


@pytest.fixture(scope="module")
def spec(compiled):
    return compiled[0]


def all_tasks(spec) -> dict[str, dict]:
    """Every task of every DAG (root, exit handler, loop body, condition body), by task name."""
    tasks = dict(spec["root"]["dag"]["tasks"])
    for component in spec["components"].values():
        tasks.update(component.get("dag", {}).get("tasks", {}))
    return tasks


def main_dag(spec) -> dict[str, dict]:
    """The tasks the exit handler wraps (the root DAG itself in the local form)."""
    root = spec["root"]["dag"]["tasks"]
    handler = root.get("exit-handler-1")
    return spec["components"][handler["componentRef"]["name"]]["dag"]["tasks"] if handler else root


def loop_task(spec) -> dict:
    loops = [t for t in main_dag(spec).values() if "parameterIterator" in t]
    assert len(loops) == 1
    return loops[0]


def test_loop_over_variants_with_parallelism(spec):
    loop = loop_task(spec)
    assert loop["parameterIterator"]["items"] == {"inputParameter": "pipelinechannel--variants"}
    assert loop["inputs"]["parameters"]["pipelinechannel--variants"] == {
        "componentInputParameter": "pipelinechannel--variants"}  # through the exit handler's DAG
    assert loop["iteratorPolicy"] == {"parallelismLimit": 3}
    body = spec["components"][loop["componentRef"]["name"]]["dag"]["tasks"]
    assert set(body) == {"train", "evaluate"}
    assert body["train"]["inputs"]["parameters"]["variant"]["componentInputParameter"].endswith("loop-item")
    assert body["evaluate"]["inputs"]["artifacts"]["model"]["taskOutputArtifact"] == {
        "outputArtifactKey": "model", "producerTask": "train"}


def test_gate_collects_every_variant_after_the_loop(spec):
    root = main_dag(spec)
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
    root = main_dag(spec)
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


def test_every_task_runs_the_given_image_with_limits_as_well_as_requests(spec):
    """Vertex AI sizes a task's machine from its limits; on Kubernetes a limit keeps a task to its share."""
    executors = spec["deploymentSpec"]["executors"]
    assert len(executors) == len(STEPS)
    for name, executor in executors.items():
        container = executor["container"]
        assert container["image"] == CUSTOM_IMAGE, name
        resources = container["resources"]
        assert resources["resourceCpuRequest"] and resources["resourceMemoryRequest"], name
        assert resources["resourceCpuLimit"] == resources["resourceCpuRequest"], name
        assert resources["resourceMemoryLimit"] == resources["resourceMemoryRequest"], name
        # install_kfp_package=False: the image already has kfp; no pip install at task start.
        assert "pip install" not in " ".join(container["command"]), name
        # Every task reaches Kubeflow's MinIO (a minio:// pipeline root) the way S3 clients find an endpoint.
        assert {"name": "AWS_ENDPOINT_URL", "value": "http://minio-service.kubeflow:9000"} in container["env"], name


def test_train_and_evaluate_are_retried_with_a_long_backoff(spec):
    tasks = all_tasks(spec)
    retried = {name for name, task in tasks.items() if "retryPolicy" in task}
    assert retried == {"train", "evaluate"}
    for name in retried:
        assert tasks[name]["retryPolicy"] == {"maxRetryCount": 3, "backoffDuration": "900s", "backoffFactor": 2.0,
                                              "backoffMaxDuration": "360000s"}
    from core.rundir import DEFAULT_LEASE_SECONDS

    # The first retry comes after a dead attempt's checkpoint lock has expired.
    assert int(RETRY["backoff_duration"].rstrip("s")) >= DEFAULT_LEASE_SECONDS


def test_an_exit_handler_records_the_run_whatever_happened(spec):
    root = spec["root"]["dag"]["tasks"]
    assert set(root) == {"exit-handler-1", "record-run"}
    record = root["record-run"]
    assert record["triggerPolicy"] == {"strategy": "ALL_UPSTREAM_TASKS_COMPLETED"}
    assert record["dependentTasks"] == ["exit-handler-1"]
    assert record["inputs"]["parameters"]["status"] == {"taskFinalStatus": {"producerTask": "exit-handler-1"}}
    assert set(main_dag(spec)) >= {"preprocess", "select-and-gate", "report"}
    assert "outputDefinitions" not in spec["root"]  # KFP: no pipeline outputs from inside an exit handler


def test_train_and_evaluate_find_the_runs_own_place_from_a_parameter_and_the_run_id(spec):
    """A retried train task gets the same checkpoint URI: <pipeline root>/runs/<run id>/checkpoints/<variant>."""
    tasks = all_tasks(spec)
    for name in ("train", "evaluate", "record-run"):
        parameters = tasks[name]["inputs"]["parameters"]
        assert parameters["pipeline_root"]["componentInputParameter"].endswith("pipeline_root"), name
        assert parameters["run_id"] == {"runtimeValue": {"constant": "{{$.pipeline_job_uuid}}"}}, name


def test_train_pods_tolerate_the_gpu_pool_and_get_a_memory_backed_dev_shm(compiled):
    _, platform = compiled
    train = platform["exec-train"]
    assert train["tolerations"] == [{"tolerationJson": {"componentInputParameter": "pipelinechannel--gpu_tolerations"}}]
    assert train["nodeSelector"] == {
        "nodeSelectorJson": {"componentInputParameter": "pipelinechannel--gpu_node_selector"}}
    assert train["emptyDirMounts"] == [{"medium": "Memory", "mountPath": "/dev/shm", "volumeName": "dshm"}]
    for name, executor in platform.items():
        assert executor["secretAsEnv"] == [{
            "keyToEnv": [{"envVar": "AWS_ACCESS_KEY_ID", "secretKey": "accesskey"},
                         {"envVar": "AWS_SECRET_ACCESS_KEY", "secretKey": "secretkey"}],
            "optional": False, "secretName": "mlpipeline-minio-artifact",
            "secretNameParameter": {"runtimeValue": {"constant": "mlpipeline-minio-artifact"}}}], name
        if name != "exec-train":
            assert not {"tolerations", "nodeSelector", "emptyDirMounts"} & set(executor), name
    # The loop's DAG declares the parameters its platform settings read.
    loop = next(c for n, c in compiled[0]["components"].items() if n.startswith("comp-for-loop"))
    assert {"pipelinechannel--gpu_tolerations", "pipelinechannel--gpu_node_selector"} <= set(
        loop["inputDefinitions"]["parameters"])


def test_the_local_form_keeps_outputs_and_no_retries(tmp_path):
    """kfp.local sleeps through retry backoffs and a pipeline inside an exit handler has no outputs: `interest
    run` compiles the same DAG without both (and kfp.local ignores the platform spec it still carries)."""
    spec, platform = yaml.safe_load_all(compile_pipeline(tmp_path / "local.yaml").read_text())
    assert "exit-handler-1" not in spec["root"]["dag"]["tasks"] and "record-run" not in all_tasks(spec)
    assert not any("retryPolicy" in t for t in all_tasks(spec).values())
    assert {"report_html", "blessing", "evaluations"} <= set(spec["root"]["outputDefinitions"]["artifacts"])
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert executors["exec-train"]["emptyDirMounts"][0]["mountPath"] == "/dev/shm"


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
                      "select-and-gate": False, "push": False, "report": True, "record-run": False}


def test_parameters_registry_required_rest_defaulted(spec):
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert "defaultValue" not in params["registry"] and not params["registry"].get("isOptional")
    assert params["accelerator_count"]["parameterType"] == "STRING"  # the driver reads resource parameters so
    assert params["variants"]["parameterType"] == "LIST"
    assert "baseline" in [variant["name"] for variant in params["variants"]["defaultValue"]]
    assert params["gpu_tolerations"] == {"defaultValue": [], "isOptional": True, "parameterType": "LIST"}
    assert params["gpu_node_selector"] == {"defaultValue": {}, "isOptional": True, "parameterType": "STRUCT"}


def test_default_image_is_tagged_with_the_commit(tmp_path):
    from core.lineage import code_version

    commit = code_version()
    assert IMAGE == f"interest-pipeline:{commit[:12]}{'-dirty' if commit.endswith('-dirty') else ''}"
    spec, _ = yaml.safe_load_all(compile_pipeline(tmp_path / "p.yaml").read_text())
    assert {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()} == {IMAGE}


def artifact_source(spec, dag_name: str, task_name: str, input_name: str) -> tuple[str, str]:
    """(producer task, output key) that feeds ``input_name`` of ``task_name`` in ``dag_name``, followed up through
    the sub-DAGs (loop body, condition body, exit handler body) that pass it on as a component input, to the DAG
    where a task produces it."""
    dags = {"root": spec["root"], **{n: c for n, c in spec["components"].items() if "dag" in c}}
    callers = {task["componentRef"]["name"]: (name, task_name_) for name, dag in dags.items()
               for task_name_, task in dag["dag"]["tasks"].items()}
    source = dags[dag_name]["dag"]["tasks"][task_name]["inputs"]["artifacts"][input_name]
    while "componentInputArtifact" in source:
        dag_name, caller = callers[dag_name]
        source = dags[dag_name]["dag"]["tasks"][caller]["inputs"]["artifacts"][source["componentInputArtifact"]]
    producer = source["taskOutputArtifact"]["producerTask"]
    assert producer in dags[dag_name]["dag"]["tasks"], (dag_name, producer)  # a task of the DAG that was reached
    return producer, source["taskOutputArtifact"]["outputArtifactKey"]


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
