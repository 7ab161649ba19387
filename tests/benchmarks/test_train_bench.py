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


def test_the_bench_reports_the_trainers_own_rate_next_to_the_reference(tmp_path):
    """A real (tiny) run of `make bench`'s training part: the trainer's tokens/s from its own summary, the step
    alone, the reference, ratio, MFU and the peak, all from one run."""
    from benchmarks import train_bench
    from tests.support.data import write_preprocessed

    data = write_preprocessed(tmp_path / "data")
    out = train_bench.main(["--presets", "baseline", "--data", str(data), "--steps", "2", "--rounds", "2",
                            "--batch-size", "4", "--output", str(tmp_path / "train.json")])
    row, ref, peak = out["presets"]["baseline"], out["reference"], out["peak"]
    assert len(row["trainer_rounds"]) == len(row["step"]["rounds"]) == len(ref["rounds"]) == 2
    assert row["tokens_per_second"] == sorted(row["trainer_rounds"])[0] / 2 + sorted(row["trainer_rounds"])[1] / 2
    assert row["ratio_vs_reference"] == row["tokens_per_second"] / ref["tokens_per_second"]
    assert row["mfu"] == row["flops_per_second"] / peak["flops_per_second"] and 0 < row["mfu"] < 1
    assert row["trainer_vs_step"] == row["tokens_per_second"] / row["step"]["tokens_per_second"]
    assert peak["dtype"] == "float32" and len(peak["rounds"]) == 3
    assert out["steps"] == 2 and out["data"]["tokens_per_step"] > 0 and "load_average" in out
