"""The one comparison (release.comparison): intervals across seeds, the paired bootstrap over users with several
seeds, relative changes whose interval takes the ratio within each resample, the significance label, the gate's
one candidate out of a replicated grid, and the gate and the report agreeing on every number."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from release.comparison import (
    NOT_SIGNIFICANT,
    SIGNIFICANT,
    Bootstrap,
    Comparison,
    difference,
    select_candidate,
    select_variant,
)
from release.gate import decide
from release.records import Run, variants_of
from release.stats import Interval, paired_bootstrap, replicate_bootstrap
from tests.support.fake_artifacts import LENIENT, write_run

USERS = 2000


def per_user(hits: np.ndarray, order: np.ndarray | None = None) -> dict:
    index = np.arange(len(hits)) if order is None else order
    return {"user_id": np.array([f"u{i:05d}" for i in index]), "user_index": index, "recall@10": hits[index]}


def hits_at(rate: float, seed: int, users: int = USERS) -> np.ndarray:
    return (np.random.default_rng(seed).random(users) < rate).astype(float)


def run(name: str, valid: np.ndarray, test: np.ndarray, variant: str = "", seed: int | None = None) -> Run:
    return Run(name=name, variant=variant, seed=seed, model_dir=f"/m/{name}", valid_dir=f"/v/{name}",
               test_dir=f"/t/{name}", summary={"params": 1000, "train_seconds": 10.0},
               valid={"recall@10": float(valid.mean())}, test={"recall@10": float(test.mean())},
               per_user=per_user(test), valid_per_user=per_user(valid))


@pytest.mark.parametrize("n, expected", [(2, 12.706), (3, 4.303), (5, 2.776), (11, 2.228), (31, 2.042)])
def test_intervals_across_seeds_use_the_tabulated_t_quantiles(n, expected):
    values = [0.3 + 0.01 * (i % 2) for i in range(n)]
    interval = Interval.across(values)
    half = expected * np.std(values, ddof=1) / n ** 0.5
    assert interval.high - interval.mean == pytest.approx(half, rel=3e-4)  # the table has 3 decimals


def test_an_interval_across_seeds_is_the_t_interval_and_one_seed_has_none():
    interval = Interval.across([0.30, 0.31, 0.32])
    assert interval.mean == pytest.approx(0.31)
    assert (interval.low, interval.high) == pytest.approx((0.31 - 4.303 * 0.01 / 3 ** 0.5, 0.31 + 4.303 * 0.01 / 3 ** 0.5),
                                                          abs=1e-5)
    single = Interval.across([0.30])
    assert single.n == 1 and np.isnan(single.low) and np.isnan(single.high)


def test_one_run_a_side_is_exactly_the_gates_paired_bootstrap():
    a, b = hits_at(0.3, 1), hits_at(0.3, 2)
    order = np.random.default_rng(3).permutation(USERS)  # the same users in another order: paired by id
    assert replicate_bootstrap([per_user(a)], [per_user(b, order)]) == paired_bootstrap(per_user(a), per_user(b, order))


def test_seeds_are_never_counted_as_more_users():
    a, b = hits_at(0.32, 1), hits_at(0.30, 2)
    once = replicate_bootstrap([per_user(a)], [per_user(b)])
    thrice = replicate_bootstrap([per_user(a)] * 3, [per_user(b)] * 3)  # three identical seeds: no new evidence
    assert thrice == once and thrice["users"] == USERS


def test_the_difference_averages_each_users_seeds():
    a1, a2, b = hits_at(0.4, 1), hits_at(0.2, 2), hits_at(0.3, 3)
    result = replicate_bootstrap([per_user(a1), per_user(a2)], [per_user(b)])
    assert result["mean_diff"] == pytest.approx(((a1 + a2) / 2 - b).mean())
    assert result["ci_low"] < result["mean_diff"] < result["ci_high"]


def test_significance_follows_whether_the_interval_contains_zero():
    base = hits_at(0.3, 1)
    better = base.copy()
    better[np.flatnonzero(base == 0)[:200]] = 1  # 200 more users hit, none lost: +10 points
    noise = hits_at(0.3, 9)  # an unrelated model with the same recall
    baseline = [run("baseline", base, base)]
    clear = difference([run("better", better, better)], baseline, "test", "baseline", Bootstrap())
    unclear = difference([run("noise", noise, noise)], baseline, "test", "baseline", Bootstrap())
    assert clear.bootstrap["ci_low"] > 0 and clear.significant and clear.label == SIGNIFICANT
    assert unclear.bootstrap["ci_low"] < 0 < unclear.bootstrap["ci_high"] and unclear.label == NOT_SIGNIFICANT
    relative = 200 / base.sum()  # +200 hits over the baseline's
    assert clear.change == pytest.approx(relative)
    assert clear.text() == (f"{relative:+.1%} [{clear.bootstrap['relative_low']:+.1%}, "
                            f"{clear.bootstrap['relative_high']:+.1%}]")


def test_summaries_group_replicates_and_compare_each_with_the_baseline():
    runs = [run(f"{name}-seed{s}", hits_at(rate, s), hits_at(rate, 10 + s), name, s)
            for name, rate in (("baseline", 0.3), ("wide", 0.36)) for s in (1, 2, 3)]
    base, wide = Comparison.of(runs, "baseline").variants
    assert (base.name, base.is_baseline, base.vs_baseline) == ("baseline", True, {"valid": None, "test": None})
    assert wide.variant.seeds == [1, 2, 3] and wide.recall["test"].n == 3
    assert wide.recall["test"].low < wide.recall["test"].mean < wide.recall["test"].high
    assert wide.vs_baseline["test"].significant and wide.vs_baseline["valid"].significant


def test_the_gate_picks_the_best_mean_variant_and_its_best_validated_seed():
    def seeds(name: str, valid_rates: tuple[float, ...]) -> list[Run]:
        return [run(f"{name}-seed{i}", hits_at(rate, i), hits_at(0.3, i), name, i)
                for i, rate in enumerate(valid_rates, 1)]

    lucky = seeds("lucky", (0.20, 0.20, 0.40))  # the single best run, but the worse variant on average
    steady = seeds("steady", (0.31, 0.33, 0.32))
    chosen = select_variant(variants_of(lucky + steady))
    assert [r.name for r in chosen.runs] == ["steady-seed1", "steady-seed2", "steady-seed3"]
    assert select_candidate(chosen.runs).name == "steady-seed2"


def replicated_runs(tmp_path: Path) -> list[Run]:
    runs = []
    for name, seed, rate in (("baseline", 1, 0.30), ("baseline", 2, 0.25), ("swiglu", 1, 0.33), ("swiglu", 2, 0.34)):
        model_dir, test_dir = write_run(tmp_path, f"{name}-seed{seed}", seed * 7 + len(name), hit_rate=rate)
        loaded = Run.load(name=f"{name}-seed{seed}", model_dir=model_dir, test_dir=test_dir, variant=name, seed=seed)
        runs.append(Run(name=loaded.name, variant=name, seed=seed, model_dir=loaded.model_dir,
                        test_dir=loaded.test_dir, summary=loaded.summary, valid={"recall@10": rate},
                        test=loaded.test, per_user=loaded.per_user))
    return runs


def test_decide_with_replicates_gates_the_candidates_variant_against_every_baseline_run(tmp_path: Path):
    blessing = decide(replicated_runs(tmp_path), "baseline", None, LENIENT)
    assert blessing.candidate["name"] == "swiglu-seed2" and blessing.candidate["variant"] == "swiglu"
    assert blessing.baseline == "baseline"
    # The difference averages over every seed of both variants: each of those evaluations is bound.
    assert {role: bound["dir"].split("/")[-2] for role, bound in blessing.inputs.items() if role.startswith("test:")} \
        == {"test:swiglu-seed1": "swiglu-seed1", "test:baseline-seed1": "baseline-seed1",
            "test:baseline-seed2": "baseline-seed2"}
    assert blessing.runs["swiglu-seed1"] == {"valid_recall@10": 0.33, "variant": "swiglu", "seed": 1}


def test_the_gate_and_the_report_agree_on_every_number(tmp_path: Path):
    """The gate's baseline checks and the report's row of the candidate's variant are one Difference: with seeds
    they once compared best-validated runs (the gate) and means over seeds (the report)."""
    from release.report import write_report
    from release.stats import relative_change

    runs = replicated_runs(tmp_path)
    blessing = decide(runs, "baseline", None, LENIENT)
    write_report(runs, blessing, str(tmp_path / "r.html"), str(tmp_path / "r.md"), baseline="baseline",
                 output_json=str(tmp_path / "c.json"))
    report = json.loads((tmp_path / "c.json").read_text())
    row = next(v for v in report["variants"] if v["name"] == blessing.candidate["variant"])["test_vs_baseline"]
    checks = {c.name: c for c in blessing.checks}
    assert checks["change_vs_baseline"].value == pytest.approx(row["change"], rel=1e-12)
    bootstrap = checks["bootstrap_vs_baseline"].value
    for key in ("mean_diff", "ci_low", "ci_high", "relative_low", "relative_high", "users"):
        assert bootstrap[key] == pytest.approx(row[key], rel=1e-12), key
    means = {name: np.mean([r.test_recall for r in runs if r.variant == name]) for name in ("swiglu", "baseline")}
    assert row["change"] == pytest.approx(relative_change(means["swiglu"], means["baseline"]))
    assert f"{row['change']:+.2%}" in checks["change_vs_baseline"].reason
    assert report["candidate"] == blessing.candidate["name"]


def test_a_relative_interval_cannot_pass_minus_100_percent():
    """The issue's case: 12 users, the variant hits 5 others than the baseline's 6. Dividing the resampled
    difference by the observed baseline mean printed -16.7% [-116.7%, +100.0%]; the ratio within each resample
    stays above -100%."""
    base, other = np.zeros(12), np.zeros(12)
    base[:6], other[6:11] = 1, 1
    vs = difference([run("other", other, other)], [run("baseline", base, base)], "test", "baseline", Bootstrap())
    low, high = vs.bootstrap["relative_low"], vs.bootstrap["relative_high"]
    assert vs.change == pytest.approx(-1 / 6) and vs.text().startswith("-16.7% [")
    assert vs.bootstrap["ci_low"] / vs.reference_value < -1.0  # the old way out of range
    assert -1.0 <= low < vs.change < high
