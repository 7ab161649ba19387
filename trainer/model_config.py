"""``ModelConfig``: every architecture choice of the seed write-up as a named, typed switch.

The defaults are the seed's baseline (learned positions, pre-LayerNorm, GeLU MLP, serial blocks, absolute-time
features) sized like SASRec on MovieLens-1M (d_model 64, 2 layers, 2 heads, 200 events, dropout 0.2). It describes
the forward pass and the weights' shapes only; what training minimises is ``trainer.objective.ObjectiveConfig``.
Presets (``trainer/presets.py``) change one switch each.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from core.configs import check_literals, require

Position = Literal["learned", "rope", "rope+learned", "sinusoidal", "none"]
TimeEncoding = Literal["none", "absolute", "hybrid"]
Norm = Literal["layernorm", "rmsnorm"]
Mlp = Literal["gelu", "swiglu", "geglu"]
BlockKind = Literal["serial", "parallel"]
UserHead = Literal["norm+linear", "norm*scale", "norm", "residual"]


@dataclass(frozen=True)
class ModelConfig:
    # Width of item embeddings and hidden states (SASRec on ML-1M: 64).
    d_model: int = 64
    # Number of Transformer blocks.
    n_layer: int = 2
    # Attention heads; d_model must divide by it (head_dim = d_model / n_head).
    n_head: int = 2
    # Longest history the model reads; batches may be shorter, never longer.
    max_len: int = 200
    # Dropout on the input embeddings and on the output of every attention and MLP branch.
    dropout: float = 0.2
    # Dropout on attention weights. 0 (as in current LLMs) keeps the fused attention kernel: on CPU any value > 0
    # falls back to the unfused path, about 2.5x slower attention. SASRec drops attention weights at 0.2.
    attention_dropout: float = 0.0
    # learned: a trained table per position (the usual recommender choice, the seed's winner); rope: rotary
    # queries/keys, no parameters; rope+learned: both; sinusoidal: fixed original-Transformer table; none.
    # Positions count from a user's first event, so left padding never shifts them.
    position: Position = "learned"
    # absolute: Fourier features of the normalized timestamp, projected and added to the item embedding;
    # hybrid: HybridTimestampEncoding, half the dimensions absolute time, half time since the previous event.
    time_encoding: TimeEncoding = "absolute"
    # Add hour-of-day and day-of-week embeddings to the input.
    calendar: bool = False
    # Normalization before each residual branch and after the last block. rmsnorm: no mean, no bias; the
    # seed measured 25% faster training for 0.7% lower recall.
    norm: Norm = "layernorm"
    # gelu: Linear-GeLU-Linear; swiglu/geglu: gated (SiLU/GeLU gate), +1.2% recall@10 in the seed at equal size.
    mlp: Mlp = "gelu"
    # Biases in linear layers and LayerNorm. False (the seed's choice): steadier optimization, fewer parameters.
    bias: bool = False
    # MLP hidden width exactly as given; None: d_ff_ratio * d_model, times about 2/3 for gated MLPs so they have
    # the GeLU MLP's parameter count (see ff_dim).
    d_ff: int | None = None
    # Hidden width as a multiple of d_model when d_ff is None.
    d_ff_ratio: float = 4.0
    # serial: attention then MLP, each with its own norm; parallel: both read one normalized input and are
    # summed (GPT-J/PaLM), one norm per block.
    block: BlockKind = "serial"
    # What turns the last block's output into the user vectors that are scored (the user embedding is the one at
    # the last real event; the norm penalty and evaluation's user_norm_* read it). norm*scale: the final norm
    # times a learned per-user scale starting at 1 (bounded to 1/64..64: trainer/model.py ScaledNorm), so the
    # direction (all that ranking uses) learns as with the norm alone while the norm is free, as in the
    # write-up; on ML-1M (baseline, one run each, noise about +-0.02) it reached validation Recall@10 0.224 at
    # 700 steps, as the norm alone did (0.224; unbounded scale 0.242).
    # norm+linear: the norm, then a d_model x d_model projection starting as the identity (AdamW moves all its
    # 4,096 entries at once: 0.043 vs the norm's 0.075 at 300 steps); residual: no final norm (0.054 at 300);
    # norm: the final norm alone, its norm pinned near sqrt(d_model) * gain (the same for every user, so the
    # penalties only ever see a constant).
    user_head: UserHead = "norm*scale"
    # Score items with the input item embeddings (True) or with a separate output table (False).
    tie_embeddings: bool = True

    def __post_init__(self) -> None:
        check_literals(self)
        for name in ("d_model", "n_layer", "n_head", "max_len"):
            require(getattr(self, name) >= 1, f"ModelConfig.{name}", f"must be >= 1, got {getattr(self, name)}")
        require(self.d_model % self.n_head == 0, "ModelConfig.n_head",
                f"d_model {self.d_model} must divide by n_head {self.n_head}")
        require(not self.uses_rope or self.head_dim % 2 == 0, "ModelConfig.position",
                f"{self.position!r} rotates pairs of dimensions: head_dim (d_model / n_head = {self.head_dim}) must be even")
        for name in ("dropout", "attention_dropout"):
            value = getattr(self, name)
            require(0.0 <= value < 1.0, f"ModelConfig.{name}", f"must be in [0, 1), got {value}")
        require(self.d_ff is None or self.d_ff >= 1, "ModelConfig.d_ff", f"must be >= 1 or null, got {self.d_ff}")
        require(self.d_ff_ratio > 0, "ModelConfig.d_ff_ratio", f"must be > 0, got {self.d_ff_ratio}")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    @property
    def uses_rope(self) -> bool:
        return self.position in ("rope", "rope+learned")

    @property
    def ff_dim(self) -> int:
        """The MLP hidden width actually built."""
        if self.d_ff is not None:
            return self.d_ff
        width = self.d_ff_ratio * self.d_model
        if self.mlp != "gelu":
            # Gated: d x 2f + f x d weights (+ 2f + d biases) equal GeLU's d x F + F x d (+ F + d) at
            # f = F (2d + b) / (3d + 2b): 2/3 without biases.
            d, b = self.d_model, int(self.bias)
            width *= (2 * d + b) / (3 * d + 2 * b)
        return max(1, round(width))
