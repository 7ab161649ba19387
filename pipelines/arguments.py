"""The pipeline's arguments: a profile's values, ``--param`` overrides, and the checks every runner makes before
any work starts (names, presets, every config), so a typo fails in a second instead of an hour into a cluster run.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from core.configs import apply_overrides, from_dict, require
from pipelines.profiles import Profile

# KFP parameter type -> the Python values it accepts (bool is an int in Python: refused separately).
KFP_TYPES = {"String": str, "Integer": int, "Float": (int, float), "Boolean": bool, "Dict": dict,
             "List[String]": list, "List": list}


def pipeline_parameters() -> dict[str, tuple[str, Any]]:
    """The pipeline's parameters: name -> (KFP type, default); required ones have the default ``None``."""
    from pipelines.pipeline import create_pipeline

    inputs = create_pipeline().component_spec.inputs or {}
    return {name: (spec.type, spec.default) for name, spec in inputs.items()}


def profile_arguments(profile: Profile, registry: str) -> dict[str, Any]:
    """The pipeline arguments a profile stands for."""
    return {
        "registry": registry,
        "dataset": profile.dataset,
        "variants": profile.variant_specs(),
        "model_overrides": list(profile.model_overrides),
        "train_config": dict(profile.train_config),
        "preprocess_config": dict(profile.preprocess_config),
        "gate_config": dict(profile.gate_config),
    }


def parse_params(items: list[str]) -> dict[str, Any]:
    """``--param key=value`` pairs; values are YAML (``variants=[baseline, rope]``, ``train_config={max_steps: 9}``)."""
    for item in items:
        require("." not in item.partition("=")[0], f"--param {item}",
                "set a whole parameter (train_config={max_steps: 9}), not a field of one")
    return apply_overrides({}, items)


def validate_arguments(arguments: dict[str, Any]) -> dict[str, Any]:
    """Raise ConfigError naming the parameter if an argument is unknown, missing or invalid; else return every
    parameter's value (the pipeline's defaults filled in)."""
    from preprocessing.config import PreprocessConfig
    from preprocessing.datasets import DATASETS
    from release import gate, registry
    from trainer import launch
    from trainer.job import overrides_from, resolve_configs
    from trainer.presets import PRESETS
    from trainer.variants import parse_variants

    known = pipeline_parameters()
    if "baseline_preset" in arguments:
        require("baseline" not in arguments, "--param baseline_preset", "give baseline, not both")
        warnings.warn("the pipeline parameter baseline_preset is now called baseline (a variant name)",
                      DeprecationWarning, stacklevel=2)
        arguments = {("baseline" if k == "baseline_preset" else k): v for k, v in arguments.items()}
    unknown = sorted(set(arguments) - set(known))
    require(not unknown, f"--param {unknown[0] if unknown else ''}",
            f"not a pipeline parameter; parameters: {', '.join(known)}")
    missing = [name for name, (_, default) in known.items() if default is None and name not in arguments]
    require(not missing, f"--param {missing[0] if missing else ''}", "is required")
    args = {**{k: default for k, (_, default) in known.items() if default is not None}, **arguments}
    for name, value in args.items():
        _refuse_nulls(value, name)
        kind = known[name][0]
        require(isinstance(value, KFP_TYPES[kind]) and not (isinstance(value, bool) and kind != "Boolean"), name,
                f"expected {kind}, got {value!r}")
        if kind == "List[String]":
            require(all(isinstance(v, str) for v in value), name, f"expected a list of strings, got {value!r}")

    registry.check_registry(args["registry"])
    registry.check_name(args["model_name"], "model_name")
    dataset = str(args["dataset"])
    require(dataset in DATASETS or "://" in dataset or Path(dataset).exists(), "dataset",
            f"{dataset!r} is neither a data set ({', '.join(DATASETS)}) nor an existing path or URI")
    specs = parse_variants(args["variants"])
    args["variants"] = [spec.to_json() for spec in specs]  # what the DAG's loop items are: always mappings
    run_wide = overrides_from(args["model_overrides"], args["train_config"])
    for spec in specs:
        resolve_configs(spec.preset, (*run_wide, *spec.overrides()))
    names = [spec.name for spec in specs]
    require(args["baseline"] in names or args["baseline"] in PRESETS, "baseline",
            f"{args['baseline']!r} is neither a variant of this run ({', '.join(dict.fromkeys(names))}) nor "
            f"a preset ({', '.join(PRESETS)})")
    from_dict(PreprocessConfig, args["preprocess_config"])
    from_dict(gate.GateConfig, args["gate_config"])
    from_dict(launch.ClusterConfig, args["cluster"])
    for name in ("torch_threads", "accelerator_count"):
        require(args[name] >= 0, name, f"must be >= 0, got {args[name]}")
    return args


def _refuse_nulls(value: Any, path: str) -> None:
    """KFP parameters are protobuf values without a null: a None anywhere fails only when the run starts."""
    require(value is not None, path, "null cannot be a KFP pipeline argument; leave the field out to keep its default")
    if isinstance(value, dict):
        for key, item in value.items():
            _refuse_nulls(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _refuse_nulls(item, f"{path}[{i}]")
