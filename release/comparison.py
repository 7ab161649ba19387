"""One comparison of a run's variants, computed once from its runs: what the gate decides on, the report (HTML,
Markdown, ``comparison.json``) draws, ``interest run`` prints and the exit handler's ``run.md`` lists.

**X vs R** (the one definition of "vs baseline" and "vs champion"): on one split, the mean Recall@10 over X's runs
against the mean over R's runs. ``change`` is the relative change over the users both sides evaluated, paired by
``user_id`` (the bootstrap's observed ratio: the gate thresholds this very number), and of the two means only when
per-user values cannot be paired (the gate then refuses to judge); its interval is the paired percentile bootstrap
over users (``release.stats.paired_bootstrap``: per user, the mean over a side's
seeds, users paired by ``user_id``, one resample of users within every seed, the ratio taken within each
resample). An interval that contains zero is "no significant difference".

- **vs baseline**: every variant against the baseline variant, on the validation and the test split.
- **vs champion**: the candidate's variant against the registry's production champion (one run), on the test
  split.
- The **candidate** is one run: of the variant with the best mean validation Recall@10 over its seeds (a mean over
  seeds is the better estimate of a recipe than its luckiest seed), the run with the best validation Recall@10;
  ties: fewer parameters, then less training time, then name. The test split stays unseen by the choice.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from core.contract import SPLITS
from release.records import METRIC, Run, Variant, finite_or_none, number, variants_of
from release.stats import Interval, relative_change, replicate_bootstrap

SIGNIFICANT = "significant"
NOT_SIGNIFICANT = "no significant difference"


@dataclass(frozen=True, kw_only=True)
class Bootstrap:
    """How differences are resampled: the GateConfig's bootstrap fields, so the gate and the report agree."""

    resamples: int = 1000  # resamples over users
    seed: int = 0  # seed of the resampling: the same seed gives the same interval
    confidence: float = 0.95  # two-sided level of every interval
    min_overlap: float = 0.0  # fewer shared users than this share of the first side's is "not comparable"

    @classmethod
    def of(cls, gate_config: Mapping[str, Any]) -> Bootstrap:
        """The settings of a GateConfig (as a mapping: a blessing's ``config``); its defaults where a field lacks."""
        default = cls()
        return cls(resamples=int(gate_config.get("bootstrap_resamples", default.resamples)),
                   seed=int(gate_config.get("bootstrap_seed", default.seed)),
                   confidence=float(gate_config.get("confidence", default.confidence)),
                   min_overlap=float(gate_config.get("min_user_overlap", default.min_overlap)))


def rank_key(recall: float, params: float, seconds: float, name: str) -> tuple:
    """The order of selection: higher validation Recall@10, then fewer parameters, then less training time, then
    name; a missing or NaN value ranks last."""
    return (-recall if math.isfinite(recall) else math.inf, params if math.isfinite(params) else math.inf,
            seconds if math.isfinite(seconds) else math.inf, name)


def select_variant(variants: Sequence[Variant]) -> Variant:
    """The variant with the best mean validation Recall@10 over its runs (a NaN run makes its mean NaN: last)."""
    if not variants:
        raise ValueError("select_variant: no variants")
    return min(variants, key=lambda v: rank_key(float(np.mean([r.valid_recall for r in v.runs])),
                                                float(np.mean([r.params for r in v.runs])),
                                                float(np.mean([r.train_seconds for r in v.runs])), v.name))


def select_candidate(runs: Sequence[Run]) -> Run:
    """The run with the best validation Recall@10 (the same order as ``select_variant``)."""
    if not runs:
        raise ValueError("select_candidate: no runs")
    return min(runs, key=lambda r: rank_key(r.valid_recall, r.params, r.train_seconds, r.name))


def _per_user(run: Run, split: str):
    return run.valid_per_user if split == "valid" else run.per_user


def metric_of(run: Run, split: str, key: str = METRIC) -> float:
    """A metric of one run on ``split`` (validation Recall@10 falls back to summary.json's best)."""
    if (split, key) == ("valid", METRIC):
        return run.valid_recall
    return number((run.valid if split == "valid" else run.test).get(key))


@dataclass(frozen=True, kw_only=True)
class Difference:
    """X vs R in Recall@10 on one split (see the module docstring): the number every table prints and the gate
    thresholds."""

    split: str
    reference: str  # R's name: the baseline variant, or "champion VERSION"
    value: float  # X's mean Recall@10 over its runs
    reference_value: float  # R's mean Recall@10 over its runs
    change: float  # over paired users (bootstrap["relative"]); unpaired: relative_change(value, reference_value)
    # release.stats.replicate_bootstrap's result (mean_diff, ci_low, ci_high, relative, relative_low, relative_high,
    # users, candidate_users); None when per-user values are missing or the users cannot be paired (``error``).
    bootstrap: Mapping[str, Any] | None
    error: str | None  # why there is no bootstrap
    confidence: float

    @property
    def significant(self) -> bool:
        return self.bootstrap is not None and not (self.bootstrap["ci_low"] <= 0.0 <= self.bootstrap["ci_high"])

    @property
    def label(self) -> str:
        return SIGNIFICANT if self.significant else NOT_SIGNIFICANT

    def text(self) -> str:
        """``+1.2% [-0.4%, +2.8%]``: the relative change with its interval (the change alone without one)."""
        if math.isnan(self.change):
            return "—"
        if self.bootstrap is None:
            return f"{self.change:+.1%}"
        return f"{self.change:+.1%} [{self.bootstrap['relative_low']:+.1%}, {self.bootstrap['relative_high']:+.1%}]"

    def to_json(self) -> dict[str, Any]:
        out = {k: finite_or_none(v) for k, v in asdict(self).items() if k != "bootstrap"}
        bootstrap = self.bootstrap or {}
        out.update({k: finite_or_none(bootstrap.get(k)) for k in ("mean_diff", "ci_low", "ci_high", "relative_low",
                                                                  "relative_high", "users")})
        out.update(significant=self.significant, label=self.label if self.bootstrap else None, text=self.text())
        return out


def difference(runs: Sequence[Run], reference_runs: Sequence[Run], split: str, reference: str,
               bootstrap: Bootstrap) -> Difference:
    """X (``runs``) vs R (``reference_runs``) on ``split``: the one definition (module docstring). Runs are taken
    in name order, so the same runs give the same numbers whoever lists them."""
    runs, reference_runs = sorted(runs, key=lambda r: r.name), sorted(reference_runs, key=lambda r: r.name)
    value = float(np.mean([metric_of(r, split) for r in runs]))
    reference_value = float(np.mean([metric_of(r, split) for r in reference_runs]))
    per_user = [_per_user(r, split) for r in (*runs, *reference_runs)]
    result, error = None, None
    if any(p is None or METRIC not in p for p in per_user):
        error = f"per-user {METRIC} missing for the candidate or {reference}"
    else:
        try:
            result = replicate_bootstrap(per_user[:len(runs)], per_user[len(runs):], bootstrap.resamples, bootstrap.seed,
                                      bootstrap.confidence, min_overlap=bootstrap.min_overlap)
        except (KeyError, ValueError) as exc:
            error = f"cannot pair users with {reference}: {exc}"
    return Difference(split=split, reference=reference, value=value, reference_value=reference_value,
                      change=number(result["relative"]) if result is not None else relative_change(value, reference_value),
                      bootstrap=result, error=error,
                      confidence=bootstrap.confidence)


@dataclass(frozen=True, kw_only=True)
class VariantResult:
    """One variant of the run: its runs' means and intervals across seeds, and its differences to the baseline."""

    variant: Variant
    recall: Mapping[str, Interval]  # split -> Recall@10 across seeds
    vs_baseline: Mapping[str, Difference | None]  # split -> vs the baseline (None: it is the baseline, or none)
    is_baseline: bool

    @property
    def name(self) -> str:
        return self.variant.name

    @property
    def runs(self) -> tuple[Run, ...]:
        return self.variant.runs

    def mean(self, key: str, split: str = "test") -> float:
        """A test (or valid) metric averaged over the seeds."""
        return float(np.mean([metric_of(r, split, key) for r in self.runs]))

    def summary_mean(self, key: str) -> float:
        """A summary.json number averaged over the seeds (params, steps, train_seconds, tokens_per_second)."""
        return float(np.mean([number(r.summary.get(key)) for r in self.runs]))

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "baseline": self.is_baseline, "runs": [r.name for r in self.runs],
            "seeds": self.variant.seeds,
            **{f"{split}_recall@10": {k: finite_or_none(v) for k, v in asdict(self.recall[split]).items()}
               for split in SPLITS},
            **{f"{split}_vs_baseline": d.to_json() if d else None for split, d in self.vs_baseline.items()},
            "steps": finite_or_none(self.summary_mean("steps")),
            "train_seconds": finite_or_none(self.summary_mean("train_seconds")),
            "params": finite_or_none(self.summary_mean("params")),
            "user_norm_mean": finite_or_none(self.mean("user_norm_mean")),
        }


@dataclass(frozen=True, kw_only=True)
class Comparison:
    """Every variant of a run against its baseline, the candidate, and the candidate's variant against the
    champion: built once by ``Comparison.of``."""

    variants: tuple[VariantResult, ...]  # in the order the variants first appear
    baseline: str | None  # the baseline variant's name, None when the run has no variant of that name
    candidate: Run  # the selected run
    champion: Run | None  # the production champion as judged (its evaluation on this run's test split)
    vs_champion: Difference | None  # the candidate's variant vs the champion on the test split (None: no champion)
    bootstrap: Bootstrap

    @classmethod
    def of(cls, runs: Sequence[Run], baseline: str | None, bootstrap: Bootstrap = Bootstrap(),
           champion: Run | None = None) -> Comparison:
        """Compare ``runs`` (run names unique) with the variant named ``baseline`` and with ``champion``."""
        names = [r.name for r in runs]
        if len(set(names)) != len(names):
            raise ValueError(f"run names must be unique, got {', '.join(names)}")
        variants = variants_of(runs)
        base = next((v for v in variants if v.name == baseline), None)
        results = []
        for variant in variants:
            is_baseline = variant is base
            vs_baseline = {split: None if base is None or is_baseline else
                           difference(variant.runs, base.runs, split, base.name, bootstrap) for split in SPLITS}
            recall = {split: Interval.across([metric_of(r, split) for r in variant.runs], bootstrap.confidence)
                      for split in SPLITS}
            results.append(VariantResult(variant=variant, recall=recall, vs_baseline=vs_baseline,
                                         is_baseline=is_baseline))
        chosen = select_variant(variants)
        vs_champion = None if champion is None else difference(chosen.runs, [champion], "test", champion.name,
                                                               bootstrap)
        return cls(variants=tuple(results), baseline=base.name if base else None,
                   candidate=select_candidate(chosen.runs), champion=champion, vs_champion=vs_champion,
                   bootstrap=bootstrap)

    def variant(self, name: str) -> VariantResult:
        return next(v for v in self.variants if v.name == name)

    @property
    def candidate_vs_baseline(self) -> Difference | None:
        """The candidate's variant vs the baseline on the test split: what the gate's baseline checks judge."""
        return self.variant(self.candidate.variant).vs_baseline["test"]

    def to_json(self) -> dict[str, Any]:
        """``comparison.json``: the numbers behind every table (docs/contracts.md)."""
        steps = {number(r.summary.get("steps")) for v in self.variants for r in v.runs}
        return {"metric": METRIC, "baseline": self.baseline, "candidate": self.candidate.name,
                "candidate_variant": self.candidate.variant, "equal_steps": len(steps) == 1,
                "variants": [v.to_json() for v in self.variants],
                "vs_champion": self.vs_champion.to_json() if self.vs_champion else None}


def _mean_text(interval: Mapping[str, Any]) -> str:
    """``0.0912`` or, across seeds, ``0.0912±0.0031`` (the half-width of the interval)."""
    mean, low, high = interval.get("mean"), interval.get("low"), interval.get("high")
    if mean is None:
        return "NaN"
    return f"{mean:.4f}" if low is None or high is None else f"{mean:.4f}±{(high - low) / 2:.4f}"


def summary_table(comparison: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The short table of a ``comparison.json`` (``interest run``'s final table, the exit handler's run.md): per
    variant, Recall@10 (mean over seeds), the test change vs the baseline with its interval and significance, steps
    and training seconds."""
    baseline = comparison.get("baseline") or "baseline"
    header = ["variant", "seeds", "valid Recall@10", "test Recall@10", f"test vs {baseline} [95% CI]", "significance",
              "steps", "train s"]
    rows = []
    for v in comparison["variants"]:
        delta = v.get("test_vs_baseline")
        seeds = [s for s in v["seeds"] if s is not None]
        seconds = v["train_seconds"]
        rows.append([v["name"], ",".join(map(str, seeds)) or "-", _mean_text(v["valid_recall@10"]),
                     _mean_text(v["test_recall@10"]),
                     "reference" if v["baseline"] else (delta["text"] if delta else "-"),
                     "" if v["baseline"] else ((delta["label"] or "-") if delta else "-"),
                     "-" if v["steps"] is None else f"{v['steps']:,.0f}",
                     "-" if seconds is None else f"{seconds:.{0 if seconds >= 10 else 1}f}"])
    return header, rows
