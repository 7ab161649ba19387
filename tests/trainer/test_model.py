"""InterestModel: shapes, causality, padding invariance, RoPE, parameter accounting, every switch wired."""

from __future__ import annotations

import pytest
import torch

from trainer.model import MLPS, Dropout, InterestModel, RotaryEmbedding, apply_rope
from trainer.model_config import ModelConfig
from trainer.objective import ObjectiveConfig

POSITION_CHOICES = ("learned", "rope", "rope+learned", "sinusoidal", "none")


def test_shapes(variant_cfg, model_kit):
    model = InterestModel(variant_cfg, model_kit.num_items).eval()
    batch = model_kit.make_batch([5, 8, 1], T=8)
    hidden = model(batch)
    user = model.user_embedding(batch)
    scores = model.score(user)
    assert hidden.shape == (3, 8, 16)
    assert user.shape == (3, 16)
    assert torch.equal(user, hidden[:, -1])
    assert model.item_embeddings().shape == (model_kit.num_items + 1, 16)
    assert scores.shape == (3, model_kit.num_items + 1)
    assert torch.isneginf(scores[:, 0]).all() and torch.isfinite(scores[:, 1:]).all()
    assert torch.allclose(scores[:, 1:], user @ model.item_embeddings()[1:].T)
    assert model.num_parameters() == sum(p.numel() for p in model.parameters())


def test_causality(variant_cfg, model_kit):
    """Changing the event at position t never changes outputs before t, and does change position t."""
    model = InterestModel(variant_cfg, model_kit.num_items).eval()
    batch = model_kit.make_batch([10, 7], T=10)
    t = 6
    changed = {k: v.clone() for k, v in batch.items()}
    changed["items"][:, t] = changed["items"][:, t] % model_kit.num_items + 1
    changed["timestamp"][:, t] += 0.01
    changed["log_hours_since_prev"][:, t] += 1.0
    changed["hour_of_day"][:, t] = (changed["hour_of_day"][:, t] + 5) % 24
    changed["day_of_week"][:, t] = (changed["day_of_week"][:, t] + 3) % 7
    with torch.no_grad():
        before, after = model(batch), model(changed)
    assert torch.allclose(before[:, :t], after[:, :t], atol=1e-6)
    assert not torch.allclose(before[:, t], after[:, t], atol=1e-4)


def test_padding_invariance(variant_cfg, model_kit):
    """Extra left padding (with garbage features) changes no output at a real position, nor the user embedding."""
    model = InterestModel(variant_cfg, model_kit.num_items).eval()
    batch = model_kit.make_batch([6, 3, 9], T=9)
    real = batch["items"] > 0
    padded = model_kit.left_pad(batch, extra=5)
    with torch.no_grad():
        hidden, hidden_padded = model(batch), model(padded)
        user, user_padded = model.user_embedding(batch), model.user_embedding(padded)
    assert torch.allclose(hidden[real], hidden_padded[:, 5:][real], atol=1e-5)
    assert torch.allclose(user, user_padded, atol=1e-5)


def test_all_padding_row_stays_finite(variant_cfg, model_kit):
    model = InterestModel(variant_cfg, model_kit.num_items).eval()
    batch = model_kit.make_batch([0, 4], T=6)
    with torch.no_grad():
        assert torch.isfinite(model(batch)).all()


def test_longer_than_max_len_is_refused(model_kit):
    model = InterestModel(model_kit.tiny(max_len=4), model_kit.num_items)
    with pytest.raises(ValueError, match="max_len"):
        model(model_kit.make_batch([5], T=5))


def test_rope_scores_depend_only_on_offsets():
    """q.k after rotation is unchanged when every position shifts by the same constant."""
    g = torch.Generator().manual_seed(0)
    rotary = RotaryEmbedding(head_dim=8, max_len=64)
    q, k = torch.randn(2, 3, 10, 8, generator=g), torch.randn(2, 3, 10, 8, generator=g)
    positions = torch.arange(10).expand(2, 10)

    def scores(pos):
        rope = rotary(pos)
        return apply_rope(q, rope) @ apply_rope(k, rope).transpose(-1, -2)

    base = scores(positions)
    assert torch.allclose(base, scores(positions + 17), atol=1e-4)
    assert torch.allclose(base, scores(positions + 41), atol=1e-4)
    assert not torch.allclose(base, q @ k.transpose(-1, -2), atol=1e-3)  # the rotation is not a no-op


@pytest.mark.parametrize("d_model", [16, 64, 128, 256])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("mlp", ["swiglu", "geglu"])
def test_gated_mlps_match_gelu_parameters(model_kit, mlp, bias, d_model):
    def count(kind):
        cfg = ModelConfig(d_model=d_model, n_head=2, mlp=kind, bias=bias)
        return sum(p.numel() for p in MLPS[kind](cfg).parameters())

    assert abs(count(mlp) - count("gelu")) / count("gelu") < 0.01


@pytest.mark.parametrize("position", POSITION_CHOICES)
def test_learned_table_is_the_only_position_parameter(model_kit, position):
    def params(p):
        return {name: t.numel() for name, t in InterestModel(model_kit.tiny(position=p), model_kit.num_items).named_parameters()}

    extra = {k: v for k, v in params(position).items() if k not in params("none")}
    if "learned" in position:
        assert extra == {"input_features.position.table.weight": 16 * 16}  # max_len x d_model
    else:
        assert extra == {}
    assert sum(params(position).values()) == sum(params("none").values()) + sum(extra.values())


PERTURBATIONS = {
    "timestamp": lambda x: x * 0.5,
    "log_hours_since_prev": lambda x: x * 0.5,
    "hour_of_day": lambda x: (x + 1) % 24,
    "day_of_week": lambda x: (x + 3) % 7,
}


@pytest.mark.parametrize("overrides,reads", [
    ({"time_encoding": "none"}, set()),
    ({"time_encoding": "absolute"}, {"timestamp"}),
    ({"time_encoding": "hybrid"}, {"timestamp", "log_hours_since_prev"}),
    ({"time_encoding": "none", "calendar": True}, {"hour_of_day", "day_of_week"}),
])
def test_each_time_switch_reads_exactly_its_inputs(model_kit, overrides, reads):
    model = InterestModel(model_kit.tiny(**overrides), model_kit.num_items).eval()
    batch = model_kit.make_batch([8], T=8)
    moved = set()
    with torch.no_grad():
        for key, perturb in PERTURBATIONS.items():
            if not torch.allclose(model(batch), model({**batch, key: perturb(batch[key])}), atol=1e-6):
                moved.add(key)
    assert moved == reads


def test_serial_and_parallel_differ_and_both_train(model_kit):
    batch = model_kit.learnable_batch()
    outputs, losses = {}, {}
    for block in ("serial", "parallel"):
        torch.manual_seed(0)
        cfg = model_kit.tiny(block=block)
        model = InterestModel(cfg, 20)
        with torch.no_grad():
            outputs[block] = model.eval()(batch)
        losses[block] = model_kit.train_losses(model, ObjectiveConfig(), batch, steps=25)
    assert not torch.allclose(outputs["serial"], outputs["parallel"], atol=1e-4)
    for block, history in losses.items():
        assert history[-1] < 0.5 * history[0], (block, history)


def test_untied_output_table_is_separate(model_kit):
    model = InterestModel(model_kit.tiny(tie_embeddings=False), model_kit.num_items)
    tied = InterestModel(model_kit.tiny(tie_embeddings=True), model_kit.num_items)
    assert model.item_embeddings() is not model.item_embedding.weight
    assert tied.item_embeddings() is tied.item_embedding.weight
    assert model.num_parameters() == tied.num_parameters() + (model_kit.num_items + 1) * 16


def test_state_dict_round_trips_without_buffers(model_kit, tmp_path):
    """Fixed tables (causal mask, RoPE, sinusoids) are rebuilt, not saved; weights load with weights_only."""
    cfg = model_kit.tiny(position="rope+learned", time_encoding="hybrid", calendar=True)
    model = InterestModel(cfg, model_kit.num_items).eval()
    torch.save(model.state_dict(), tmp_path / "model.pt")
    state = torch.load(tmp_path / "model.pt", weights_only=True)
    assert not any(k.endswith(("causal", "diagonal", "cos", "sin", "frequencies")) for k in state)
    clone = InterestModel(cfg, model_kit.num_items).eval()
    clone.load_state_dict(state)
    batch = model_kit.make_batch([4, 7], T=7)
    with torch.no_grad():
        assert torch.equal(model(batch), clone(batch))


@pytest.mark.parametrize("overrides,random", [
    ({}, False),
    ({"attention_dropout": 0.5}, True),
    ({"dropout": 0.5}, True),
])
def test_dropout_switches_act_in_training_only(model_kit, overrides, random):
    model = InterestModel(model_kit.tiny(**overrides), model_kit.num_items)
    batch = model_kit.make_batch([6, 6], T=6)
    with torch.no_grad():
        assert torch.equal(model.train()(batch), model(batch)) != random
        assert torch.equal(model.eval()(batch), model(batch))


@pytest.mark.parametrize("user_head,free", [("norm*scale", True), ("norm+linear", True), ("residual", True),
                                           ("norm", False)])
def test_user_norm_is_free_unless_the_head_is_the_norm_alone(model_kit, user_head, free):
    """A few training steps: a free head's user norms move and differ across users; the norm alone pins every
    user at the same norm (sqrt(d_model) * gain), so its spread stays ~0."""
    torch.manual_seed(0)
    cfg = model_kit.tiny(user_head=user_head)
    model = InterestModel(cfg, 20)
    batch = model_kit.learnable_batch()
    with torch.no_grad():
        before = model.eval().user_embedding(batch).norm(dim=-1)
    model_kit.train_losses(model, ObjectiveConfig(), batch, steps=5)
    with torch.no_grad():
        after = model.eval().user_embedding(batch).norm(dim=-1)
    spread = float(after.std() / after.mean())
    moved = float((after.mean() - before.mean()).abs() / before.mean())
    if free:
        assert spread > 2e-2 and moved > 2e-2, (spread, moved)
    else:
        assert spread < 5e-3, spread


@pytest.mark.parametrize("user_head", ["norm*scale", "norm+linear"])
def test_free_norm_heads_start_as_the_norm_alone(model_kit, user_head):
    """The scale starts at 1 and the projection as the identity: a fresh model scores exactly like the norm-only
    head with the same weights."""
    torch.manual_seed(0)
    free = InterestModel(model_kit.tiny(user_head=user_head), model_kit.num_items).eval()
    torch.manual_seed(0)
    normed = InterestModel(model_kit.tiny(user_head="norm"), model_kit.num_items).eval()
    state = {k.replace("user_head.norm.", "user_head."): v for k, v in free.state_dict().items()
             if not k.startswith(("user_head.proj.", "user_head.log_scale."))}
    normed.load_state_dict(state)
    batch = model_kit.make_batch([6, 3], T=6)
    with torch.no_grad():
        assert torch.allclose(free.user_embedding(batch), normed.user_embedding(batch), atol=1e-6)


@pytest.mark.parametrize("p", [0.1, 0.2, 0.5])
def test_dropout_drops_p_and_rescales_the_rest_like_nn_dropout(p):
    """The 16-bit mask: the dropped share is p (to within sampling noise of 10^6 values), kept values are scaled
    by 1 / (1 - p), the gradient flows exactly through the kept ones, and eval mode is the identity."""
    torch.manual_seed(0)
    dropout = Dropout(p).train()
    x = torch.ones(1000, 1000, requires_grad=True)
    y = dropout(x)
    dropped = (y == 0).float().mean().item()
    assert abs(dropped - p) < 5 * (p * (1 - p) / 1e6) ** 0.5 + 1 / 65536
    assert torch.allclose(y[y != 0], torch.full_like(y[y != 0], 1 / (1 - p)))
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())
    assert torch.equal(dropout.eval()(x), x)
    assert not torch.equal(Dropout(p).train()(x), Dropout(p).train()(x))  # a fresh mask every call
