"""The FLOP formula against hand arithmetic and against torch's own count of the real model's matmuls."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.flops import ModelShape, matmul_peak, train_flops
from trainer.losses import task_loss
from trainer.model import InterestModel
from trainer.model_config import ModelConfig
from trainer.objective import ObjectiveConfig


def test_baseline_formula_by_hand():
    shape = ModelShape.of(ModelConfig(), num_items=3416)
    assert shape == ModelShape(d_model=64, n_layer=2, ff_dim=256, gated=False, scored_items=3416, head_width=1)
    # per layer 2 * (4 * 64^2 + 2 * 64 * 256) = 98,304; two layers; user head's scale 2 * 64 = 128;
    # output 2 * 64 * 3416 = 437,248
    assert shape.forward_flops_per_token() == 2 * 98_304 + 128 + 437_248
    # two sequences of 1 and 3 real tokens: 4 tokens, 1 + 6 causal pairs, 2 * 2 * 64 FLOPs per pair and layer
    assert train_flops(shape, [1, 3]) == 3 * (4 * 633_984 + 7 * 2 * 256)
    assert ModelShape.of(ModelConfig(user_head="norm+linear"), num_items=3416).head_width == 64
    assert ModelShape.of(ModelConfig(user_head="norm"), num_items=3416).head_width == 0


@pytest.mark.parametrize("loss, scored", [("full_ce", 100), ("sampled_softmax", 33), ("bce", 2)])
def test_scored_items_follow_the_loss(loss, scored):
    assert ModelShape.of(ModelConfig(), 100, ObjectiveConfig(loss=loss, num_negatives=32)).scored_items == scored


@pytest.mark.parametrize(("mlp", "user_head"), [("gelu", "norm*scale"), ("swiglu", "norm*scale"),
                                                ("gelu", "norm+linear"), ("gelu", "norm")])
def test_linear_flops_match_torch_count_of_the_real_model(mlp, user_head):
    """torch's FlopCounterMode over InterestModel + task_loss: its mm FLOPs are the formula without attention."""
    cfg = ModelConfig(time_encoding="none", mlp=mlp, dropout=0.0, user_head=user_head)
    model = InterestModel(cfg, num_items=50)
    n = 7
    items, targets = torch.randint(1, 51, (1, n)), torch.randint(1, 51, (1, n))
    with FlopCounterMode(display=False) as counter:
        task_loss(model, model({"items": items}), targets, ObjectiveConfig()).backward()
    counts = counter.get_flop_counts()["Global"]
    matmuls = sum(v for op, v in counts.items() if str(op).split(".")[-1] in ("mm", "addmm"))
    shape = ModelShape.of(cfg, 50)
    assert shape.gated == (mlp != "gelu")
    attention = 3 * n * (n + 1) // 2 * shape.forward_attention_flops_per_pair()
    assert matmuls == train_flops(shape, [n]) - attention  # forward + backward = 3 x forward


def test_matmul_peak_is_positive_and_names_its_size():
    peak = matmul_peak(sizes=(64, 128), seconds=0.01)
    assert peak["flops_per_second"] > 0 and peak["size"] in (64, 128) and peak["dtype"] == "float32"
