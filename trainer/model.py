"""``InterestModel``: a causal Transformer over a user's event history that predicts the next item (SASRec-style).

Every architecture choice of the seed write-up is a ``ModelConfig`` switch, resolved to modules in one place
(the registries below) rather than by branches spread through ``forward``:

- positions (``position``): learned table | RoPE on queries and keys | both | fixed sinusoids | none. Positions
  count from each user's first real event, so extra left padding never changes any output.
- time (``time_encoding``, ``calendar``): Fourier features of the absolute timestamp, or
  ``HybridTimestampEncoding`` (half absolute time, half time since the previous event); hour/day embeddings.
- blocks (``norm``, ``mlp``, ``bias``, ``block``): pre-norm LayerNorm | RMSNorm, GeLU | SwiGLU | GeGLU MLP,
  serial | parallel residual arrangement. Attention is one fused QKV projection and
  ``F.scaled_dot_product_attention(is_causal=True)`` with no mask; without attention-weight dropout (the
  default) it stays a fused kernel.
- user tower output (``user_head``): the final norm, by default times a learned per-user scale, so the user
  embedding's norm is free as in the write-up; the output at the last real position is the user embedding (the
  seed's ``user_values``); items are scored by a dot product with the (tied or separate) item embedding table.

Batches are dicts of (B, T) tensors, LEFT-padded with item index 0 (see docs/contracts.md, "Model API"). Inside,
``forward`` rolls each row so its events come first (right padding): causal attention over a right-padded row
never lets a real query see a padding key, so SDPA runs its causal kernel (which skips the blocks above the
diagonal) without an explicit mask. Outputs are rolled back to the input's layout.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainer.model_config import ModelConfig

Batch = dict[str, Tensor]

INIT_STD = 0.02
# norm*scale: user norms stay within this factor of the final norm's (sqrt(d_model) * gain: 8 at d_model 64, so
# up to 512; the write-up's norms were about 340).
MAX_USER_SCALE = 64.0
ROPE_BASE = 10000.0
# Absolute time is normalized to [0, 1] over the data set: periods from the whole span down to 1e-4 of it
# (about 3 hours over MovieLens-1M's 3 years).
ABSOLUTE_TIME_HIGHEST = 2 * math.pi * 1e4
ABSOLUTE_TIME_RATIO = 1e4
# Time since the previous event is log1p(hours) in about [0, 12]: periods from 0.1 to 100 log-hours.
RELATIVE_TIME_HIGHEST = 2 * math.pi * 10.0
RELATIVE_TIME_RATIO = 1e3


def geometric_frequencies(count: int, highest: float, ratio: float) -> Tensor:
    """``count`` angular frequencies falling geometrically from ``highest`` (the Transformer's 1/base^(2i/d))."""
    return highest * ratio ** (-torch.arange(count, dtype=torch.float32) / count)


def fourier_features(values: Tensor, frequencies: Tensor) -> Tensor:
    """(...,) values -> (..., 2F) ``[sin(f v), cos(f v)]`` for each of the F frequencies."""
    angles = values.unsqueeze(-1).float() * frequencies
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


# ---------------------------------------------------------------- input features: (inputs) -> (B, T, D)
# ``inputs`` is the batch plus ``positions`` (B, T): 0 at a user's first real event.

class LearnedPositions(nn.Module):
    """A trained vector per position: the usual recommender choice; the only position parameters."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.table = nn.Embedding(cfg.max_len, cfg.d_model)

    def forward(self, inputs: Batch) -> Tensor:
        return self.table(inputs["positions"])


class SinusoidalPositions(nn.Module):
    """The original Transformer's fixed sin/cos table; a buffer, not a parameter."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        positions = torch.arange(cfg.max_len, dtype=torch.float32)
        frequencies = geometric_frequencies((cfg.d_model + 1) // 2, 1.0, ROPE_BASE)
        self.register_buffer("table", fourier_features(positions, frequencies)[:, :cfg.d_model], persistent=False)

    def forward(self, inputs: Batch) -> Tensor:
        return self.table[inputs["positions"]]


class FourierProjection(nn.Module):
    """One scalar per event (``key`` of the batch) -> sin/cos at geometric frequencies -> linear projection."""

    def __init__(self, key: str, out_dim: int, num_frequencies: int, highest: float, ratio: float, bias: bool):
        super().__init__()
        self.key = key
        self.register_buffer("frequencies", geometric_frequencies(num_frequencies, highest, ratio), persistent=False)
        self.proj = nn.Linear(2 * num_frequencies, out_dim, bias=bias)

    def forward(self, inputs: Batch) -> Tensor:
        return self.proj(fourier_features(inputs[self.key], self.frequencies))


def absolute_time_encoding(cfg: ModelConfig) -> FourierProjection:
    """Features of the normalized absolute timestamp, projected to d_model."""
    return FourierProjection("timestamp", cfg.d_model, cfg.d_model // 2,
                             ABSOLUTE_TIME_HIGHEST, ABSOLUTE_TIME_RATIO, cfg.bias)


class HybridTimestampEncoding(nn.Module):
    """Half the dimensions encode the absolute timestamp, half the time since the previous event.

    Each half projects as many Fourier features as ``absolute_time_encoding`` does to half the width, so both
    encodings have the same number of parameters.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        absolute_dim = cfg.d_model // 2
        self.absolute = FourierProjection("timestamp", absolute_dim, cfg.d_model // 2,
                                          ABSOLUTE_TIME_HIGHEST, ABSOLUTE_TIME_RATIO, cfg.bias)
        self.relative = FourierProjection("log_hours_since_prev", cfg.d_model - absolute_dim, cfg.d_model // 2,
                                          RELATIVE_TIME_HIGHEST, RELATIVE_TIME_RATIO, cfg.bias)

    def forward(self, inputs: Batch) -> Tensor:
        return torch.cat([self.absolute(inputs), self.relative(inputs)], dim=-1)


class CalendarEmbedding(nn.Module):
    """Hour-of-day (0..23) and day-of-week (0 = Monday .. 6) embeddings, summed."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.hour = nn.Embedding(24, cfg.d_model)
        self.day = nn.Embedding(7, cfg.d_model)

    def forward(self, inputs: Batch) -> Tensor:
        return self.hour(inputs["hour_of_day"].long()) + self.day(inputs["day_of_week"].long())


FeatureBuilder = Callable[[ModelConfig], nn.Module]
# position choice -> what is added to the input embeddings (RoPE lives in attention: cfg.uses_rope)
POSITION_INPUTS: dict[str, FeatureBuilder | None] = {
    "learned": LearnedPositions,
    "rope": None,
    "rope+learned": LearnedPositions,
    "sinusoidal": SinusoidalPositions,
    "none": None,
}
TIME_ENCODINGS: dict[str, FeatureBuilder | None] = {
    "none": None,
    "absolute": absolute_time_encoding,
    "hybrid": HybridTimestampEncoding,
}
CALENDAR: dict[bool, FeatureBuilder | None] = {False: None, True: CalendarEmbedding}


def build_input_features(cfg: ModelConfig) -> nn.ModuleDict:
    """The modules whose outputs are added to the item embeddings, chosen by the config."""
    builders = {"position": POSITION_INPUTS[cfg.position], "time": TIME_ENCODINGS[cfg.time_encoding],
                "calendar": CALENDAR[cfg.calendar]}
    return nn.ModuleDict({name: build(cfg) for name, build in builders.items() if build is not None})


# ---------------------------------------------------------------- rotary position embedding

class RotaryEmbedding(nn.Module):
    """cos/sin tables for RoPE; rotating q and k by their positions makes q.k depend on the offset only."""

    def __init__(self, head_dim: int, max_len: int):
        super().__init__()
        angles = torch.outer(torch.arange(max_len, dtype=torch.float32),
                             geometric_frequencies(head_dim // 2, 1.0, ROPE_BASE))  # (max_len, hd/2)
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        """(B, T) positions -> cos, sin, each (B, 1, T, hd/2), broadcast over heads."""
        return self.cos[positions].unsqueeze(1), self.sin[positions].unsqueeze(1)


def apply_rope(x: Tensor, rope: tuple[Tensor, Tensor]) -> Tensor:
    """Rotate pairs (x_i, x_{i+hd/2}) of (B, H, T, hd) by the position angles (GPT-NeoX layout)."""
    cos, sin = rope
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


# ---------------------------------------------------------------- dropout

class Dropout(nn.Dropout):
    """``nn.Dropout`` whose CPU mask comes from 16-bit slices of full-range 64-bit random words (four per draw).

    On CPU the stock mask (``bernoulli_``) is drawn one value at a time when MKL's generator is not used (it is
    not on AMD CPUs): 11 ms per (128, 200, 64) batch against 1.2 ms here, about 9% of an ML-1M step over five
    dropouts. The drop probability is ``p`` rounded to a multiple of 1/65536. Other devices use the fused kernel.
    """

    def __init__(self, p: float):
        super().__init__(p)
        self.threshold = round(p * 65536) - 32768  # int16 values below it are dropped
        self.scale = 1.0 / (1.0 - p) if p < 1 else 0.0

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0:
            return x
        if x.device.type != "cpu":
            return super().forward(x)
        n = x.numel()
        words = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-(2**63), None)  # every bit random
        keep = words.view(torch.int16)[:n].view_as(x) >= self.threshold
        return (x * keep).mul_(self.scale)


# ---------------------------------------------------------------- attention, MLPs, norms

class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_head = cfg.n_head
        self.attention_dropout = cfg.attention_dropout
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=cfg.bias)  # fused: one matmul for q, k, v
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=cfg.bias)
        self.resid_dropout = Dropout(cfg.dropout)

    def forward(self, x: Tensor, rope: tuple[Tensor, Tensor] | None) -> Tensor:
        """x (B, T, D) RIGHT-padded: a real query's causal keys are all real, so no mask is needed."""
        B, T, D = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_head, D // self.n_head).permute(2, 0, 3, 1, 4)  # (B, nh, T, hs)
        if rope is not None:
            q, k = apply_rope(q, rope), apply_rope(k, rope)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                           dropout_p=self.attention_dropout if self.training else 0.0)
        y = y.transpose(1, 2).reshape(B, T, D)
        return self.resid_dropout(self.proj(y))


class GeluMLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.fc = nn.Linear(cfg.d_model, cfg.ff_dim, bias=cfg.bias)
        self.proj = nn.Linear(cfg.ff_dim, cfg.d_model, bias=cfg.bias)
        self.dropout = Dropout(cfg.dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.proj(F.gelu(self.fc(x))))


class GatedMLP(nn.Module):
    """act(x W_gate) * (x W_up), then W_down (SwiGLU: SiLU gate; GeGLU: GeLU gate); gate and up fused."""

    def __init__(self, cfg: ModelConfig, activation: Callable[[Tensor], Tensor]):
        super().__init__()
        self.activation = activation
        self.fc = nn.Linear(cfg.d_model, 2 * cfg.ff_dim, bias=cfg.bias)
        self.proj = nn.Linear(cfg.ff_dim, cfg.d_model, bias=cfg.bias)
        self.dropout = Dropout(cfg.dropout)

    def forward(self, x: Tensor) -> Tensor:
        gate, up = self.fc(x).chunk(2, dim=-1)
        return self.dropout(self.proj(self.activation(gate) * up))


MLPS: dict[str, Callable[[ModelConfig], nn.Module]] = {
    "gelu": GeluMLP,
    "swiglu": partial(GatedMLP, activation=F.silu),
    "geglu": partial(GatedMLP, activation=F.gelu),
}
NORMS: dict[str, Callable[[ModelConfig], nn.Module]] = {
    "layernorm": lambda cfg: nn.LayerNorm(cfg.d_model, bias=cfg.bias),
    "rmsnorm": lambda cfg: nn.RMSNorm(cfg.d_model),
}


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.parallel = cfg.block == "parallel"
        self.norm_attn = NORMS[cfg.norm](cfg)
        self.attn = CausalSelfAttention(cfg)
        self.norm_mlp = None if self.parallel else NORMS[cfg.norm](cfg)
        self.mlp = MLPS[cfg.mlp](cfg)

    def forward(self, x: Tensor, rope: tuple[Tensor, Tensor] | None) -> Tensor:
        """
        serial (GPT-2 pre-norm):                         parallel (GPT-J / PaLM): one norm, one sum
        x ─┬──────────────(+)─┬──────────────(+)─ out    x ─┬──────────────────(+)─ out
           └─ norm ─ attn ─┘  └─ norm ─ mlp ──┘             └─ norm ─┬─ attn ─┤
                                                                    └─ mlp ──┘
        """
        if self.parallel:
            h = self.norm_attn(x)
            return x + self.attn(h, rope) + self.mlp(h)
        x = x + self.attn(self.norm_attn(x), rope)
        return x + self.mlp(self.norm_mlp(x))


# ---------------------------------------------------------------- the user tower's output

class ProjectedNorm(nn.Module):
    """The final norm, then a bias-free D x D projection that starts as the identity (so a fresh model scores
    exactly as the norm alone would) and is free to scale: the user embedding's norm is learned, not pinned."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.norm = NORMS[cfg.norm](cfg)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(self.norm(x))


class ScaledNorm(nn.Module):
    """The final norm times a per-user scale that starts at 1: exp(c tanh(z / c)) with z = w . norm(x) + b
    (w = b = 0 at first) and c = ln(MAX_USER_SCALE). The direction is the norm's, so ranking learns as with the
    norm alone, while each user's norm is learned. Near 1 the scale is exp(z); the tanh keeps it within
    1/MAX_USER_SCALE .. MAX_USER_SCALE of the norm's, so a saturated softmax cannot push it up without bound (on
    a tiny set trained to zero loss at lr 1e-2 an unbounded exp(z) ran away to 60x and the loss jumped back)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.norm = NORMS[cfg.norm](cfg)
        self.log_scale = nn.Linear(cfg.d_model, 1)
        self.bound = math.log(MAX_USER_SCALE)

    def forward(self, x: Tensor) -> Tensor:
        h = self.norm(x)
        return h * (self.bound * torch.tanh(self.log_scale(h) / self.bound)).exp()


# user_head choice -> what turns the last block's residual stream into the scored vectors
USER_HEADS: dict[str, Callable[[ModelConfig], nn.Module]] = {
    "norm+linear": ProjectedNorm,
    "norm*scale": ScaledNorm,
    "norm": lambda cfg: NORMS[cfg.norm](cfg),
    "residual": lambda cfg: nn.Identity(),
}


# ---------------------------------------------------------------- the model

class InterestModel(nn.Module):
    def __init__(self, cfg: ModelConfig, num_items: int):
        super().__init__()
        if num_items < 1:
            raise ValueError(f"num_items: must be >= 1, got {num_items}")
        self.cfg = cfg
        self.num_items = num_items
        self.item_embedding = nn.Embedding(num_items + 1, cfg.d_model, padding_idx=0)
        self.input_features = build_input_features(cfg)
        self.input_dropout = Dropout(cfg.dropout)
        self.rotary = RotaryEmbedding(cfg.head_dim, cfg.max_len) if cfg.uses_rope else None
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.user_head = USER_HEADS[cfg.user_head](cfg)
        self.output_embedding = None if cfg.tie_embeddings else nn.Embedding(num_items + 1, cfg.d_model, padding_idx=0)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("proj.weight") and name.startswith("blocks."):  # residual outputs (GPT-2)
                nn.init.normal_(p, std=INIT_STD / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=INIT_STD)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=INIT_STD)
            if module.padding_idx is not None:
                nn.init.zeros_(module.weight[module.padding_idx])
        elif isinstance(module, ProjectedNorm):  # visited after its Linear child (apply is post-order)
            nn.init.eye_(module.proj.weight)
        elif isinstance(module, ScaledNorm):
            nn.init.zeros_(module.log_scale.weight)

    def _right_aligned(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """Left-padded batch -> the user tower's outputs (B, T, D) with each row's events first, and the
        number of real events per row (B,)."""
        items = batch["items"]  # (B, T)
        B, T = items.shape
        if T > self.cfg.max_len:
            raise ValueError(f"items: sequence length {T} exceeds ModelConfig.max_len {self.cfg.max_len}")
        lengths = (items != 0).sum(dim=1)  # (B,)
        columns = torch.arange(T, device=items.device)
        # Right column t takes left column (t + padding) mod T: the events in order, then the padding.
        to_right = (columns + (T - lengths)[:, None]) % T  # (B, T)
        inputs = {key: value.gather(1, to_right) for key, value in batch.items()}
        inputs["positions"] = columns.expand(B, T)  # 0 at the first real event
        x = self.item_embedding(inputs["items"])  # (B, T, D)
        for feature in self.input_features.values():
            x = x + feature(inputs)
        x = self.input_dropout(x)
        rope = self.rotary(inputs["positions"]) if self.rotary is not None else None
        for block in self.blocks:
            x = block(x, rope)
        return self.user_head(x), lengths

    def forward(self, batch: Batch) -> Tensor:
        """Left-padded batch -> the scored vectors (B, T, D) at every position, in the input's (left-padded)
        layout; 0 at padded positions (inside, padding queries attend to real events: zeroing them keeps every
        output a function of the events before it only)."""
        hidden, lengths = self._right_aligned(batch)
        B, T, D = hidden.shape
        # Left column s holds right column (s + length) mod T: the inverse of the roll above.
        to_left = (torch.arange(T, device=hidden.device) + lengths[:, None]) % T  # (B, T)
        padded = (batch["items"] == 0).unsqueeze(-1)  # (B, T, 1)
        return hidden.gather(1, to_left[:, :, None].expand(B, T, D)).masked_fill(padded, 0.0)

    def user_embedding(self, batch: Batch) -> Tensor:
        """(B, D): the user tower's output at the last real event (what is scored and what the norm penalty and
        the user_norm_* statistics read)."""
        hidden, lengths = self._right_aligned(batch)
        last = (lengths - 1).clamp_(min=0)  # an all-padding row reads column 0: finite, meaningless
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]

    def item_embeddings(self) -> Tensor:
        """(N+1, D) output item embeddings; row 0 is padding."""
        table = self.item_embedding if self.output_embedding is None else self.output_embedding
        return table.weight

    def score(self, user_emb: Tensor) -> Tensor:
        """(B, D) -> (B, N+1) dot-product scores against every item; column 0 (padding) is -inf."""
        scores = user_emb @ self.item_embeddings().T
        scores[:, 0] = float("-inf")
        return scores

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
