"""Multi-node training specs: the rendered PyTorchJob against the Training Operator's CRD (vendored, release-1.9)
and the Vertex worker pools, and `run_pytorchjob` creating, adopting, watching and (when cancelled or past its
deadline) deleting a job through the real kubernetes client against a local HTTP server that serves the endpoints
of the Kubernetes API it uses, with 500s, dropped connections and a lost launcher (no cluster runs here). `run_vertex` runs against a recording stand-in of the aiplatform SDK: no Vertex AI API can run
here, and the gcp extra is not installed in the test environment."""

from __future__ import annotations

import json
import re
import shlex

import pytest

from core.configs import ConfigError, from_dict
from tests.support.json_api import RESET, serve_json
from tests.support.processes import free_port
from trainer import launch as cluster
from trainer.job import TrainJob, overrides_from

JOB = cluster.ClusterJob(
    name="interest-swiglu-00042", image="ghcr.io/acme/interest-pipeline:1.0-cuda",
    train=TrainJob(data="gs://b/run/data", output="gs://b/run/model-job", preset="swiglu",
                 overrides=overrides_from(("d_model=128",), {"time_budget_seconds": 600.0, "max_steps": 5000,
                                                             "epochs": None, "schedule": "cosine"})),
)
TAINTED_POOL = ({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},)
GPU = cluster.ClusterConfig(launcher="pytorchjob", nodes=3, accelerator_type="nvidia.com/gpu", gpus_per_node=4,
                            cpu="8", memory="32Gi", namespace="team", tolerations=TAINTED_POOL,
                            node_selector={"cloud.google.com/gke-accelerator": "nvidia-l4"},
                            service_account="trainer", timeout_seconds=7200, ttl_seconds_after_finished=600)


def script(command: list[str]) -> list[str]:
    assert command[:2] == ["sh", "-c"]
    return shlex.split(command[2])


def test_node_command_runs_torchrun_over_the_nodes_with_the_trainer_arguments():
    argv = script(cluster.node_command(JOB, GPU))
    assert argv[:4] == ["exec", "python", "-m", "torch.distributed.run"]
    assert {"--nnodes=3", "--nproc-per-node=4", "--node-rank=$RANK", "--master-addr=$MASTER_ADDR",
            "--master-port=$MASTER_PORT"} <= set(argv)
    worker = argv[argv.index("trainer") + 1:]
    assert worker[:6] == ["--data", "gs://b/run/data", "--output", "gs://b/run/model-job", "--preset", "swiglu"]
    sets = [worker[i + 1] for i, a in enumerate(worker) if a == "--set"]
    assert sets == ["model.d_model=128", "train.time_budget_seconds=600.0", "train.max_steps=5000",
                    "train.epochs=null", 'train.schedule="cosine"']


def test_train_args_are_what_interest_train_parses():
    from pipelines import cli
    from trainer.job import job_from_args

    job = job_from_args(cli.build_parser().parse_args(["train", *JOB.train.argv()]))
    assert job == JOB.train
    model_cfg, _, train_cfg = job.configs()
    assert model_cfg.d_model == 128 and model_cfg.mlp == "swiglu"
    assert (train_cfg.time_budget_seconds, train_cfg.max_steps, train_cfg.epochs, train_cfg.schedule) == (
        600.0, 5000, None, "cosine")


def test_pytorchjob_manifest():
    manifest = cluster.render_pytorchjob(JOB, GPU, "team")
    assert manifest["apiVersion"] == "kubeflow.org/v1" and manifest["kind"] == "PyTorchJob"
    assert manifest["metadata"]["name"] == JOB.name and manifest["metadata"]["namespace"] == "team"
    assert manifest["spec"]["runPolicy"] == {"cleanPodPolicy": "None", "backoffLimit": 3,
                                             "activeDeadlineSeconds": 7200, "ttlSecondsAfterFinished": 600}
    specs = manifest["spec"]["pytorchReplicaSpecs"]
    assert set(specs) == {"Master", "Worker"}
    assert specs["Master"]["replicas"] == 1 and specs["Worker"]["replicas"] == 2
    for spec in specs.values():
        assert spec["restartPolicy"] == "OnFailure"
        assert spec["template"]["metadata"]["annotations"] == {"sidecar.istio.io/inject": "false"}
        pod = spec["template"]["spec"]
        (container,) = pod["containers"]
        assert container["name"] == "pytorch"
        assert container["image"] == JOB.image
        assert container["command"] == cluster.node_command(JOB, GPU)
        assert container["resources"] == {"requests": {"cpu": "8", "memory": "32Gi"},
                                          "limits": {"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": 4}}
        assert container["volumeMounts"] == [{"name": "dshm", "mountPath": "/dev/shm"}]
        assert pod["volumes"] == [{"name": "dshm", "emptyDir": {"medium": "Memory"}}]
        assert pod["tolerations"] == list(TAINTED_POOL)
        assert pod["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
        assert pod["serviceAccountName"] == "trainer"
    json.dumps(manifest)  # it travels as JSON


def test_single_node_cpu_job_has_no_workers_and_no_gpu_limit():
    cpu = cluster.ClusterConfig(launcher="pytorchjob", nodes=1)
    specs = cluster.render_pytorchjob(JOB, cpu, "ns")["spec"]["pytorchReplicaSpecs"]
    assert set(specs) == {"Master"}
    pod = specs["Master"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"] == {"cpu": "4", "memory": "16Gi"}
    assert not {"tolerations", "nodeSelector", "serviceAccountName"} & set(pod)
    assert "--nproc-per-node=1" in script(cluster.node_command(JOB, cpu))


VERTEX = dict(launcher="vertex", staging_bucket="gs://staging-bucket")


def test_vertex_worker_pools():
    vertex = cluster.ClusterConfig(**VERTEX, nodes=3, accelerator_type="NVIDIA_L4", gpus_per_node=2,
                                   machine_type="g2-standard-24")
    pools = cluster.render_vertex_worker_pools(JOB, vertex)
    assert [p["replica_count"] for p in pools] == [1, 2]
    for pool in pools:
        assert pool["machine_spec"] == {"machine_type": "g2-standard-24", "accelerator_type": "NVIDIA_L4",
                                        "accelerator_count": 2}
        container = pool["container_spec"]
        assert container["image_uri"] == JOB.image
        assert [*container["command"], *container["args"]] == cluster.node_command(JOB, vertex)
    single = cluster.render_vertex_worker_pools(JOB, cluster.ClusterConfig(**VERTEX))
    assert len(single) == 1 and single[0]["machine_spec"] == {"machine_type": "n1-standard-8"}


@pytest.mark.parametrize("accelerator, gpus, machine", [
    ("NVIDIA_L4", 1, "g2-standard-4"), ("NVIDIA_L4", 4, "g2-standard-48"), ("NVIDIA_TESLA_A100", 8, "a2-highgpu-8g"),
    ("NVIDIA_H100_80GB", 8, "a3-highgpu-8g"), ("NVIDIA_TESLA_T4", 2, "n1-standard-8"),
])
def test_vertex_picks_a_machine_that_takes_the_gpus(accelerator, gpus, machine):
    config = cluster.ClusterConfig(**VERTEX, accelerator_type=accelerator, gpus_per_node=gpus)
    assert cluster.vertex_machine_type(config) == machine


@pytest.mark.parametrize("fields, message", [
    ({"accelerator_type": "NVIDIA_L4", "gpus_per_node": 1, "machine_type": "n1-standard-8"},
     "cluster.machine_type: 'n1-standard-8' cannot take 1 x NVIDIA_L4; use g2-standard-4 or"),
    ({"accelerator_type": "NVIDIA_L4", "gpus_per_node": 3}, "cluster.gpus_per_node: no machine takes 3 x NVIDIA_L4"),
    ({"accelerator_type": "NVIDIA_TESLA_T4", "gpus_per_node": 1, "machine_type": "a2-highgpu-1g"},
     "attaches to N1 machines"),
    ({"accelerator_type": "nvidia.com/gpu", "gpus_per_node": 1}, "not a Vertex AI GPU"),
    ({"staging_bucket": ""}, "cluster.staging_bucket: the vertex launcher needs a gs://BUCKET"),
    ({"staging_bucket": "s3://bucket"}, "cluster.staging_bucket"),
    ({"vertex_tensorboard": "projects/p/locations/us-central1/tensorboards/42"}, "cluster.service_account"),
    ({"vertex_tensorboard": "tb-42", "service_account": "sa@p.iam"}, "cluster.vertex_tensorboard"),
])
def test_vertex_settings_that_would_fail_inside_aiplatform_fail_here(fields, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        from_dict(cluster.ClusterConfig, {**VERTEX, **fields})


@pytest.mark.parametrize("fields, message", [
    ({"launcher": "slurm"}, "launcher"),
    ({"nodes": 0}, "nodes"),
    ({"gpus_per_node": 2}, "accelerator_type"),
    ({"gpus_per_node": -1}, "gpus_per_node"),
])
def test_cluster_config_errors_name_the_field(fields, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(cluster.ClusterConfig, fields)


def test_cluster_launchers_need_gcs_paths(tmp_path):
    local_job = cluster.ClusterJob(name="j", image="i",
                                   train=TrainJob(data=str(tmp_path), output=str(tmp_path / "m"), preset="baseline"))
    with pytest.raises(ConfigError, match="gs://"):
        cluster.train_on(GPU, local_job, str(tmp_path / "m"), local_gpus=0)


LAUNCHER = "interest-pipeline-abc12-train-3141"  # the train task's pod
LAUNCHER_ENV = [
    {"name": "AWS_ENDPOINT_URL", "value": "http://seaweedfs.kubeflow:8333"},
    {"name": "AWS_ACCESS_KEY_ID", "valueFrom": {"secretKeyRef": {"name": "mlpipeline-minio-artifact",
                                                                 "key": "accesskey"}}},
    {"name": "AWS_SECRET_ACCESS_KEY", "valueFrom": {"secretKeyRef": {"name": "mlpipeline-minio-artifact",
                                                                     "key": "secretkey"}}},
    {"name": "OMP_NUM_THREADS", "value": "4"},  # the task's own sizing, not the replicas'
]


class FakeKubernetes:
    """The Kubernetes API endpoints the launcher uses: PyTorchJobs (create, get, merge-patch, delete; a second
    create of a name answers 409 as the API server does), the launching pod and the Master pod's log. A job reports
    Running for ``running_polls`` GETs, then ``outcome`` ("Running": never finishes); the Master's log grows a line
    a poll. ``faults``: answers that replace the next job GETs, one each (500, 503 or RESET: a dropped
    connection)."""

    def __init__(self, outcome: str, running_polls: int = 2, faults: tuple[int, ...] = ()):
        self.outcome, self.running_polls, self.faults = outcome, running_polls, list(faults)
        self.jobs: dict[str, dict] = {}
        self.created: list[tuple[str, dict]] = []
        self.deleted: list[tuple[str, str, dict]] = []
        self.patches: list[dict] = []
        self.finished: dict[str, str] = {}  # a job's outcome once reported: it stays
        self.polls = 0
        self.faults_served = 0

    def handle(self, method: str, path: str, query: dict, body: dict | None) -> tuple[int, object]:
        if path == f"/api/v1/namespaces/team/pods/{LAUNCHER}":
            return 200, {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": LAUNCHER, "uid": "uid-3141"},
                         "spec": {"containers": [{"name": "wait", "image": "argo"},
                                                 {"name": "main", "image": "i", "env": LAUNCHER_ENV}]}}
        if path.endswith("-master-0/log"):
            return 200, "".join(f"step {i}\n" for i in range(self.polls))
        prefix = "/apis/kubeflow.org/v1/namespaces/"
        if not path.startswith(prefix):
            return 404, {"kind": "Status", "code": 404}
        namespace, _, rest = path.removeprefix(prefix).partition("/")
        name = rest.removeprefix("pytorchjobs/")
        if method == "POST" and rest == "pytorchjobs":
            if body["metadata"]["name"] in self.jobs:
                return 409, {"kind": "Status", "code": 409, "reason": "AlreadyExists"}
            self.created.append((namespace, body))
            self.jobs[body["metadata"]["name"]] = body
            self.finished.pop(body["metadata"]["name"], None)
            self.polls = 0
            return 201, body
        if name not in self.jobs:
            return 404, {"kind": "Status", "code": 404, "reason": "NotFound"}
        if method == "DELETE":
            self.deleted.append((namespace, name, {**query, **(body or {})}))
            del self.jobs[name]
            return 200, {"kind": "Status", "status": "Success"}
        if method == "PATCH":
            self.patches.append(body)
            self.jobs[name]["metadata"].update(body["metadata"])
            return 200, self.jobs[name]
        if method == "GET":
            if self.faults:
                self.faults_served += 1
                return self.faults.pop(0), {"kind": "Status", "code": 500, "message": "etcdserver: leader changed"}
            self.polls += 1
            conditions = [{"type": "Created", "status": "True"}, {"type": "Running", "status": "True"}]
            if self.polls > self.running_polls and self.outcome != "Running":
                self.finished.setdefault(name, self.outcome)
            if name in self.finished:
                conditions += [{"type": "Running", "status": "False"}, {
                    "type": self.finished[name], "status": "True", "reason": f"PyTorchJob{self.finished[name]}"}]
            return 200, {**self.jobs[name], "status": {"conditions": conditions}}
        return 404, {"kind": "Status", "code": 404}


def kubernetes_clients(url: str):
    from kubernetes import client

    api_client = client.ApiClient(client.Configuration(host=url))
    return client.CustomObjectsApi(api_client), client.CoreV1Api(api_client)


@pytest.fixture
def kubernetes_api(request):
    state = FakeKubernetes(*request.param) if isinstance(request.param, tuple) else FakeKubernetes(request.param)
    with serve_json(state.handle) as url:
        yield url, state


def run_job(url: str, config: cluster.ClusterConfig = None) -> dict:
    api, core = kubernetes_clients(url)
    return cluster.run_pytorchjob(JOB, config or FAST_POLL, api=api, core=core, pod_name=LAUNCHER)


FAST_POLL = cluster.ClusterConfig(launcher="pytorchjob", nodes=2, namespace="team", poll_seconds=0.01)
OWNER = cluster.LaunchingPod(LAUNCHER, "uid-3141", tuple(e for e in LAUNCHER_ENV if e["name"].startswith("AWS_")))


@pytest.mark.parametrize("kubernetes_api", ["Succeeded"], indirect=True)
def test_pytorchjob_is_created_and_waited_for(kubernetes_api, capsys):
    url, state = kubernetes_api
    final = run_job(url)
    assert state.created == [("team", cluster.render_pytorchjob(JOB, FAST_POLL, "team", OWNER))]
    assert state.polls == 3
    assert cluster.job_condition(final["status"]) == "Succeeded"
    assert state.deleted == []  # a finished job stays for its logs until ttlSecondsAfterFinished
    # The Master's log, in the task's log, each line once.
    out = capsys.readouterr().out
    assert [line for line in out.splitlines() if "-master-0]" in line] == [
        f"[{JOB.name}-master-0] step {i}" for i in range(3)]


@pytest.mark.parametrize("kubernetes_api", ["Succeeded"], indirect=True)
def test_replicas_get_the_launching_tasks_storage_settings_and_the_pod_owns_the_job(kubernetes_api):
    """s3:// and Kubeflow's store are reachable from the workers only with the task's endpoint and keys: the
    replicas get the same env entries, secret references included (never the secret's values)."""
    url, state = kubernetes_api
    run_job(url)
    ((_, manifest),) = state.created
    assert manifest["metadata"]["ownerReferences"] == [
        {"apiVersion": "v1", "kind": "Pod", "name": LAUNCHER, "uid": "uid-3141"}]
    for spec in manifest["spec"]["pytorchReplicaSpecs"].values():
        (container,) = spec["template"]["spec"]["containers"]
        assert container["env"] == LAUNCHER_ENV[:3]


def test_job_names_come_from_the_run_and_the_variant():
    name = cluster.job_name("9f1c0de2-5a6b-4c1d-8e7f-0a1b2c3d4e5f", "Rope+Learned_VARIANT-with-a-very-long-name")
    assert len(name) <= 50 and name.startswith("interest-rope-learned-variant")
    assert name == cluster.job_name("9f1c0de2-5a6b-4c1d-8e7f-0a1b2c3d4e5f", "Rope+Learned_VARIANT-with-a-very-long-name")
    assert name != cluster.job_name("another-run", "Rope+Learned_VARIANT-with-a-very-long-name")
    assert cluster.job_name("r", "rope-seed1") != cluster.job_name("r", "rope-seed2")
    cluster.ClusterJob(name=name, image="i", train=TrainJob(data="d", output="o", preset="rope"))
    with pytest.raises(ConfigError, match="job name"):
        cluster.ClusterJob(name="Bad_Name", image="i", train=TrainJob(data="d", output="o", preset="rope"))


@pytest.mark.parametrize("kubernetes_api", [("Succeeded", 3, (500, RESET, 503, RESET))], indirect=True)
def test_api_errors_while_polling_are_retried_and_the_job_survives(kubernetes_api):
    url, state = kubernetes_api
    final = run_job(url)
    assert state.faults_served == 4 and cluster.job_condition(final["status"]) == "Succeeded"
    assert state.deleted == [] and len(state.created) == 1


@pytest.mark.parametrize("kubernetes_api", [("Running", 2, (500,) * 1000)], indirect=True)
def test_an_api_that_keeps_failing_fails_the_task_but_keeps_the_job(kubernetes_api):
    url, state = kubernetes_api
    config = cluster.ClusterConfig(launcher="pytorchjob", namespace="team", poll_seconds=0.001,
                                   unreachable_seconds=0.3)
    with pytest.raises(cluster.JobUnreachable, match="the job keeps running"):
        run_job(url, config)
    assert state.deleted == [] and list(state.jobs) == [JOB.name]  # a retried task adopts it


@pytest.mark.parametrize("kubernetes_api", ["Failed"], indirect=True)
def test_failed_pytorchjob_fails_the_task(kubernetes_api):
    url, state = kubernetes_api
    with pytest.raises(cluster.PyTorchJobFailed, match=f"PyTorchJob team/{JOB.name} failed"):
        run_job(url)
    assert state.deleted == []


@pytest.mark.parametrize("kubernetes_api", ["Running"], indirect=True)
def test_a_job_past_its_deadline_is_deleted(kubernetes_api):
    url, state = kubernetes_api
    deadline = cluster.ClusterConfig(launcher="pytorchjob", namespace="team", poll_seconds=0.01, timeout_seconds=1)
    with pytest.raises(TimeoutError, match="not finished after 1s"):
        run_job(url, deadline)
    assert [(ns, name) for ns, name, _ in state.deleted] == [("team", JOB.name)]
    assert state.deleted[0][2]["propagationPolicy"] == ["Background"]  # its pods go too


TASK = """
import sys
from tests.trainer.test_launch import JOB, LAUNCHER, kubernetes_clients
from trainer import launch
api, core = kubernetes_clients(sys.argv[1])
launch.run_pytorchjob(JOB, launch.ClusterConfig(launcher="pytorchjob", namespace="team", poll_seconds=0.05),
                      api=api, core=core, pod_name=LAUNCHER)
"""


def start_task(url: str):
    import os
    import subprocess
    import sys

    return subprocess.Popen([sys.executable, "-c", TASK, url], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": os.getcwd()})


def wait_for(condition, task, seconds: float = 60) -> None:
    import time

    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline and task.poll() is None:
        time.sleep(0.05)
    assert condition(), task.poll()


@pytest.mark.parametrize("kubernetes_api", ["Running"], indirect=True)
def test_a_cancelled_task_deletes_its_job(kubernetes_api):
    """KFP cancels a run by deleting its pods: the waiting task gets SIGTERM and deletes the PyTorchJob it
    created before it exits, instead of leaving GPUs training for nobody."""
    import signal

    url, state = kubernetes_api
    task = start_task(url)
    wait_for(lambda: state.polls >= 2, task)
    assert state.deleted == []
    task.send_signal(signal.SIGTERM)
    _, err = task.communicate(timeout=30)
    assert task.returncode != 0 and "TaskCancelled: got SIGTERM" in err, err[-2000:]
    assert [(ns, name) for ns, name, _ in state.deleted] == [("team", JOB.name)]


@pytest.mark.parametrize("kubernetes_api", [("Succeeded", 10 ** 9)], indirect=True)
def test_a_retried_task_adopts_the_job_its_lost_launcher_started(kubernetes_api):
    """The launcher's pod is lost mid-job (SIGKILL: no clean-up runs). Its retry names the same job, finds it
    training and waits on it, now as its owner: one job, one trainer holding the checkpoints; no second job that
    would find them locked (OutputLocked)."""
    import signal

    url, state = kubernetes_api
    lost = start_task(url)
    wait_for(lambda: state.polls >= 2, lost)
    lost.send_signal(signal.SIGKILL)
    lost.wait(timeout=30)
    assert list(state.jobs) == [JOB.name] and state.deleted == []
    state.running_polls = state.polls + 2  # the job finishes while the retry watches it
    final = run_job(url)
    assert cluster.job_condition(final["status"]) == "Succeeded"
    assert len(state.created) == 1 and state.deleted == []
    assert state.patches == [{"metadata": {"ownerReferences": [OWNER.owner_reference]}}]


@pytest.mark.parametrize("kubernetes_api", ["Failed"], indirect=True)
def test_a_retried_task_replaces_a_job_that_failed(kubernetes_api):
    url, state = kubernetes_api
    with pytest.raises(cluster.PyTorchJobFailed):
        run_job(url)
    state.outcome = "Succeeded"
    final = run_job(url)
    assert cluster.job_condition(final["status"]) == "Succeeded"
    assert len(state.created) == 2 and [name for _, name, _ in state.deleted] == [JOB.name]


def crd_schema(path: str) -> dict:
    """The ``openAPIV3Schema`` of a vendored CRD (tests/data/crds, release named in its README), with unknown
    fields refused: the API server prunes a field its structural schema does not name, so a misspelt field would
    vanish silently; here it fails."""
    import copy

    import yaml

    crd = yaml.safe_load(open(path))
    schema = copy.deepcopy(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])

    def strict(node):
        if isinstance(node, dict):
            if "properties" in node and "additionalProperties" not in node and not node.get(
                    "x-kubernetes-preserve-unknown-fields"):
                node["additionalProperties"] = False
            for value in node.values():
                strict(value)
        elif isinstance(node, list):
            for value in node:
                strict(value)

    strict(schema)
    return schema


CRDS = "tests/data/crds"


@pytest.mark.parametrize("config", [GPU, FAST_POLL, cluster.ClusterConfig(launcher="pytorchjob", nodes=1)])
def test_pytorchjob_manifests_match_the_training_operators_crd(config):
    import jsonschema

    schema = crd_schema(f"{CRDS}/kubeflow.org_pytorchjobs.yaml")
    manifest = cluster.render_pytorchjob(JOB, config, "team", OWNER)
    jsonschema.validate(json.loads(json.dumps(manifest)), schema)
    broken = json.loads(json.dumps(manifest))
    broken["spec"]["pytorchReplicaSpecs"]["Master"]["replicas"] = "one"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)
    broken = json.loads(json.dumps(manifest))
    broken["spec"]["runPolicy"]["activeDeadline"] = 5  # misspelt: the API server would drop it
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)
    # Kubernetes ObjectMeta (not in the CRD's schema): an owner reference needs these four.
    (owner,) = manifest["metadata"]["ownerReferences"]
    assert {"apiVersion", "kind", "name", "uid"} <= set(owner)


def test_tensorboard_manifest_matches_the_kubeflow_crd():
    import jsonschema

    from pipelines.tensorboard import render_kubeflow_tensorboard

    schema = crd_schema(f"{CRDS}/tensorboard.kubeflow.org_tensorboards.yaml")
    manifest = render_kubeflow_tensorboard("interest-run-1", "team", "minio://mlpipeline/v2/artifacts/team/runs/1")
    jsonschema.validate(manifest, schema)


class RecordingAiplatform:
    """Stands in for google.cloud.aiplatform (no Vertex AI API runs here): records what the launcher asks for;
    ``run`` raises ``fail_with`` when set, as a cancelled or failed wait would."""

    def __init__(self, fail_with: BaseException | None = None):
        self.calls: list[tuple[str, dict]] = []
        fake = self

        class CustomJob:
            def __init__(self, **kwargs):
                fake.calls.append(("CustomJob", kwargs))

            def run(self, **kwargs):
                fake.calls.append(("run", kwargs))
                if fail_with is not None:
                    raise fail_with

            def cancel(self):
                fake.calls.append(("cancel", {}))

        self.CustomJob = CustomJob

    def init(self, **kwargs):
        self.calls.append(("init", kwargs))

    def upload_tb_log(self, **kwargs):
        self.calls.append(("upload_tb_log", kwargs))


@pytest.mark.parametrize("fail_with", [None, cluster.TaskCancelled("got SIGTERM")])
def test_vertex_job_settings_and_cancel(monkeypatch, fail_with):
    import sys

    import google.cloud

    fake = RecordingAiplatform(fail_with)
    # Both ways `from google.cloud import aiplatform` finds it: once the real SDK is imported (test_vertex.py), the
    # package's attribute answers before sys.modules.
    monkeypatch.setitem(sys.modules, "google.cloud.aiplatform", fake)
    monkeypatch.setattr(google.cloud, "aiplatform", fake, raising=False)
    config = cluster.ClusterConfig(**VERTEX, accelerator_type="NVIDIA_L4", gpus_per_node=1, project="p",
                                   vertex_tensorboard="projects/p/locations/us-central1/tensorboards/7",
                                   service_account="trainer@p.iam.gserviceaccount.com", timeout_seconds=3600)
    if fail_with is None:
        cluster.run_vertex(JOB, config)
    else:
        with pytest.raises(cluster.TaskCancelled):
            cluster.run_vertex(JOB, config)
    calls = dict(fake.calls)
    assert calls["init"] == {"project": "p", "location": "us-central1", "staging_bucket": "gs://staging-bucket"}
    assert calls["CustomJob"]["base_output_dir"] == JOB.train.output
    assert calls["CustomJob"]["worker_pool_specs"][0]["machine_spec"]["machine_type"] == "g2-standard-4"
    assert calls["run"] == {"service_account": "trainer@p.iam.gserviceaccount.com", "timeout": 3600,
                            "tensorboard": "projects/p/locations/us-central1/tensorboards/7", "sync": True}
    assert ("cancel" in calls) is (fail_with is not None)


def test_a_task_given_gpus_without_cuda_fails_at_once(tmp_path, monkeypatch):
    """On an image with a CPU build of torch (this one), a train task given GPUs refuses to start instead of
    training on the CPU for hours."""
    import torch

    if torch.cuda.is_available():  # the same check, on a machine that has GPUs: ask for one more than it has
        monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    job = cluster.ClusterJob(name="gpu", image="i", train=TrainJob(data=str(tmp_path), output=str(tmp_path / "m")))
    with pytest.raises(ConfigError, match=r"given 1 GPU\(s\) but torch .* sees 0 CUDA device"):
        cluster.train_on(cluster.ClusterConfig(), job, str(tmp_path / "m"), local_gpus=1)
    assert not (tmp_path / "m").exists()
    cluster.check_accelerators(0)  # no GPUs asked for: nothing to check


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """A small real events file (users walking the catalogue) preprocessed by the Beam pipeline."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from preprocessing.config import PreprocessConfig
    from preprocessing.datasets import EVENTS_SCHEMA
    from preprocessing.pipeline import run

    root = tmp_path_factory.mktemp("multinode")
    rng = np.random.default_rng(0)
    rows = [(f"u{u}", f"i{(u + k) % 30}", 1_000_000_000 + 3600 * k + u, 4.0)
            for u in range(40) for k in range(int(rng.integers(6, 14)))]
    pq.write_table(pa.table(list(zip(*rows, strict=True)), schema=EVENTS_SCHEMA), root / "events.parquet")
    run(str(root / "events.parquet"), str(root / "data"), PreprocessConfig(min_item_count=1, num_shards=2))
    return root / "data"


@pytest.mark.slow
def test_node_command_trains_one_model_across_two_nodes(tiny_data, tmp_path):
    """The exact command of a 2-node job, started twice on 127.0.0.1 with the variables the Training Operator
    and Vertex AI set (RANK, MASTER_ADDR, MASTER_PORT): torchrun joins the nodes and DDP trains one model."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    job = cluster.ClusterJob(name="two-nodes", image="unused", train=TrainJob(
        data=str(tiny_data), output=str(tmp_path / "model"), preset="baseline",
        overrides=overrides_from(("d_model=16", "n_layer=1", "n_head=1", "max_len=8"),
                                 {"max_steps": 4, "batch_size": 8, "eval_every_steps": 2,
                                  "checkpoint_every_steps": 2, "log_every_steps": 1})))
    command = cluster.node_command(job, cluster.ClusterConfig(launcher="pytorchjob", nodes=2))
    port = str(free_port())
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "OMP_NUM_THREADS": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}  # `python` is this venv's
    nodes = [subprocess.Popen(command, env={**env, "RANK": str(rank)}, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for rank in (0, 1)]
    logs = [node.communicate(timeout=300)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], logs[0][-3000:] + logs[1][-3000:]
    summary = json.loads((tmp_path / "model" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 4
    assert (tmp_path / "model" / "model.pt").exists()


@pytest.mark.slow
def test_local_launcher_runs_one_process_per_gpu(tiny_data, tmp_path):
    """A train task with accelerator_count=2 runs torchrun with 2 processes (here on CPU: gloo, called past the
    CUDA check)."""
    job = cluster.ClusterJob(name="two-gpus", image="unused", train=TrainJob(
        data=str(tiny_data), output=str(tmp_path / "model"), preset="baseline",
        overrides=overrides_from(("d_model=16", "n_layer=1", "n_head=1", "max_len=8"),
                                 {"max_steps": 2, "batch_size": 8, "eval_every_steps": 2,
                                  "checkpoint_every_steps": 2, "log_every_steps": 1})))
    cluster.run_local(job.train, gpus=2)  # train_on would refuse 2 GPUs on this CPU machine
    summary = json.loads((tmp_path / "model" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 2


@pytest.mark.slow
def test_a_failing_torchrun_launch_is_one_line(tiny_data, tmp_path):
    """`interest train --nproc 2` whose workers fail (here: a batch larger than the data) ends with one line on
    stderr naming the problem and the log holding the tracebacks, exit 2 for a config error, not a wall of them."""
    import os
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "pipelines.cli", "train", "--data", str(tiny_data), "--output",
                           str(tmp_path / "m"), "--set", "batch_size=100000", "--nproc", "2"],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("interest train:")]
    assert len(errors) == 1 and "batch_size" in errors[0] and "full log:" in errors[0], proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    log = errors[0].rsplit("full log: ", 1)[1].rstrip(")")
    assert "batch_size" in open(log).read()


@pytest.fixture
def vertex_tensorboard_api(monkeypatch):
    """The real aiplatform SDK with anonymous credentials; the TensorboardService RPCs it makes recorded and
    answered as Vertex AI would (resources named below their parents). Returns the list of (method, request)."""
    import google.auth
    from google.auth.credentials import AnonymousCredentials
    from google.cloud.aiplatform_v1.services.tensorboard_service import TensorboardServiceClient
    from google.cloud.aiplatform_v1.types import (
        ListTensorboardTimeSeriesResponse,
        TensorboardExperiment,
        TensorboardRun,
        TensorboardTimeSeries,
        WriteTensorboardRunDataResponse,
    )

    calls: list[tuple[str, dict]] = []
    monkeypatch.setattr(google.auth, "default", lambda *args, **kwargs: (AnonymousCredentials(), "p"))

    def create_tensorboard_experiment(self, request=None, *, parent=None, tensorboard_experiment=None,
                                      tensorboard_experiment_id=None, **kwargs):
        calls.append(("create_tensorboard_experiment", {"parent": parent, "id": tensorboard_experiment_id}))
        return TensorboardExperiment(name=f"{parent}/experiments/{tensorboard_experiment_id}")

    def create_tensorboard_run(self, request=None, *, parent=None, tensorboard_run=None, tensorboard_run_id=None,
                               **kwargs):
        calls.append(("create_tensorboard_run", {"parent": parent, "id": tensorboard_run_id}))
        return TensorboardRun(name=f"{parent}/runs/{tensorboard_run_id}")

    def get_tensorboard_experiment(self, request=None, *, name=None, **kwargs):
        return TensorboardExperiment(name=name)

    def get_tensorboard_run(self, request=None, *, name=None, **kwargs):
        return TensorboardRun(name=name)

    def list_tensorboard_time_series(self, request=None, **kwargs):
        return ListTensorboardTimeSeriesResponse()

    def create_tensorboard_time_series(self, request=None, *, parent=None, tensorboard_time_series=None, **kwargs):
        series_id = str(1000 + len(calls))  # Vertex numbers the series it creates
        calls.append(("create_tensorboard_time_series", {"parent": parent, "id": series_id,
                                                         "display_name": tensorboard_time_series.display_name}))
        return TensorboardTimeSeries(name=f"{parent}/timeSeries/{series_id}",
                                     display_name=tensorboard_time_series.display_name)

    def write_tensorboard_run_data(self, request=None, *, tensorboard_run=None, time_series_data=None, **kwargs):
        calls.append(("write_tensorboard_run_data", {"run": tensorboard_run, "data": list(time_series_data)}))
        return WriteTensorboardRunDataResponse()

    for method in (create_tensorboard_experiment, get_tensorboard_experiment, create_tensorboard_run,
                   get_tensorboard_run, list_tensorboard_time_series, create_tensorboard_time_series,
                   write_tensorboard_run_data):
        monkeypatch.setattr(TensorboardServiceClient, method.__name__, method)
    return calls


def test_logs_of_a_pipeline_train_task_reach_vertex_tensorboard_without_tensorflow(
        vertex_tensorboard_api, monkeypatch, tmp_path):
    """The image has no TensorFlow (aiplatform.upload_tb_log imports it): the scalars go through the SDK's own
    TensorboardRun, read back from the event files with TensorBoard's reader."""
    import sys

    from torch.utils.tensorboard import SummaryWriter

    for run, losses in (("baseline-seed1", (2.0, 1.5, 1.25)), ("rope-seed1", (1.9, 1.4, 1.1))):
        with SummaryWriter(str(tmp_path / run)) as writer:
            for step, loss in enumerate(losses):
                writer.add_scalar("train/loss", loss, step * 10)
                writer.add_scalar("valid/recall@10", 0.1 * step, step * 10)
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # as in the image: importing it fails
    config = cluster.ClusterConfig(vertex_tensorboard="projects/p/locations/europe-west4/tensorboards/7")
    name = cluster.upload_to_vertex_tensorboard(config, str(tmp_path), experiment="Interest_Pipeline-20260101.12")
    assert name == "interest-pipeline-20260101-12"  # [a-z0-9-]: what Vertex accepts as an experiment name
    board = "projects/p/locations/europe-west4/tensorboards/7"
    calls = vertex_tensorboard_api
    assert calls[0] == ("create_tensorboard_experiment", {"parent": board, "id": name})
    assert [c[1]["id"] for c in calls if c[0] == "create_tensorboard_run"] == ["baseline-seed1", "rope-seed1"]
    assert sorted(c[1]["display_name"] for c in calls if c[0] == "create_tensorboard_time_series") == [
        "train/loss", "train/loss", "valid/recall@10", "valid/recall@10"]
    writes = [c[1] for c in calls if c[0] == "write_tensorboard_run_data"]
    assert len(writes) == 6  # 3 steps x 2 runs, every tag of a step in one write
    tag_of = {c[1]["id"]: c[1]["display_name"] for c in calls if c[0] == "create_tensorboard_time_series"}
    first = writes[0]
    assert first["run"] == f"{board}/experiments/{name}/runs/baseline-seed1"
    points = {tag_of[series.tensorboard_time_series_id]: series.values[0] for series in first["data"]}
    assert (points["train/loss"].step, round(points["train/loss"].scalar.value, 6)) == (0, 2.0)
    last = {tag_of[s.tensorboard_time_series_id]: s.values[0].scalar.value for s in writes[5]["data"]}
    assert round(last["train/loss"], 6) == 1.1 and round(last["valid/recall@10"], 6) == 0.2
