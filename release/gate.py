"""Decide which of a run's variants (if any) ships: candidate selection, a paired bootstrap, the gate, and the
check a push makes that the decision still holds.

In the spirit of TFX's Evaluator: value thresholds on the candidate's own test metrics, change thresholds against
the production champion and against this run's baseline variant, and a paired bootstrap over users whose
confidence interval for the Recall@10 difference must not lie entirely below zero. NaN or missing metrics always
fail. With no champion yet, a candidate that passes the other checks is blessed.

The champion is judged on the candidate's own test split: the pipeline (and ``interest evaluate --model
registry:ROOT``) re-evaluates it on this run's data first, so the bootstrap pairs the same users by ``user_id``.
Only without such an evaluation are the metrics stored at its push used; the bootstrap then refuses a pairing that
covers too few of the candidate's users ("not comparable").

Replicates (a variant trained once per seed, ``Variant.group`` naming the variant) still give ONE candidate model:
the variant with the best *mean* validation Recall@10 over its seeds is selected (a mean over seeds is the better
estimate of a recipe than its luckiest seed), and of its runs the one with the best validation Recall@10 is the
candidate (the test split stays unseen by the choice). The baseline it is gated against is chosen the same way: the
baseline variant's best-validated run. Both sides are then a best-of-N over the same number of seeds, so the
change and bootstrap checks compare like with like; against a fixed or average baseline run the candidate's
selection would tilt the check in its favour. Without replicates this is the plain "best validation Recall@10".

``decide`` is the one function behind ``interest gate`` and the pipeline's gate task. Its ``Blessing`` records
the sha256 of every file it judged; ``verify`` (run by every push) recomputes them and re-derives each check from
those files, so weights retrained after the gate, or a verdict edited by hand, are refused.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from core import contract, rundir, storage
from core.configs import ConfigError, check_literals, from_dict, require, to_dict
from release.records import METRIC, Blessing, ChampionRef, Check, Variant, by_group, finite_or_none, number

# Candidate test metrics that must be present and finite.
REQUIRED_METRICS = (METRIC, "ndcg@10", "mrr", "user_norm_mean")
# The files of each judged directory whose digests a blessing binds.
MODEL_FILES = (contract.WEIGHTS, contract.MODEL_CONFIG, contract.VOCAB)
EVALUATION_FILES = (contract.METRICS, contract.PER_USER)


class BlessingInvalid(RuntimeError):
    """A blessing does not hold for the files it names: one changed since the gate, or the verdict does not follow
    from its checks. The push refuses it (exit code 3) and writes nothing."""


@dataclass(frozen=True)
class GateConfig:
    min_recall_at_10: float = 0.01  # value threshold: candidate test Recall@10 (random ranking of 3,416 items: 0.003)
    max_user_norm_mean: float = 1000.0  # value threshold: mean L2 norm of test user embeddings (seed: ~340 unpenalized)
    min_change_vs_champion: float = -0.005  # relative Recall@10 change vs the production champion, -0.005 = -0.5%
    min_change_vs_baseline: float = -0.005  # relative Recall@10 change vs this run's baseline variant
    bootstrap_resamples: int = 1000  # paired bootstrap resamples over users
    bootstrap_seed: int = 0  # seed of the resampling, so a decision can be reproduced exactly
    confidence: float = 0.95  # two-sided level of the bootstrap confidence interval
    # The bootstrap pairs users by id; fewer shared users than this share of the candidate's is "not comparable".
    min_user_overlap: float = 0.9

    def __post_init__(self) -> None:
        check_literals(self)
        for name in ("min_recall_at_10", "max_user_norm_mean", "min_change_vs_champion", "min_change_vs_baseline"):
            require(math.isfinite(getattr(self, name)), f"GateConfig.{name}", "must be a finite number")
        require(0.0 <= self.min_recall_at_10 <= 1.0, "GateConfig.min_recall_at_10", "must lie in [0, 1]")
        require(self.max_user_norm_mean > 0, "GateConfig.max_user_norm_mean", "must be > 0")
        for name in ("min_change_vs_champion", "min_change_vs_baseline"):
            require(getattr(self, name) >= -1.0, f"GateConfig.{name}", "must be >= -1 (a relative change)")
        require(100 <= self.bootstrap_resamples <= 1_000_000, "GateConfig.bootstrap_resamples",
                "must lie in [100, 1000000]")
        require(0.5 <= self.confidence < 1.0, "GateConfig.confidence", "must lie in [0.5, 1)")
        require(0.0 < self.min_user_overlap <= 1.0, "GateConfig.min_user_overlap", "must lie in (0, 1]")


def select_variant(variants: Sequence[Variant]) -> list[Variant]:
    """The runs of the variant with the best mean validation Recall@10 over its replicates (seeds); ties: fewer
    parameters, then less mean training time, then name. A variant with a missing or NaN replicate ranks last."""
    if not variants:
        raise ValueError("select_variant: no variants")
    groups = by_group(variants)

    def key(name: str) -> tuple:
        runs = groups[name]
        recall = float(np.mean([v.valid_recall for v in runs]))
        params = float(np.mean([v.params for v in runs]))
        seconds = float(np.mean([v.train_seconds for v in runs]))
        return (-recall if math.isfinite(recall) else math.inf,
                params if math.isfinite(params) else math.inf,
                seconds if math.isfinite(seconds) else math.inf,
                name)

    return groups[min(groups, key=key)]


def select_candidate(variants: Sequence[Variant]) -> Variant:
    """The variant with the best validation Recall@10; ties: fewer parameters, then less training time, then name.

    Variants whose validation Recall@10 is missing or NaN rank last (the gate then fails them).
    """
    if not variants:
        raise ValueError("select_candidate: no variants")

    def key(v: Variant) -> tuple:
        recall, params, seconds = v.valid_recall, v.params, v.train_seconds
        return (-recall if math.isfinite(recall) else math.inf,
                params if math.isfinite(params) else math.inf,
                seconds if math.isfinite(seconds) else math.inf,
                v.name)

    return min(variants, key=key)


def _pairing_key(per_user: Mapping[str, np.ndarray]) -> str:
    return "user_id" if "user_id" in per_user else "user_index"


def paired_bootstrap(per_user_a: Mapping[str, np.ndarray], per_user_b: Mapping[str, np.ndarray],
                     resamples: int = 1000, seed: int = 0, confidence: float = 0.95, metric: str = METRIC,
                     min_overlap: float = 0.0) -> dict[str, float]:
    """Percentile bootstrap of mean(a - b) over the users both cover, paired by ``user_id`` (``user_index`` for
    evaluations without ids).

    ValueError ("not comparable: N shared of M users") when the shared users are fewer than ``min_overlap`` of
    a's, or none. Returns ``mean_diff`` (observed), ``ci_low`` and ``ci_high`` (the two-sided ``confidence``
    interval), ``users`` (shared) and ``candidate_users`` (a's); the same seed gives the same interval.
    """
    return replicate_bootstrap([per_user_a], [per_user_b], resamples, seed, confidence, metric, min_overlap)


def replicate_bootstrap(runs_a: Sequence[Mapping[str, np.ndarray]], runs_b: Sequence[Mapping[str, np.ndarray]],
                        resamples: int = 1000, seed: int = 0, confidence: float = 0.95, metric: str = METRIC,
                        min_overlap: float = 0.0) -> dict[str, float]:
    """``paired_bootstrap`` for replicates: the difference per user is the mean of ``metric`` over a's runs (seeds)
    minus the mean over b's, over the users every run covers, paired by id; users are resampled, and one resample
    applies within every seed (they are the same people in each replicate's evaluation, so a user's seeds are never
    counted as several users). One run on each side is exactly ``paired_bootstrap``."""
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
    if len(shared) == 0 or len(shared) < min_overlap * candidate_users:
        raise ValueError(f"not comparable: {len(shared)} shared of {candidate_users} users (by {key}); evaluate both "
                         f"models on the same split (at least {min_overlap:.0%} of the users must be shared)")

    def mean_over(side: Sequence[Mapping[str, np.ndarray]], side_ids: list[np.ndarray]) -> np.ndarray:
        values = []
        for r, run_ids in zip(side, side_ids, strict=True):
            _, _, at = np.intersect1d(shared, run_ids, assume_unique=True, return_indices=True)
            values.append(np.asarray(r[metric], dtype=np.float64)[at])
        return values[0] if len(values) == 1 else np.mean(values, axis=0)

    diff = mean_over(runs_a, ids[:len(runs_a)]) - mean_over(runs_b, ids[len(runs_a):])
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    chunk = max(1, 2_000_000 // len(diff))  # bounds memory: ~16 MB of indices at a time
    for start in range(0, resamples, chunk):
        stop = min(start + chunk, resamples)
        means[start:stop] = diff[rng.integers(0, len(diff), size=(stop - start, len(diff)))].mean(axis=1)
    alpha = 1.0 - confidence
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return {"mean_diff": float(diff.mean()), "ci_low": float(low), "ci_high": float(high), "users": len(diff),
            "candidate_users": candidate_users}


def relative_change(value: float, reference: float) -> float:
    """(value - reference) / reference; NaN when either is missing; 0 vs 0 is no change, x > 0 vs 0 is +inf."""
    if not (math.isfinite(value) and math.isfinite(reference)):
        return float("nan")
    if reference == 0:
        return 0.0 if value == 0 else math.copysign(math.inf, value)
    return (value - reference) / abs(reference)


# ------------------------------------------------------------------------------------------------ the checks


def _finite_check(candidate: Variant) -> Check:
    metrics = candidate.test
    bad = [k for k in REQUIRED_METRICS if not math.isfinite(number(metrics.get(k)))]
    problems = [f"{k} missing" if metrics.get(k) is None else f"{k}={metrics[k]!r}" for k in bad]
    return Check.of("metrics_present_and_finite", bad or None, list(REQUIRED_METRICS), not bad,
                    "bad test metrics: " + ", ".join(problems) if bad else "all required test metrics are finite")


def _min_check(name: str, value: float, threshold: float) -> Check:
    ok = math.isfinite(value) and value >= threshold
    return Check.of(name, value, threshold, ok, f"{value:.4f} {'>=' if ok else '<'} {threshold}"
                    if math.isfinite(value) else "missing or NaN")


def _max_check(name: str, value: float, threshold: float) -> Check:
    ok = math.isfinite(value) and value <= threshold
    return Check.of(name, value, threshold, ok, f"{value:.4f} {'<=' if ok else '>'} {threshold}"
                    if math.isfinite(value) else "missing or NaN")


def _change_check(name: str, candidate: Variant, reference: Variant, threshold: float) -> Check:
    change = relative_change(candidate.test_recall, reference.test_recall)
    if math.isnan(change):
        return Check.of(name, None, threshold, False, f"{METRIC} missing or NaN on the candidate or the reference")
    ok = change >= threshold
    return Check.of(name, change, threshold, ok, f"{change:+.2%} {METRIC} vs {reference.name} "
                    f"({'>=' if ok else '<'} {threshold:+.2%})")


def _bootstrap_check(name: str, candidate: Variant, reference: Variant, config: GateConfig) -> Check:
    if candidate.per_user is None or reference.per_user is None:
        return Check.of(name, None, 0.0, False, f"per-user {METRIC} missing for the candidate or {reference.name}")
    try:
        result = paired_bootstrap(candidate.per_user, reference.per_user, config.bootstrap_resamples,
                                  config.bootstrap_seed, config.confidence, min_overlap=config.min_user_overlap)
    except (KeyError, ValueError) as exc:
        return Check.of(name, None, 0.0, False, f"cannot pair users with {reference.name}: {exc}")
    ok = math.isfinite(result["ci_high"]) and result["ci_high"] >= 0.0
    level = f"{config.confidence:.0%} CI of the {METRIC} difference"
    reason = (f"{level} [{result['ci_low']:+.4f}, {result['ci_high']:+.4f}] vs {reference.name} over "
              f"{result['users']} paired users: " + ("no significant regression" if ok else "significant regression"))
    return Check.of(name, result, 0.0, ok, reason)


def _skipped(name: str, why: str) -> Check:
    return Check.of(name, None, None, True, f"skipped: {why}")


def gate_checks(candidate: Variant, baseline: Variant | None, champion: Variant | None,
                config: GateConfig) -> tuple[Check, ...]:
    """Every check of the candidate, in a fixed order; skipped ones pass with a reason."""
    checks = [
        _finite_check(candidate),
        _min_check("min_recall@10", candidate.test_recall, config.min_recall_at_10),
        _max_check("max_user_norm_mean", number(candidate.test.get("user_norm_mean")), config.max_user_norm_mean),
    ]
    if champion is None:
        checks += [_skipped("change_vs_champion", "no production champion yet"),
                   _skipped("bootstrap_vs_champion", "no production champion yet")]
    else:
        checks += [_change_check("change_vs_champion", candidate, champion, config.min_change_vs_champion),
                   _bootstrap_check("bootstrap_vs_champion", candidate, champion, config)]
    if baseline is None:
        checks += [_skipped("change_vs_baseline", "the run has no baseline variant"),
                   _skipped("bootstrap_vs_baseline", "the run has no baseline variant")]
    else:
        checks += [_change_check("change_vs_baseline", candidate, baseline, config.min_change_vs_baseline),
                   _bootstrap_check("bootstrap_vs_baseline", candidate, baseline, config)]
    return tuple(checks)


# --------------------------------------------------------------------------------------- decide and verify


def _digests(directory: str, names: Sequence[str]) -> dict[str, Any]:
    """{"dir", "files": {name: sha256}} of the listed files of a complete directory that exist."""
    complete = rundir.open_complete(directory)
    files = {}
    for name in names:
        uri = complete.optional_path(name)
        if uri is not None:
            files[name] = hashlib.sha256(storage.read_bytes(uri)).hexdigest()
    return {"dir": directory, "files": files}


def champion_variant(ref: ChampionRef, evaluation_dir: str | None = None) -> Variant:
    """The champion as the gate judges it: its evaluation on this run's test split (``evaluation_dir``), or,
    without one, the metrics and per-user values stored in its registry version at its push."""
    test_dir = evaluation_dir or ref.uri
    version = Variant.load(f"champion {ref.version}", ref.uri)
    return Variant(f"champion {ref.version}", ref.uri, None, test_dir, version.summary,
                   {}, contract.read_json(test_dir, contract.METRICS), contract.read_per_user(test_dir),
                   version.lineage)


def decide(variants: Sequence[Variant], baseline_name: str | None, champion: ChampionRef | None,
           config: GateConfig, champion_evaluation: str | None = None) -> Blessing:
    """Select the candidate among ``variants`` and gate it: the blessing with every check, bound by digest to
    every file judged. ``baseline_name``: the variant relative changes are measured against (None or absent:
    none); ``champion``: the registry's production model (None: none yet), judged on ``champion_evaluation``
    (its ``interest evaluate`` output on this run's test split) when given."""
    names = [v.name for v in variants]
    require(len(set(names)) == len(names), "variants", f"names must be unique, got {', '.join(names)}")
    candidate = select_candidate(select_variant(variants))
    baseline_runs = [v for v in variants if v.group == baseline_name] or [v for v in variants if v.name == baseline_name]
    baseline = select_candidate(baseline_runs) if baseline_runs else None
    judged_champion = champion_variant(champion, champion_evaluation) if champion else None
    checks = gate_checks(candidate, baseline, judged_champion, config)
    inputs = {"candidate_model": _digests(candidate.model_dir, MODEL_FILES)}
    for role, directory in (("candidate_valid", candidate.valid_dir), ("candidate_test", candidate.test_dir),
                            ("baseline_test", baseline.test_dir if baseline else None),
                            ("champion_test", judged_champion.test_dir if judged_champion else None)):
        if directory:
            inputs[role] = _digests(directory, EVALUATION_FILES)
    champion_record = None
    if champion is not None:
        same_data = (judged_champion.data_digest is not None
                     and judged_champion.data_digest == candidate.data_digest)
        champion_record = {"version": champion.version, "path": champion.path,
                           "evaluation": judged_champion.test_dir, "re_evaluated": champion_evaluation is not None,
                           "same_data": same_data}
    return Blessing(
        blessed=all(c.passed for c in checks),
        candidate={"name": candidate.name, "variant": candidate.group, "model_dir": candidate.model_dir,
                   "valid_dir": candidate.valid_dir, "test_dir": candidate.test_dir},
        candidate_metrics={k: finite_or_none(v) for k, v in candidate.test.items()},
        baseline=baseline.name if baseline else None,
        champion=champion_record,
        champion_generation=champion.generation if champion else 0,
        checks=checks,
        config=to_dict(config),
        variants={v.name: {f"valid_{METRIC}": finite_or_none(v.valid_recall), "variant": v.group, "seed": v.seed}
                  for v in variants},
        inputs=inputs,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )


def _same_value(a: Any, b: Any) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return set(a) == set(b) and all(_same_value(a[k], b[k]) for k in a)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def verify(blessing: Blessing, locations: Mapping[str, str] | None = None) -> None:
    """Check that ``blessing`` still holds; BlessingInvalid (one line naming the file or check) otherwise.

    1. Every bound file is read again (from ``locations[role]`` when given: where a pipeline's task received its
       copy; else the directory the gate read) and its sha256 compared with the blessing's.
    2. Every check is derived again from those files and the blessing's GateConfig; each must come out as the
       blessing states it, and ``blessed`` must be exactly "every check passed".
    """
    locations = dict(locations or {})
    dirs = {}
    for role, bound in blessing.inputs.items():
        directory = locations.get(role, bound["dir"])
        dirs[role] = directory
        try:
            complete = rundir.open_complete(directory)
        except rundir.IncompleteOutput as exc:
            raise BlessingInvalid(f"blessing input {role}: {exc}") from None
        for name, digest in bound["files"].items():
            uri = complete.optional_path(name)
            actual = hashlib.sha256(storage.read_bytes(uri)).hexdigest() if uri else None
            if actual != digest:
                raise BlessingInvalid(
                    f"{storage.join(directory, name)} ({role}) is not the file the gate judged: its sha256 is "
                    f"{(actual or 'missing')[:12]}..., the blessing's {digest[:12]}...; re-run the gate")
    if "candidate_model" not in dirs or "candidate_test" not in dirs:
        raise BlessingInvalid("blessing binds no candidate model or test evaluation; re-run the gate")
    try:
        config = from_dict(GateConfig, dict(blessing.config))
    except ConfigError as exc:
        raise BlessingInvalid(f"blessing config: {exc}") from None

    def evaluated(name: str, role: str) -> Variant | None:
        directory = dirs.get(role)
        if directory is None:
            return None
        return Variant(name, "", None, directory, {}, {}, contract.read_json(directory, contract.METRICS),
                       contract.read_per_user(directory))

    candidate = evaluated(str(blessing.candidate.get("name")), "candidate_test")
    baseline = evaluated(str(blessing.baseline), "baseline_test") if blessing.baseline else None
    champion = None
    if blessing.champion is not None:
        champion = evaluated(f"champion {blessing.champion.get('version')}", "champion_test")
        if champion is None:
            raise BlessingInvalid("blessing names a champion but binds no evaluation of it; re-run the gate")
    recomputed = {c.name: c for c in gate_checks(candidate, baseline, champion, config)}
    stated = {c.name: c for c in blessing.checks}
    if set(stated) != set(recomputed):
        raise BlessingInvalid(f"blessing checks {sorted(stated)} are not the gate's {sorted(recomputed)}")
    for name, check in recomputed.items():
        if stated[name].passed != check.passed or not _same_value(stated[name].value, check.value):
            raise BlessingInvalid(f"check {name}: the blessing says {'pass' if stated[name].passed else 'FAIL'} "
                                  f"({stated[name].value!r}) but its files give {'pass' if check.passed else 'FAIL'} "
                                  f"({check.value!r})")
    if blessing.blessed != all(c.passed for c in recomputed.values()):
        failing = [name for name, c in recomputed.items() if not c.passed]
        raise BlessingInvalid(f"verdict does not follow from the checks: blessed={blessing.blessed} but "
                              f"{', '.join(failing) or 'every check passes'}")
