"""The training benchmark's pieces on a tiny data set: both models train on the same real tokens."""

import torch

from benchmarks.flops import ModelShape, train_flops
from benchmarks.train_bench import Meter, OurStep, ReferenceStep, distinct_presets, timed_batches
from trainer.config import ModelConfig
from trainer.training_config import TrainConfig


def test_schedule_presets_share_the_baseline_model():
    measured, same_as = distinct_presets()
    assert "baseline" in measured and "swiglu" in measured
    assert same_as["cosine"] == "baseline" and "cosine" not in measured


def test_ours_and_reference_train_on_the_same_real_tokens(tiny_data):
    torch.manual_seed(0)
    data = tiny_data
    cfg = ModelConfig(d_model=16, n_layer=1, n_head=2, max_len=8)
    train_cfg = TrainConfig(batch_size=4)
    batches = timed_batches(data, 4, 2, seed=0)
    ours, reference = Meter(), Meter()
    shape = ModelShape.of(cfg, data.seqs.num_items)
    device = torch.device("cpu")
    ours.run(OurStep(cfg, data, train_cfg, device), batches, data, shape, device)
    reference.run(ReferenceStep(cfg, data, train_cfg, device), batches, data, shape, device)
    expected = int(sum(data.length[b].sum() for b in batches))
    assert ours.tokens == reference.tokens == expected and ours.steps == 2
    assert ours.flops == sum(train_flops(shape, data.length[b].tolist()) for b in batches)
    report = ours.report(peak=1e12)
    assert report["tokens_per_second"] > 0 and 0 < report["mfu"] < 1
