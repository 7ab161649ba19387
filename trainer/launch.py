"""Distributed training of one variant: torchrun over a pod's GPUs, or a multi-node job on a cluster.

The train component (components/train.py) picks a launcher:

- ``local``: in the task's own pod. One process (in-process ``trainer.train.train_job``) or, with several GPUs,
  ``torchrun --standalone --nproc-per-node=<gpus>`` (DDP, NCCL; ``trainer.job.torchrun_command``).
- ``pytorchjob``: a Kubeflow Training Operator ``PyTorchJob`` (1 Master + nodes-1 Workers), created with the
  kubernetes client in the pod's namespace; the task waits for it to succeed or fail. The pipeline's service
  account needs ``create`` and ``get`` on ``pytorchjobs.kubeflow.org`` there.
- ``vertex``: a Vertex AI ``CustomJob`` with worker pools (chief + workers), run with google-cloud-aiplatform.

Every node runs the same command, ``python -m torch.distributed.run --nnodes=N --node-rank=$RANK
--master-addr=$MASTER_ADDR --master-port=$MASTER_PORT --nproc-per-node=G -m trainer.train ...``
(``trainer.job.torchrun_command``, the worker side of ``interest train``): the Training Operator and Vertex AI both set MASTER_ADDR, MASTER_PORT and RANK (the
node's index, 0 on the master/chief) on every replica. Nodes read the data and write the
model through gs:// URIs, so the pipeline root must be on GCS for the cluster launchers.
"""

from __future__ import annotations

import logging
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from core import storage
from core.configs import ConfigError, check_literals, require
from trainer.job import TrainJob, torchrun_command

log = logging.getLogger(__name__)

Launcher = Literal["local", "pytorchjob", "vertex"]
PYTORCHJOB_GROUP, PYTORCHJOB_VERSION, PYTORCHJOB_PLURAL = "kubeflow.org", "v1", "pytorchjobs"
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


@dataclass(frozen=True)
class ClusterConfig:
    """Where and on what each variant trains (the pipeline's ``cluster`` parameter).

    The pipeline's ``accelerator_type``/``accelerator_count`` size the train task's own pod (the ``local``
    launcher trains there); the fields below size the nodes of a cluster job, whose waiting task needs no GPU.
    """

    launcher: Launcher = "local"  # local: in the task's pod; pytorchjob: Training Operator; vertex: CustomJob
    nodes: int = 1  # machines (replicas) of a cluster job
    # Kubernetes: the extended resource name of the GPU (nvidia.com/gpu); Vertex: an AcceleratorType
    # (NVIDIA_TESLA_T4, NVIDIA_L4, ...). Empty: CPU only.
    accelerator_type: str = ""
    gpus_per_node: int = 0  # GPUs per machine = training processes per machine (0: one CPU process, gloo)
    cpu: str = "4"  # CPU request of each PyTorchJob replica
    memory: str = "16Gi"  # memory request of each PyTorchJob replica
    namespace: str = ""  # PyTorchJob namespace; empty: the pod's own namespace
    machine_type: str = "n1-standard-8"  # Vertex machine type of every worker pool
    project: str = ""  # Vertex project; empty: the environment's default (CLOUD_ML_PROJECT_ID / ADC)
    location: str = "us-central1"  # Vertex region
    staging_bucket: str = ""  # Vertex staging gs:// bucket; empty: the aiplatform default
    service_account: str = ""  # service account the job runs as; empty: the platform default
    timeout_seconds: int = 24 * 3600  # give up waiting for the job after this long
    poll_seconds: float = 30.0  # PyTorchJob status poll interval

    def __post_init__(self) -> None:
        check_literals(self)
        require(self.nodes >= 1, "cluster.nodes", f"must be >= 1, got {self.nodes}")
        require(self.gpus_per_node >= 0, "cluster.gpus_per_node", f"must be >= 0, got {self.gpus_per_node}")
        require(self.gpus_per_node == 0 or bool(self.accelerator_type), "cluster.accelerator_type",
                "must name the GPU type when gpus_per_node > 0")
        require(self.timeout_seconds > 0, "cluster.timeout_seconds", f"must be > 0, got {self.timeout_seconds}")
        require(self.poll_seconds > 0, "cluster.poll_seconds", f"must be > 0, got {self.poll_seconds}")

    @property
    def nproc_per_node(self) -> int:
        return max(1, self.gpus_per_node)


@dataclass(frozen=True)
class ClusterJob:
    """A training job as a cluster runs it: a Kubernetes-safe name, the image, and the job itself."""

    name: str  # lowercase letters, digits and '-', at most 50 characters (a Kubernetes name)
    image: str  # container image holding the project (components.image.IMAGE or the compiled one)
    job: TrainJob

    def __post_init__(self) -> None:
        require(re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,48}[a-z0-9])?", self.name) is not None, "job name",
                f"{self.name!r} must be 1-50 lowercase letters, digits or '-', starting and ending alphanumeric")


def job_name(prefix: str, variant: str) -> str:
    """A Kubernetes-safe job name from a prefix and a variant name (``interest-swiglu-<suffix>``)."""
    stem = re.sub(r"[^a-z0-9-]+", "-", f"{prefix}-{variant}".lower()).strip("-")
    return f"{stem[:40].rstrip('-')}-{int(time.time()) % 100000:05d}"


# Rendezvous flags of a cluster node: the Training Operator and Vertex AI set these variables on every replica.
NODE_RENDEZVOUS = ('--node-rank="$RANK"', '--master-addr="$MASTER_ADDR"', '--master-port="$MASTER_PORT"')


def node_command(job: ClusterJob, cluster: ClusterConfig) -> list[str]:
    """The container command every node of a cluster job runs; a shell expands the rendezvous variables."""
    command = torchrun_command(job.job, cluster.nproc_per_node, (f"--nnodes={cluster.nodes}", *NODE_RENDEZVOUS),
                               python="python")
    # The rendezvous flags must reach the shell unquoted so that it expands them.
    quoted = [arg if arg in NODE_RENDEZVOUS else shlex.quote(arg) for arg in command]
    return ["sh", "-c", "exec " + " ".join(quoted)]


def render_pytorchjob(job: ClusterJob, cluster: ClusterConfig, namespace: str) -> dict[str, Any]:
    """A ``kubeflow.org/v1`` PyTorchJob manifest: one Master and ``nodes - 1`` Workers, same command."""
    resources: dict[str, Any] = {"requests": {"cpu": cluster.cpu, "memory": cluster.memory}}
    if cluster.gpus_per_node:
        resources["limits"] = {cluster.accelerator_type: cluster.gpus_per_node}

    def replica(count: int) -> dict[str, Any]:
        return {
            "replicas": count,
            # A failed pod restarts and `interest train` resumes from its last checkpoint.
            "restartPolicy": "OnFailure",
            "template": {"spec": {
                "containers": [{
                    "name": "pytorch",  # the Training Operator finds the training container by this name
                    "image": job.image,
                    "command": node_command(job, cluster),
                    "resources": resources,
                }],
                **({"serviceAccountName": cluster.service_account} if cluster.service_account else {}),
            }},
        }

    specs = {"Master": replica(1)}
    if cluster.nodes > 1:
        specs["Worker"] = replica(cluster.nodes - 1)
    return {
        "apiVersion": f"{PYTORCHJOB_GROUP}/{PYTORCHJOB_VERSION}",
        "kind": "PyTorchJob",
        "metadata": {"name": job.name, "namespace": namespace,
                     "labels": {"app.kubernetes.io/part-of": "interest-pipeline", "interest/preset": job.job.preset}},
        "spec": {"runPolicy": {"cleanPodPolicy": "None", "backoffLimit": 3}, "pytorchReplicaSpecs": specs},
    }


def render_vertex_worker_pools(job: ClusterJob, cluster: ClusterConfig) -> list[dict[str, Any]]:
    """Vertex AI CustomJob ``workerPoolSpecs`` (REST: machineSpec, replicaCount, containerSpec.imageUri; written
    in the aiplatform SDK's snake_case): pool 0 is the chief (rank 0), pool 1 the other nodes."""
    machine: dict[str, Any] = {"machine_type": cluster.machine_type}
    if cluster.gpus_per_node:
        machine |= {"accelerator_type": cluster.accelerator_type, "accelerator_count": cluster.gpus_per_node}
    command = node_command(job, cluster)

    def pool(count: int) -> dict[str, Any]:
        return {"machine_spec": machine, "replica_count": count,
                "container_spec": {"image_uri": job.image, "command": command[:2], "args": command[2:]}}

    pools = [pool(1)]
    if cluster.nodes > 1:
        pools.append(pool(cluster.nodes - 1))
    return pools


class LaunchFailed(RuntimeError):
    """torchrun ended with a failure; the message is one line, the tracebacks are in the log file it names."""


def run_torchrun(command: list[str], log_path: str | Path | None = None) -> None:
    """Run a torchrun command, passing its output through live but keeping Python tracebacks (the workers' and
    torchrun's own error report) out of the terminal: they go to ``log_path`` (a temp file by default), and a
    failure raises LaunchFailed with one line naming the error and that file."""
    import tempfile

    log.info("launching %s", shlex.join(command))
    if log_path is None:
        log_path = tempfile.NamedTemporaryFile(prefix="interest-torchrun-", suffix=".log", delete=False).name
    last_error, config_error, state = "", "", "normal"
    with open(log_path, "w") as log_file, subprocess.Popen(command, stdout=subprocess.PIPE,
                                                           stderr=subprocess.STDOUT, text=True) as proc:
        for line in proc.stdout:
            log_file.write(line)
            text = line.rstrip("\n")
            if "ChildFailedError" in text:  # torchrun's own failure report follows: the log keeps it
                state = "report"
            if state == "report":
                continue
            if "Traceback (most recent call last)" in text:
                state = "traceback"
                continue
            if state == "traceback":
                if not text or text.startswith((" ", "\t", "During handling", "The above exception")):
                    continue
                last_error, state = text, "normal"  # the exception line closes the traceback
                continue
            if text.startswith("train: error: "):  # a worker's one-line config error (trainer.job.worker_main)
                config_error = text.removeprefix("train: error: ")
                continue
            print(text, file=sys.stderr, flush=True)
    if proc.returncode != 0 and config_error:
        raise ConfigError(f"{config_error} (full log: {log_path})")
    if proc.returncode != 0:
        why = last_error or f"exit code {proc.returncode}"
        raise LaunchFailed(f"torchrun failed ({why[:300]}); full log: {log_path}")


def run_local(job: TrainJob, gpus: int) -> None:
    """Train in this process, or under torchrun with one process per GPU of this machine when there are several."""
    if gpus <= 1:
        from trainer.train import train_job

        train_job(job)
        return
    run_torchrun(torchrun_command(job, gpus))


def pod_namespace(cluster: ClusterConfig) -> str:
    if cluster.namespace:
        return cluster.namespace
    if SERVICE_ACCOUNT_NAMESPACE.exists():
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
    raise ConfigError("cluster.namespace: not running in a Kubernetes pod; set the namespace of the PyTorchJob")


def job_condition(status: Mapping[str, Any] | None) -> str | None:
    """``Succeeded``/``Failed`` once a PyTorchJob's status says so, else None (still running)."""
    for condition in (status or {}).get("conditions") or []:
        if condition.get("type") in ("Succeeded", "Failed") and condition.get("status") == "True":
            return condition["type"]
    return None


def run_pytorchjob(job: ClusterJob, cluster: ClusterConfig, api=None) -> dict[str, Any]:
    """Create the PyTorchJob, wait until it succeeds (returns its final object) or fails (RuntimeError)."""
    if api is None:
        from kubernetes import client, config

        config.load_incluster_config()
        api = client.CustomObjectsApi()
    namespace = pod_namespace(cluster)
    manifest = render_pytorchjob(job, cluster, namespace)
    api.create_namespaced_custom_object(PYTORCHJOB_GROUP, PYTORCHJOB_VERSION, namespace, PYTORCHJOB_PLURAL, manifest)
    log.info("created PyTorchJob %s/%s (%d nodes x %d processes)", namespace, job.name, cluster.nodes,
             cluster.nproc_per_node)
    deadline = time.monotonic() + cluster.timeout_seconds
    while True:
        obj = api.get_namespaced_custom_object(PYTORCHJOB_GROUP, PYTORCHJOB_VERSION, namespace, PYTORCHJOB_PLURAL,
                                               job.name)
        outcome = job_condition(obj.get("status"))
        if outcome == "Succeeded":
            return obj
        if outcome == "Failed":
            raise RuntimeError(f"PyTorchJob {namespace}/{job.name} failed: {obj['status']['conditions'][-1]}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"PyTorchJob {namespace}/{job.name} not finished after {cluster.timeout_seconds}s")
        time.sleep(cluster.poll_seconds)


def run_vertex(job: ClusterJob, cluster: ClusterConfig) -> None:
    """Run the Vertex AI CustomJob and wait for it (aiplatform raises when it fails)."""
    try:
        from google.cloud import aiplatform
    except ImportError as exc:
        raise ConfigError("cluster.launcher=vertex needs google-cloud-aiplatform: pip install "
                          "'interest-pipeline[gcp]'") from exc
    aiplatform.init(project=cluster.project or None, location=cluster.location,
                    staging_bucket=cluster.staging_bucket or None)
    custom_job = aiplatform.CustomJob(display_name=job.name, worker_pool_specs=render_vertex_worker_pools(job, cluster))
    custom_job.run(service_account=cluster.service_account or None, timeout=cluster.timeout_seconds, sync=True)


def train_on(cluster: ClusterConfig, job: ClusterJob, local_output: str, local_gpus: int) -> None:
    """Train ``job`` with the cluster's launcher and leave the model artifact in ``local_output``.

    ``local``: ``job.job.output`` is ``local_output`` and ``local_gpus`` (the task pod's accelerators) processes
    run. Cluster jobs write to ``job.job.output`` on GCS; the result is then copied to ``local_output`` (the task's
    artifact path, which KFP uploads, or the same bucket mounted by Vertex).
    """
    if cluster.launcher == "local":
        run_local(job.job, local_gpus)
        return
    for uri, what in ((job.job.data, "data"), (job.job.output, "output")):
        require(storage.is_gcs(uri), f"cluster.launcher={cluster.launcher}",
                f"the {what} must be on gs:// so every node can reach it (got {uri}): use a gs:// pipeline root")
    if cluster.launcher == "pytorchjob":
        run_pytorchjob(job, cluster)
    else:
        run_vertex(job, cluster)
    storage.copy_tree(job.job.output, local_output)

