"""The training benchmark's pieces on a tiny data set: both models train on the same real tokens."""

import torch

from benchmarks.flops import ModelShape, train_flops
from benchmarks.train_bench import Meter, OurStep, ReferenceStep, distinct_presets, spread_batches
from trainer.model_config import ModelConfig
from trainer.train_config import TrainConfig


def test_schedule_presets_share_the_baseline_model():
    measured, same_as = distinct_presets()
    assert "baseline" in measured and "swiglu" in measured
    assert same_as["cosine"] == "baseline" and "cosine" not in measured


def test_ours_and_reference_train_on_the_same_real_tokens(tiny_data):
    torch.manual_seed(0)
    data = tiny_data
    cfg = ModelConfig(d_model=16, n_layer=1, n_head=2, max_len=8)
    train_cfg = TrainConfig(batch_size=4)
    batches = spread_batches(data, 4, 2, seed=0)
    shape = ModelShape.of(cfg, data.seqs.num_items)
    ours, reference = Meter(batches, data, shape), Meter(batches, data, shape)
    device = torch.device("cpu")
    ours.run(OurStep(cfg, data, train_cfg, device), device, repeats=2)
    reference.run(ReferenceStep(cfg, data, train_cfg, device), device)
    expected = int(sum(data.length[b].sum() for b in batches))
    assert ours.tokens == reference.tokens == expected and len(ours.batch_seconds) == 2
    assert ours.flops == sum(train_flops(shape, data.length[b].tolist()) for b in batches)
    assert all(0 < t < float("inf") for t in ours.batch_seconds + reference.batch_seconds)
    report = ours.report(peak=1e12)
    assert report["tokens_per_second"] > 0 and 0 < report["mfu"] < 1


def test_spread_batches_cover_an_epochs_widths(tiny_data):
    widths = [int(tiny_data.length[b].max()) for b in tiny_data.epoch_batches(2, 50, 0, 0)]
    spread = [int(tiny_data.length[b].max()) for b in spread_batches(tiny_data, 2, 3, seed=0)]
    assert spread == sorted(spread) and spread[0] == min(widths) and spread[-1] == max(widths)
