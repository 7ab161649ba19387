"""The reference SASRec: shapes, causality, padding ignored by the loss."""

import torch

from benchmarks.reference_sasrec import ReferenceSASRec
from trainer.model_config import ModelConfig


def tiny(max_len: int = 8) -> ReferenceSASRec:
    torch.manual_seed(0)
    return ReferenceSASRec(num_items=20, d_model=16, n_layer=2, n_head=2, max_len=max_len, dropout=0.0).eval()


def test_sizes_follow_the_model_config():
    ref = ReferenceSASRec.like(ModelConfig(), num_items=30)
    layer = ref.encoder.layers[0]
    assert len(ref.encoder.layers) == 2 and layer.self_attn.num_heads == 2 and layer.norm_first
    assert layer.linear1.out_features == 4 * 64 and ref.position_embedding.num_embeddings == 200
    assert ref.item_embedding.weight.shape == (31, 64)


def test_shapes_and_causality():
    ref = tiny()
    items = torch.tensor([[0, 0, 0, 3, 4, 5, 6, 7], [1, 2, 3, 4, 5, 6, 7, 8]])
    hidden = ref(items)
    assert hidden.shape == (2, 8, 16)
    changed = items.clone()
    changed[:, 6] = 19
    after = ref(changed)
    torch.testing.assert_close(after[:, :6], hidden[:, :6])  # earlier positions never see later items
    assert not torch.allclose(after[:, 6:], hidden[:, 6:])


def test_loss_ignores_padding_targets():
    ref = tiny()
    items = torch.tensor([[0, 0, 0, 0, 0, 3, 4, 5]])
    targets = torch.tensor([[0, 0, 0, 0, 0, 4, 5, 6]])
    loss = ref.loss(items, targets)
    hidden = ref(items)[0, 5:]
    logits = hidden @ ref.item_embedding.weight.T
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(logits, targets[0, 5:]))
    loss.backward()
    assert ref.item_embedding.weight.grad is not None
