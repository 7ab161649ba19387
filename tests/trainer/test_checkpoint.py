"""Checkpoint files: publish-by-sidecar, pruning, corrupt or cut-off files skipped, weights_only loads, GCS."""

from __future__ import annotations

import hashlib
import random

import numpy as np
import torch

from core import storage
from trainer import checkpoint


def state(step: int) -> dict:
    return {"step": step, "model": {"w": torch.full((4,), float(step))}, "config": '{"lr": 0.001}'}


def test_newest_published_checkpoint_loads_and_old_ones_are_pruned(tmp_path):
    for step in (10, 20, 30):
        checkpoint.save(str(tmp_path), step, state(step), keep=2)
    assert [s for s, _ in checkpoint.published(str(tmp_path))] == [20, 30]
    assert not (tmp_path / "step-00000010.pt").exists()
    loaded, uri = checkpoint.load_latest(str(tmp_path))
    assert uri.endswith("step-00000030.pt") and loaded["step"] == 30
    assert torch.equal(loaded["model"]["w"], torch.full((4,), 30.0))


def test_checkpoint_cut_off_mid_write_is_never_picked_up(tmp_path):
    checkpoint.save(str(tmp_path), 10, state(10), keep=5)
    whole = checkpoint.to_bytes(state(20))
    # The writer died mid-write: a temp file (never under the final name) ...
    (tmp_path / ".step-00000020.pt.abc123.tmp").write_bytes(whole[: len(whole) // 2])
    # ... or died after the data but before publishing it: a final name without a sidecar.
    (tmp_path / "step-00000030.pt").write_bytes(whole[: len(whole) // 3])
    loaded, uri = checkpoint.load_latest(str(tmp_path))
    assert loaded["step"] == 10 and uri.endswith("step-00000010.pt")
    checkpoint.remove_stale_temp_files(str(tmp_path))
    assert not list(tmp_path.glob(".*.tmp"))


def test_corrupt_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, caplog):
    for step in (10, 20):
        checkpoint.save(str(tmp_path), step, state(step), keep=5)
    latest = tmp_path / "step-00000020.pt"
    data = bytearray(latest.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte: the sidecar's sha256 no longer matches
    latest.write_bytes(bytes(data))
    loaded, uri = checkpoint.load_latest(str(tmp_path))
    assert loaded["step"] == 10
    assert "step 20" in caplog.text and "does not match" in caplog.text


def test_truncated_checkpoint_with_a_matching_sidecar_fails_to_load_and_falls_back(tmp_path, caplog):
    """Bytes that match their checksum but are not a checkpoint (e.g. written by a bad tool) are skipped too."""
    checkpoint.save(str(tmp_path), 10, state(10), keep=5)
    garbage = b"not a torch file"
    (tmp_path / "step-00000020.pt").write_bytes(garbage)
    storage.write_json(str(tmp_path / "step-00000020.pt.sha256"),
                       {"sha256": hashlib.sha256(garbage).hexdigest(), "bytes": len(garbage)})
    loaded, _ = checkpoint.load_latest(str(tmp_path))
    assert loaded["step"] == 10 and "unusable" in caplog.text


def test_no_checkpoint_at_all(tmp_path):
    assert checkpoint.load_latest(str(tmp_path / "missing")) is None


class Payload:
    """Stands for any class a crafted checkpoint could ask the unpickler to import and build."""


def test_a_pickled_object_is_refused_by_weights_only(tmp_path, caplog):
    """A checkpoint that smuggles an arbitrary Python object does not load (weights_only=True)."""
    evil = checkpoint.to_bytes({"step": 1, "payload": Payload()})
    (tmp_path / "step-00000001.pt").write_bytes(evil)
    storage.write_json(str(tmp_path / "step-00000001.pt.sha256"), {"sha256": hashlib.sha256(evil).hexdigest()})
    assert checkpoint.load_latest(str(tmp_path)) is None
    assert "Unsupported global" in caplog.text


def test_rng_states_round_trip_through_a_checkpoint():
    saved = checkpoint.from_bytes(checkpoint.to_bytes(checkpoint.rng_state()))
    expected = (torch.rand(3), np.random.rand(3), random.random())
    checkpoint.restore_rng(saved)
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1])
    assert random.random() == expected[2]


def test_checkpoints_on_gcs(gcs_bucket):
    directory = f"{gcs_bucket}/run/checkpoints"
    for step in (1, 2, 3):
        checkpoint.save(directory, step, state(step), keep=2)
    assert [s for s, _ in checkpoint.published(directory)] == [2, 3]
    loaded, uri = checkpoint.load_latest(directory)
    assert loaded["step"] == 3 and uri == f"{directory}/step-00000003.pt"
    storage.write_bytes(uri, b"corrupted")
    assert checkpoint.load_latest(directory)[0]["step"] == 2
