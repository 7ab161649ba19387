"""A reference SASRec written the way most people would write it with stock PyTorch parts.

What the speed benchmark compares our model against (benchmarks/train_bench.py), in the same process:

- ``torch.nn.TransformerEncoder`` of pre-norm (``norm_first=True``) GeLU layers with biases, a causal mask,
  learned positions, tied item embeddings, final LayerNorm, MLP width 4 * d_model;
- every sequence LEFT-padded to ``max_len`` (200 on MovieLens-1M) as SASRec does, padded inputs zeroed;
- full softmax cross-entropy over the whole catalogue computed the plain way: logits for all B * T positions,
  then cross-entropy that ignores the padded targets.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainer.model_config import ModelConfig


class ReferenceSASRec(nn.Module):
    def __init__(self, num_items: int, d_model: int = 64, n_layer: int = 2, n_head: int = 2, max_len: int = 200,
                 dropout: float = 0.2, d_ff: int | None = None):
        super().__init__()
        self.max_len = max_len
        self.item_embedding = nn.Embedding(num_items + 1, d_model, padding_idx=0)
        self.position_embedding = nn.Embedding(max_len, d_model)
        self.dropout = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(d_model, n_head, dim_feedforward=d_ff or 4 * d_model, dropout=dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, n_layer, enable_nested_tensor=False)
        self.final_norm = nn.LayerNorm(d_model)
        self.register_buffer("causal", nn.Transformer.generate_square_subsequent_mask(max_len), persistent=False)

    @classmethod
    def like(cls, cfg: ModelConfig, num_items: int) -> ReferenceSASRec:
        """The reference with the sizes of ``cfg`` (MLP width 4 * d_model, as SASRec)."""
        return cls(num_items, cfg.d_model, cfg.n_layer, cfg.n_head, cfg.max_len, cfg.dropout)

    def forward(self, items: Tensor) -> Tensor:
        """(B, max_len) left-padded item indices -> hidden states (B, max_len, D)."""
        T = items.shape[1]
        positions = torch.arange(T, device=items.device)
        x = self.item_embedding(items) + self.position_embedding(positions)
        x = self.dropout(x) * (items != 0).unsqueeze(-1)  # SASRec's timeline mask: padded inputs are zero
        x = self.encoder(x, mask=self.causal[:T, :T], is_causal=True)
        return self.final_norm(x)

    def full_cross_entropy(self, hidden: Tensor, targets: Tensor) -> Tensor:
        """Full-catalogue cross-entropy at every position, padding targets (0) ignored."""
        logits = hidden.reshape(-1, hidden.shape[-1]) @ self.item_embedding.weight.T  # (B * T, N + 1)
        return F.cross_entropy(logits, targets.reshape(-1), ignore_index=0)

    def loss(self, items: Tensor, targets: Tensor) -> Tensor:
        return self.full_cross_entropy(self(items), targets)
