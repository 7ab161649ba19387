"""Variants as data: names, presets, settings and seeds, as the DAG's loop items carry them."""

from __future__ import annotations

import pytest

from core.configs import ConfigError
from trainer.job import resolve_configs
from trainer.variants import VariantSpec, parse_variants


def test_a_preset_name_and_a_mapping_are_both_variants():
    plain, custom = parse_variants(["rope", {"name": "dff-2x", "preset": "baseline", "set": {"d_ff_ratio": 2}}])
    assert (plain.name, plain.preset, plain.run_name) == ("rope", "rope", "rope")
    model = resolve_configs(custom.preset, custom.overrides()).model
    assert model.d_ff_ratio == 2.0 and custom.to_json() == {"name": "dff-2x", "preset": "baseline",
                                                             "set": {"d_ff_ratio": 2}}


def test_seeds_make_replicates_and_whole_floats_from_kfp_are_ints_again():
    spec = VariantSpec.parse({"name": "swiglu", "preset": "swiglu", "seed": 3.0, "set": {"n_layer": 4.0}})
    assert spec.seed == 3 and spec.run_name == "swiglu-seed3"
    model, _, train = resolve_configs(spec.preset, spec.overrides())
    assert (model.n_layer, train.seed) == (4, 3) and isinstance(model.n_layer, int)


@pytest.mark.parametrize("values, message", [
    ([], "non-empty list"),
    (["nope"], "unknown preset 'nope'"),
    ([{"name": "a b", "preset": "baseline"}], "variant name"),
    ([{"name": "x", "preset": "baseline", "colour": 1}], "unknown key 'colour'"),
    (["rope", {"name": "rope", "preset": "baseline"}], "lists rope twice"),
    ([{"name": "x", "preset": "baseline", "seed": "one"}], "seed"),
])
def test_bad_variants_name_the_problem(values, message):
    with pytest.raises(ConfigError, match=message):
        parse_variants(values)
