"""The training benchmark's pieces on a tiny data set: both models train on the same real tokens."""

import numpy as np
import torch

from benchmarks.flops import ModelShape, train_flops
from benchmarks.ml1m import sequences_from_events
from benchmarks.train_bench import Meter, distinct_presets, our_step, reference_step, timed_batches
from trainer.config import ModelConfig
from trainer.data import TrainingSet
from trainer.training_config import TrainConfig


def tiny_data(max_len: int = 8) -> TrainingSet:
    rng = np.random.default_rng(0)
    lengths = rng.integers(4, 14, size=12)
    users = np.repeat([f"u{i:02d}" for i in range(12)], lengths)
    items = rng.choice([f"i{j}" for j in range(6)], size=len(users))
    stamps = np.arange(len(users)) * 600
    return TrainingSet(sequences_from_events(users, items, stamps), max_len)


def test_schedule_presets_share_the_baseline_model():
    measured, same_as = distinct_presets()
    assert "baseline" in measured and "swiglu" in measured
    assert same_as["cosine"] == "baseline" and "cosine" not in measured


def test_ours_and_reference_train_on_the_same_real_tokens():
    torch.manual_seed(0)
    data = tiny_data()
    cfg = ModelConfig(d_model=16, n_layer=1, n_head=2, max_len=8)
    train_cfg = TrainConfig(batch_size=4)
    batches = timed_batches(data, 4, 2, seed=0)
    ours, reference = Meter(), Meter()
    shape = ModelShape.of(cfg, data.seqs.num_items)
    device = torch.device("cpu")
    ours.run(our_step(cfg, data, train_cfg, device), batches, data, shape, device)
    reference.run(reference_step(cfg, data, train_cfg, device), batches, data, shape, device)
    expected = int(sum(data.length[b].sum() for b in batches))
    assert ours.tokens == reference.tokens == expected and ours.steps == 2
    assert ours.flops == sum(train_flops(shape, data.length[b].tolist()) for b in batches)
    report = ours.report(peak=1e12)
    assert report["tokens_per_second"] > 0 and 0 < report["mfu"] < 1
