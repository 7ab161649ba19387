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

The candidate (one run), the baseline and "vs baseline" / "vs champion" are those of ``release.comparison``: the
gate judges the candidate's variant (the mean over its seeds) against the baseline variant and against the
champion, the same ``Difference`` the report and ``interest run`` show, so they cannot disagree about a number.
Without replicates this is the plain "best validation Recall@10" run against the baseline run.

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

from core import contract, rundir, storage
from core.configs import ConfigError, check_literals, from_dict, require, to_dict
from release.comparison import Bootstrap, Comparison, Difference, difference
from release.records import METRIC, Blessing, ChampionRef, Check, Run, finite_or_none, number

# Candidate test metrics that must be present and finite.
REQUIRED_METRICS = (METRIC, "ndcg@10", "mrr", "user_norm_mean")
# The files of each judged directory whose digests a blessing binds.
MODEL_FILES = (contract.WEIGHTS, contract.MODEL_CONFIG, contract.VOCAB)
EVALUATION_FILES = (contract.METRICS, contract.PER_USER)


# What every evaluation must name (trainer.evaluate: metrics.json's "measured" and per_user.parquet's metadata).
MEASURED_FIELDS = ("model_sha256", "data_digest", "split", "protocol", "items")
MODEL_ROLE_PREFIX, TEST_ROLE_PREFIX = "model:", "test:"  # a compared run's model and test evaluation


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
        require(100 <= self.bootstrap_resamples <= 1_000_000, "GateConfig.bootstrap_resamples",
                "must lie in [100, 1000000]")
        require(0.5 <= self.confidence < 1.0, "GateConfig.confidence", "must lie in [0.5, 1)")
        require(0.0 < self.min_user_overlap <= 1.0, "GateConfig.min_user_overlap", "must lie in (0, 1]")


# ------------------------------------------------------------------------------------------------ the checks


def _finite_check(candidate: Run) -> Check:
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


def _change_check(name: str, vs: Difference, threshold: float) -> Check:
    """The relative change over the users both sides evaluated, paired by id (the bootstrap's observed ratio),
    never of two populations' means: without pairable per-user values there is no change to judge."""
    if vs.bootstrap is None:
        return Check.of(name, None, threshold, False, f"{vs.error}; the change is measured on paired users only")
    change = vs.change  # the paired change (release.comparison.Difference), as every table prints it
    if math.isnan(change):
        return Check.of(name, None, threshold, False, f"{METRIC} missing or NaN on the candidate or the reference")
    ok = change >= threshold
    return Check.of(name, change, threshold, ok, f"{change:+.2%} {METRIC} vs {vs.reference} over "
                    f"{vs.bootstrap['users']} paired users ({'>=' if ok else '<'} {threshold:+.2%})")


def _bootstrap_check(name: str, vs: Difference) -> Check:
    result = vs.bootstrap
    if result is None:
        return Check.of(name, None, 0.0, False, str(vs.error))
    ok = math.isfinite(result["ci_high"]) and result["ci_high"] >= 0.0
    level = f"{vs.confidence:.0%} CI of the {METRIC} difference"
    reason = (f"{level} [{result['ci_low']:+.4f}, {result['ci_high']:+.4f}] vs {vs.reference} over "
              f"{result['users']} paired users: " + ("no significant regression" if ok else "significant regression"))
    return Check.of(name, result, 0.0, ok, reason)


def _skipped(name: str, why: str) -> Check:
    return Check.of(name, None, None, True, f"skipped: {why}")


NO_BASELINE = "the run has no baseline variant"
CANDIDATE_IS_BASELINE = "the candidate is a run of the baseline variant"
NO_CHAMPION = "no production champion yet"


def gate_checks(candidate: Run, vs_baseline: Difference | None, vs_champion: Difference | None, config: GateConfig,
                no_baseline: str = NO_BASELINE) -> tuple[Check, ...]:
    """Every check of the candidate, in a fixed order; skipped ones pass with a reason (``no_baseline``: why
    there is no ``vs_baseline``)."""
    checks = [
        _finite_check(candidate),
        _min_check("min_recall@10", candidate.test_recall, config.min_recall_at_10),
        _max_check("max_user_norm_mean", number(candidate.test.get("user_norm_mean")), config.max_user_norm_mean),
    ]
    if vs_champion is None:
        checks += [_skipped("change_vs_champion", NO_CHAMPION), _skipped("bootstrap_vs_champion", NO_CHAMPION)]
    else:
        checks += [_change_check("change_vs_champion", vs_champion, config.min_change_vs_champion),
                   _bootstrap_check("bootstrap_vs_champion", vs_champion)]
    if vs_baseline is None:
        checks += [_skipped("change_vs_baseline", no_baseline), _skipped("bootstrap_vs_baseline", no_baseline)]
    else:
        checks += [_change_check("change_vs_baseline", vs_baseline, config.min_change_vs_baseline),
                   _bootstrap_check("bootstrap_vs_baseline", vs_baseline)]
    return tuple(checks)


def bootstrap_of(config: GateConfig) -> Bootstrap:
    return Bootstrap.of(to_dict(config))


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


def _check_measurements(runs: Sequence[Run], candidate: Run, champion: Run | None) -> None:
    """Every evaluation the gate reads measured its own run's model, on its split, all on one data set: the
    candidate's test data, which must be the data the candidate was trained on."""
    if not candidate.test_dir:
        return
    today = check_measured(candidate.test_dir, candidate.name, "test", weights_sha256(candidate.model_dir), None)
    trained_on = (candidate.lineage.get("data") or {}).get("dir_digest")
    if trained_on is not None and trained_on != today["data_digest"]:
        raise EvaluationMismatch(f"{candidate.test_dir}: measured data {today['data_digest'][:12]}..., but "
                                 f"{candidate.name} was trained on {trained_on[:12]}...; evaluate it on its own data")
    for run in runs:
        weights = weights_sha256(run.model_dir)
        for split, directory in (("valid", run.valid_dir), ("test", run.test_dir)):
            if directory:
                check_measured(directory, run.name, split, weights, today)
    if champion is not None:
        check_measured(champion.test_dir, champion.name, "test", weights_sha256(champion.model_dir), today)


def champion_run(ref: ChampionRef, evaluation_dir: str | None = None) -> Run:
    """The champion as the gate judges it: its evaluation on this run's test split (``evaluation_dir``), or,
    without one, the metrics and per-user values stored in its registry version at its push."""
    test_dir = evaluation_dir or ref.uri
    version = Run.load(name=f"champion {ref.version}", model_dir=ref.uri)
    return Run(name=version.name, model_dir=ref.uri, test_dir=test_dir, summary=version.summary,
               test=contract.read_json(test_dir, contract.METRICS), per_user=contract.read_per_user(test_dir),
               lineage=version.lineage)


def _evaluation_role(run: Run) -> str:
    """The blessing input role of a run's test evaluation that the comparison used beside the candidate's."""
    return f"{TEST_ROLE_PREFIX}{run.name}"


def _model_role(run: Run) -> str:
    """The blessing input role of the model that evaluation measured."""
    return f"{MODEL_ROLE_PREFIX}{run.name}"


def _vs_baseline(comparison: Comparison) -> tuple[Difference | None, str]:
    if comparison.baseline is None:
        return None, NO_BASELINE
    if comparison.candidate.variant == comparison.baseline:
        return None, CANDIDATE_IS_BASELINE
    return comparison.candidate_vs_baseline, NO_BASELINE


def decide(runs: Sequence[Run], baseline: str | None, champion: ChampionRef | None,
           config: GateConfig, champion_evaluation: str | None = None) -> Blessing:
    """Select the candidate among ``runs`` and gate it: the blessing with every check, bound by digest to every
    file judged. ``baseline``: the variant changes are measured against (None or not a variant of the run:
    none); ``champion``: the registry's production model (None: none yet), judged on ``champion_evaluation``
    (its ``interest evaluate`` output on this run's test split) when given."""
    names = [r.name for r in runs]
    require(len(set(names)) == len(names), "runs", f"names must be unique, got {', '.join(names)}")
    judged_champion = champion_run(champion, champion_evaluation) if champion else None
    comparison = Comparison.of(runs, baseline, bootstrap_of(config), judged_champion)
    candidate = comparison.candidate
    _check_measurements(runs, candidate, judged_champion)
    vs_baseline, no_baseline = _vs_baseline(comparison)
    checks = gate_checks(candidate, vs_baseline, comparison.vs_champion, config, no_baseline)
    inputs = {"candidate_model": _digests(candidate.model_dir, MODEL_FILES)}
    if judged_champion is not None:
        inputs["champion_model"] = _digests(judged_champion.model_dir, MODEL_FILES)
    for role, directory in (("candidate_valid", candidate.valid_dir), ("candidate_test", candidate.test_dir),
                            ("champion_test", judged_champion.test_dir if judged_champion else None)):
        if directory:
            inputs[role] = _digests(directory, EVALUATION_FILES)
    # The other runs the differences averaged over: the candidate's variant's and the baseline's.
    compared = {candidate.variant, *([comparison.baseline] if vs_baseline else [])}
    for run in runs:
        if run.variant in compared and run is not candidate and run.test_dir:
            inputs[_evaluation_role(run)] = _digests(run.test_dir, EVALUATION_FILES)
            inputs[_model_role(run)] = _digests(run.model_dir, MODEL_FILES)
    champion_record = None
    if champion is not None:
        same_data = (judged_champion.data_digest is not None
                     and judged_champion.data_digest == candidate.data_digest)
        champion_record = {"version": champion.version, "path": champion.path,
                           "evaluation": judged_champion.test_dir, "re_evaluated": champion_evaluation is not None,
                           "same_data": same_data}
    return Blessing(
        blessed=all(c.passed for c in checks),
        candidate={"name": candidate.name, "variant": candidate.variant, "seed": candidate.seed,
                   "model_dir": candidate.model_dir, "valid_dir": candidate.valid_dir, "test_dir": candidate.test_dir},
        candidate_metrics={k: finite_or_none(v) for k, v in candidate.test.items()},
        baseline=comparison.baseline,
        champion=champion_record,
        champion_generation=champion.generation if champion else 0,
        checks=checks,
        config=to_dict(config),
        runs={r.name: {f"valid_{METRIC}": finite_or_none(r.valid_recall), "variant": r.variant, "seed": r.seed}
              for r in runs},
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
        expected = set(MODEL_FILES if role.endswith("_model") or role.startswith(MODEL_ROLE_PREFIX)
                       else EVALUATION_FILES) & set(complete.files)
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
    measured_by = [("candidate_test", "candidate_model", "test"), ("candidate_valid", "candidate_model", "valid"),
                   ("champion_test", "champion_model", "test"),
                   *((role, MODEL_ROLE_PREFIX + role.removeprefix(TEST_ROLE_PREFIX), "test")
                     for role in sorted(dirs) if role.startswith(TEST_ROLE_PREFIX))]
    today = None
    for evaluation_role, model_role, split in measured_by:
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

    def evaluated(name: str, role: str, variant: str = "") -> Run | None:
        directory = dirs.get(role)
        if directory is None:
            return None
        return Run(name=name, variant=variant, model_dir="", test_dir=directory,
                   test=contract.read_json(directory, contract.METRICS), per_user=contract.read_per_user(directory))

    candidate_variant = str(blessing.candidate.get("variant") or blessing.candidate.get("name"))
    candidate = evaluated(str(blessing.candidate.get("name")), "candidate_test", candidate_variant)
    others = [evaluated(role.removeprefix("test:"), role, str(blessing.runs.get(role.removeprefix("test:"), {})
                                                                .get("variant", "")))
              for role in dirs if role.startswith("test:")]
    bootstrap = bootstrap_of(config)
    vs_baseline, no_baseline = None, NO_BASELINE
    if blessing.baseline == candidate_variant:
        no_baseline = CANDIDATE_IS_BASELINE
    elif blessing.baseline is not None:
        baseline_runs = [r for r in others if r.variant == blessing.baseline]
        if not baseline_runs:
            raise BlessingInvalid("blessing names a baseline but binds no evaluation of it; re-run the gate")
        vs_baseline = difference([candidate, *(r for r in others if r.variant == candidate_variant)], baseline_runs,
                                 "test", blessing.baseline, bootstrap)
    vs_champion = None
    if blessing.champion is not None:
        champion = evaluated(f"champion {blessing.champion.get('version')}", "champion_test")
        if champion is None:
            raise BlessingInvalid("blessing names a champion but binds no evaluation of it; re-run the gate")
        vs_champion = difference([candidate, *(r for r in others if r.variant == candidate_variant)], [champion],
                                 "test", champion.name, bootstrap)
    if not _same_value(dict(blessing.candidate_metrics), {k: finite_or_none(v) for k, v in candidate.test.items()}):
        raise BlessingInvalid("blessing's candidate_metrics are not its test evaluation's metrics.json; re-run the gate")
    recomputed = {c.name: c for c in gate_checks(candidate, vs_baseline, vs_champion, config, no_baseline)}
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
