"""A run's variants compared with its baseline, with how sure each comparison is: what the report (HTML, Markdown,
``comparison.json``) and ``interest run``'s final table show.

- Replicates (runs of one variant with different seeds, ``Variant.group``) are summarised by their mean and a 95%
  t-interval across seeds (training noise; one seed has no interval).
- The difference to the baseline is paired over users: per user, the variant's per-user Recall@10 averaged over its
  seeds minus the baseline's averaged over its seeds, users paired by ``user_id``; its interval is the percentile
  bootstrap over users (``release.gate.replicate_bootstrap``: one resample of users applies within every seed). The
  same seeded bootstrap as the gate's, on the validation and on the test split.
- An interval that contains zero is "no significant difference"; one that does not is "significant".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from release.gate import relative_change, replicate_bootstrap
from release.records import METRIC, Variant, by_group, finite_or_none, number

SIGNIFICANT = "significant"
NOT_SIGNIFICANT = "no significant difference"
SPLITS = ("valid", "test")


def t_quantile(probability: float, df: int) -> float:
    """The Student-t quantile (``probability`` in (0.5, 1)), by integrating the density numerically: numpy only,
    within 1e-4 of the tabulated values."""
    if df < 1:
        return math.nan
    log_norm = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    x = np.linspace(0.0, {1: 1000.0, 2: 100.0}.get(df, 15.0), 600_001)  # wide enough for p = 0.995
    density = np.exp(log_norm - (df + 1) / 2 * np.log1p(x * x / df))
    cdf = 0.5 + np.concatenate([[0.0], np.cumsum((density[1:] + density[:-1]) / 2 * (x[1] - x[0]))])
    return float(np.interp(probability, cdf, x))


@dataclass(frozen=True)
class Interval:
    """The mean of one value over a variant's seeds and its two-sided t-interval (NaN bounds with one seed)."""

    mean: float
    low: float
    high: float
    n: int

    @classmethod
    def across(cls, values: Sequence[float], confidence: float = 0.95) -> Interval:
        data = np.asarray([number(v) for v in values], dtype=np.float64)
        if len(data) == 0:
            return cls(math.nan, math.nan, math.nan, 0)
        mean = float(data.mean())
        if len(data) < 2 or not np.isfinite(data).all():
            return cls(mean, math.nan, math.nan, len(data))
        half = t_quantile(0.5 + confidence / 2, len(data) - 1) * float(data.std(ddof=1)) / math.sqrt(len(data))
        return cls(mean, mean - half, mean + half, len(data))


@dataclass(frozen=True)
class Difference:
    """variant - baseline in Recall@10 on one split, paired over users (see the module docstring)."""

    split: str
    mean_diff: float  # absolute Recall@10 difference
    ci_low: float
    ci_high: float
    reference: float  # the baseline's mean Recall@10 on the split: relative values divide by it
    users: int  # users paired
    confidence: float

    @property
    def significant(self) -> bool:
        return not (self.ci_low <= 0.0 <= self.ci_high)

    @property
    def label(self) -> str:
        return SIGNIFICANT if self.significant else NOT_SIGNIFICANT

    def relative(self, value: float) -> float:
        return relative_change(self.reference + value, self.reference)

    def text(self) -> str:
        """``+1.2% [-0.4%, +2.8%]``: relative to the baseline, with the interval."""
        return (f"{self.relative(self.mean_diff):+.1%} [{self.relative(self.ci_low):+.1%}, "
                f"{self.relative(self.ci_high):+.1%}]")

    def to_json(self) -> dict[str, Any]:
        out = {k: finite_or_none(v) for k, v in asdict(self).items()}
        out.update(relative=finite_or_none(self.relative(self.mean_diff)),
                   relative_low=finite_or_none(self.relative(self.ci_low)),
                   relative_high=finite_or_none(self.relative(self.ci_high)),
                   significant=self.significant, label=self.label, text=self.text())
        return out


def _per_user(run: Variant, split: str):
    return run.valid_per_user if split == "valid" else run.per_user


def _metric(run: Variant, split: str, key: str = METRIC) -> float:
    return run.valid_recall if (split, key) == ("valid", METRIC) else number((run.valid if split == "valid"
                                                                              else run.test).get(key))


def paired_difference(runs: Sequence[Variant], baseline_runs: Sequence[Variant], split: str, resamples: int = 1000,
                      seed: int = 0, confidence: float = 0.95) -> Difference | None:
    """The paired bootstrap difference of ``runs`` against ``baseline_runs`` on ``split``; None when a run lacks
    per-user values or the runs share no users."""
    per_user = [_per_user(r, split) for r in (*runs, *baseline_runs)]
    if any(p is None or METRIC not in p for p in per_user):
        return None
    try:
        result = replicate_bootstrap(per_user[:len(runs)], per_user[len(runs):], resamples, seed, confidence)
    except (KeyError, ValueError):
        return None
    reference = float(np.mean([_metric(r, split) for r in baseline_runs]))
    return Difference(split, result["mean_diff"], result["ci_low"], result["ci_high"], reference, result["users"],
                      confidence)


@dataclass(frozen=True)
class VariantSummary:
    """One variant of the run: its replicates, their means and intervals, and its differences to the baseline."""

    name: str
    runs: tuple[Variant, ...]
    recall: dict[str, Interval]  # split -> Recall@10 across seeds
    delta: dict[str, Difference | None]  # split -> difference to the baseline (None: the baseline itself, or none)
    is_baseline: bool

    @property
    def seeds(self) -> list[int | None]:
        return [r.seed for r in self.runs]

    def mean(self, key: str, split: str = "test") -> float:
        """A test (or valid) metric averaged over the seeds."""
        return float(np.mean([_metric(r, split, key) for r in self.runs]))

    def summary_mean(self, key: str) -> float:
        """A summary.json number averaged over the seeds (params, steps, train_seconds, tokens_per_second)."""
        return float(np.mean([number(r.summary.get(key)) for r in self.runs]))

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "baseline": self.is_baseline, "runs": [r.name for r in self.runs], "seeds": self.seeds,
            **{f"{split}_recall@10": {k: finite_or_none(v) for k, v in asdict(self.recall[split]).items()}
               for split in SPLITS},
            **{f"{split}_delta": d.to_json() if d else None for split, d in self.delta.items()},
            "steps": finite_or_none(self.summary_mean("steps")),
            "train_seconds": finite_or_none(self.summary_mean("train_seconds")),
            "params": finite_or_none(self.summary_mean("params")),
            "user_norm_mean": finite_or_none(self.mean("user_norm_mean")),
        }


def summarize(variants: Sequence[Variant], baseline: str | None, resamples: int = 1000, seed: int = 0,
              confidence: float = 0.95) -> list[VariantSummary]:
    """Every variant of the run (replicates grouped), in the order they first appear."""
    groups = by_group(variants)
    baseline_runs = groups.get(baseline or "", [])
    out = []
    for name, runs in groups.items():
        is_baseline = bool(baseline_runs) and name == baseline
        recall = {split: Interval.across([_metric(r, split) for r in runs], confidence) for split in SPLITS}
        delta = {split: None if is_baseline or not baseline_runs else
                 paired_difference(runs, baseline_runs, split, resamples, seed, confidence) for split in SPLITS}
        out.append(VariantSummary(name, tuple(runs), recall, delta, is_baseline))
    return out
