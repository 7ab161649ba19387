"""Comparisons with replicates: intervals across seeds, the paired bootstrap over users with several seeds, the
significance label, and the gate's one candidate out of a replicated grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from release.compare import NOT_SIGNIFICANT, SIGNIFICANT, Interval, paired_difference, summarize, t_quantile
from release.gate import decide, paired_bootstrap, replicate_bootstrap, select_candidate, select_variant
from release.records import Variant
from tests.support.fake_artifacts import LENIENT, write_run

USERS = 2000


def per_user(hits: np.ndarray, order: np.ndarray | None = None) -> dict:
    index = np.arange(len(hits)) if order is None else order
    return {"user_id": np.array([f"u{i:05d}" for i in index]), "user_index": index, "recall@10": hits[index]}


def hits_at(rate: float, seed: int, users: int = USERS) -> np.ndarray:
    return (np.random.default_rng(seed).random(users) < rate).astype(float)


def run(name: str, valid: np.ndarray, test: np.ndarray, group: str | None = None, seed: int | None = None) -> Variant:
    return Variant(name, f"/m/{name}", f"/v/{name}", f"/t/{name}", {"params": 1000, "train_seconds": 10.0},
                   {"recall@10": float(valid.mean())}, {"recall@10": float(test.mean())}, per_user(test), {},
                   group, seed, {}, per_user(valid))


@pytest.mark.parametrize("df, expected", [(1, 12.706), (2, 4.303), (4, 2.776), (10, 2.228), (30, 2.042)])
def test_t_quantiles_match_the_table(df, expected):
    assert t_quantile(0.975, df) == pytest.approx(expected, abs=1e-3)


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
    clear = paired_difference([run("better", better, better)], baseline, "test")
    unclear = paired_difference([run("noise", noise, noise)], baseline, "test")
    assert clear.ci_low > 0 and clear.significant and clear.label == SIGNIFICANT
    assert unclear.ci_low < 0 < unclear.ci_high and unclear.label == NOT_SIGNIFICANT
    relative = 200 / base.sum()  # +200 hits over the baseline's
    assert clear.text() == f"{relative:+.1%} [{clear.relative(clear.ci_low):+.1%}, {clear.relative(clear.ci_high):+.1%}]"


def test_summaries_group_replicates_and_compare_each_with_the_baseline():
    runs = [run(f"{name}-seed{s}", hits_at(rate, s), hits_at(rate, 10 + s), name, s)
            for name, rate in (("baseline", 0.3), ("wide", 0.36)) for s in (1, 2, 3)]
    base, wide = summarize(runs, "baseline")
    assert (base.name, base.is_baseline, base.delta) == ("baseline", True, {"valid": None, "test": None})
    assert wide.seeds == [1, 2, 3] and wide.recall["test"].n == 3
    assert wide.recall["test"].low < wide.recall["test"].mean < wide.recall["test"].high
    assert wide.delta["test"].significant and wide.delta["valid"].significant


def test_the_gate_picks_the_best_mean_variant_and_its_best_validated_seed():
    def seeds(name: str, valid_rates: tuple[float, ...]) -> list[Variant]:
        return [run(f"{name}-seed{i}", hits_at(rate, i), hits_at(0.3, i), name, i)
                for i, rate in enumerate(valid_rates, 1)]

    lucky = seeds("lucky", (0.20, 0.20, 0.40))  # the single best run, but the worse variant on average
    steady = seeds("steady", (0.31, 0.33, 0.32))
    chosen = select_variant(lucky + steady)
    assert [v.name for v in chosen] == ["steady-seed1", "steady-seed2", "steady-seed3"]
    assert select_candidate(chosen).name == "steady-seed2"


def test_decide_with_replicates_gates_one_candidate_against_the_baselines_best_validated_run(tmp_path: Path):
    variants = []
    for name, seed, rate in (("baseline", 1, 0.30), ("baseline", 2, 0.25), ("swiglu", 1, 0.33), ("swiglu", 2, 0.34)):
        model_dir, test_dir = write_run(tmp_path, f"{name}-seed{seed}", seed * 7 + len(name), hit_rate=rate)
        loaded = Variant.load(f"{name}-seed{seed}", model_dir, None, test_dir, name, seed)
        variants.append(Variant(loaded.name, loaded.model_dir, None, loaded.test_dir, loaded.summary,
                                {"recall@10": rate}, loaded.test, loaded.per_user, {}, name, seed))
    blessing = decide(variants, "baseline", None, LENIENT)
    assert blessing.candidate["name"] == "swiglu-seed2" and blessing.candidate["variant"] == "swiglu"
    assert blessing.inputs["baseline_test"]["dir"].endswith("baseline-seed1/eval-test")
    assert blessing.variants["swiglu-seed1"] == {"valid_recall@10": 0.33, "variant": "swiglu", "seed": 1}
