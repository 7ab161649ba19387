"""A search space as data: which recipes ``interest tune`` tries (trainer/tune.py runs the search).

    # space.yaml
    preset: {type: categorical, choices: [best, parallel]}   # or a plain preset name; default baseline
    params:                                                  # --set keys (trainer.job.route_overrides)
      train.lr: {type: log-float, low: 3.0e-4, high: 3.0e-3}
      model.dropout: {type: float, low: 0.1, high: 0.4}
      model.n_layer: {type: int, low: 1, high: 4}
      train.schedule: {type: categorical, choices: [constant, cosine]}
    fixed: {train.eval_every_steps: 100}                     # the same --set for every trial
    enqueue: [{preset: best}]                                # trials run first, e.g. today's recipe
    pruner: {type: successive_halving, min_resource: 30, reduction_factor: 3}
    sampler: {seed: 0, n_startup_trials: 3}

A parameter is a ``--set`` key (``model.d_model``, ``train.lr``, ``objective.KEY`` once that section exists);
the preset is the parameter named ``preset``. Distributions are Optuna's: ``categorical`` (choices), ``int``
(low, high, step), ``float`` (low, high, step) and ``log-float`` (low, high, sampled uniformly in log space).
Every key, every bound and every choice is checked against the configs when the file is read, so a typo fails
before the first trial instead of in the tenth.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from core.configs import ConfigError, read_config_file, require
from trainer.job import resolve_configs
from trainer.presets import get_preset

DistributionType = Literal["categorical", "int", "float", "log-float"]
PRESET = "preset"  # the parameter that picks trainer.presets entries
DEFAULT_PRESET = "baseline"
PrunerType = Literal["successive_halving", "hyperband", "none"]


@dataclass(frozen=True)
class Distribution:
    type: DistributionType  # how Optuna samples it (trial.suggest_categorical / suggest_int / suggest_float)
    choices: tuple[Any, ...] = ()  # categorical: the values (YAML scalars)
    low: float | None = None  # int/float/log-float: the smallest value
    high: float | None = None  # int/float/log-float: the largest value (inclusive)
    step: float | None = None  # int/float: the grid spacing (int default 1); log-float: none

    def __post_init__(self) -> None:
        require(self.type in ("categorical", "int", "float", "log-float"), "type",
                f"{self.type!r} is not allowed; choose one of categorical, int, float, log-float")
        if self.type == "categorical":
            require(len(self.choices) > 0, "choices", "a categorical parameter needs a non-empty list of choices")
            require(all(isinstance(c, str | int | float | bool) or c is None for c in self.choices), "choices",
                    f"must be YAML scalars (Optuna stores them), got {list(self.choices)}")
            return
        require(isinstance(self.low, int | float) and isinstance(self.high, int | float), "low/high",
                f"a {self.type} parameter needs numbers low and high, got {self.low!r}, {self.high!r}")
        require(self.low <= self.high, "low", f"must be <= high, got {self.low} > {self.high}")
        require(self.type != "log-float" or self.low > 0, "low", f"a log-float needs low > 0, got {self.low}")
        require(self.type != "log-float" or self.step is None, "step", "a log-float has no step")
        require(self.type != "int" or all(float(v).is_integer() for v in (self.low, self.high, self.step or 1)),
                "low/high/step", "an int parameter needs whole numbers")

    def extremes(self) -> tuple[Any, ...]:
        """The values that bound what can be drawn: every choice, or low and high."""
        if self.type == "categorical":
            return self.choices
        if self.type == "int":
            return int(self.low), int(self.high)
        return float(self.low), float(self.high)

    @classmethod
    def parse(cls, name: str, value: Any) -> Distribution:
        require(isinstance(value, Mapping), f"params.{name}",
                f"must be a mapping like {{type: log-float, low: 1e-4, high: 1e-2}}, got {value!r}")
        unknown = sorted(set(value) - {"type", "choices", "low", "high", "step"})
        require(not unknown, f"params.{name}", f"unknown key {unknown[0] if unknown else ''!r}; allowed: type, "
                "choices, low, high, step")
        try:
            return cls(str(value.get("type")), tuple(value.get("choices") or ()), *(
                _number(value.get(key), f"{key}") for key in ("low", "high", "step")))
        except ConfigError as exc:
            raise ConfigError(f"params.{name}.{exc}") from None


def _number(value: Any, key: str) -> Any:
    """YAML 1.1 reads ``1e-3`` (no dot) as a string: a bound written so is still the number it means."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"{key}: {value!r} is not a number") from None
    return value


@dataclass(frozen=True)
class PrunerConfig:
    type: PrunerType = "successive_halving"  # Optuna pruner; successive halving suits a handful of trials
    # Resource (training seconds of a time budget, steps of a step budget) of the first rung; None: an eighth
    # of the budget.
    min_resource: float | None = None
    reduction_factor: int = 3  # keep the best 1/reduction_factor of the trials at each rung

    def __post_init__(self) -> None:
        require(self.type in ("successive_halving", "hyperband", "none"), "pruner.type",
                f"{self.type!r} is not allowed; choose one of successive_halving, hyperband, none")
        require(self.min_resource is None or self.min_resource > 0, "pruner.min_resource",
                f"must be > 0 or null, got {self.min_resource}")
        require(self.reduction_factor >= 2, "pruner.reduction_factor", f"must be >= 2, got {self.reduction_factor}")


@dataclass(frozen=True)
class SamplerConfig:
    seed: int = 0  # TPE's seed: the same space and history propose the same trials
    n_startup_trials: int = 4  # random trials before TPE models the history (Optuna's default is 10)

    def __post_init__(self) -> None:
        require(self.n_startup_trials >= 0, "sampler.n_startup_trials", f"must be >= 0, got {self.n_startup_trials}")


@dataclass(frozen=True)
class TuneSpace:
    params: Mapping[str, Distribution]  # searched --set keys (and "preset") -> how to draw them
    fixed: Mapping[str, Any] = field(default_factory=dict)  # --set key -> value, the same in every trial
    enqueue: tuple[Mapping[str, Any], ...] = ()  # parameter sets tried first, in order (missing ones are drawn)
    pruner: PrunerConfig = field(default_factory=PrunerConfig)  # which trials stop early
    sampler: SamplerConfig = field(default_factory=SamplerConfig)  # how trials are proposed

    def overrides(self, params: Mapping[str, Any]) -> tuple[str, ...]:
        """A trial's ``--set`` items: the fixed ones, then its drawn parameters (values as JSON, which is YAML)."""
        return tuple(f"{key}={json.dumps(value)}" for key, value in {**self.fixed, **params}.items()
                     if key != PRESET)

    @staticmethod
    def preset_of(params: Mapping[str, Any], fixed: Mapping[str, Any] | None = None) -> str:
        return str(params.get(PRESET, (fixed or {}).get(PRESET, DEFAULT_PRESET)))

    def check(self) -> None:
        """Resolve the configs at every bound and choice of every parameter (the others at their first value),
        so a bad key or value is a ConfigError naming the parameter before any training starts."""
        first = {name: d.extremes()[0] for name, d in self.params.items()}
        for name, distribution in self.params.items():
            for value in distribution.extremes():
                params = {**first, name: value}
                try:
                    resolve_configs(self.preset_of(params, self.fixed), self.overrides(params))
                except ConfigError as exc:
                    raise ConfigError(f"params.{name}={value!r}: {exc}") from None
        for i, params in enumerate(self.enqueue):
            unknown = sorted(set(params) - set(self.params))
            require(not unknown, f"enqueue[{i}]", f"{unknown[0] if unknown else ''!r} is not a searched parameter "
                    f"(params: {', '.join(self.params)})")
            resolve_configs(self.preset_of({**first, **params}, self.fixed), self.overrides({**first, **params}))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TuneSpace:
        unknown = sorted(set(data) - {"preset", "params", "fixed", "enqueue", "pruner", "sampler"})
        require(not unknown, "space", f"unknown key {unknown[0] if unknown else ''!r}; allowed: preset, params, "
                "fixed, enqueue, pruner, sampler")
        raw = dict(data.get("params") or {})
        require(PRESET not in raw, "params.preset", "name the preset at the top level (preset: ...)")
        params = {name: Distribution.parse(name, value) for name, value in raw.items()}
        fixed = dict(data.get("fixed") or {})
        preset = data.get("preset", DEFAULT_PRESET)
        if isinstance(preset, Mapping):
            params = {PRESET: Distribution.parse(PRESET, preset), **params}
            for name in params[PRESET].choices:
                get_preset(str(name))
        else:
            fixed[PRESET] = str(get_preset(str(preset)).name)
        enqueue = data.get("enqueue") or []
        require(isinstance(enqueue, list) and all(isinstance(e, Mapping) for e in enqueue), "enqueue",
                "must be a list of {parameter: value} mappings")
        pruner, sampler = data.get("pruner") or {}, data.get("sampler") or {}
        require(isinstance(pruner, Mapping) and isinstance(sampler, Mapping), "pruner/sampler", "must be mappings")
        try:
            space = cls(params, fixed, tuple(dict(e) for e in enqueue), PrunerConfig(**pruner),
                        SamplerConfig(**sampler))
        except TypeError as exc:  # an unknown pruner/sampler key
            raise ConfigError(f"pruner/sampler: {exc}") from None
        require(len(space.params) > 0, "params", "the space searches nothing: give at least one parameter")
        space.check()
        return space

    @classmethod
    def load(cls, path: str) -> TuneSpace:
        """Read and check a space file (YAML or JSON)."""
        try:
            return cls.from_dict(read_config_file(path))
        except ConfigError as exc:
            raise ConfigError(f"--space {path}: {exc}") from None
