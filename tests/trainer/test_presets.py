"""Presets: each is the baseline plus what its name says, lists on the CLI, and trains on CPU."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from core.configs import ConfigError, from_dict
from pipelines import cli
from trainer.job import resolve_configs
from trainer.model import InterestModel
from trainer.model_config import ModelConfig
from trainer.objective import ObjectiveConfig
from trainer.presets import PRESETS, get_preset
from trainer.train_config import TrainConfig


def model_of(preset: str, overrides: list[str] | tuple[str, ...] = ()) -> ModelConfig:
    return resolve_configs(preset, overrides)[0]

# What each preset's name says it changes (ModelConfig fields, TrainConfig fields, ObjectiveConfig fields).
CHANGES = {
    "baseline": (set(), set(), set()),
    "rope": ({"position"}, set(), set()),
    "rope-learned": ({"position"}, set(), set()),
    "rmsnorm": ({"norm"}, set(), set()),
    "swiglu": ({"mlp"}, set(), set()),
    "geglu": ({"mlp"}, set(), set()),
    "parallel": ({"block"}, set(), set()),
    "hybrid-time": ({"time_encoding"}, set(), set()),
    "l2": (set(), set(), {"penalty", "penalty_lambda"}),
    "hinge": (set(), set(), {"penalty", "penalty_lambda", "penalty_tau"}),
    "cosine": (set(), {"schedule", "warmup_fraction", "min_lr_ratio", "weight_decay"}, set()),
    "warm-restarts": (set(), {"schedule", "warmup_fraction", "min_lr_ratio", "weight_decay"}, set()),
    "best": ({"mlp", "time_encoding"}, set(), {"penalty", "penalty_lambda"}),
}


def changed_fields(a, b) -> set[str]:
    return {f.name for f in dataclasses.fields(a) if getattr(a, f.name) != getattr(b, f.name)}


def test_every_seed_experiment_has_a_preset():
    assert set(PRESETS) == set(CHANGES)


@pytest.mark.parametrize("name", list(CHANGES))
def test_preset_differs_from_baseline_only_in_its_name(name):
    preset, baseline = get_preset(name), get_preset("baseline")
    model_fields, train_fields, objective_fields = CHANGES[name]
    assert (set(preset.model), set(preset.train), set(preset.objective)) == (model_fields, train_fields,
                                                                             objective_fields)
    changed = changed_fields(model_of(preset.name), model_of(baseline.name))
    assert changed <= model_fields and bool(changed) == bool(model_fields)
    changed = changed_fields(resolve_configs(preset.name).objective, ObjectiveConfig())
    assert changed <= objective_fields and bool(changed) == bool(objective_fields)
    assert changed_fields(from_dict(TrainConfig, preset.train), TrainConfig()) <= train_fields
    assert preset.note and "\n" not in preset.note


def test_preset_values_are_the_seeds():
    assert resolve_configs("l2").objective.penalty_lambda == 1e-4
    hinge = resolve_configs("hinge").objective
    assert (hinge.penalty, hinge.penalty_tau, hinge.penalty_lambda) == ("hinge", 180.0, 1e-3)
    cosine = from_dict(TrainConfig, get_preset("cosine").train)
    assert (cosine.schedule, cosine.warmup_fraction, cosine.min_lr_ratio, cosine.weight_decay) == \
        ("cosine", 0.05, 0.01, 0.01)
    assert from_dict(TrainConfig, get_preset("warm-restarts").train).schedule == "cosine_restarts"
    assert model_of("rope-learned").position == "rope+learned"
    baseline = model_of("baseline")
    assert baseline == ModelConfig()
    assert (baseline.position, baseline.norm, baseline.mlp, baseline.block, baseline.time_encoding) == \
        ("learned", "layernorm", "gelu", "serial", "absolute")


def test_unknown_preset_lists_the_names():
    with pytest.raises(ConfigError, match="preset: unknown preset 'swish'; choose one of baseline, rope, "):
        get_preset("swish")


def test_model_config_overrides():
    cfg = model_of("swiglu", ["d_model=128", "n_head=4"])
    assert (cfg.mlp, cfg.d_model, cfg.n_head) == ("swiglu", 128, 4)
    with pytest.raises(ConfigError, match="ModelConfig.norm"):
        model_of("rope", ["norm=groupnorm"])


@pytest.mark.parametrize("gated", ["swiglu", "geglu"])
def test_gated_preset_pairs_match_parameters(gated):
    def params(name):
        return InterestModel(model_of(name), 3416).num_parameters()

    assert abs(params(gated) - params("baseline")) / params("baseline") < 0.01
    # the blocks alone, without the item table that dominates the total
    def block_params(name):
        return sum(p.numel() for p in InterestModel(model_of(name), 1).blocks.parameters())

    assert abs(block_params(gated) - block_params("baseline")) / block_params("baseline") < 0.01


def test_presets_cli_table_and_json(capsys):
    assert cli.main(["presets"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert "num_items=3416" in table[0]
    assert [line.split()[0] for line in table[2:]] == list(PRESETS)
    assert cli.main(["presets", "--json", "--num-items", "50"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert listing["num_items"] == 50
    for row in listing["presets"]:
        expected = InterestModel(model_of(row["name"]), 50).num_parameters()
        assert row["params"] == expected and row["note"] == PRESETS[row["name"]].note
    assert cli.main(["presets", "--num-items", "0"]) == 2
    assert "--num-items: must be >= 1" in capsys.readouterr().err


@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_overfits_a_tiny_sequence_set(model_kit, name):
    """Each preset's architecture and loss drive the training loss down on tiny synthetic sequences."""
    configs = resolve_configs(name, ["d_model=16", "n_head=2", "max_len=16", "dropout=0.0"])
    model = InterestModel(configs.model, 20)
    history = model_kit.train_losses(model, configs.objective, model_kit.learnable_batch(), steps=40)
    assert all(torch.isfinite(torch.tensor(history)))
    assert history[-1] < 0.3 * history[0], history
