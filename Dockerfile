# One image for every step of the pipeline (components/image.py names it): the project and its pinned
# dependencies on python:3.11-slim. `make image` builds it as interest-pipeline:<commit> (12 hex digits).
#
#   CPU (default):  make image IMAGE=REGISTRY/interest-pipeline && docker push REGISTRY/interest-pipeline:<commit>
#   CUDA:           make image IMAGE=REGISTRY/interest-pipeline-cuda TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
# A CUDA wheel carries its own CUDA runtime (nvidia-* wheels); the node only needs the NVIDIA driver.
FROM python:3.11-slim

# torch must match pyproject.toml's pin; the index picks the build (cpu, cu126, cu128, ...).
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# Optional extras: gcp = Dataflow, Vertex AI (PipelineJob, CustomJob) and GCS tools for cluster runs.
ARG EXTRAS=gcp

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /opt/interest

# torch first, from the chosen index: the project's pin is then already met and pip keeps this build.
RUN pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"

# The dependencies alone (pyproject.toml's, with the extras), in their own layer: a new commit rebuilds only the
# layers below, in seconds, instead of reinstalling 1.5 GB of packages.
COPY pyproject.toml ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; extras = [e for e in '${EXTRAS}'.split(',') if e]; print('\n'.join(p['dependencies'] + [d for e in extras for d in p['optional-dependencies'][e]]))" > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt && rm /tmp/requirements.txt

# The code, then the project itself without touching the dependencies.
COPY README.md ./
COPY core ./core
COPY preprocessing ./preprocessing
COPY trainer ./trainer
COPY release ./release
COPY components ./components
COPY pipelines ./pipelines
RUN pip install --no-deps . && interest --help > /dev/null

# The git commit the image is built from (no .git in the image): its tag (components/image.py) and every model's
# lineage in the registry. Declared here, after the installs, so that a new commit does not void their layers.
ARG CODE_VERSION=unknown
ENV INTEREST_CODE_VERSION=${CODE_VERSION}

# Not root. The KFP v2 launcher stages artifacts below /gcs, /minio and /s3 (by the pipeline root's scheme) and
# creates those directories at the filesystem root, which a non-root user can only do when they exist and are its.
RUN useradd --uid 1000 --create-home --shell /usr/sbin/nologin interest \
    && mkdir -p /gcs /minio /s3 && chown interest:interest /gcs /minio /s3
USER 1000
ENV HOME=/home/interest

# KFP and Vertex AI run components as `python3 -m kfp.dsl.executor_main ...`, overriding the entrypoint; it
# serves `docker run IMAGE train ...` and friends.
ENTRYPOINT ["interest"]
CMD ["--help"]
