"""The one warm-start lookup, for `interest train --set train.init_from=registry:ROOT[#MODEL]` and the pipeline's
``warm_start`` parameter alike (here, not in trainer/: the trainer cannot read the registry, a sibling floor).

The reference is fixed to the champion's version directory before any process starts, so a champion pushed
during the run does not change what it started from.
"""

from __future__ import annotations

import dataclasses
import json
import logging

from core.configs import ConfigError
from release.registry import REFERENCE_PREFIX, read_champion
from trainer.job import Configs, TrainJob

log = logging.getLogger(__name__)


def champion_reference(registry: str, model_name: str) -> str:
    """``train.init_from`` naming the champion of ``model_name`` in ``registry``."""
    return f"train.init_from={json.dumps(f'{REFERENCE_PREFIX}{registry}#{model_name}')}"


def resolve_warm_start(job: TrainJob, configs: Configs | None = None,
                       missing_ok: bool = False) -> tuple[TrainJob, Configs]:
    """``job`` and its ``configs`` (resolved here when not given) with a ``registry:`` ``init_from`` replaced by the
    champion's version directory; with no champion yet: ConfigError, or (``missing_ok``: a pipeline's first run)
    training from scratch."""
    configs = configs or job.configs()
    reference = configs.train.init_from or ""
    if not reference.startswith(REFERENCE_PREFIX):
        return job, configs
    root, _, name = reference[len(REFERENCE_PREFIX):].partition("#")
    champion = read_champion(root, name or "interest")
    if champion is None and not missing_ok:
        raise ConfigError(f"{reference}: the registry has no champion of {name or 'interest'} yet")
    resolved = champion.uri if champion else None
    log.info("warm start from %s (%s)", resolved or "scratch: no champion yet", reference)
    return (dataclasses.replace(job, overrides=(*job.overrides, f"train.init_from={json.dumps(resolved)}")),
            configs._replace(train=dataclasses.replace(configs.train, init_from=resolved)))
