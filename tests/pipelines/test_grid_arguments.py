"""`interest run --grid/--seeds/--steps` fill the DAG's variants (one VariantSpec per variant and seed) and
baseline; `interest grids` lists the built-in grids with their variants and parameter counts."""

from __future__ import annotations

import json

import pytest

from core.configs import ConfigError
from pipelines import cli
from pipelines.commands.run import pipeline_arguments
from trainer.grids import GRIDS


def arguments(tmp_path, *flags: str) -> dict:
    args = cli.build_parser().parse_args(["run", "--profile", "smoke", *flags])
    return pipeline_arguments(args, default_registry=str(tmp_path / "registry"), remote=False)


def test_a_grid_file_becomes_one_loop_item_per_variant_and_seed_with_its_baseline(tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text("baseline: dff-4x\nseeds: [1, 2]\nvariants:\n"
                    "  - {name: dff-2x, preset: baseline, set: {d_ff_ratio: 2}}\n"
                    "  - {name: dff-4x, preset: baseline}\n")
    args = arguments(tmp_path, "--grid", str(grid))
    assert args["variants"] == [
        {"name": "dff-2x", "preset": "baseline", "set": {"d_ff_ratio": 2}, "seed": 1},
        {"name": "dff-2x", "preset": "baseline", "set": {"d_ff_ratio": 2}, "seed": 2},
        {"name": "dff-4x", "preset": "baseline", "set": {}, "seed": 1},
        {"name": "dff-4x", "preset": "baseline", "set": {}, "seed": 2},
    ]
    assert args["baseline"] == "dff-4x"
    assert [v.get("seed") for v in arguments(tmp_path, "--grid", str(grid), "--seeds", "none")["variants"]] == [None,
                                                                                                             None]


def test_seeds_replicate_plain_variants_and_steps_make_them_equal(tmp_path):
    args = arguments(tmp_path, "--variants", "baseline,rope", "--seeds", "7,8", "--steps", "40")
    assert [(v["name"], v["seed"]) for v in args["variants"]] == [("baseline", 7), ("baseline", 8), ("rope", 7),
                                                                  ("rope", 8)]
    assert args["train_config"]["max_steps"] == 40 and args["train_config"]["patience"] == 0
    assert "time_budget_seconds" not in args["train_config"]


def test_the_penalty_grid_sets_hinge_targets_from_the_unpenalised_norm(tmp_path):
    with pytest.raises(ConfigError, match="--unpenalised-norm"):
        arguments(tmp_path, "--grid", "writeup-penalty")
    args = arguments(tmp_path, "--grid", "writeup-penalty", "--seeds", "1", "--unpenalised-norm", "40")
    taus = {v["name"]: v["set"].get("penalty_tau") for v in args["variants"]}
    assert taus["hinge-0.53x-1e-3"] == pytest.approx(21.2) and taus["l2-1e-4"] is None
    assert len(args["variants"]) == len(GRIDS["writeup-penalty"].variants)


@pytest.mark.parametrize("flags, message", [
    (("--grid", "writeup-dff", "--variants", "rope"), "not both"),
    (("--grid", "no-such-grid"), "neither a built-in grid"),
    (("--seeds", "1,x"), "--seeds"),
    (("--steps", "0"), "--steps"),
])
def test_bad_grid_flags_name_the_problem(tmp_path, flags, message):
    with pytest.raises(ConfigError, match=message):
        arguments(tmp_path, *flags)


def test_grids_command_lists_every_grid_with_parameter_counts(capsys):
    assert cli.main(["grids", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [g["name"] for g in listed["grids"]] == list(GRIDS)
    aspect = next(g for g in listed["grids"] if g["name"] == "writeup-aspect")
    assert aspect["baseline"] == "L2-d64" and aspect["seeds"] == [1, 2, 3]
    assert all(v["params"] > v["non_embedding_params"] > 90_000 for v in aspect["variants"])
    assert cli.main(["grids", "writeup-dff"]) == 0
    out = capsys.readouterr().out
    assert "dff-4x (baseline)" in out and "d_ff_ratio=2" in out
