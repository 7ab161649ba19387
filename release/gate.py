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

MAX_RESAMPLES = 1_000_000  # bootstrap resamples a config (or a blessing read back) may ask for
# Candidate test metrics that must be present and finite.
REQUIRED_METRICS = (METRIC, "ndcg@10", "mrr", "user_norm_mean")
# The files of each judged directory whose digests a blessing binds.
MODEL_FILES = (contract.WEIGHTS, contract.MODEL_CONFIG, contract.VOCAB)
EVALUATION_FILES = (contract.METRICS, contract.PER_USER)


# What every evaluation must name (trainer.evaluate: metrics.json's "measured" and per_user.parquet's metadata).
MEASURED_FIELDS = ("model_sha256", "data_digest", "split", "protocol", "items")


# (evaluation role, the model role it must have measured, its split), the candidate's test first: its data is the run's.
MEASURED_BY = (("candidate_test", "candidate_model", "test"), ("candidate_valid", "candidate_model", "valid"),
               ("baseline_test", "baseline_model", "test"), ("champion_test", "champion_model", "test"))


class EvaluationMismatch(ConfigError):
    """An evaluation given for a model, split or data set measured another one (exit code 2): its numbers say
    nothing about the model it would bless."""


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
        require(100 <= self.bootstrap_resamples <= MAX_RESAMPLES, "GateConfig.bootstrap_resamples",
                f"must lie in [100, {MAX_RESAMPLES}]")
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

    ValueError ("not comparable: N shared of ...") when the shared users are fewer than ``min_overlap`` of either
    side's, or none. Returns ``mean_diff`` (observed), ``ci_low`` and ``ci_high`` (the two-sided ``confidence``
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
    require(1 <= resamples <= MAX_RESAMPLES, "resamples", f"must lie in [1, {MAX_RESAMPLES}], got {resamples}")
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


def paired_means(per_user_a: Mapping[str, np.ndarray], per_user_b: Mapping[str, np.ndarray], min_overlap: float,
                 metric: str = METRIC) -> tuple[float, float, int]:
    """Mean ``metric`` of a and of b over the users both cover, paired by id; ValueError ("not comparable") when
    they share fewer than ``min_overlap`` of either side's users. Returns (mean a, mean b, shared users)."""
    key = "user_id" if _pairing_key(per_user_a) == _pairing_key(per_user_b) == "user_id" else "user_index"
    a_ids, b_ids = np.asarray(per_user_a[key]), np.asarray(per_user_b[key])
    shared, at_a, at_b = np.intersect1d(a_ids, b_ids, return_indices=True)
    most = max(len(a_ids), len(b_ids))
    if len(shared) == 0 or len(shared) < min_overlap * most:
        raise ValueError(f"not comparable: {len(shared)} shared of {len(a_ids)} and {len(b_ids)} users (by {key}); "
                         f"at least {min_overlap:.0%} of each side's users must be shared")
    values_a = np.asarray(per_user_a[metric], dtype=np.float64)[at_a]
    values_b = np.asarray(per_user_b[metric], dtype=np.float64)[at_b]
    return float(values_a.mean()), float(values_b.mean()), len(shared)


def _change_check(name: str, candidate: Variant, reference: Variant, threshold: float, config: GateConfig) -> Check:
    """The relative change of the mean over the users both evaluated, paired by id (never two populations)."""
    if candidate.per_user is None or reference.per_user is None:
        return Check.of(name, None, threshold, False, f"per-user {METRIC} missing for the candidate or "
                        f"{reference.name}: the change is measured on paired users only")
    try:
        mine, theirs, users = paired_means(candidate.per_user, reference.per_user, config.min_user_overlap)
    except (KeyError, ValueError) as exc:
        return Check.of(name, None, threshold, False, f"cannot pair users with {reference.name}: {exc}")
    change = relative_change(mine, theirs)
    if math.isnan(change):
        return Check.of(name, None, threshold, False, f"{METRIC} missing or NaN on the candidate or the reference")
    ok = change >= threshold
    return Check.of(name, change, threshold, ok, f"{change:+.2%} {METRIC} vs {reference.name} over {users} paired "
                    f"users ({'>=' if ok else '<'} {threshold:+.2%})")


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
        checks += [_change_check("change_vs_champion", candidate, champion, config.min_change_vs_champion, config),
                   _bootstrap_check("bootstrap_vs_champion", candidate, champion, config)]
    if baseline is None:
        checks += [_skipped("change_vs_baseline", "the run has no baseline variant"),
                   _skipped("bootstrap_vs_baseline", "the run has no baseline variant")]
    else:
        checks += [_change_check("change_vs_baseline", candidate, baseline, config.min_change_vs_baseline, config),
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


def weights_sha256(model_dir: str) -> str:
    """The sha256 of a model dir's model.pt (checked against its bytes when the directory is opened)."""
    model = rundir.open_complete(model_dir)
    model.path(contract.WEIGHTS)  # IncompleteOutput naming it when there is none
    return model.files[contract.WEIGHTS]["sha256"]


def measured(evaluation_dir: str) -> dict[str, Any]:
    """What an evaluation names as measured; EvaluationMismatch when it names nothing, or when its metrics.json
    and per_user.parquet disagree (the two files of two evaluations put together)."""
    stated = contract.read_json(evaluation_dir, contract.METRICS).get(contract.MEASURED_KEY)
    if not isinstance(stated, dict) or not set(MEASURED_FIELDS) <= set(stated):
        raise EvaluationMismatch(f"{evaluation_dir}: its {contract.METRICS} does not name what it measured "
                                 f"({', '.join(MEASURED_FIELDS)}); evaluate again with `interest evaluate`")
    if contract.read_measured(evaluation_dir) != stated:
        raise EvaluationMismatch(f"{evaluation_dir}: {contract.METRICS} and {contract.PER_USER} name different "
                                 "measurements (files of two evaluations put together)")
    return stated


def check_measured(evaluation_dir: str, what: str, split: str, model_sha256: str,
                   today: Mapping[str, Any] | None) -> dict[str, Any]:
    """``evaluation_dir``'s measurement, when it measured the model.pt of sha256 ``model_sha256`` on ``split`` of
    the data ``today`` names (data digest, protocol, catalogue size; None: this is the reference itself);
    EvaluationMismatch naming every difference otherwise."""
    found = measured(evaluation_dir)
    problems = []
    if found["split"] != split:
        problems.append(f"the {found['split']!r} split, not {split!r}")
    if found["model_sha256"] != model_sha256:
        problems.append(f"a model.pt of sha256 {str(found['model_sha256'])[:12]}..., not {what}'s "
                        f"({model_sha256[:12]}...)")
    for field in ("data_digest", "protocol", "items"):
        if today is not None and found[field] != today[field]:
            problems.append(f"{field} {str(found[field])[:16]!r}, not this run's {str(today[field])[:16]!r}")
    if problems:
        raise EvaluationMismatch(f"{evaluation_dir} (given as {what}'s {split} evaluation) measured "
                                 + "; ".join(problems) + f"; evaluate {what} on this run's data with `interest evaluate`")
    return found


def _check_measurements(variants: Sequence[Variant], candidate: Variant, champion: Variant | None) -> dict:
    """Every evaluation the gate reads measured its own variant's model, on its split, all on one data set (the
    candidate's test data, which must be the data the candidate was trained on): returns that measurement."""
    if not candidate.test_dir:
        return {}
    today = check_measured(candidate.test_dir, candidate.name, "test", weights_sha256(candidate.model_dir), None)
    trained_on = (candidate.lineage.get("data") or {}).get("dir_digest")
    if trained_on is not None and trained_on != today["data_digest"]:
        raise EvaluationMismatch(f"{candidate.test_dir}: measured data {today['data_digest'][:12]}..., but "
                                 f"{candidate.name} was trained on {trained_on[:12]}...; evaluate it on its own data")
    for variant in variants:
        weights = weights_sha256(variant.model_dir)
        for split, directory in (("valid", variant.valid_dir), ("test", variant.test_dir)):
            if directory:
                check_measured(directory, variant.name, split, weights, today)
    if champion is not None:
        check_measured(champion.test_dir, champion.name, "test", weights_sha256(champion.model_dir), today)
    return today


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
    _check_measurements(variants, candidate, judged_champion)
    checks = gate_checks(candidate, baseline, judged_champion, config)
    inputs = {"candidate_model": _digests(candidate.model_dir, MODEL_FILES)}
    if baseline is not None:
        inputs["baseline_model"] = _digests(baseline.model_dir, MODEL_FILES)
    if judged_champion is not None:
        inputs["champion_model"] = _digests(judged_champion.model_dir, MODEL_FILES)
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
       copy; else the directory the gate read) and its sha256 compared with the blessing's; every evaluation
       must have measured the bound model of its role, on its split, all on the candidate's test data.
    2. Every check is derived again from those files and the blessing's GateConfig; each must come out as the
       blessing states it (value, threshold, verdict and reason), its candidate metrics must be the test
       evaluation's, and ``blessed`` must be exactly "every check passed".
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
        expected = set(MODEL_FILES if role.endswith("_model") else EVALUATION_FILES) & set(complete.files)
        if set(bound["files"]) != expected:
            raise BlessingInvalid(f"blessing input {role} binds {sorted(bound['files'])}, the gate binds "
                                  f"{sorted(expected)}; re-run the gate")
        for name, digest in bound["files"].items():
            actual = complete.files[name]["sha256"]  # open_complete checked it against the file's bytes
            if actual != digest:
                raise BlessingInvalid(
                    f"{storage.join(directory, name)} ({role}) is not the file the gate judged: its sha256 is "
                    f"{(actual or 'missing')[:12]}..., the blessing's {digest[:12]}...; re-run the gate")
    if "candidate_model" not in dirs or "candidate_test" not in dirs:
        raise BlessingInvalid("blessing binds no candidate model or test evaluation; re-run the gate")
    today = None
    for evaluation_role, model_role, split in MEASURED_BY:
        if evaluation_role not in dirs:
            continue
        if model_role not in dirs:
            raise BlessingInvalid(f"blessing binds {evaluation_role} but not the model it measured ({model_role}); "
                                  "re-run the gate")
        try:
            found = check_measured(dirs[evaluation_role], model_role.removesuffix("_model"), split,
                                   weights_sha256(dirs[model_role]), today)
        except EvaluationMismatch as exc:
            raise BlessingInvalid(str(exc)) from None
        today = today or found
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
    if not _same_value(dict(blessing.candidate_metrics), {k: finite_or_none(v) for k, v in candidate.test.items()}):
        raise BlessingInvalid("blessing's candidate_metrics are not its test evaluation's metrics.json; re-run the gate")
    recomputed = {c.name: c for c in gate_checks(candidate, baseline, champion, config)}
    stated = {c.name: c for c in blessing.checks}
    if set(stated) != set(recomputed):
        raise BlessingInvalid(f"blessing checks {sorted(stated)} are not the gate's {sorted(recomputed)}")
    for name, check in recomputed.items():
        if (stated[name].reason, stated[name].threshold) != (check.reason, check.threshold):
            raise BlessingInvalid(f"check {name}: the blessing says {stated[name].reason!r} (threshold "
                                  f"{stated[name].threshold!r}) but its files give {check.reason!r} (threshold "
                                  f"{check.threshold!r})")
        if stated[name].passed != check.passed or not _same_value(stated[name].value, check.value):
            raise BlessingInvalid(f"check {name}: the blessing says {'pass' if stated[name].passed else 'FAIL'} "
                                  f"({stated[name].value!r}) but its files give {'pass' if check.passed else 'FAIL'} "
                                  f"({check.value!r})")
    if blessing.blessed != all(c.passed for c in recomputed.values()):
        failing = [name for name, c in recomputed.items() if not c.passed]
        raise BlessingInvalid(f"verdict does not follow from the checks: blessed={blessing.blessed} but "
                              f"{', '.join(failing) or 'every check passes'}")
