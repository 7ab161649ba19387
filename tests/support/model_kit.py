"""Tiny configs, left-padded synthetic batches and an inline AdamW loop for the model tests (tests/trainer gets
them through its ``variant_cfg`` and ``model_kit`` fixtures)."""

from __future__ import annotations

import dataclasses

import torch

from trainer.losses import loss_terms
from trainer.model import InterestModel
from trainer.model_config import ModelConfig
from trainer.objective import ObjectiveConfig

NUM_ITEMS = 30
TINY = ModelConfig(d_model=16, n_layer=2, n_head=2, max_len=16, dropout=0.0)

# One switch changed at a time, for every architecture choice of ModelConfig.
ARCHITECTURE_VARIANTS = [
    *({"position": p} for p in ("learned", "rope", "rope+learned", "sinusoidal", "none")),
    *({"time_encoding": t} for t in ("none", "absolute", "hybrid")),
    {"calendar": True},
    {"norm": "rmsnorm"},
    {"mlp": "swiglu"},
    {"mlp": "geglu"},
    {"bias": True},
    {"block": "parallel"},
    {"tie_embeddings": False},
    {"d_ff": 24},
    *({"user_head": h} for h in ("norm+linear", "norm", "residual")),
]


def variant_id(overrides: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in overrides.items())


def tiny(**overrides) -> ModelConfig:
    return dataclasses.replace(TINY, **overrides)


def make_batch(lengths: list[int], T: int, seed: int = 0, num_items: int = NUM_ITEMS) -> dict[str, torch.Tensor]:
    """A left-padded batch with random events; padded slots hold random garbage in every feature but items,
    so a test passes only if the model truly ignores them."""
    g = torch.Generator().manual_seed(seed)
    B = len(lengths)
    real = torch.arange(T).expand(B, T) >= (T - torch.tensor(lengths))[:, None]
    items = torch.randint(1, num_items + 1, (B, T), generator=g) * real
    return {
        "items": items,
        "timestamp": torch.rand(B, T, generator=g).sort(dim=1).values,
        "log_hours_since_prev": torch.rand(B, T, generator=g) * 8,
        "hour_of_day": torch.randint(0, 24, (B, T), generator=g),
        "day_of_week": torch.randint(0, 7, (B, T), generator=g),
    }


def left_pad(batch: dict[str, torch.Tensor], extra: int, seed: int = 1) -> dict[str, torch.Tensor]:
    """``batch`` with ``extra`` more padded columns on the left (garbage features, item 0)."""
    g = torch.Generator().manual_seed(seed)
    B = batch["items"].shape[0]
    garbage = {
        "items": torch.zeros(B, extra, dtype=torch.long),
        "timestamp": torch.rand(B, extra, generator=g),
        "log_hours_since_prev": torch.rand(B, extra, generator=g) * 8,
        "hour_of_day": torch.randint(0, 24, (B, extra), generator=g),
        "day_of_week": torch.randint(0, 7, (B, extra), generator=g),
    }
    return {k: torch.cat([garbage[k], v], dim=1) for k, v in batch.items()}


def next_item_targets(items: torch.Tensor) -> torch.Tensor:
    """(B, T) targets: the next item at every real position but the last, 0 elsewhere."""
    targets = torch.zeros_like(items)
    targets[:, :-1] = torch.where(items[:, :-1] > 0, items[:, 1:], 0)
    return targets


def learnable_batch(B: int = 16, T: int = 12, num_items: int = 20, seed: int = 0) -> dict[str, torch.Tensor]:
    """Sequences with a deterministic transition (next = 3 * item + 1 mod N), varied lengths, left-padded."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(T // 2, T + 1, (B,), generator=g).tolist()
    batch = make_batch(lengths, T, seed, num_items)
    item = torch.randint(1, num_items + 1, (B,), generator=g)
    chain = []
    for _ in range(T):
        chain.append(item)
        item = (3 * item + 1) % num_items + 1
    batch["items"] = torch.stack(chain, dim=1) * (batch["items"] > 0)
    return batch


def train_losses(model: InterestModel, objective: ObjectiveConfig, batch: dict, steps: int,
                 lr: float = 1e-2) -> list[float]:
    """Full-batch AdamW steps minimising ``objective``; the task loss before each step."""
    targets = next_item_targets(batch["items"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    history = []
    for _ in range(steps):
        terms = loss_terms(model, model(batch), targets, objective)
        optimizer.zero_grad(set_to_none=True)
        terms.total.backward()
        optimizer.step()
        history.append(terms.task.item())
    return history
