"""Resumable checkpoints: written atomically, published by a checksum sidecar, loaded with ``weights_only=True``.

A checkpoint ``step-00001234.pt`` holds plain types and tensors only (configs as JSON strings), so
``torch.load(weights_only=True)`` reads it. It is written in two moves, each atomic through ``core.storage``
(temp file + rename locally; a completed upload on ``gs://``):

1. the data, ``step-XXXXXXXX.pt``;
2. then its sidecar ``step-XXXXXXXX.pt.sha256`` (``{"sha256": ..., "bytes": ...}``), which *publishes* it.

A checkpoint without a sidecar (the writer died between the moves) is never considered, a temp file cut off
mid-write never has a final name, and a published checkpoint whose bytes no longer match the sidecar, or that
fails to load, is skipped with a warning in favour of the previous one.
"""

from __future__ import annotations

import hashlib
import io
import logging
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core import contract, storage

log = logging.getLogger(__name__)

SIDECAR = ".sha256"
NAME = re.compile(r"step-(\d{8})\.pt$")


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}.pt"


def published(directory: str) -> list[tuple[int, str]]:
    """``(step, uri)`` of every published checkpoint in ``directory``, oldest first."""
    found = []
    for uri in storage.list_files(directory):
        if uri.endswith(SIDECAR):
            match = NAME.search(uri[: -len(SIDECAR)])
            if match:
                found.append((int(match.group(1)), uri[: -len(SIDECAR)]))
    return sorted(found)


def to_bytes(obj: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def from_bytes(data: bytes, where: str = "checkpoint") -> Any:
    contract.check_weights_archive(data, where)
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def save(directory: str, step: int, state: dict[str, Any], keep: int) -> str:
    """Write and publish the checkpoint of ``step``, then delete all but the ``keep`` newest; returns its URI."""
    data = to_bytes(state)
    uri = storage.join(directory, checkpoint_name(step))
    storage.write_bytes(uri, data)
    storage.write_json(uri + SIDECAR, {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)})
    for _, old in published(directory)[:-keep]:
        storage.delete(old + SIDECAR)  # unpublish first: a half-deleted checkpoint is never picked up
        storage.delete(old)
    return uri


def load_latest(directory: str) -> tuple[dict[str, Any], str] | None:
    """The newest published checkpoint that verifies and loads, with its URI; None when there is none."""
    for step, uri in reversed(published(directory)):
        try:
            sidecar = storage.read_json(uri + SIDECAR)
            data = storage.read_bytes(uri)
            digest = hashlib.sha256(data).hexdigest()
            if digest != sidecar["sha256"]:
                raise ValueError(f"sha256 {digest[:12]}... does not match the published {sidecar['sha256'][:12]}...")
            return from_bytes(data, uri), uri
        except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint falls back to the previous one
            log.warning("checkpoint of step %d (%s) is unusable: %s; trying the previous one", step, uri, exc)
    return None


def remove_all(directory: str) -> int:
    """Delete every checkpoint of ``directory`` (``--restart``), unpublishing each first; returns files removed."""
    files = [uri for uri in storage.list_files(directory) if NAME.search(uri.removesuffix(SIDECAR))
             or uri.endswith(".pt")]
    for uri in sorted(files, key=lambda u: not u.endswith(SIDECAR)):  # sidecars first
        storage.delete(uri)
    return len(files)


def remove_stale_temp_files(directory: str) -> None:
    """Delete temp files left by a writer killed mid-write (local only: object stores never show partial uploads)."""
    if not storage.is_remote(directory) and Path(directory).is_dir():
        for tmp in Path(directory).glob(".*.tmp"):
            tmp.unlink(missing_ok=True)


def rng_state() -> dict[str, Any]:
    """This process's random generators as weights_only-loadable values."""
    numpy_state = np.random.get_state(legacy=False)
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None,
        "numpy": {
            "key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
            "pos": int(numpy_state["state"]["pos"]),
            "has_gauss": int(numpy_state["has_gauss"]),
            "gauss": float(numpy_state["gauss"]),
        },
        "python": random.getstate(),
    }


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
    numpy_state = state["numpy"]
    np.random.set_state({
        "bit_generator": "MT19937",
        "state": {"key": numpy_state["key"].numpy().astype(np.uint32), "pos": numpy_state["pos"]},
        "has_gauss": numpy_state["has_gauss"],
        "gauss": numpy_state["gauss"],
    })
    random.setstate(state["python"])
