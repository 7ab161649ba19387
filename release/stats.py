"""The statistics of the release step: the paired bootstrap over users (with replicates), intervals across seeds,
and relative changes.

- ``replicate_bootstrap`` (``paired_bootstrap`` with one run a side) resamples users: per user, a side's value is the mean of the metric over that side's runs
  (seeds), users paired by ``user_id``; one resample of users applies within every seed (the same people are in
  every replicate's evaluation, so a user's seeds are never counted as several users).
- A relative change's interval takes the ratio within each resample (mean of a / mean of b - 1 over the resampled
  users), so it cannot pass -100% for non-negative metrics; dividing a resampled difference by the observed mean
  of b could.
- ``Interval.across`` is the two-sided Student-t interval of a value across seeds (scipy's quantile).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats as scipy_stats

from core.configs import ConfigError
from release.records import METRIC, number

MAX_RESAMPLES = 1_000_000  # bootstrap resamples anyone (a config, a blessing read back) may ask for


def relative_change(value: float, reference: float) -> float:
    """(value - reference) / reference; NaN when either is missing; 0 vs 0 is no change, x > 0 vs 0 is +inf."""
    if not (math.isfinite(value) and math.isfinite(reference)):
        return float("nan")
    if reference == 0:
        return 0.0 if value == 0 else math.copysign(math.inf, value)
    return (value - reference) / abs(reference)


def _pairing_key(per_user: Mapping[str, np.ndarray]) -> str:
    return "user_id" if "user_id" in per_user else "user_index"


def paired_bootstrap(per_user_a: Mapping[str, np.ndarray], per_user_b: Mapping[str, np.ndarray],
                     resamples: int = 1000, seed: int = 0, confidence: float = 0.95, metric: str = METRIC,
                     min_overlap: float = 0.0) -> dict[str, Any]:
    """``replicate_bootstrap`` with one run on each side."""
    return replicate_bootstrap([per_user_a], [per_user_b], resamples, seed, confidence, metric, min_overlap)


def replicate_bootstrap(runs_a: Sequence[Mapping[str, np.ndarray]], runs_b: Sequence[Mapping[str, np.ndarray]],
                        resamples: int = 1000, seed: int = 0, confidence: float = 0.95, metric: str = METRIC,
                        min_overlap: float = 0.0) -> dict[str, Any]:
    """Percentile bootstrap of mean(a - b) and of mean(a) / mean(b) - 1 over the users every run covers, paired by
    ``user_id`` (``user_index`` for evaluations without ids); a side's per-user value is the mean over its runs.

    ValueError ("not comparable: N shared of M and K users") when the shared users are fewer than ``min_overlap`` of
    any run's (either side: a subset is not the population), or none; ConfigError for ``resamples`` outside
    [1, MAX_RESAMPLES], before anything is allocated. Returns ``mean_diff`` (observed), ``ci_low``/``ci_high`` (its two-sided
    ``confidence`` interval), ``relative`` (observed mean(a) / mean(b) - 1) with ``relative_low``/``relative_high``,
    ``users`` (shared) and ``candidate_users`` (a's first run's); the same seed gives the same interval.
    """
    if not 1 <= resamples <= MAX_RESAMPLES:  # an absurd count (a blessing read back, a config) before allocating
        raise ConfigError(f"resamples: must lie in [1, {MAX_RESAMPLES}], got {resamples}")
    runs = [*runs_a, *runs_b]
    key = "user_id" if all(_pairing_key(r) == "user_id" for r in runs) else "user_index"
    ids = [np.asarray(r[key]) for r in runs]
    for run_ids, side in zip(ids, ["first"] * len(runs_a) + ["second"] * len(runs_b), strict=True):
        if len(np.unique(run_ids)) != len(run_ids):
            raise ValueError(f"the {side} per-user values list a {key} twice")
    shared = ids[0]
    for run_ids in ids[1:]:
        shared = np.intersect1d(shared, run_ids, assume_unique=True)
    candidate_users = len(ids[0])
    most = max(len(run_ids) for run_ids in ids)  # from both sides: a subset evaluation is not the same population
    if len(shared) == 0 or len(shared) < min_overlap * most:
        raise ValueError(f"not comparable: {len(shared)} shared of {candidate_users} and {most} users (by {key}); "
                         f"evaluate both models on the same split (at least {min_overlap:.0%} of each side's users "
                         "must be shared)")

    def mean_over(side: Sequence[Mapping[str, np.ndarray]], side_ids: list[np.ndarray]) -> np.ndarray:
        values = []
        for r, run_ids in zip(side, side_ids, strict=True):
            _, _, at = np.intersect1d(shared, run_ids, assume_unique=True, return_indices=True)
            values.append(np.asarray(r[metric], dtype=np.float64)[at])
        return values[0] if len(values) == 1 else np.mean(values, axis=0)

    a, b = mean_over(runs_a, ids[:len(runs_a)]), mean_over(runs_b, ids[len(runs_a):])
    diff = a - b
    rng = np.random.default_rng(seed)
    means, ratios = np.empty(resamples), np.empty(resamples)
    chunk = max(1, 2_000_000 // len(diff))  # bounds memory: ~16 MB of indices at a time
    for start in range(0, resamples, chunk):
        stop = min(start + chunk, resamples)
        users = rng.integers(0, len(diff), size=(stop - start, len(diff)))
        means[start:stop] = diff[users].mean(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratios[start:stop] = a[users].mean(axis=1) / b[users].mean(axis=1) - 1.0
    alpha = 1.0 - confidence
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    with np.errstate(invalid="ignore"):  # a side with no hits in a resample: an infinite or undefined ratio
        relative_low, relative_high = np.quantile(ratios, [alpha / 2, 1 - alpha / 2])
    return {"mean_diff": float(diff.mean()), "ci_low": float(low), "ci_high": float(high),
            "relative": relative_change(float(a.mean()), float(b.mean())),
            "relative_low": float(relative_low), "relative_high": float(relative_high),
            "users": len(diff), "candidate_users": candidate_users}


@dataclass(frozen=True, kw_only=True)
class Interval:
    """The mean of one value over a variant's seeds and its two-sided t-interval (NaN bounds with one seed)."""

    mean: float
    low: float
    high: float
    n: int  # seeds

    @classmethod
    def across(cls, values: Sequence[float], confidence: float = 0.95) -> Interval:
        data = np.asarray([number(v) for v in values], dtype=np.float64)
        if len(data) == 0:
            return cls(mean=math.nan, low=math.nan, high=math.nan, n=0)
        mean = float(data.mean())
        if len(data) < 2 or not np.isfinite(data).all():
            return cls(mean=mean, low=math.nan, high=math.nan, n=len(data))
        half = float(scipy_stats.t.ppf(0.5 + confidence / 2, len(data) - 1)) * float(data.std(ddof=1)) / math.sqrt(
            len(data))
        return cls(mean=mean, low=mean - half, high=mean + half, n=len(data))
