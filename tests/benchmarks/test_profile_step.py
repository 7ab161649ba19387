"""The step profiler attributes time to attention, MLP, norms and the loss of both models."""

import pytest
import torch

from benchmarks.profile_step import module_parts, profile_steps, table
from benchmarks.train_bench import OurStep, ReferenceStep, epoch_batches
from trainer.model_config import ModelConfig
from trainer.train_config import TrainConfig


@pytest.mark.parametrize("make", [OurStep, ReferenceStep])
def test_every_part_gets_time_and_the_split_adds_up(make, tiny_data):
    torch.manual_seed(0)
    data = tiny_data
    step = make(ModelConfig(d_model=16, n_layer=2, n_head=2, max_len=8), data, TrainConfig(batch_size=4),
                torch.device("cpu"))
    assert sorted(set(module_parts(step.model).values())) == ["attention", "mlp", "norm"]
    result = profile_steps(step, step.model, epoch_batches(data, 4, 2, seed=0))
    for part in ("attention fwd", "attention bwd", "mlp fwd", "mlp bwd", "norm fwd", "norm bwd"):
        assert result["parts_ms"][part] > 0, part
    assert result["ms"]["output projection + softmax (loss)"] > 0 and result["phases_ms"]["loss backward"] > 0
    assert sum(result["ms"].values()) == pytest.approx(result["step_ms"])
    assert result["top_ops"] and "| model | step ms |" in table({"m": result})
