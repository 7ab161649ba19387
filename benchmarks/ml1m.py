"""MovieLens-1M sequences for the benchmarks: the real preprocessing's output, never a re-derivation of it.

A preprocessed directory (``interest preprocess`` output) is used when given; otherwise the cached ML-1M events
(``interest data fetch --dataset ml-1m``) are preprocessed once by the Beam pipeline itself, with the
``PreprocessConfig`` of the evaluation protocol (core/protocols.py; default ``ours``), into the data cache, and
reused from there.
"""

from __future__ import annotations

import logging

from core import protocols
from core.rundir import is_complete
from preprocessing import datasets
from trainer.data import Sequences, load_sequences

log = logging.getLogger(__name__)

PREPROCESSED = "ml-1m-sequences"  # in the data cache (~/.cache/interest-pipeline): `interest preprocess` output


def preprocessed(protocol: str = protocols.DEFAULT) -> str:
    """The cached ML-1M directory of ``interest preprocess --protocol PROTOCOL``, made on first use."""
    from preprocessing.config import PreprocessConfig
    from preprocessing.pipeline import run

    name = PREPROCESSED if protocol == protocols.DEFAULT else f"{PREPROCESSED}-{protocols.get_protocol(protocol).name}"
    out = str(datasets.default_cache_dir() / name)
    if not is_complete(out):
        log.info("preprocessing ML-1M for protocol %s into %s (once)", protocol, out)
        run(str(datasets.fetch(datasets.DATASETS["ml-1m"])), out, PreprocessConfig(protocol=protocol),
            overwrite=True)
    return out


def load(data_dir: str | None = None) -> Sequences:
    """Sequences from ``data_dir``, else from the cached preprocessed ML-1M directory."""
    return load_sequences(data_dir or preprocessed())
