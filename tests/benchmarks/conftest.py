"""A tiny ML-1M-like training set for the benchmark helpers."""

import numpy as np
import pytest

from benchmarks.ml1m import sequences_from_events
from trainer.data import TrainingSet


@pytest.fixture
def tiny_data() -> TrainingSet:
    """12 users with 4..13 events over 6 items, max_len 8."""
    rng = np.random.default_rng(0)
    lengths = rng.integers(4, 14, size=12)
    users = np.repeat([f"u{i:02d}" for i in range(12)], lengths)
    items = rng.choice([f"i{j}" for j in range(6)], size=len(users))
    stamps = np.arange(len(users)) * 600
    return TrainingSet(sequences_from_events(users, items, stamps), max_len=8)
