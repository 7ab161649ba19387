"""``ObjectiveConfig``: what training minimises (the next-item loss and the user-norm penalty), apart from
``ModelConfig``, which describes only the forward pass and the weights' shapes.

A model's directory holds ``objective_config.json`` beside ``model_config.json``; models written before the
objective had its own config kept these fields in ``model_config.json``, and ``split_legacy`` reads them from
there, so old champions in a registry still load. Overrides: ``objective.KEY=VALUE`` (or the bare ``KEY``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Literal

from core.configs import check_literals, require
from core.contract import LEGACY_OBJECTIVE_FIELDS

Loss = Literal["full_ce", "sampled_softmax", "bce"]
Penalty = Literal["none", "l2", "hinge"]


@dataclass(frozen=True)
class ObjectiveConfig:
    # full_ce: softmax over the whole catalogue; sampled_softmax: num_negatives shared negatives with logQ
    # correction (for large catalogues); bce: SASRec's original one positive vs one random negative.
    loss: Loss = "full_ce"
    # Negatives per batch for sampled_softmax.
    num_negatives: int = 256
    # Penalty on user-embedding norms, reported apart from the task loss. l2: lambda * mean ||u||;
    # hinge: lambda * max(mean ||u|| - tau, 0)^2.
    penalty: Penalty = "none"
    # Penalty strength lambda (seed: l2 1e-4 keeps recall; >= 1e-2 hurts it; hinge 1e-3).
    penalty_lambda: float = 0.0
    # Hinge target norm tau (seed: 180).
    penalty_tau: float = 180.0

    def __post_init__(self) -> None:
        check_literals(self)
        require(self.num_negatives >= 1, "ObjectiveConfig.num_negatives", f"must be >= 1, got {self.num_negatives}")
        require(self.penalty_lambda >= 0, "ObjectiveConfig.penalty_lambda",
                f"must be >= 0, got {self.penalty_lambda}")
        require(self.penalty == "none" or self.penalty_lambda > 0, "ObjectiveConfig.penalty_lambda",
                f"penalty {self.penalty!r} needs penalty_lambda > 0")
        require(self.penalty_tau >= 0, "ObjectiveConfig.penalty_tau", f"must be >= 0, got {self.penalty_tau}")


# Fields that lived in ModelConfig before the objective had its own config: old files and ``model.KEY`` overrides.
MOVED_FROM_MODEL = frozenset(LEGACY_OBJECTIVE_FIELDS)
assert MOVED_FROM_MODEL <= {f.name for f in fields(ObjectiveConfig)}


def split_legacy(model_config: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A ``model_config.json`` mapping as (ModelConfig fields, ObjectiveConfig fields): files written before the
    objective had its own config carry both."""
    model = {k: v for k, v in model_config.items() if k not in MOVED_FROM_MODEL}
    objective = {k: v for k, v in model_config.items() if k in MOVED_FROM_MODEL}
    return model, objective
