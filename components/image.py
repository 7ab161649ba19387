"""The one container image every component runs in (built from the repository's Dockerfile by ``make image``).

Components name it as their ``base_image``; ``pipelines.pipeline.create_pipeline(image=...)`` puts another
reference (a registry path, a CUDA build) on every task when the pipeline is compiled for a cluster.
"""

from __future__ import annotations

from importlib.metadata import version

REPOSITORY = "interest-pipeline"  # image name; prefix it with a registry (ghcr.io/org/...) when pushing
TAG = version("interest-pipeline")  # the package version: an image and the code it holds move together
IMAGE = f"{REPOSITORY}:{TAG}"
