"""Experiment grids as data: the built-in write-up grids resolve to valid configs, grid files parse into one run
per (variant, seed), hinge targets follow the unpenalised norm, and the aspect grid keeps its parameter budget."""

from __future__ import annotations

import json

import pytest

from core.configs import ConfigError
from trainer.grids import ASPECT_PAIRS, GRIDS, load_grid, parameter_counts, parse_grid
from trainer.job import resolve_configs
from trainer.variants import VariantSpec

ML_1M_ITEMS = 3416


@pytest.mark.parametrize("name", sorted(GRIDS))
def test_every_builtin_grid_expands_to_valid_runs_with_its_baseline(name):
    grid = GRIDS[name]
    runs = grid.expand(unpenalised_norm=40.0)
    assert len(runs) == len(grid.variants) * len(grid.seeds) and len(grid.seeds) >= 3
    assert grid.baseline in {run.name for run in runs}
    for run in runs:
        resolve_configs(run.preset, run.overrides())
    assert len({run.run_name for run in runs}) == len(runs)


def test_aspect_pairs_keep_the_baselines_non_embedding_parameters_within_2_percent():
    _, reference = parameter_counts(VariantSpec("baseline", "baseline"), ML_1M_ITEMS)
    grid = GRIDS["writeup-aspect"]
    assert [(v.set["n_layer"], v.set["d_model"]) for v in grid.variants] == [(n, d) for n, d, _ in ASPECT_PAIRS]
    for variant in grid.variants:
        _, blocks = parameter_counts(variant, ML_1M_ITEMS)
        assert abs(blocks - reference) / reference < 0.02, (variant.name, blocks, reference)
    assert len({v.set["n_layer"] for v in grid.variants}) == len(grid.variants) >= 4


def test_dff_grid_sets_the_ratio_and_the_penalty_grid_covers_the_writeups_table():
    dff = {v.name: resolve_configs(v.preset, v.overrides())[0] for v in GRIDS["writeup-dff"].variants}
    assert {name: cfg.ff_dim for name, cfg in dff.items()} == {"dff-1x": 64, "dff-2x": 128, "dff-4x": 256,
                                                                 "dff-8x": 512}
    penalty = {v.name: resolve_configs(v.preset, v.overrides()).objective
               for v in GRIDS["writeup-penalty"].expand(seeds=[], unpenalised_norm=338.6)}
    assert penalty["baseline"].penalty == "none"
    assert (penalty["l2-1e-4"].penalty, penalty["l2-1e-4"].penalty_lambda) == ("l2", 1e-4)
    assert (penalty["l2-5e-4"].penalty, penalty["l2-5e-4"].penalty_lambda) == ("l2", 5e-4)
    writeup_hinge = penalty["hinge-0.53x-1e-3"]  # the write-up's tau 180 at an unpenalised norm of 338.6
    assert (writeup_hinge.penalty, writeup_hinge.penalty_lambda) == ("hinge", 1e-3)
    assert writeup_hinge.penalty_tau == pytest.approx(179.5, abs=0.1)


def test_hinge_targets_need_the_unpenalised_norm():
    with pytest.raises(ConfigError, match="--unpenalised-norm"):
        GRIDS["writeup-penalty"].expand()


def test_a_grid_file_with_overrides_and_seeds_gives_one_run_per_variant_and_seed(tmp_path):
    path = tmp_path / "dff.yaml"
    path.write_text("seeds: [1, 2]\nvariants:\n  - {name: dff-2x, preset: baseline, set: {d_ff_ratio: 2}}\n"
                    "  - baseline\n  - {name: tight, preset: baseline, set: {penalty: hinge, penalty_lambda: 0.001},"
                    " tau_ratio: 0.5}\n")
    grid = load_grid(str(path))
    assert (grid.name, grid.baseline, grid.seeds) == ("dff", "baseline", (1, 2))
    runs = grid.expand(unpenalised_norm=30.0)
    assert [r.run_name for r in runs] == ["dff-2x-seed1", "dff-2x-seed2", "baseline-seed1", "baseline-seed2",
                                          "tight-seed1", "tight-seed2"]
    model, _, train = resolve_configs(runs[1].preset, runs[1].overrides())
    assert (model.d_ff_ratio, train.seed) == (2.0, 2)
    assert resolve_configs(runs[4].preset, runs[4].overrides()).objective.penalty_tau == 15.0
    assert [r.run_name for r in grid.expand(seeds=[], unpenalised_norm=30.0)] == ["dff-2x", "baseline", "tight"]


def test_a_list_file_compares_with_its_first_variant_unless_one_is_named_baseline(tmp_path):
    path = tmp_path / "grid.json"
    path.write_text(json.dumps([{"name": "wide", "preset": "baseline", "set": {"d_model": 128}}, "rope"]))
    grid = load_grid(str(path))
    assert (grid.baseline, grid.seeds, [r.run_name for r in grid.expand()]) == ("wide", (), ["wide", "rope"])


@pytest.mark.parametrize("data, message", [
    ({"variants": ["rope"], "seed": [1]}, "unknown key 'seed'"),
    ({"variants": []}, "non-empty list"),
    ({"variants": ["rope"], "baseline": "nope"}, "'nope' is not one of its variants"),
    ({"variants": ["rope"], "seeds": [1, 1]}, "distinct integers"),
    ({"variants": ["rope"], "seeds": "1,2"}, "list of integers"),
    ({"variants": [{"name": "x", "preset": "baseline", "seed": 4}], "seeds": [1]}, "give seeds once"),
    ({"variants": [{"name": "x", "preset": "nope"}]}, "unknown preset 'nope'"),
    ({"variants": [{"name": "x", "preset": "baseline", "tau_ratio": -1}]}, "tau_ratio"),
    ("rope", "a list of variants or a mapping"),
])
def test_bad_grids_name_the_problem(data, message):
    with pytest.raises(ConfigError, match=message):
        parse_grid(data, "grid.yaml")


def test_an_unknown_grid_lists_the_builtin_ones():
    with pytest.raises(ConfigError, match="writeup-architecture"):
        load_grid("no-such-grid")
