"""Compile the pipeline for where it runs: the local form (pipelines.pipeline.create_pipeline) for kfp.local, the
cluster runner's form (pipelines.remote.cluster_pipeline) for the KFP open-source backend and Vertex AI."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from components.image import IMAGE, check_cluster_image
from core.configs import require
from pipelines.pipeline import Build, create_pipeline
from pipelines.remote import cluster_pipeline

# Where the compiled pipeline runs: kfp.local (outputs, no retries, no exit handler), the KFP open-source backend
# (with the Kubernetes platform spec: a second YAML document) or Vertex AI Pipelines (one document: its SDK
# refuses two, and it ignores Kubernetes settings).
Target = Literal["local", "kubeflow", "vertex"]
TARGETS = ("local", "kubeflow", "vertex")


def compile_pipeline(output: str | Path, image: str = IMAGE, parallelism: int = 0, target: Target = "local",
                     s3_endpoint: str = "", s3_secret: str = "") -> Path:
    """Write the pipeline as KFP IR YAML for ``target``: create_pipeline for kfp.local, the cluster runner's form
    (pipelines.remote.cluster_pipeline) for kubeflow and vertex. A cluster pulls ``image`` from a registry, so
    there it must name one (components.image.check_cluster_image): an image without a registry host leaves every
    task waiting on its pull for good."""
    from kfp import compiler

    require(target in TARGETS, "target", f"must be one of {', '.join(TARGETS)}, got {target!r}")
    require(parallelism >= 0, "--parallelism", f"must be >= 0 (0: every variant at once), got {parallelism}")
    require(not s3_endpoint or s3_endpoint.startswith(("http://", "https://")), "--s3-endpoint",
            f"must be an http(s):// URL, got {s3_endpoint!r}")
    build = Build(image=image, parallelism=parallelism, kubernetes=target != "vertex", s3_endpoint=s3_endpoint,
                  s3_secret=s3_secret)
    if target != "local":
        check_cluster_image(image)
    path = Path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    pipeline = create_pipeline(build) if target == "local" else cluster_pipeline(build)
    kfp_compiler = compiler.Compiler()
    kfp_compiler.compile(pipeline, package_path=str(path))
    return path
