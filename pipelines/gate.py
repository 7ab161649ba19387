"""Decide which of a run's variants (if any) ships: champion selection, a paired bootstrap, the gate.

In the spirit of TFX's Evaluator: value thresholds on the candidate's own test metrics, change thresholds against
the production champion (read from the registry) and against this run's baseline preset, and a paired bootstrap
over users whose confidence interval for the Recall@10 difference must not lie entirely below zero. NaN or
missing metrics always fail. With no champion yet, a candidate that passes the other checks is blessed.

A *variant* is a dict (``load_variant`` builds one from the artifact directories of docs/contracts.md)::

    {"name": "baseline", "model_dir": ..., "test_dir": ...,
     "summary": {...summary.json}, "valid": {...valid metrics.json}, "test": {...test metrics.json},
     "per_user": {"user_index": int64 array, "recall@10": float array, ...} | None}   # test split

The champion has the same keys plus ``version``, ``uri`` and ``generation`` (see pipelines.registry); the gate
copies the generation into the blessing so the push can refuse to move a champion pointer that changed since.
As in TFX, the champion should be evaluated on the candidate's test split (``interest gate --champion-eval``);
metrics stored at its push only compare when the data is the same, and the bootstrap refuses per-user values
that cover different users.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from pipelines import storage
from pipelines.configs import check_literals, require, to_dict

METRIC = "recall@10"  # the headline metric every change check and the bootstrap use
# Candidate test metrics that must be present and finite.
REQUIRED_METRICS = (METRIC, "ndcg@10", "mrr", "user_norm_mean")


@dataclass(frozen=True)
class GateConfig:
    min_recall_at_10: float = 0.01  # value threshold: candidate test Recall@10 (random ranking of 3,416 items: 0.003)
    max_user_norm_mean: float = 1000.0  # value threshold: mean L2 norm of test user embeddings (seed: ~340 unpenalized)
    min_change_vs_champion: float = -0.005  # relative Recall@10 change vs the production champion, -0.005 = -0.5%
    min_change_vs_baseline: float = -0.005  # relative Recall@10 change vs this run's baseline preset
    bootstrap_resamples: int = 1000  # paired bootstrap resamples over users
    bootstrap_seed: int = 0  # seed of the resampling, so a decision can be reproduced exactly
    confidence: float = 0.95  # two-sided level of the bootstrap confidence interval

    def __post_init__(self) -> None:
        check_literals(self)
        for name in ("min_recall_at_10", "max_user_norm_mean", "min_change_vs_champion", "min_change_vs_baseline"):
            require(math.isfinite(getattr(self, name)), f"GateConfig.{name}", "must be a finite number")
        require(0.0 <= self.min_recall_at_10 <= 1.0, "GateConfig.min_recall_at_10", "must lie in [0, 1]")
        require(self.max_user_norm_mean > 0, "GateConfig.max_user_norm_mean", "must be > 0")
        for name in ("min_change_vs_champion", "min_change_vs_baseline"):
            require(getattr(self, name) >= -1.0, f"GateConfig.{name}", "must be >= -1 (a relative change)")
        require(self.bootstrap_resamples >= 100, "GateConfig.bootstrap_resamples", "must be >= 100")
        require(0.5 <= self.confidence < 1.0, "GateConfig.confidence", "must lie in [0.5, 1)")


def read_per_user(eval_dir: str) -> dict[str, np.ndarray] | None:
    """The per-user columns of ``<eval_dir>/per_user.parquet`` as numpy arrays, or None if there is none."""
    import pyarrow.parquet as pq

    uri = storage.join(eval_dir, "per_user.parquet")
    if not storage.exists(uri):
        return None
    table = pq.read_table(io.BytesIO(storage.read_bytes(uri)))
    return {name: table.column(name).to_numpy() for name in table.column_names}


def _read_json_or_empty(uri: str) -> dict[str, Any]:
    return storage.read_json(uri) if storage.exists(uri) else {}


def load_variant(name: str, model_dir: str, valid_dir: str | None = None, test_dir: str | None = None) -> dict:
    """A variant record from a model artifact dir and the ``interest evaluate`` output dirs of both splits."""
    return {
        "name": name,
        "model_dir": model_dir,
        "test_dir": test_dir,
        "summary": _read_json_or_empty(storage.join(model_dir, "summary.json")),
        "valid": _read_json_or_empty(storage.join(valid_dir, "metrics.json")) if valid_dir else {},
        "test": _read_json_or_empty(storage.join(test_dir, "metrics.json")) if test_dir else {},
        "per_user": read_per_user(test_dir) if test_dir else None,
    }


def _number(value: Any) -> float:
    """A metric as float; NaN when missing or not a number, so every comparison with it fails."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def valid_recall(variant: dict) -> float:
    """Validation Recall@10: the valid split's metrics.json, else the best value in summary.json."""
    if METRIC in variant.get("valid", {}):
        return _number(variant["valid"][METRIC])
    return _number(variant.get("summary", {}).get("best", {}).get(f"valid_{METRIC}"))


def _params(variant: dict) -> float:
    return _number(variant.get("summary", {}).get("params", variant.get("test", {}).get("params")))


def select_champion(candidates: list[dict]) -> dict:
    """The variant with the best validation Recall@10; ties: fewer parameters, then less training time, then name.

    Variants whose validation Recall@10 is missing or NaN rank last (the gate then fails them).
    """
    if not candidates:
        raise ValueError("select_champion: no candidates")

    def key(v: dict) -> tuple:
        recall, params, seconds = valid_recall(v), _params(v), _number(v.get("summary", {}).get("train_seconds"))
        return (-recall if math.isfinite(recall) else math.inf,
                params if math.isfinite(params) else math.inf,
                seconds if math.isfinite(seconds) else math.inf,
                str(v.get("name")))

    return min(candidates, key=key)


def paired_bootstrap(per_user_a: dict, per_user_b: dict, resamples: int = 1000, seed: int = 0,
                     confidence: float = 0.95, metric: str = METRIC) -> dict[str, float]:
    """Percentile bootstrap of mean(a - b) over users, paired by ``user_index``.

    Both must cover exactly the same users (ValueError otherwise). Returns ``mean_diff`` (observed), ``ci_low``
    and ``ci_high`` (the two-sided ``confidence`` interval), ``users``; the same seed gives the same interval.
    """
    a_idx, b_idx = np.asarray(per_user_a["user_index"]), np.asarray(per_user_b["user_index"])
    if len(a_idx) == 0 or len(a_idx) != len(b_idx) or not np.array_equal(np.sort(a_idx), np.sort(b_idx)):
        raise ValueError(f"per-user values cover different users ({len(a_idx)} vs {len(b_idx)}): "
                         "evaluate both models on the same split")
    if len(np.unique(a_idx)) != len(a_idx):
        raise ValueError("per-user values list a user_index twice")
    diff = (np.asarray(per_user_a[metric], dtype=np.float64)[np.argsort(a_idx)]
            - np.asarray(per_user_b[metric], dtype=np.float64)[np.argsort(b_idx)])
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    chunk = max(1, 2_000_000 // len(diff))  # bounds memory: ~16 MB of indices at a time
    for start in range(0, resamples, chunk):
        stop = min(start + chunk, resamples)
        means[start:stop] = diff[rng.integers(0, len(diff), size=(stop - start, len(diff)))].mean(axis=1)
    alpha = 1.0 - confidence
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return {"mean_diff": float(diff.mean()), "ci_low": float(low), "ci_high": float(high), "users": len(diff)}


def _check(name: str, value: Any, threshold: Any, passed: bool, reason: str) -> dict:
    if isinstance(value, float) and not math.isfinite(value):
        value = None  # strict JSON; the reason says what it was
    return {"name": name, "value": value, "threshold": threshold, "passed": bool(passed), "reason": reason}


def _finite_check(candidate: dict) -> dict:
    metrics = candidate.get("test", {})
    bad = [k for k in REQUIRED_METRICS if not math.isfinite(_number(metrics.get(k)))]
    problems = [f"{k} missing" if metrics.get(k) is None else f"{k}={metrics[k]!r}" for k in bad]
    return _check("metrics_present_and_finite", bad or None, list(REQUIRED_METRICS), not bad,
                  "bad test metrics: " + ", ".join(problems) if bad else "all required test metrics are finite")


def _json_safe(metrics: dict) -> dict:
    """Metrics for the blessing document: NaN/inf become None (strict JSON; the checks' reasons name them)."""
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in metrics.items()}


def _min_check(name: str, value: float, threshold: float) -> dict:
    ok = math.isfinite(value) and value >= threshold
    return _check(name, value, threshold, ok, f"{value:.4f} {'>=' if ok else '<'} {threshold}"
                  if math.isfinite(value) else "missing or NaN")


def _max_check(name: str, value: float, threshold: float) -> dict:
    ok = math.isfinite(value) and value <= threshold
    return _check(name, value, threshold, ok, f"{value:.4f} {'<=' if ok else '>'} {threshold}"
                  if math.isfinite(value) else "missing or NaN")


def relative_change(value: float, reference: float) -> float:
    """(value - reference) / reference; NaN when either is missing; 0 vs 0 is no change, x > 0 vs 0 is +inf."""
    if not (math.isfinite(value) and math.isfinite(reference)):
        return float("nan")
    if reference == 0:
        return 0.0 if value == 0 else math.copysign(math.inf, value)
    return (value - reference) / abs(reference)


def _change_check(name: str, candidate: dict, reference: dict, threshold: float) -> dict:
    change = relative_change(_number(candidate.get("test", {}).get(METRIC)),
                             _number(reference.get("test", {}).get(METRIC)))
    if math.isnan(change):
        return _check(name, None, threshold, False, f"{METRIC} missing or NaN on the candidate or the reference")
    ok = change >= threshold
    return _check(name, change, threshold, ok, f"{change:+.2%} {METRIC} vs {reference.get('name')} "
                  f"({'>=' if ok else '<'} {threshold:+.2%})")


def _bootstrap_check(name: str, candidate: dict, reference: dict, config: GateConfig) -> dict:
    if candidate.get("per_user") is None or reference.get("per_user") is None:
        return _check(name, None, 0.0, False, f"per-user {METRIC} missing for the candidate or {reference.get('name')}")
    try:
        result = paired_bootstrap(candidate["per_user"], reference["per_user"], config.bootstrap_resamples,
                                  config.bootstrap_seed, config.confidence)
    except (KeyError, ValueError) as exc:
        return _check(name, None, 0.0, False, f"cannot pair users with {reference.get('name')}: {exc}")
    ok = math.isfinite(result["ci_high"]) and result["ci_high"] >= 0.0
    level = f"{config.confidence:.0%} CI of the {METRIC} difference"
    reason = (f"{level} [{result['ci_low']:+.4f}, {result['ci_high']:+.4f}] vs {reference.get('name')}: "
              + ("no significant regression" if ok else "significant regression"))
    return _check(name, result, 0.0, ok, reason)


def _skipped(name: str, why: str) -> dict:
    return _check(name, None, None, True, f"skipped: {why}")


def gate(candidate: dict, baseline: dict | None, champion: dict | None, config: GateConfig) -> dict:
    """The blessing: every check ``{name, value, threshold, passed, reason}`` and ``blessed`` = all passed.

    ``baseline`` is this run's baseline-preset variant (None when the run has none), ``champion`` the production
    champion from ``pipelines.registry.read_champion`` (None when there is none yet).
    """
    metrics = candidate.get("test", {})
    checks = [
        _finite_check(candidate),
        _min_check("min_recall@10", _number(metrics.get(METRIC)), config.min_recall_at_10),
        _max_check("max_user_norm_mean", _number(metrics.get("user_norm_mean")), config.max_user_norm_mean),
    ]
    if champion is None:
        checks += [_skipped("change_vs_champion", "no production champion yet"),
                   _skipped("bootstrap_vs_champion", "no production champion yet")]
    else:
        checks += [_change_check("change_vs_champion", candidate, champion, config.min_change_vs_champion),
                   _bootstrap_check("bootstrap_vs_champion", candidate, champion, config)]
    if baseline is None:
        checks += [_skipped("change_vs_baseline", "the run has no baseline preset"),
                   _skipped("bootstrap_vs_baseline", "the run has no baseline preset")]
    else:
        checks += [_change_check("change_vs_baseline", candidate, baseline, config.min_change_vs_baseline),
                   _bootstrap_check("bootstrap_vs_baseline", candidate, baseline, config)]
    return {
        "blessed": all(c["passed"] for c in checks),
        "metric": METRIC,
        "candidate": {key: candidate.get(key) for key in ("name", "model_dir", "test_dir")},
        "candidate_metrics": _json_safe(metrics),
        "baseline": baseline.get("name") if baseline else None,
        # test_dir: where the champion's metrics came from (its registry version, or a re-evaluation on this split)
        "champion": None if champion is None else {k: champion.get(k) for k in ("version", "uri", "test_dir")},
        # The champion pointer's generation as read before gating (0: no pointer): the push moves the pointer
        # only if it is still this one.
        "champion_generation": int(champion["generation"]) if champion else 0,
        "checks": checks,
        "config": to_dict(config),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
