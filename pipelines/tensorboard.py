"""TensorBoard over a cluster run's logs: served here from object storage, or as a Kubeflow ``Tensorboard``.

A cluster run keeps every variant's logs at ``<pipeline root>/runs/<run id>/tensorboard/<variant>/``
(components.artifacts.run_root), so both need only the run id.

- ``serve_object_store(uri)`` (``interest tensorboard gs://...|s3://...|minio://...``) mirrors the event files into
  a local folder through core.storage, again every ``reload_seconds``, and serves that folder on 127.0.0.1.
  TensorBoard's own readers are not used on the URI: without TensorFlow it reads gs:// only through its Rust data
  server, whose GCS client is fixed to storage.googleapis.com with Google credentials (no emulator, no other
  project settings), and s3:// only through its Python reader, which takes the endpoint from S3_ENDPOINT rather
  than AWS_ENDPOINT_URL and knows no minio://. The mirror reads with exactly the settings the pipeline wrote with.
- ``create_kubeflow_tensorboard`` (``interest tensorboard --kubeflow RUN_ID``) creates a
  ``tensorboard.kubeflow.org/v1alpha1`` Tensorboard over the same prefix in the profile namespace; Kubeflow's
  Tensorboard controller runs TensorBoard there (gs:// with the namespace's Workload Identity, s3:// with a
  PodDefault carrying the S3 settings) and the central dashboard serves it at ``/tensorboard/<ns>/<name>/``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from components.artifacts import RUNS
from core import storage
from core.configs import ConfigError, require

TENSORBOARD_GROUP, TENSORBOARD_VERSION, TENSORBOARD_PLURAL = "tensorboard.kubeflow.org", "v1alpha1", "tensorboards"


def mirror(uri: str, local: str | Path, known: dict[str, int] | None = None) -> dict[str, int]:
    """Copy every file below ``uri`` whose size changed since ``known`` (uri -> size) into ``local`` (same
    relative paths; each written aside and renamed in, so TensorBoard never reads half a file); returns the sizes
    now known. Event files only grow (the trainer re-uploads them whole), so a size tells a changed one."""
    known = dict(known or {})
    for file_uri, size in storage.file_sizes(uri).items():
        if known.get(file_uri) != size:
            storage.copy_file(file_uri, str(Path(local, storage.relative(uri, file_uri))))
            known[file_uri] = size
    return known


def serve_object_store(uri: str, port: int, reload_seconds: float = 30.0) -> int:
    """Serve the TensorBoard logs below ``uri`` on 127.0.0.1:``port`` until interrupted (SIGINT or SIGTERM),
    mirroring new events every ``reload_seconds``; TensorBoard runs as a child process that goes with this one."""
    storage.check_uri(uri, "URI")
    require(reload_seconds > 0, "--reload-seconds", f"must be > 0, got {reload_seconds}")
    known = {}
    local = Path(tempfile.mkdtemp(prefix="interest-tensorboard-"))
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        known = mirror(uri, local)
        require(any(Path(u).name.startswith("events.out.tfevents.") for u in known), "URI",
                f"no TensorBoard event files below {uri}")
        board = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(local), "--host",
                                  "127.0.0.1", "--port", str(port), "--reload_interval", str(reload_seconds)])
        print(f"TensorBoard on http://127.0.0.1:{port} over {uri} (Ctrl-C stops it)", flush=True)
        try:
            while not stop.wait(reload_seconds) and board.poll() is None:
                known = mirror(uri, local, known)
        except KeyboardInterrupt:
            pass
        finally:
            board.terminate()
            board.wait(timeout=30)
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
        shutil.rmtree(local, ignore_errors=True)


def run_logs(pipeline_root: str, run_id: str) -> str:
    """Where a cluster run's TensorBoard logs are: ``<pipeline root>/runs/<run id>/tensorboard``."""
    storage.check_uri(pipeline_root, "--pipeline-root")
    require(storage.is_remote(pipeline_root), "--pipeline-root", f"{pipeline_root!r} is not an object-store URI")
    return storage.join(pipeline_root, RUNS, run_id, "tensorboard")


def tensorboard_name(run_id: str) -> str:
    """A Kubernetes name for a run's Tensorboard: ``interest-<run id>`` in lowercase letters, digits and '-'."""
    return re.sub(r"[^a-z0-9-]+", "-", f"interest-{run_id}".lower()).strip("-")[:63].rstrip("-")


def render_kubeflow_tensorboard(name: str, namespace: str, logspath: str) -> dict[str, Any]:
    """A ``tensorboard.kubeflow.org/v1alpha1`` Tensorboard; minio:// is s3:// on the S3 endpoint for its reader."""
    if logspath.startswith("minio://"):
        logspath = "s3://" + logspath.removeprefix("minio://")
    return {"apiVersion": f"{TENSORBOARD_GROUP}/{TENSORBOARD_VERSION}", "kind": "Tensorboard",
            "metadata": {"name": name, "namespace": namespace,
                         "labels": {"app.kubernetes.io/part-of": "interest-pipeline"}},
            "spec": {"logspath": logspath.rstrip("/") + "/"}}


def create_kubeflow_tensorboard(run_id: str, pipeline_root: str, namespace: str, api=None) -> tuple[str, str]:
    """Create (or, when one exists, keep) the Tensorboard over a run's logs; returns (name, logspath). ``api``:
    a kubernetes CustomObjectsApi; default from the kubeconfig (or the pod's service account)."""
    logspath = run_logs(pipeline_root, run_id)
    name = tensorboard_name(run_id)
    if api is None:
        from kubernetes import client, config

        try:
            # $KUBECONFIG read now: the client reads it once, when first imported.
            config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))
        except config.ConfigException:
            config.load_incluster_config()
        api = client.CustomObjectsApi()
    manifest = render_kubeflow_tensorboard(name, namespace, logspath)
    try:
        api.create_namespaced_custom_object(TENSORBOARD_GROUP, TENSORBOARD_VERSION, namespace, TENSORBOARD_PLURAL,
                                            manifest)
    except Exception as exc:
        if getattr(exc, "status", None) != 409:  # 409: it exists already, from an earlier call
            raise ConfigError(f"--kubeflow: could not create Tensorboard {namespace}/{name}: {exc}") from exc
    return name, manifest["spec"]["logspath"]


def kubeflow_url(dashboard: str | None, namespace: str, name: str) -> str:
    """Where Kubeflow's central dashboard serves the Tensorboard."""
    return f"{(dashboard or '').rstrip('/')}/tensorboard/{namespace}/{name}/"
