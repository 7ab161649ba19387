"""The one container image every component runs in (built from the repository's Dockerfile by ``make image``).

Components name it as their ``base_image``; ``pipelines.compiler.compile_pipeline(image=...)`` puts another
reference (a registry path, a CUDA build) on every task, and for a cluster requires one with a registry host
(``check_cluster_image``).

The tag is the git commit (12 hex digits, ``-dirty`` with uncommitted changes), as ``make image`` tags it: the
compiled YAML embeds each component's source from this checkout, and the image must hold the same code. A package
version would be reused by every commit in between. Inside the image (no .git) the commit comes from
``INTEREST_CODE_VERSION``, set by the build (core.lineage).
"""

from __future__ import annotations

import re

from core.configs import require
from core.lineage import code_version

REPOSITORY = "interest-pipeline"  # image name; prefix it with a registry (ghcr.io/org/...) when pushing


def image_tag(version: str | None = None) -> str:
    """The image tag of a code version (core.lineage.code_version): its commit's first 12 hex digits."""
    version = version or code_version()
    dirty = version.endswith("-dirty")
    return version.removesuffix("-dirty")[:12] + ("-dirty" if dirty else "")


TAG = image_tag()
IMAGE = f"{REPOSITORY}:{TAG}"


def check_cluster_image(image: str, flag: str = "--image") -> str:
    """``image`` if a cluster can pull it and it names one build; else ConfigError naming ``flag``. A cluster pulls
    from a registry, so the reference needs a registry host (Docker's rule: a first component holding '.' or
    ':', or ``localhost``); a ``-dirty`` or ``latest`` tag does not say which code the image holds."""
    name, _, digest = image.partition("@")
    first, slash, rest = name.partition("/")
    require(bool(slash) and ("." in first or ":" in first or first == "localhost"), flag,
            f"{image!r} has no registry host, so no cluster can pull it: push it (docker tag/push "
            f"REGISTRY/{REPOSITORY}:{TAG}) and pass that reference")
    tag = re.search(r":([^:/]+)$", rest)
    require(bool(digest) or bool(tag), flag, f"{image!r} has no tag: name the build, e.g. {REPOSITORY}:{TAG}")
    if tag:
        require(not tag.group(1).endswith("-dirty") and tag.group(1) != "latest", flag,
                f"{image!r}: a {tag.group(1)!r} tag does not say which code it holds; commit, `make image`, push")
    return image
