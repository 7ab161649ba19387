"""A tiny preprocessed data directory (tests/support/data.py) and tiny configs for the trainer tests; the model
tests' helpers (tests/support/model_kit.py). Tests get them through fixtures."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from tests.support import model_kit as mk
from tests.support.data import NUM_ITEMS, NUM_USERS, write_preprocessed
from trainer.model_config import ModelConfig
from trainer.train_config import TrainConfig

# Small, dropout-free (so DDP and one process compute the same thing), shorter than the longest user.
TINY_MODEL = ModelConfig(d_model=16, n_layer=1, n_head=2, max_len=12, dropout=0.0)


def tiny_train(**overrides) -> TrainConfig:
    """A few seconds of CPU training: 8 steps per epoch of 6 sequences."""
    base = dict(batch_size=6, epochs=2, eval_every_steps=4, checkpoint_every_steps=4, log_every_steps=2,
                patience=0, lr=3e-3)
    return TrainConfig(**{**base, **overrides})


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    """One intra-op thread here and in the processes the tests start: on a busy 2-core box two spinning OpenMP
    threads make tiny ops 10-50x slower (measured), and equal thread counts keep runs bit-comparable."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    return write_preprocessed(tmp_path_factory.mktemp("tiny-data"))


@pytest.fixture(scope="session")
def kit() -> SimpleNamespace:
    return SimpleNamespace(write_preprocessed=write_preprocessed, tiny_train=tiny_train, TINY_MODEL=TINY_MODEL,
                           NUM_ITEMS=NUM_ITEMS, NUM_USERS=NUM_USERS)


@pytest.fixture(params=mk.ARCHITECTURE_VARIANTS, ids=mk.variant_id)
def variant_cfg(request) -> ModelConfig:
    """A tiny ModelConfig, once per architecture switch."""
    return mk.tiny(**request.param)


@pytest.fixture
def model_kit() -> SimpleNamespace:
    """Helpers of the model tests."""
    return SimpleNamespace(num_items=mk.NUM_ITEMS, tiny=mk.tiny, make_batch=mk.make_batch, left_pad=mk.left_pad,
                           next_item_targets=mk.next_item_targets, learnable_batch=mk.learnable_batch,
                           train_losses=mk.train_losses)
