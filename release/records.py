"""Typed records of the release step: what the gate judges (``Run``: one trained model with its evaluations;
``Variant``: a recipe and its runs), what it decides (``Blessing`` with its ``Check``s and the digests of every
file it judged) and what the registry serves (``ChampionRef``).

Names say one thing each: a **run** is one trained model (a variant trained once, with one seed); a **variant** is
a recipe and its runs; the **candidate** is the run this pipeline run selected; the **champion** is the model in
production, the one the registry's pointer names; the **baseline** is the variant changes are measured against.
The JSON forms are in docs/contracts.md.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from core import contract, rundir, storage
from core.configs import ConfigError
from core.contract import PerUser

METRIC = "recall@10"  # the headline metric: selection, every change check and the bootstrap use it


def number(value: Any) -> float:
    """A metric as float; NaN when missing or not a number, so every comparison with it fails."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def finite_or_none(value: Any) -> Any:
    """NaN/inf as None (strict JSON); anything else unchanged."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _metrics(directory: str | None) -> dict[str, Any]:
    return contract.read_json(directory, contract.METRICS) if directory else {}


@dataclass(frozen=True, eq=False, kw_only=True)
class Run:
    """One trained model (a variant trained once, with one seed) and its evaluations: what the gate selects among
    and the report shows per seed."""

    name: str  # the run's name: NAME-seedN for a replicate, else the variant's name
    variant: str = ""  # the variant (recipe) it trains; "" means the run is its own variant (set to ``name``)
    seed: int | None = None  # its TrainConfig.seed; None: the preset's own
    model_dir: str  # its model artifact directory
    valid_dir: str | None = None  # `interest evaluate` output on the validation split
    test_dir: str | None = None  # `interest evaluate` output on the test split
    summary: Mapping[str, Any] = field(default_factory=dict)  # summary.json
    valid: Mapping[str, Any] = field(default_factory=dict)  # valid metrics.json
    test: Mapping[str, Any] = field(default_factory=dict)  # test metrics.json
    per_user: PerUser | None = None  # test per_user.parquet columns (paired bootstrap)
    valid_per_user: PerUser | None = None  # valid per_user.parquet columns (the report's validation intervals)
    lineage: Mapping[str, Any] = field(default_factory=dict)  # lineage.json: the data it was trained on
    model_config: Mapping[str, Any] = field(default_factory=dict)  # model_config.json: the forward pass's settings
    # objective_config.json: loss and penalty (the report's penalty table); for models written before it existed,
    # the objective fields of their model_config.json.
    objective: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.variant:
            object.__setattr__(self, "variant", self.name)

    @classmethod
    def load(cls, *, name: str, model_dir: str, valid_dir: str | None = None, test_dir: str | None = None,
             variant: str = "", seed: int | None = None) -> Run:
        """Read a run from complete directories (IncompleteOutput when one is not)."""
        model = rundir.open_complete(model_dir)

        def optional(file_name: str) -> dict[str, Any]:
            uri = model.optional_path(file_name)
            return storage.read_json(uri) if uri else {}

        config = optional(contract.MODEL_CONFIG)
        legacy = {k: v for k, v in config.items() if k in contract.LEGACY_OBJECTIVE_FIELDS}
        return cls(name=name, variant=variant, seed=seed, model_dir=model_dir, valid_dir=valid_dir,
                   test_dir=test_dir, summary=optional(contract.SUMMARY), valid=_metrics(valid_dir),
                   test=_metrics(test_dir), per_user=contract.read_per_user(test_dir) if test_dir else None,
                   valid_per_user=contract.read_per_user(valid_dir) if valid_dir else None,
                   lineage=optional(contract.LINEAGE),
                   model_config={k: v for k, v in config.items() if k not in legacy},
                   objective=optional(contract.OBJECTIVE_CONFIG) or legacy)

    @property
    def valid_recall(self) -> float:
        """Validation Recall@10: the valid split's metrics.json, else the best value in summary.json."""
        if METRIC in self.valid:
            return number(self.valid[METRIC])
        return number(self.summary.get("best", {}).get(f"valid_{METRIC}"))

    @property
    def test_recall(self) -> float:
        return number(self.test.get(METRIC))

    @property
    def params(self) -> float:
        return number(self.summary.get("params", self.test.get("params")))

    @property
    def train_seconds(self) -> float:
        return number(self.summary.get("train_seconds"))

    @property
    def data_digest(self) -> str | None:
        """The content digest of the rows this model was trained on (None when unknown)."""
        fingerprint = (self.lineage.get("data") or {}).get("fingerprint") or {}
        return fingerprint.get("content_digest")


@dataclass(frozen=True, kw_only=True)
class Variant:
    """A recipe (a preset with overrides) and its runs: one per seed, or one with the preset's own seed."""

    name: str  # the variant's name in the run (a preset, or a grid entry)
    runs: tuple[Run, ...]  # its trained models, in the order they were given

    @property
    def seeds(self) -> list[int | None]:
        return [r.seed for r in self.runs]


def variants_of(runs: Sequence[Run]) -> list[Variant]:
    """Runs grouped into their variants, in the order the variants first appear."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.variant, []).append(run)
    return [Variant(name=name, runs=tuple(members)) for name, members in groups.items()]


@dataclass(frozen=True, kw_only=True)
class ChampionRef:
    """The registry's production model as its pointer names it."""

    model_name: str
    version: str
    path: str  # relative to the registry root: "<model-name>/<version>"
    uri: str  # the version directory, resolved against the registry root given now
    generation: storage.Generation  # the pointer's generation when read (0: there was no pointer)
    metrics: Mapping[str, Any] = field(default_factory=dict)  # test metrics stored at its push (its own data)


@dataclass(frozen=True, kw_only=True)
class Check:
    name: str
    value: Any  # a number, a bootstrap result {mean_diff, ci_low, ci_high, users, ...}, or None
    threshold: Any
    passed: bool
    reason: str

    @classmethod
    def of(cls, name: str, value: Any, threshold: Any, passed: bool, reason: str) -> Check:
        return cls(name=name, value=finite_or_none(value), threshold=threshold, passed=bool(passed), reason=reason)


# The JSON type of each blessing field (a hostile or damaged document is a clear error, not a crash later).
_BLESSING_TYPES: dict[str, Any] = {
    "blessed": bool, "candidate": dict, "candidate_metrics": dict, "baseline": (str, type(None)),
    "champion": (dict, type(None)), "champion_generation": (int, str), "config": dict, "runs": dict,
    "inputs": dict, "created_at": str}
_BLESSING_TYPE_NAMES = {
    "blessed": "true or false", "candidate": "an object", "candidate_metrics": "an object",
    "baseline": "a string or null", "champion": "an object or null", "champion_generation": "an integer or a string",
    "config": "an object", "runs": "an object", "inputs": "an object", "created_at": "a string"}


@dataclass(frozen=True, kw_only=True)
class Blessing:
    """The gate's decision and everything needed to check it later (``release.gate.verify``)."""

    blessed: bool
    candidate: Mapping[str, Any]  # the selected run: {name, variant, seed, model_dir, valid_dir, test_dir}
    candidate_metrics: Mapping[str, Any]  # its test metrics (NaN as null)
    baseline: str | None  # the baseline variant's name (None: the run has none)
    champion: Mapping[str, Any] | None  # {version, path, evaluation, re_evaluated, same_data} or None
    champion_generation: storage.Generation  # the pointer's generation read before gating (0: none)
    checks: tuple[Check, ...]
    config: Mapping[str, Any]  # the GateConfig that judged
    runs: Mapping[str, Any]  # run name -> {valid_recall@10, variant, seed}: the evidence of the selection
    # role -> {"dir": directory as read, "files": {name: sha256}}: every file the gate judged
    inputs: Mapping[str, Any]
    created_at: str
    metric: str = METRIC

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["checks"] = [asdict(c) for c in self.checks]
        return out

    @classmethod
    def from_json(cls, data: Any, source: str = "blessing") -> Blessing:
        """Parse a blessing document; ConfigError naming ``source`` when it lacks a field or has a wrong type."""
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: not a blessing document (expected a JSON object)")
        try:
            checks = tuple(Check(**c) for c in data["checks"])
            if "runs" not in data and "variants" in data:  # the field's name before runs had their own noun
                data = {**data, "runs": data["variants"]}
            fields = {k: data[k] for k in ("blessed", "candidate", "candidate_metrics", "baseline", "champion",
                                           "champion_generation", "config", "runs", "inputs", "created_at")}
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"{source}: not a blessing written by `interest gate` (missing or bad {exc})") from None
        for name, kinds in _BLESSING_TYPES.items():
            if not isinstance(fields[name], kinds) or isinstance(fields[name], bool) is not (kinds is bool):
                raise ConfigError(f"{source}: {name!r} must be {_BLESSING_TYPE_NAMES[name]}")
        if not all(isinstance(c.name, str) and isinstance(c.passed, bool) and isinstance(c.reason, str)
                   for c in checks):
            raise ConfigError(f"{source}: each check needs a string name and reason and a true/false passed")
        if not all(isinstance(record, dict) for record in fields["runs"].values()):
            raise ConfigError(f"{source}: each of 'runs' must be an object")
        for role, bound in fields["inputs"].items():
            if not (isinstance(bound, dict) and isinstance(bound.get("dir"), str) and isinstance(bound.get("files"), dict)
                    and all(isinstance(k, str) and isinstance(v, str) for k, v in bound["files"].items())):
                raise ConfigError(f"{source}: inputs.{role} must be {{dir: string, files: {{name: sha256}}}}")
        return cls(checks=checks, metric=data.get("metric", METRIC), **fields)
