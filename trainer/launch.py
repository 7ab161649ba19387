"""Distributed training of one variant: torchrun over a pod's GPUs, or a multi-node job on a cluster.

The train component (components/train.py) picks a launcher:

- ``local``: in the task's own pod. One process (in-process ``trainer.train.fit``) or, with several GPUs,
  ``torchrun --standalone --nproc-per-node=<gpus>`` (DDP, NCCL; ``trainer.job.torchrun_command``).
- ``pytorchjob``: a Kubeflow Training Operator ``PyTorchJob`` (1 Master + nodes-1 Workers), created with the
  kubernetes client in the pod's namespace. Its name comes from the run id and the variant, so every attempt of a
  train task names the same job: a retried task whose launcher was lost adopts the job still training (or replaces
  one that failed) instead of starting a second that would find the checkpoints locked. The job's owner is the
  launching pod (an ownerReference, moved to each adopting pod), so deleting the run's pods deletes it. The
  replicas get the launching container's storage settings (``AWS_*``, ``GOOGLE_*`` ... values and secret
  references as its pod spec has them), so they reach the same store. The task polls the job, passing the
  master's log into its own; an API error (5xx, a reset connection) is retried with backoff for
  ``unreachable_seconds``, and the job is deleted only when the task is cancelled (SIGTERM), passes its deadline
  or meets a permanent error, never over a blip. ``deploy/rbac.yaml`` has what the pipeline's service account
  needs (PyTorchJobs; pods and their logs to read). Replicas opt out of the Istio sidecar (it would keep a
  finished pod running and block the rendezvous port), carry limits as well as requests, a memory-backed
  ``/dev/shm`` (NCCL and DataLoader workers need more than Docker's 64 MB), the pipeline's GPU tolerations and
  node selector; the job has an active deadline and a TTL after it finishes.
- ``vertex``: a Vertex AI ``CustomJob`` with worker pools (chief + workers), run with google-cloud-aiplatform; the
  machine type is checked against (or chosen for) the GPUs asked for, the staging bucket must be a gs:// URI,
  ``base_output_dir`` is the job's output prefix, and a named Vertex AI TensorBoard receives the logs.

Every node runs the same command, ``python -m torch.distributed.run --nnodes=N --node-rank=$RANK
--master-addr=$MASTER_ADDR --master-port=$MASTER_PORT --nproc-per-node=G -m trainer ...``
(``trainer.job.torchrun_command``, the worker side of ``interest train``): the Training Operator and Vertex AI both set MASTER_ADDR, MASTER_PORT and RANK (the
node's index, 0 on the master/chief) on every replica. Nodes read the data and write the
model through object-store URIs, so the pipeline root must be on gs:// (Vertex) or gs:// / s3:// (PyTorchJob).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from core import storage
from core.configs import ConfigError, check_literals, require
from trainer.job import WORKER_ERROR, TrainJob, torchrun_command

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
    cpu: str = "4"  # CPU request and limit of each PyTorchJob replica
    memory: str = "16Gi"  # memory request and limit of each PyTorchJob replica (/dev/shm counts against it)
    namespace: str = ""  # PyTorchJob namespace; empty: the pod's own namespace
    # Kubernetes tolerations and node selector of every PyTorchJob replica (a tainted GPU pool); empty: the
    # pipeline's gpu_tolerations / gpu_node_selector.
    tolerations: tuple[dict, ...] = ()
    node_selector: dict = field(default_factory=dict)
    ttl_seconds_after_finished: int = 24 * 3600  # the Training Operator deletes a finished PyTorchJob after this
    # Vertex machine type of every worker pool; empty: the smallest one that takes gpus_per_node accelerators
    # of accelerator_type (n1-standard-8 without GPUs). Vertex sizes the machine from it, not from requests.
    machine_type: str = ""
    project: str = ""  # Vertex project; empty: the environment's default (CLOUD_ML_PROJECT_ID / ADC)
    location: str = "us-central1"  # Vertex region
    staging_bucket: str = ""  # Vertex staging bucket, gs://BUCKET[/prefix]: required by the vertex launcher
    # Vertex AI TensorBoard (projects/P/locations/L/tensorboards/ID) that receives every variant's logs;
    # empty: none. The vertex launcher then needs a service_account (Vertex requires one to write there).
    vertex_tensorboard: str = ""
    service_account: str = ""  # service account the job runs as; empty: the platform default
    # The job's deadline: the PyTorchJob's activeDeadlineSeconds / the CustomJob's timeout; the task gives up
    # waiting (and deletes the job) then too.
    timeout_seconds: int = 24 * 3600
    poll_seconds: float = 30.0  # PyTorchJob status poll interval
    # How long the task keeps polling through Kubernetes API errors (5xx, resets) before it fails; the job is kept
    # (a retried task adopts it).
    unreachable_seconds: float = 900.0

    def __post_init__(self) -> None:
        check_literals(self)
        require(self.nodes >= 1, "cluster.nodes", f"must be >= 1, got {self.nodes}")
        require(self.gpus_per_node >= 0, "cluster.gpus_per_node", f"must be >= 0, got {self.gpus_per_node}")
        require(self.gpus_per_node == 0 or bool(self.accelerator_type), "cluster.accelerator_type",
                "must name the GPU type when gpus_per_node > 0")
        require(self.timeout_seconds > 0, "cluster.timeout_seconds", f"must be > 0, got {self.timeout_seconds}")
        require(self.poll_seconds > 0, "cluster.poll_seconds", f"must be > 0, got {self.poll_seconds}")
        require(self.unreachable_seconds >= 0, "cluster.unreachable_seconds",
                f"must be >= 0, got {self.unreachable_seconds}")
        require(self.ttl_seconds_after_finished >= 0, "cluster.ttl_seconds_after_finished",
                f"must be >= 0, got {self.ttl_seconds_after_finished}")
        require(not self.vertex_tensorboard or VERTEX_TENSORBOARD.fullmatch(self.vertex_tensorboard) is not None,
                "cluster.vertex_tensorboard", f"{self.vertex_tensorboard!r} is not projects/P/locations/L/"
                "tensorboards/ID")
        if self.launcher == "vertex":
            require(self.staging_bucket.startswith("gs://") and len(self.staging_bucket) > len("gs://"),
                    "cluster.staging_bucket", f"the vertex launcher needs a gs://BUCKET, got {self.staging_bucket!r}")
            require(not self.vertex_tensorboard or bool(self.service_account), "cluster.service_account",
                    "Vertex AI writes to a TensorBoard only for a job run as a service account: name one")
            vertex_machine_type(self)  # refuses a machine that cannot take the GPUs

    @property
    def nproc_per_node(self) -> int:
        return max(1, self.gpus_per_node)


VERTEX_TENSORBOARD = re.compile(r"projects/[^/]+/locations/[^/]+/tensorboards/[^/]+")
# Vertex AI machine types with attached GPUs of one type, and how many each takes (Compute Engine's accelerator-
# optimized series); the N1 series takes the older GPUs in the counts listed instead.
VERTEX_GPU_MACHINES: dict[str, dict[str, int]] = {
    "NVIDIA_L4": {"g2-standard-4": 1, "g2-standard-8": 1, "g2-standard-12": 1, "g2-standard-16": 1,
                  "g2-standard-32": 1, "g2-standard-24": 2, "g2-standard-48": 4, "g2-standard-96": 8},
    "NVIDIA_TESLA_A100": {"a2-highgpu-1g": 1, "a2-highgpu-2g": 2, "a2-highgpu-4g": 4, "a2-highgpu-8g": 8,
                          "a2-megagpu-16g": 16},
    "NVIDIA_A100_80GB": {"a2-ultragpu-1g": 1, "a2-ultragpu-2g": 2, "a2-ultragpu-4g": 4, "a2-ultragpu-8g": 8},
    "NVIDIA_H100_80GB": {"a3-highgpu-1g": 1, "a3-highgpu-2g": 2, "a3-highgpu-4g": 4, "a3-highgpu-8g": 8},
    "NVIDIA_H100_MEGA_80GB": {"a3-megagpu-8g": 8},
    "NVIDIA_H200_141GB": {"a3-ultragpu-8g": 8},
    "NVIDIA_B200": {"a4-highgpu-8g": 8},
}
VERTEX_N1_GPUS: dict[str, tuple[int, ...]] = {
    "NVIDIA_TESLA_T4": (1, 2, 4), "NVIDIA_TESLA_V100": (1, 2, 4, 8), "NVIDIA_TESLA_P100": (1, 2, 4),
    "NVIDIA_TESLA_P4": (1, 2, 4),
}
VERTEX_CPU_MACHINE = "n1-standard-8"


def vertex_machine_type(cluster: ClusterConfig) -> str:
    """The Vertex machine type of ``cluster``: the one it names, checked against its GPUs, or the smallest that
    takes them; ConfigError naming the field when no machine can (Vertex would refuse the job only at launch)."""
    gpus, accelerator, machine = cluster.gpus_per_node, cluster.accelerator_type, cluster.machine_type
    if not gpus:
        return machine or VERTEX_CPU_MACHINE
    if accelerator in VERTEX_N1_GPUS:
        require(gpus in VERTEX_N1_GPUS[accelerator], "cluster.gpus_per_node",
                f"{accelerator} comes {', '.join(map(str, VERTEX_N1_GPUS[accelerator]))} per machine, not {gpus}")
        require(not machine or machine.startswith("n1-"), "cluster.machine_type",
                f"{accelerator} attaches to N1 machines (n1-standard-8, ...), not {machine!r}")
        return machine or VERTEX_CPU_MACHINE
    machines = VERTEX_GPU_MACHINES.get(accelerator)
    require(machines is not None, "cluster.accelerator_type", f"{accelerator!r} is not a Vertex AI GPU; choose one "
            f"of {', '.join([*VERTEX_GPU_MACHINES, *VERTEX_N1_GPUS])}")
    fitting = [name for name, count in machines.items() if count == gpus]
    require(bool(fitting), "cluster.gpus_per_node", f"no machine takes {gpus} x {accelerator}; machines take "
            f"{', '.join(sorted({str(c) for c in machines.values()}, key=int))}")
    require(not machine or machine in fitting, "cluster.machine_type",
            f"{machine!r} cannot take {gpus} x {accelerator}; use {' or '.join(fitting)}")
    return machine or fitting[0]


@dataclass(frozen=True)
class ClusterJob:
    """A training job as a cluster runs it: a Kubernetes-safe name, the image, and what it trains."""

    name: str  # lowercase letters, digits and '-', at most 50 characters (a Kubernetes name)
    image: str  # container image holding the project (components.image.IMAGE or the compiled one)
    train: TrainJob  # what it trains: the same job a local torchrun would run

    def __post_init__(self) -> None:
        require(re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,48}[a-z0-9])?", self.name) is not None, "job name",
                f"{self.name!r} must be 1-50 lowercase letters, digits or '-', starting and ending alphanumeric")


def job_name(run_id: str, variant: str) -> str:
    """The Kubernetes name of ``variant``'s job in the pipeline run ``run_id``: ``interest-<variant>-<8 hex>``,
    the same for every attempt of its train task (so a retry finds the job an earlier attempt started)."""
    stem = re.sub(r"[^a-z0-9-]+", "-", f"interest-{variant}".lower()).strip("-")
    return f"{stem[:40].rstrip('-')}-{hashlib.sha256(f'{run_id}/{variant}'.encode()).hexdigest()[:8]}"


# Rendezvous flags of a cluster node: the Training Operator and Vertex AI set these variables on every replica.
NODE_RENDEZVOUS = ('--node-rank="$RANK"', '--master-addr="$MASTER_ADDR"', '--master-port="$MASTER_PORT"')


def node_command(job: ClusterJob, cluster: ClusterConfig) -> list[str]:
    """The container command every node of a cluster job runs; a shell expands the rendezvous variables."""
    command = torchrun_command(job.train, cluster.nproc_per_node, (f"--nnodes={cluster.nodes}", *NODE_RENDEZVOUS),
                               python="python")
    # The rendezvous flags must reach the shell unquoted so that it expands them.
    quoted = [arg if arg in NODE_RENDEZVOUS else shlex.quote(arg) for arg in command]
    return ["sh", "-c", "exec " + " ".join(quoted)]


ISTIO_OPT_OUT = {"sidecar.istio.io/inject": "false"}
SHM_VOLUME = "dshm"
# Environment of the launching container that says where the object store is and how to sign in to it.
STORAGE_ENV = re.compile(r"AWS_\w+|GOOGLE_\w+|STORAGE_EMULATOR_HOST|CLOUDSDK_\w+")
KFP_CONTAINER = "main"  # the container of a KFP task pod that runs the component


@dataclass(frozen=True)
class LaunchingPod:
    """The pod of the train task that launches a PyTorchJob: its owner, and the source of its storage settings."""

    name: str
    uid: str
    env: tuple[dict[str, Any], ...] = ()  # storage env entries, values and secret references as its spec has them

    @property
    def owner_reference(self) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "Pod", "name": self.name, "uid": self.uid}


def launching_pod(core, namespace: str, name: str | None = None) -> LaunchingPod:
    """This task's pod (``HOSTNAME`` is the pod's name in Kubernetes), read through the API: its uid and the
    storage env entries of its component container (STORAGE_ENV)."""
    from kubernetes import client

    pod = core.read_namespaced_pod(name or os.environ["HOSTNAME"], namespace)
    containers = pod.spec.containers
    container = next((c for c in containers if c.name == KFP_CONTAINER), containers[0])
    env = client.ApiClient().sanitize_for_serialization(container.env or [])
    return LaunchingPod(pod.metadata.name, pod.metadata.uid,
                        tuple(e for e in env if STORAGE_ENV.fullmatch(e["name"])))


def render_pytorchjob(job: ClusterJob, cluster: ClusterConfig, namespace: str,
                      owner: LaunchingPod | None = None) -> dict[str, Any]:
    """A ``kubeflow.org/v1`` PyTorchJob manifest: one Master and ``nodes - 1`` Workers, same command; with the
    launching pod as its owner and that pod's storage settings on every replica."""
    limits: dict[str, Any] = {"cpu": cluster.cpu, "memory": cluster.memory}
    if cluster.gpus_per_node:
        limits[cluster.accelerator_type] = cluster.gpus_per_node
    resources = {"requests": {"cpu": cluster.cpu, "memory": cluster.memory}, "limits": limits}

    def replica(count: int) -> dict[str, Any]:
        pod: dict[str, Any] = {
            "containers": [{
                "name": "pytorch",  # the Training Operator finds the training container by this name
                "image": job.image,
                "command": node_command(job, cluster),
                "resources": resources,
                "volumeMounts": [{"name": SHM_VOLUME, "mountPath": "/dev/shm"}],
                **({"env": [dict(e) for e in owner.env]} if owner and owner.env else {}),
            }],
            # NCCL and DataLoader workers share memory through /dev/shm; a container gets 64 MB by default.
            "volumes": [{"name": SHM_VOLUME, "emptyDir": {"medium": "Memory"}}],
        }
        if cluster.service_account:
            pod["serviceAccountName"] = cluster.service_account
        if cluster.tolerations:
            pod["tolerations"] = [dict(t) for t in cluster.tolerations]
        if cluster.node_selector:
            pod["nodeSelector"] = dict(cluster.node_selector)
        return {
            "replicas": count,
            # A failed pod restarts and `interest train` resumes from its last checkpoint.
            "restartPolicy": "OnFailure",
            # Istio's sidecar would keep a finished replica running (the job never completes) and intercept the
            # rendezvous port before it is ready.
            "template": {"metadata": {"annotations": dict(ISTIO_OPT_OUT)}, "spec": pod},
        }

    specs = {"Master": replica(1)}
    if cluster.nodes > 1:
        specs["Worker"] = replica(cluster.nodes - 1)
    metadata: dict[str, Any] = {"name": job.name, "namespace": namespace,
                                "labels": {"app.kubernetes.io/part-of": "interest-pipeline",
                                           "interest/preset": job.train.preset}}
    if owner:
        metadata["ownerReferences"] = [owner.owner_reference]
    return {
        "apiVersion": f"{PYTORCHJOB_GROUP}/{PYTORCHJOB_VERSION}",
        "kind": "PyTorchJob",
        "metadata": metadata,
        "spec": {
            "runPolicy": {"cleanPodPolicy": "None", "backoffLimit": 3,
                          "activeDeadlineSeconds": cluster.timeout_seconds,
                          "ttlSecondsAfterFinished": cluster.ttl_seconds_after_finished},
            "pytorchReplicaSpecs": specs,
        },
    }


def render_vertex_worker_pools(job: ClusterJob, cluster: ClusterConfig) -> list[dict[str, Any]]:
    """Vertex AI CustomJob ``workerPoolSpecs`` (REST: machineSpec, replicaCount, containerSpec.imageUri; written
    in the aiplatform SDK's snake_case): pool 0 is the chief (rank 0), pool 1 the other nodes."""
    machine: dict[str, Any] = {"machine_type": vertex_machine_type(cluster)}
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
            if text.startswith(WORKER_ERROR):  # a worker's one-line config error (trainer/__main__.py)
                config_error = text.removeprefix(WORKER_ERROR)
                continue
            print(text, file=sys.stderr, flush=True)
    if proc.returncode != 0 and config_error:
        raise ConfigError(f"{config_error} (full log: {log_path})")
    if proc.returncode != 0:
        why = last_error or f"exit code {proc.returncode}"
        raise LaunchFailed(f"torchrun failed ({why[:300]}); full log: {log_path}")


def check_accelerators(gpus: int) -> None:
    """Fail at once when this pod was given ``gpus`` GPUs but torch sees fewer CUDA devices: an image with a CPU
    build of torch, or a node without the NVIDIA driver, would otherwise train on the CPU with gloo, silently,
    for hours."""
    if gpus <= 0:
        return
    import torch

    seen = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if seen < gpus:
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        raise ConfigError(f"accelerator_count: this task was given {gpus} GPU(s) but torch {torch.__version__} "
                          f"({build}) sees {seen} CUDA device(s): run an image built with a CUDA torch (make image "
                          "TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128) on a node with the NVIDIA driver")


def run_local(job: TrainJob, gpus: int) -> None:
    """Train in this process, or under torchrun with one process per GPU of this machine when there are several."""
    if gpus <= 1:
        from trainer.train import fit

        fit(job)
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


class TaskCancelled(Exception):
    """The task got SIGTERM: KFP cancelled the run, or the pod is being deleted (a timeout, a drained node)."""


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """Turn SIGTERM into TaskCancelled while waiting, so that the job this task started is deleted with it
    (Kubernetes sends SIGTERM and waits the pod's grace period before SIGKILL). Only the main thread can take
    signals; elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def cancelled(signum, frame):
        raise TaskCancelled(f"got {signal.Signals(signum).name}: the run was cancelled or the pod is going away")

    previous = signal.signal(signal.SIGTERM, cancelled)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class JobUnreachable(RuntimeError):
    """The Kubernetes API kept failing for ``cluster.unreachable_seconds``; the job was left running."""


class PyTorchJobFailed(RuntimeError):
    """The PyTorchJob reported Failed."""


def transient(exc: BaseException) -> bool:
    """An API error worth retrying: a 429 or 5xx answer, or a connection that broke or was refused."""
    import urllib3

    status = getattr(exc, "status", None)
    if isinstance(status, int) and status:
        return status == 429 or status >= 500
    return isinstance(exc, (urllib3.exceptions.HTTPError, ConnectionError))


class MasterLog:
    """Passes the Master pod's log into this task's log, a poll at a time (lines not printed yet; a restarted
    container starts a new log, printed from its start)."""

    def __init__(self, core, namespace: str, job: str):
        self.core, self.namespace, self.pod = core, namespace, f"{job}-master-0"  # the Training Operator's name
        self.printed = 0

    def pump(self) -> None:
        try:
            text = self.core.read_namespaced_pod_log(self.pod, self.namespace, container="pytorch")
        except Exception as exc:  # noqa: BLE001 - not scheduled yet, or an API blip: the next poll tries again
            log.debug("no log of %s yet: %s", self.pod, exc)
            return
        lines = text.splitlines()
        if len(lines) < self.printed:
            self.printed = 0
        for line in lines[self.printed:]:
            print(f"[{self.pod}] {line}", flush=True)
        self.printed = len(lines)


def _start_or_adopt(api, where: tuple[str, ...], manifest: dict[str, Any], owner: LaunchingPod | None) -> None:
    """Create the job; if an earlier attempt of this task already did, adopt it (its owner becomes this pod)
    unless it failed, in which case it is replaced."""
    from kubernetes.client.exceptions import ApiException

    name = manifest["metadata"]["name"]
    for _ in range(60):
        try:
            api.create_namespaced_custom_object(*where, manifest)
            log.info("created PyTorchJob %s/%s", where[2], name)
            return
        except ApiException as exc:
            if exc.status != 409:
                raise
        try:
            existing = api.get_namespaced_custom_object(*where, name)
        except ApiException as exc:
            if exc.status == 404:  # deleted in between: create it again
                continue
            raise
        if existing.get("metadata", {}).get("deletionTimestamp"):
            time.sleep(1.0)  # a replaced job still going away
            continue
        if job_condition(existing.get("status")) == "Failed":
            log.warning("PyTorchJob %s/%s of an earlier attempt failed: replacing it", where[2], name)
            delete_pytorchjob(api, where[2], name)
            continue
        if owner:
            api.patch_namespaced_custom_object(*where, name, {"metadata": {"ownerReferences": [owner.owner_reference]}})
        log.warning("adopted PyTorchJob %s/%s, started by an earlier attempt of this task", where[2], name)
        return
    raise RuntimeError(f"PyTorchJob {where[2]}/{name} could not be created or adopted")


def run_pytorchjob(job: ClusterJob, cluster: ClusterConfig, api=None, core=None,
                   pod_name: str | None = None) -> dict[str, Any]:
    """Start (or adopt) the PyTorchJob and wait until it succeeds (returns its final object) or fails
    (PyTorchJobFailed). Cancelled (SIGTERM), past its deadline, or a permanent error: the job is deleted before
    this returns; API errors that do not stop (JobUnreachable) and a failed job leave it for a retry or its logs.
    ``api``/``core``: CustomObjectsApi and CoreV1Api (in-cluster ones by default); ``pod_name``: this pod."""
    if api is None or core is None:
        from kubernetes import client, config

        config.load_incluster_config()
        api, core = api or client.CustomObjectsApi(), core or client.CoreV1Api()
    namespace = pod_namespace(cluster)
    owner = launching_pod(core, namespace, pod_name)
    manifest = render_pytorchjob(job, cluster, namespace, owner)
    where = (PYTORCHJOB_GROUP, PYTORCHJOB_VERSION, namespace, PYTORCHJOB_PLURAL)
    with sigterm_raises():
        _start_or_adopt(api, where, manifest, owner)
        try:
            return _wait(api, MasterLog(core, namespace, job.name), where, job.name, cluster)
        except (JobUnreachable, PyTorchJobFailed):
            raise
        except BaseException:
            delete_pytorchjob(api, namespace, job.name)
            raise


def _wait(api, master: MasterLog, where: tuple[str, ...], name: str, cluster: ClusterConfig) -> dict[str, Any]:
    deadline = time.monotonic() + cluster.timeout_seconds
    failing_since, failures = None, 0
    while True:
        if time.monotonic() > deadline:
            raise TimeoutError(f"PyTorchJob {where[2]}/{name} not finished after {cluster.timeout_seconds}s")
        try:
            obj = api.get_namespaced_custom_object(*where, name)
        except Exception as exc:
            if not transient(exc):
                raise
            failing_since = failing_since or time.monotonic()
            if time.monotonic() - failing_since > cluster.unreachable_seconds:
                raise JobUnreachable(f"PyTorchJob {where[2]}/{name}: the Kubernetes API failed for "
                                     f"{cluster.unreachable_seconds:.0f}s ({exc}); the job keeps running") from exc
            failures += 1
            log.warning("polling PyTorchJob %s/%s failed (%s): retrying", where[2], name, exc)
            time.sleep(min(cluster.poll_seconds * 2 ** failures, 300.0))
            continue
        failing_since, failures = None, 0
        master.pump()
        outcome = job_condition(obj.get("status"))
        if outcome == "Succeeded":
            return obj
        if outcome == "Failed":
            raise PyTorchJobFailed(f"PyTorchJob {where[2]}/{name} failed: {obj['status']['conditions'][-1]}")
        time.sleep(cluster.poll_seconds)


def delete_pytorchjob(api, namespace: str, name: str) -> None:
    """Delete a PyTorchJob and (in the background) its pods; one already gone is fine, and a failed delete is
    logged, never raised over the error that led here."""
    try:
        api.delete_namespaced_custom_object(PYTORCHJOB_GROUP, PYTORCHJOB_VERSION, namespace, PYTORCHJOB_PLURAL, name,
                                            propagation_policy="Background")
        log.warning("deleted PyTorchJob %s/%s", namespace, name)
    except Exception as exc:  # noqa: BLE001 - best effort on the way out; activeDeadlineSeconds still stops it
        if getattr(exc, "status", None) != 404:
            log.error("could not delete PyTorchJob %s/%s: %s", namespace, name, exc)


def _aiplatform(what: str):
    try:
        from google.cloud import aiplatform
    except ImportError as exc:
        raise ConfigError(f"{what} needs google-cloud-aiplatform: pip install 'interest-pipeline[gcp]'") from exc
    return aiplatform


def upload_to_vertex_tensorboard(cluster: ClusterConfig, logdir: str, experiment: str) -> str:
    """Write the scalars of the TensorBoard runs below ``logdir`` (one directory per run) to the experiment
    ``experiment`` (the pipeline run's id, made a valid experiment name) of ``cluster.vertex_tensorboard``; returns
    the experiment's name. The events are read with TensorBoard's own reader and written through the SDK's
    TensorboardRun: aiplatform.upload_tb_log would import TensorFlow, which the image does not have. A retried task
    writes into the experiment and runs an earlier attempt created."""
    from collections import defaultdict

    from google.api_core.exceptions import AlreadyExists
    from google.protobuf.timestamp_pb2 import Timestamp
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    aiplatform = _aiplatform("cluster.vertex_tensorboard")
    _, project, _, location, _, _ = cluster.vertex_tensorboard.split("/")
    where = {"project": project, "location": location}
    name = _vertex_id(experiment) or "interest"
    try:
        board = aiplatform.TensorboardExperiment.create(tensorboard_experiment_id=name,
                                                        tensorboard_name=cluster.vertex_tensorboard, **where)
    except AlreadyExists:
        board = aiplatform.TensorboardExperiment(f"{cluster.vertex_tensorboard}/experiments/{name}", **where)
    for run_dir in sorted(p for p in Path(logdir).iterdir() if p.is_dir()):
        events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})  # 0: every point, not a sample
        events.Reload()
        run_id = _vertex_id(run_dir.name)
        try:
            run = aiplatform.TensorboardRun.create(tensorboard_run_id=run_id,
                                                   tensorboard_experiment_name=board.resource_name, **where)
        except AlreadyExists:
            run = aiplatform.TensorboardRun(f"{board.resource_name}/runs/{run_id}", **where)
        tags = events.Tags()["scalars"]
        known = {series.display_name for series in aiplatform.TensorboardTimeSeries.list(
            tensorboard_run_name=run.resource_name, **where)}
        for tag in tags:
            if tag not in known:
                run.create_tensorboard_time_series(display_name=tag, value_type="SCALAR")
        steps: dict[int, dict[str, float]] = defaultdict(dict)
        wall: dict[int, float] = {}
        for tag in tags:
            for event in events.Scalars(tag):
                steps[event.step][tag] = event.value
                wall[event.step] = event.wall_time
        for step in sorted(steps):
            stamp = Timestamp()
            stamp.FromNanoseconds(int(wall[step] * 1e9))
            run.write_tensorboard_scalar_data(time_series_data=steps[step], step=step, wall_time=stamp)
    return name


def _vertex_id(text: str) -> str:
    """A Vertex AI resource id from a name: lowercase letters, digits and '-', at most 128 characters."""
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:128]


def run_vertex(job: ClusterJob, cluster: ClusterConfig) -> None:
    """Run the Vertex AI CustomJob and wait for it (aiplatform raises when it fails); cancelled (SIGTERM) or any
    other error while waiting: the CustomJob is cancelled too."""
    aiplatform = _aiplatform("cluster.launcher=vertex")
    aiplatform.init(project=cluster.project or None, location=cluster.location, staging_bucket=cluster.staging_bucket)
    # base_output_dir: Vertex sets AIP_MODEL_DIR, AIP_CHECKPOINT_DIR and AIP_TENSORBOARD_LOG_DIR below it; the
    # trainer copies its TensorBoard events to the latter (trainer.monitor), which a named TensorBoard reads.
    custom_job = aiplatform.CustomJob(display_name=job.name, worker_pool_specs=render_vertex_worker_pools(job, cluster),
                                      base_output_dir=job.train.output, staging_bucket=cluster.staging_bucket)
    try:
        with sigterm_raises():
            custom_job.run(service_account=cluster.service_account or None, timeout=cluster.timeout_seconds,
                           tensorboard=cluster.vertex_tensorboard or None, sync=True)
    except BaseException:
        try:
            custom_job.cancel()
            log.warning("cancelled Vertex CustomJob %s", job.name)
        except Exception as exc:  # noqa: BLE001 - not created yet, or already over: nothing to cancel
            log.info("did not cancel Vertex CustomJob %s: %s", job.name, exc)
        raise


def train_on(cluster: ClusterConfig, job: ClusterJob, local_output: str, local_gpus: int) -> None:
    """Train ``job`` with the cluster's launcher and leave the model artifact in ``local_output``.

    ``local``: ``job.train.output`` is ``local_output`` and ``local_gpus`` (the task pod's accelerators) processes
    run, after checking that the pod really has them. Cluster jobs write to ``job.train.output`` on an object store;
    the result is then copied to ``local_output`` (the task's artifact path, which KFP uploads, or the same bucket
    mounted by Vertex).
    """
    if cluster.launcher == "local":
        check_accelerators(local_gpus)
        run_local(job.train, local_gpus)
        return
    reachable, schemes = (storage.is_gcs, "gs://") if cluster.launcher == "vertex" else (storage.is_remote,
                                                                                          "gs:// or s3://")
    for uri, what in ((job.train.data, "data"), (job.train.output, "output")):
        require(reachable(uri), f"cluster.launcher={cluster.launcher}",
                f"the {what} must be on {schemes} so every node can reach it (got {uri}): use such a pipeline root")
    if cluster.launcher == "pytorchjob":
        run_pytorchjob(job, cluster)
    else:
        run_vertex(job, cluster)
    storage.copy_tree(job.train.output, local_output)
