"""Model FLOPs of a training step and the dense matmul peak of this machine, for model FLOP utilization (MFU).

The FLOP formula (matmuls only; a multiply-add counts 2 FLOPs), per REAL (non-padding) input token, per layer:

    attention projections    2 * 4 * D^2            (q, k, v and the output projection)
    attention scores, values 2 * 2 * D * c          (q.k over c keys, then the weighted sum of c values)
    MLP                      2 * 2 * D * F          (GeLU: up and down; gated: 2 * 3 * D * F, gate/up/down)

plus, once per token, the user head's linear layer 2 * D * H (``user_head``: H = D for norm+linear, 1 for
norm*scale, 0 otherwise) and the output projection 2 * D * S, where S is the number of scored items per position
(full_ce: the N-item catalogue; sampled_softmax: the negatives plus the positive; bce: 2). ``c`` is the
number of keys a causal query sees among its own sequence's real tokens, so a sequence of n real tokens has
n (n + 1) / 2 query-key pairs. Training (forward + backward) = 3 x the forward FLOPs. Padding, embeddings,
norms, activations, softmax and the optimizer do not count: they are memory-bound work, and counting only real
tokens makes the figure the same for any implementation of the same model on the same data, so MFU compares
implementations fairly.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

from trainer.model_config import ModelConfig
from trainer.objective import ObjectiveConfig

# Matmul sizes for the peak: big enough to be compute-bound; the best of them is the peak.
PEAK_SIZES = {"cpu": (512, 1024, 2048), "cuda": (4096, 8192, 16384)}
# Products launched between two synchronizations (a GPU queues them; a CPU product is already synchronous).
PRODUCTS_PER_SYNC = {"cpu": 1, "cuda": 10}


@dataclass(frozen=True)
class ModelShape:
    d_model: int  # D: width of the hidden states
    n_layer: int  # Transformer blocks
    ff_dim: int  # F: MLP hidden width
    gated: bool  # gated MLP (SwiGLU/GeGLU): three D x F matrices instead of two
    scored_items: int  # S: logits computed per real token by the loss
    head_width: int = 0  # H: outputs of the user head's linear layer (ModelConfig.user_head)

    @classmethod
    def of(cls, cfg: ModelConfig, num_items: int, objective: ObjectiveConfig = ObjectiveConfig()) -> ModelShape:
        """The shape of ``InterestModel(cfg, num_items)`` trained with ``objective.loss``."""
        scored = {"full_ce": num_items, "sampled_softmax": objective.num_negatives + 1, "bce": 2}[objective.loss]
        head_width = {"norm+linear": cfg.d_model, "norm*scale": 1}.get(cfg.user_head, 0)
        return cls(cfg.d_model, cfg.n_layer, cfg.ff_dim, cfg.mlp != "gelu", scored, head_width)

    def forward_flops_per_token(self) -> int:
        """Forward FLOPs per real token that do not depend on the sequence length."""
        D, F = self.d_model, self.ff_dim
        per_layer = 2 * 4 * D * D + 2 * (3 if self.gated else 2) * D * F
        return self.n_layer * per_layer + 2 * D * self.head_width + 2 * D * self.scored_items

    def forward_attention_flops_per_pair(self) -> int:
        """Forward FLOPs per causal (query, key) pair of real tokens, all layers."""
        return self.n_layer * 2 * 2 * self.d_model


def train_flops(shape: ModelShape, lengths: Iterable[int]) -> int:
    """Model FLOPs of one forward + backward pass over sequences of ``lengths`` real input tokens."""
    n = np.asarray(list(lengths), dtype=np.int64)
    tokens = int(n.sum())
    pairs = int((n * (n + 1) // 2).sum())
    return 3 * (tokens * shape.forward_flops_per_token() + pairs * shape.forward_attention_flops_per_pair())


def matmul_peak(device: torch.device | str = "cpu", dtype: torch.dtype | None = None,
                sizes: Iterable[int] | None = None, seconds: float = 0.5) -> dict[str, float | int | str]:
    """The dense (n x n) @ (n x n) FLOP/s of the fastest product (or group of queued products on a GPU) over
    ``sizes`` on ``device``: fp32 on CPU, bf16 on GPU by default. The fastest, not the mean, because other
    processes on a shared machine only ever slow a product down.

    Each size runs for about ``seconds`` after one warm-up product. Returns ``{"flops_per_second", "size",
    "dtype", "threads"}`` of the best size.
    """
    device = torch.device(device)
    dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
    per_sync = PRODUCTS_PER_SYNC[device.type]
    best = {"flops_per_second": 0.0, "size": 0, "dtype": str(dtype).removeprefix("torch."),
            "threads": torch.get_num_threads()}
    for n in sizes or PEAK_SIZES[device.type]:
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        out = torch.empty(n, n, device=device, dtype=dtype)
        torch.mm(a, b, out=out)  # warm-up: thread pools, cuBLAS handles, allocator
        _sync(device)
        fastest, deadline = math.inf, time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            for _ in range(per_sync):
                torch.mm(a, b, out=out)
            _sync(device)
            fastest = min(fastest, time.perf_counter() - start)
        rate = 2 * n**3 * per_sync / fastest
        if rate > best["flops_per_second"]:
            best.update(flops_per_second=rate, size=n)
    return best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
