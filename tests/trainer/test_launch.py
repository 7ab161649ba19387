"""Multi-node training specs: the rendered PyTorchJob and Vertex worker pools against their schema fields, and
`run_pytorchjob` creating and watching a job through the real kubernetes client against a local HTTP server that
serves the custom-objects endpoints of the Kubernetes API (no cluster runs here)."""

from __future__ import annotations

import json
import shlex

import pytest

from core.configs import ConfigError, from_dict
from tests.support.json_api import serve_json
from trainer import launch as cluster
from trainer.job import TrainJob, overrides_from

JOB = cluster.ClusterJob(
    name="interest-swiglu-00042", image="ghcr.io/acme/interest-pipeline:1.0-cuda",
    job=TrainJob(data="gs://b/run/data", output="gs://b/run/model-job", preset="swiglu",
                 overrides=overrides_from(("d_model=128",), {"time_budget_seconds": 600.0, "max_steps": 5000,
                                                             "epochs": None, "schedule": "cosine"})),
)
GPU = cluster.ClusterConfig(launcher="pytorchjob", nodes=3, accelerator_type="nvidia.com/gpu", gpus_per_node=4,
                            cpu="8", memory="32Gi", namespace="team")


def script(command: list[str]) -> list[str]:
    assert command[:2] == ["sh", "-c"]
    return shlex.split(command[2])


def test_node_command_runs_torchrun_over_the_nodes_with_the_trainer_arguments():
    argv = script(cluster.node_command(JOB, GPU))
    assert argv[:4] == ["exec", "python", "-m", "torch.distributed.run"]
    assert {"--nnodes=3", "--nproc-per-node=4", "--node-rank=$RANK", "--master-addr=$MASTER_ADDR",
            "--master-port=$MASTER_PORT"} <= set(argv)
    worker = argv[argv.index("trainer.train") + 1:]
    assert worker[:6] == ["--data", "gs://b/run/data", "--output", "gs://b/run/model-job", "--preset", "swiglu"]
    sets = [worker[i + 1] for i, a in enumerate(worker) if a == "--set"]
    assert sets == ["model.d_model=128", "train.time_budget_seconds=600.0", "train.max_steps=5000",
                    "train.epochs=null", 'train.schedule="cosine"']


def test_train_args_are_what_interest_train_parses():
    from pipelines import cli
    from trainer.job import job_from_args

    job = job_from_args(cli.build_parser().parse_args(["train", *JOB.job.argv()]))
    assert job == JOB.job
    model_cfg, train_cfg = job.configs()
    assert model_cfg.d_model == 128 and model_cfg.mlp == "swiglu"
    assert (train_cfg.time_budget_seconds, train_cfg.max_steps, train_cfg.epochs, train_cfg.schedule) == (
        600.0, 5000, None, "cosine")


def test_pytorchjob_manifest():
    manifest = cluster.render_pytorchjob(JOB, GPU, "team")
    assert manifest["apiVersion"] == "kubeflow.org/v1" and manifest["kind"] == "PyTorchJob"
    assert manifest["metadata"]["name"] == JOB.name and manifest["metadata"]["namespace"] == "team"
    specs = manifest["spec"]["pytorchReplicaSpecs"]
    assert set(specs) == {"Master", "Worker"}
    assert specs["Master"]["replicas"] == 1 and specs["Worker"]["replicas"] == 2
    for spec in specs.values():
        assert spec["restartPolicy"] == "OnFailure"
        (container,) = spec["template"]["spec"]["containers"]
        assert container["name"] == "pytorch"
        assert container["image"] == JOB.image
        assert container["command"] == cluster.node_command(JOB, GPU)
        assert container["resources"] == {"requests": {"cpu": "8", "memory": "32Gi"},
                                          "limits": {"nvidia.com/gpu": 4}}
    json.dumps(manifest)  # it travels as JSON


def test_single_node_cpu_job_has_no_workers_and_no_gpu_limit():
    cpu = cluster.ClusterConfig(launcher="pytorchjob", nodes=1)
    specs = cluster.render_pytorchjob(JOB, cpu, "ns")["spec"]["pytorchReplicaSpecs"]
    assert set(specs) == {"Master"}
    assert "limits" not in specs["Master"]["template"]["spec"]["containers"][0]["resources"]
    assert "--nproc-per-node=1" in script(cluster.node_command(JOB, cpu))


def test_vertex_worker_pools():
    vertex = cluster.ClusterConfig(launcher="vertex", nodes=3, accelerator_type="NVIDIA_L4", gpus_per_node=2,
                                   machine_type="g2-standard-24")
    pools = cluster.render_vertex_worker_pools(JOB, vertex)
    assert [p["replica_count"] for p in pools] == [1, 2]
    for pool in pools:
        assert pool["machine_spec"] == {"machine_type": "g2-standard-24", "accelerator_type": "NVIDIA_L4",
                                        "accelerator_count": 2}
        container = pool["container_spec"]
        assert container["image_uri"] == JOB.image
        assert [*container["command"], *container["args"]] == cluster.node_command(JOB, vertex)
    single = cluster.render_vertex_worker_pools(JOB, cluster.ClusterConfig(launcher="vertex"))
    assert len(single) == 1 and single[0]["machine_spec"] == {"machine_type": "n1-standard-8"}


@pytest.mark.parametrize("fields, message", [
    ({"launcher": "slurm"}, "launcher"),
    ({"nodes": 0}, "nodes"),
    ({"gpus_per_node": 2}, "accelerator_type"),
    ({"gpus_per_node": -1}, "gpus_per_node"),
])
def test_cluster_config_errors_name_the_field(fields, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(cluster.ClusterConfig, fields)


def test_job_names_are_kubernetes_names():
    name = cluster.job_name("interest", "Rope+Learned_VARIANT-with-a-very-long-name-indeed")
    assert len(name) <= 50 and name.startswith("interest-rope-learned-variant")
    cluster.ClusterJob(name=name, image="i", job=TrainJob(data="d", output="o", preset="rope"))
    with pytest.raises(ConfigError, match="job name"):
        cluster.ClusterJob(name="Bad_Name", image="i", job=TrainJob(data="d", output="o", preset="rope"))


def test_cluster_launchers_need_gcs_paths(tmp_path):
    local_job = cluster.ClusterJob(name="j", image="i",
                                   job=TrainJob(data=str(tmp_path), output=str(tmp_path / "m"), preset="baseline"))
    with pytest.raises(ConfigError, match="gs://"):
        cluster.train_on(GPU, local_job, str(tmp_path / "m"), local_gpus=0)


class FakeKubernetes:
    """The two custom-object endpoints the launcher uses; a job reports Running for two polls, then ``outcome``."""

    def __init__(self, outcome: str):
        self.outcome = outcome
        self.created: list[tuple[str, dict]] = []
        self.polls = 0

    def handle(self, method: str, path: str, body: dict | None) -> tuple[int, dict]:
        prefix = "/apis/kubeflow.org/v1/namespaces/"
        if not path.startswith(prefix):
            return 404, {"kind": "Status", "code": 404}
        namespace, _, rest = path.removeprefix(prefix).partition("/")
        if method == "POST" and rest == "pytorchjobs":
            self.created.append((namespace, body))
            return 201, body
        if method == "GET" and rest.startswith("pytorchjobs/"):
            self.polls += 1
            job = dict(self.created[-1][1])
            conditions = [{"type": "Created", "status": "True"}, {"type": "Running", "status": "True"}]
            if self.polls > 2:
                conditions += [{"type": "Running", "status": "False"},
                               {"type": self.outcome, "status": "True", "reason": f"PyTorchJob{self.outcome}"}]
            return 200, {**job, "status": {"conditions": conditions}}
        return 404, {"kind": "Status", "code": 404}


@pytest.fixture
def kubernetes_api(request):
    state = FakeKubernetes(request.param)

    from kubernetes import client

    with serve_json(lambda method, path, query, body: state.handle(method, path, body)) as url:
        yield client.CustomObjectsApi(client.ApiClient(client.Configuration(host=url))), state


FAST_POLL = cluster.ClusterConfig(launcher="pytorchjob", nodes=2, namespace="team", poll_seconds=0.01)


@pytest.mark.parametrize("kubernetes_api", ["Succeeded"], indirect=True)
def test_pytorchjob_is_created_and_waited_for(kubernetes_api):
    api, state = kubernetes_api
    final = cluster.run_pytorchjob(JOB, FAST_POLL, api=api)
    assert state.created == [("team", cluster.render_pytorchjob(JOB, FAST_POLL, "team"))]
    assert state.polls == 3
    assert cluster.job_condition(final["status"]) == "Succeeded"


@pytest.mark.parametrize("kubernetes_api", ["Failed"], indirect=True)
def test_failed_pytorchjob_fails_the_task(kubernetes_api):
    api, state = kubernetes_api
    with pytest.raises(RuntimeError, match="PyTorchJob team/interest-swiglu-00042 failed"):
        cluster.run_pytorchjob(JOB, FAST_POLL, api=api)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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

    job = cluster.ClusterJob(name="two-nodes", image="unused", job=TrainJob(
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
    """A train task with accelerator_count=2 runs torchrun with 2 processes (here on CPU: gloo)."""
    job = cluster.ClusterJob(name="two-gpus", image="unused", job=TrainJob(
        data=str(tiny_data), output=str(tmp_path / "model"), preset="baseline",
        overrides=overrides_from(("d_model=16", "n_layer=1", "n_head=1", "max_len=8"),
                                 {"max_steps": 2, "batch_size": 8, "eval_every_steps": 2,
                                  "checkpoint_every_steps": 2, "log_every_steps": 1})))
    cluster.train_on(cluster.ClusterConfig(), job, job.job.output, local_gpus=2)
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
