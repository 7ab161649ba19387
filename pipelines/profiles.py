"""Run profiles as data: how big a local or cluster run of the whole pipeline is.

A profile fills the pipeline's parameters (``pipelines.pipeline``); ``interest run --profile NAME`` executes it
locally, ``interest submit --profile NAME`` sends it to a cluster. Any parameter can still be overridden.

- ``smoke``: MovieLens-100K, two variants, a tiny model, a handful of steps; the whole local run in under a
  minute (the end-to-end test runs it).
- ``quick``: MovieLens-1M, every preset of ``trainer.presets``, each trained for exactly the same number of
  optimizer steps (no time budget, no early stopping: a wall-clock budget on a shared machine gave variants
  210 to 341 steps, so their differences measured the load, not the architecture); the seconds each took are
  reported beside (speed is itself a write-up finding). Two at a time, histories cut to the last 50 events
  (full-catalogue softmax over 200 positions costs ~2 s a step on one CPU thread). 300 steps: the slowest preset
  made 210 steps in 90 s on 2 shared cores, so 13 variants two at a time stay under 20 minutes. ``make run``.
- ``full``: every preset at the seed's full length (200 epochs, early stopping); a GPU is recommended.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from core.configs import ConfigError, require


@dataclass(frozen=True)
class Profile:
    name: str  # what users type: --profile NAME
    description: str  # one line for --help
    dataset: str  # "ml-1m", "ml-100k" (preprocessing.datasets) or a path/URI to an events file
    # Variants to train (trainer.variants: preset names or {name, preset, set, seed} mappings); empty: every
    # preset, in the order trainer.presets lists them.
    variants: tuple[Any, ...] = ()
    # ModelConfig ``key=value`` overrides applied to every variant (smoke: a tiny model).
    model_overrides: tuple[str, ...] = ()
    # TrainConfig fields for every variant, over each preset's own ``train`` fields (budget, eval cadence).
    train_config: dict[str, Any] = field(default_factory=dict)
    # PreprocessConfig fields (preprocessing/config.py); empty: its defaults.
    preprocess_config: dict[str, Any] = field(default_factory=dict)
    # GateConfig fields (release/gate.py); empty: its defaults.
    gate_config: dict[str, Any] = field(default_factory=dict)
    # Variants trained at once by a local run; torch threads per task = cores // parallelism.
    local_parallelism: int = 2

    def __post_init__(self) -> None:
        require(self.local_parallelism >= 1, "local_parallelism", f"must be >= 1, got {self.local_parallelism}")

    def variant_specs(self) -> list[dict[str, Any]]:
        """The variants as the DAG's ``variants`` parameter takes them (trainer.variants.VariantSpec JSON)."""
        from trainer.presets import PRESETS
        from trainer.variants import parse_variants

        return [spec.to_json() for spec in parse_variants(list(self.variants or PRESETS))]

    def variant_names(self) -> list[str]:
        return [spec["name"] for spec in self.variant_specs()]


QUICK_STEPS = 300  # optimizer steps per variant in the quick profile (see the module docstring)

PROFILES: dict[str, Profile] = {p.name: p for p in (
    Profile(
        name="smoke",
        description="MovieLens-100K, 2 variants, tiny model, a few steps: the whole run in under a minute",
        dataset="ml-100k",
        variants=("baseline", "swiglu"),
        model_overrides=("d_model=16", "n_layer=1", "n_head=1", "max_len=32", "dropout=0.0"),
        train_config={"max_steps": 6, "batch_size": 64, "eval_every_steps": 3,
                      "checkpoint_every_steps": 3, "log_every_steps": 1, "eval_batch_size": 1024},
        # A tiny model after 6 steps has no real recall: the gate must judge the mechanics, not the quality.
        gate_config={"min_recall_at_10": 0.0},
    ),
    Profile(
        name="quick",
        description="MovieLens-1M, every preset, 300 optimizer steps each (equal for all), 2 at a time: under 20 "
        "minutes on 2 cores",
        dataset="ml-1m",
        model_overrides=("max_len=50",),
        # Equal steps for every variant: max_steps is the only limit (and the LR schedules' horizon); patience 0
        # turns early stopping off, and there is no time budget.
        train_config={"max_steps": QUICK_STEPS, "patience": 0, "eval_every_steps": 25,
                      "checkpoint_every_steps": 100, "log_every_steps": 10},
    ),
    Profile(
        name="full",
        description="MovieLens-1M, every preset at the seed's full length with early stopping (GPU recommended)",
        dataset="ml-1m",
    ),
)}


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ConfigError(f"--profile: unknown profile {name!r}; choose one of {', '.join(PROFILES)}") from None
