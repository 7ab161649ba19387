"""Run profiles as data: the quick profile (`make run`) compares variants fairly."""

from __future__ import annotations

import pytest

from pipelines.profiles import PROFILES, QUICK_STEPS
from trainer.job import overrides_from, resolve_configs
from trainer.presets import PRESETS
from trainer.variants import parse_variants

ML_1M_STEPS_PER_EPOCH = 48  # 6,040 users in batches of 128


def test_quick_profile_trains_every_variant_the_same_number_of_optimizer_steps():
    """Equal steps for every preset: max_steps is the only limit that can stop a run (no wall-clock budget, which
    gave 210 to 341 steps on a shared machine; no early stopping) and the epochs never come first."""
    profile = PROFILES["quick"]
    specs = parse_variants(list(profile.variants or PRESETS))
    assert [s.name for s in specs] == list(PRESETS)  # every preset, the baseline among them
    run_wide = overrides_from(profile.model_overrides, profile.train_config)
    horizons = set()
    for spec in specs:
        train = resolve_configs(spec.preset, (*run_wide, *spec.overrides())).train
        assert train.time_budget_seconds is None and train.patience == 0, spec.name
        horizons.add((train.max_steps, train.total_steps(ML_1M_STEPS_PER_EPOCH)))
    assert horizons == {(QUICK_STEPS, QUICK_STEPS)}


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_every_profile_resolves_every_variant(name):
    profile = PROFILES[name]
    run_wide = overrides_from(profile.model_overrides, profile.train_config)
    for spec in parse_variants(list(profile.variants or PRESETS)):
        resolve_configs(spec.preset, (*run_wide, *spec.overrides()))
