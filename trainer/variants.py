"""Variants are data: a name, a preset, the fields it sets over the preset, and (for replicates) a seed.

    {"name": "dff-2x", "preset": "baseline", "set": {"d_ff_ratio": 2}}
    {"name": "swiglu", "preset": "swiglu", "seed": 3}
    "rope"                                   # a bare preset name: {"name": "rope", "preset": "rope"}

A run trains one model per variant (``VariantSpec.run_name`` tells replicates of one variant apart). The DAG loops
over these dicts, and ``TrainJob`` receives the variant's ``overrides()`` after the run-wide ones, so a variant's
own settings win.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from core.configs import ConfigError, require
from trainer.presets import get_preset

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,62}")


@dataclass(frozen=True)
class VariantSpec:
    name: str  # how reports and the gate name it; letters, digits, '.', '_', '+', '-'
    preset: str  # the trainer.presets entry it starts from
    set: Mapping[str, Any] = field(default_factory=dict)  # ModelConfig / TrainConfig fields over the preset's
    seed: int | None = None  # TrainConfig.seed of this replicate; None: the preset's seed

    def __post_init__(self) -> None:
        require(isinstance(self.name, str) and NAME_RE.fullmatch(self.name) is not None, "variant name",
                f"{self.name!r}: use 1-63 letters, digits, '.', '_', '+' or '-', starting with a letter or digit")
        get_preset(self.preset)
        require(isinstance(self.set, Mapping), f"variant {self.name}: set", "must be a mapping of config fields")
        require(self.seed is None or isinstance(self.seed, int), f"variant {self.name}: seed",
                f"must be an integer, got {self.seed!r}")

    @property
    def run_name(self) -> str:
        """Unique within a run: the name, and the seed of a replicate."""
        return self.name if self.seed is None else f"{self.name}-seed{self.seed}"

    def overrides(self) -> tuple[str, ...]:
        """The variant's own settings as ``trainer.job`` overrides (values as JSON, which parses back exactly)."""
        items = tuple(f"{key}={json.dumps(value)}" for key, value in self.set.items())
        return items + ((f"train.seed={self.seed}",) if self.seed is not None else ())

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "preset": self.preset, "set": dict(self.set)}
        if self.seed is not None:
            out["seed"] = self.seed
        return out

    @classmethod
    def parse(cls, value: Any) -> VariantSpec:
        """A preset name or a ``{name, preset, set, seed}`` mapping (``preset`` defaults to ``name``). A whole-number
        seed that arrives as a float (KFP passes loop items' ints as floats) is an int again; config fields need no
        such care (``core.configs`` reads 2.0 as 2 for an integer field)."""
        if isinstance(value, str):
            return cls(value, value)
        if not isinstance(value, Mapping):
            raise ConfigError(f"variants: {value!r} is neither a preset name nor a mapping with name/preset/set/seed")
        unknown = sorted(set(value) - {"name", "preset", "set", "seed"})
        require(not unknown, "variants", f"unknown key {unknown[0] if unknown else ''!r} in {dict(value)}; "
                "allowed: name, preset, set, seed")
        require("name" in value or "preset" in value, "variants", f"{dict(value)} needs a name or a preset")
        seed = value.get("seed")
        if isinstance(seed, float) and seed.is_integer():
            seed = int(seed)
        return cls(str(value.get("name", value.get("preset"))), str(value.get("preset", value.get("name"))),
                   dict(value.get("set") or {}), seed)


def parse_variants(values: Any) -> list[VariantSpec]:
    """A list of variants (preset names or mappings); run names must be unique."""
    require(isinstance(values, list | tuple) and len(values) > 0, "variants",
            "must be a non-empty list of presets or {name, preset, set, seed} mappings")
    specs = [VariantSpec.parse(v) for v in values]
    names = [s.run_name for s in specs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    require(not duplicates, "variants", f"lists {', '.join(duplicates)} twice")
    return specs
