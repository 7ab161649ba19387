"""ML-1M-shaped sequences built from raw events when no preprocessed directory is given."""

import numpy as np

from benchmarks.ml1m import sequences_from_events
from trainer.data import TrainingSet


def test_sequences_from_events_filters_orders_and_splits():
    # item "rare" has < 5 ratings and is dropped; u1's two events at t=10 keep their file order (b before a)
    users = np.array(["u2"] * 5 + ["u1"] * 6 + ["u1"])
    items = np.array(["a", "b", "a", "b", "a", "b", "a", "b", "a", "b", "a", "rare"])
    stamps = 3600 * np.array([5, 4, 3, 2, 1, 30, 10, 10, 20, 40, 50, 60])  # hours since 1970-01-01 (Thursday)
    seqs = sequences_from_events(users, items, stamps)
    assert seqs.num_items == 2 and seqs.vocab["items"] == ["a", "b"]
    assert seqs.length.tolist() == [6, 5]  # u1 first (users sorted by id), "rare" gone
    u1 = seqs.columns["items"][1:7].tolist()
    assert u1 == [1, 2, 1, 2, 2, 1]  # t = 10 (a), 10 (b), 20, 30, 40, 50
    assert seqs.train_end.tolist() == [4, 3] and seqs.valid_end.tolist() == [5, 4]
    assert float(seqs.columns["timestamp"][1:].min()) == 0.0 and float(seqs.columns["timestamp"].max()) == 1.0
    assert seqs.columns["hour_of_day"][1:7].tolist() == [10, 10, 20, 6, 16, 2]
    assert seqs.columns["day_of_week"][1:7].tolist() == [3, 3, 3, 4, 4, 5]  # Thu, Thu, Thu, Fri, Fri, Sat
    np.testing.assert_allclose(seqs.columns["log_hours_since_prev"][1:7].numpy(), np.log1p([0, 0, 10, 10, 10, 10]))
    assert len(TrainingSet(seqs, max_len=200)) == 2
