"""A tiny ML-1M-like training set for the benchmark helpers (a real preprocessed directory, tests/support/data.py)."""

import pytest

from tests.support.data import write_preprocessed
from trainer.data import TrainingSet, load_sequences


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> TrainingSet:
    """48 users with 3..19 events over 40 items, max_len 8."""
    return TrainingSet(load_sequences(str(write_preprocessed(tmp_path_factory.mktemp("bench-data")))), max_len=8)
