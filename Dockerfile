# One image for every step of the pipeline (components/image.py names it): the project and its pinned
# dependencies on python:3.11-slim. `make image` builds it as interest-pipeline:<package version>.
#
#   CPU (default):  docker build -t interest-pipeline:0.1.0 .
#   CUDA:           docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 \
#                                -t interest-pipeline:0.1.0-cuda .
# A CUDA wheel carries its own CUDA runtime (nvidia-* wheels); the node only needs the NVIDIA driver.
FROM python:3.11-slim

# torch must match pyproject.toml's pin; the index picks the build (cpu, cu126, cu128, ...).
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# Optional extras: gcp = Dataflow, Vertex AI (PipelineJob, CustomJob) and GCS tools for cluster runs.
ARG EXTRAS=gcp
# The git commit the image is built from (no .git in the image): the registry records it as each model's lineage.
ARG CODE_VERSION=unknown

ENV INTEREST_CODE_VERSION=${CODE_VERSION} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /opt/interest

# torch first, from the chosen index: the project's pin is then already met and pip keeps this build.
RUN pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"

COPY pyproject.toml README.md ./
COPY core ./core
COPY preprocessing ./preprocessing
COPY trainer ./trainer
COPY release ./release
COPY components ./components
COPY pipelines ./pipelines
RUN pip install ".[${EXTRAS}]" && interest --help > /dev/null

# KFP and Vertex AI run components as `python3 -m kfp.dsl.executor_main ...`, overriding the entrypoint; it
# serves `docker run IMAGE train ...` and friends. The default user stays root: the KFP v2 launcher creates its
# artifact mount points (/minio, /gcs) at the filesystem root.
ENTRYPOINT ["interest"]
CMD ["--help"]
