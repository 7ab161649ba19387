"""Sizes read from untrusted places are checked before anything is allocated: a model.pt that is a zip bomb (a
zero tensor deflated 1000-fold: torch.save never compresses) and a bootstrap asked for an absurd number of
resamples are clear errors, not an exhausted machine. Both went through to torch.load / numpy before."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
import torch

from core import contract, rundir, storage
from core.configs import ConfigError, to_dict
from release.stats import replicate_bootstrap
from tests.support.model_kit import TINY
from trainer import checkpoint
from trainer.evaluate import load_model


def deflated(archive: bytes) -> bytes:
    """The same archive with every member deflated."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(archive)) as source, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        for member in source.infolist():
            target.writestr(member.filename, source.read(member), zipfile.ZIP_DEFLATED)
    return out.getvalue()


@pytest.fixture(scope="module")
def bomb() -> bytes:
    data = checkpoint.to_bytes({"padding": torch.zeros(5_000_000)})  # 20 MB of zeros
    packed = deflated(data)
    assert len(data) > 500 * len(packed)
    return packed


def test_a_model_pt_that_expands_a_thousandfold_is_refused_before_loading(bomb, tmp_path, monkeypatch):
    model_dir = tmp_path / "model"
    with rundir.writing(str(model_dir), contract.MODEL_KIND) as staging:
        storage.write_bytes(staging.join(contract.WEIGHTS), bomb)
        storage.write_json(staging.join(contract.MODEL_CONFIG), to_dict(TINY))
        storage.write_json(staging.join(contract.VOCAB), {"padding_index": 0, "items": ["a", "b"]})
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load reached"))
    with pytest.raises(ConfigError, match="model.pt: its members expand to 20,00[0-9,]+ bytes from"):
        load_model(str(model_dir), torch.device("cpu"))


def test_a_checkpoint_that_expands_a_thousandfold_is_refused_before_loading(bomb, monkeypatch):
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load reached"))
    with pytest.raises(ConfigError, match="step-1.pt: its members expand"):
        checkpoint.from_bytes(bomb, "step-1.pt")


def test_an_honest_archive_loads():
    state = {"w": torch.arange(6.0)}
    assert torch.equal(checkpoint.from_bytes(checkpoint.to_bytes(state))["w"], state["w"])


@pytest.mark.parametrize("resamples", [10**13, 0])
def test_an_absurd_number_of_resamples_is_refused_before_allocating(resamples):
    users = {"user_id": np.array(["a", "b", "c"]), "recall@10": np.array([1.0, 0.0, 1.0])}
    with pytest.raises(ConfigError, match=f"resamples: must lie in \\[1, 1000000\\], got {resamples}"):
        replicate_bootstrap([users], [users], resamples=resamples)
