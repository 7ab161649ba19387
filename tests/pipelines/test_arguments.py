"""The pipeline's arguments: what every profile stands for passes the checks a runner makes before any work."""

from __future__ import annotations

import pytest

from pipelines.arguments import profile_arguments, validate_arguments
from pipelines.profiles import PROFILES


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_every_profile_passes_the_argument_checks(name, tmp_path):
    args = validate_arguments(profile_arguments(PROFILES[name], str(tmp_path / "registry")))
    assert [v["name"] for v in args["variants"]] == PROFILES[name].variant_names()


def test_the_old_baseline_preset_parameter_still_works_with_a_warning(tmp_path):
    arguments = {**profile_arguments(PROFILES["smoke"], str(tmp_path / "registry")), "baseline_preset": "baseline"}
    with pytest.warns(DeprecationWarning, match="baseline_preset is now called baseline"):
        args = validate_arguments(arguments)
    assert args["baseline"] == "baseline" and "baseline_preset" not in args
    with pytest.raises(Exception, match="not both"):
        validate_arguments({**arguments, "baseline": "baseline"})
