"""Candidate selection, the paired bootstrap and the gate's truth table (release.gate.gate_checks on Run
records; ``decide`` and ``verify`` on real directories are in test_blessing_integrity.py)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from core import configs
from release.comparison import difference, select_candidate
from release.gate import GateConfig, bootstrap_of, gate_checks
from release.records import Run
from release.stats import paired_bootstrap

USERS = 1000


def per_user(hits: np.ndarray, order: np.ndarray | None = None) -> dict:
    index = np.arange(len(hits)) if order is None else order
    return {"user_index": index, "user_id": np.array([f"u{i}" for i in index]), "recall@10": hits[index].astype(float)}


def variant(name: str, hits: np.ndarray | None, norm: float = 100.0, **test) -> Run:
    metrics = {"recall@10": float(hits.mean()) if hits is not None else None, "ndcg@10": 0.1, "mrr": 0.1,
               "user_norm_mean": norm, **test}
    return Run(name=name, model_dir=f"/models/{name}", test_dir=f"/eval/{name}", test=metrics,
               per_user=per_user(hits) if hits is not None else None)


def with_test(v: Run, **changes) -> Run:
    return Run(name=v.name, model_dir=v.model_dir, valid_dir=v.valid_dir, test_dir=v.test_dir, summary=v.summary,
               valid=v.valid, test={**v.test, **changes}, per_user=v.per_user)


def versus(candidate: Run, reference: Run | None, config: GateConfig):
    """The candidate vs one reference run, as release.comparison defines it (None: no reference)."""
    return difference([candidate], [reference], "test", reference.name, bootstrap_of(config)) if reference else None


def checks_of(candidate: Run, baseline: Run | None, champion: Run | None, config: GateConfig):
    return gate_checks(candidate, versus(candidate, baseline, config), versus(candidate, champion, config), config)


def gate(candidate: Run, baseline: Run | None, champion: Run | None, config: GateConfig) -> dict:
    checks = checks_of(candidate, baseline, champion, config)
    return {"blessed": all(c.passed for c in checks), "checks": [vars(c) for c in checks]}


def flip(hits: np.ndarray, down: int, up: int, seed: int = 0) -> np.ndarray:
    """A copy with ``down`` hits turned into misses and ``up`` misses into hits (paired changes)."""
    rng = np.random.default_rng(seed)
    out = hits.copy()
    out[rng.choice(np.flatnonzero(hits == 1), down, replace=False)] = 0
    out[rng.choice(np.flatnonzero(hits == 0), up, replace=False)] = 1
    return out


REFERENCE = (np.arange(USERS) % 10 < 3).astype(int)  # Recall@10 = 0.300


def failed(blessing: dict) -> set[str]:
    return {c["name"] for c in blessing["checks"] if not c["passed"]}


@pytest.mark.parametrize(
    "case, candidate_hits, norm, config, expected_failures",
    [
        ("better than both", flip(REFERENCE, 0, 30), 100.0, {}, set()),
        ("same model as both", REFERENCE, 100.0, {}, set()),
        ("recall below the value threshold", flip(REFERENCE, 0, 30), 100.0, {"min_recall_at_10": 0.5},
         {"min_recall@10"}),
        ("user norm too large", flip(REFERENCE, 0, 30), 2000.0, {}, {"max_user_norm_mean"}),
        # -1% relative: fails the change thresholds, but the paired differences go both ways: not significant
        ("small regression", flip(REFERENCE, 20, 17), 100.0, {}, {"change_vs_champion", "change_vs_baseline"}),
        # -10% relative with lax change thresholds: only the bootstrap catches it
        ("significant regression", flip(REFERENCE, 30, 0), 100.0,
         {"min_change_vs_champion": -0.5, "min_change_vs_baseline": -0.5},
         {"bootstrap_vs_champion", "bootstrap_vs_baseline"}),
    ],
)
def test_truth_table(case, candidate_hits, norm, config, expected_failures):
    blessing = gate(variant("candidate", candidate_hits, norm), variant("baseline", REFERENCE),
                    variant("champion v1", REFERENCE), GateConfig(**config))
    assert failed(blessing) == expected_failures, case
    assert blessing["blessed"] is (not expected_failures)
    assert len(blessing["checks"]) == 7
    assert all(set(c) == {"name", "value", "threshold", "passed", "reason"} for c in blessing["checks"])
    json.dumps(blessing, allow_nan=False)  # strict JSON


def test_no_champion_blesses_a_model_that_passes_the_value_thresholds():
    blessing = gate(variant("candidate", REFERENCE), None, None, GateConfig())
    assert blessing["blessed"]
    skipped = [c for c in blessing["checks"] if c["reason"].startswith("skipped")]
    assert {c["name"] for c in skipped} == {"change_vs_champion", "bootstrap_vs_champion", "change_vs_baseline",
                                            "bootstrap_vs_baseline"}
    assert not gate(variant("candidate", REFERENCE, 5000.0), None, None, GateConfig())["blessed"]


@pytest.mark.parametrize("bad", [float("nan"), None, "n/a", float("inf")])
def test_nan_or_missing_metrics_always_fail(bad):
    candidate = variant("candidate", flip(REFERENCE, 0, 30))
    candidate = with_test(candidate, **{"recall@10": bad})
    blessing = gate(candidate, None, None, GateConfig())
    assert not blessing["blessed"]
    assert {"metrics_present_and_finite", "min_recall@10"} <= failed(blessing)
    json.dumps(blessing, allow_nan=False)


def test_missing_norm_and_missing_per_user_fail():
    full = variant("candidate", REFERENCE)
    candidate = Run(name=full.name, model_dir=full.model_dir, test_dir=full.test_dir,
                    test={k: v for k, v in full.test.items() if k != "user_norm_mean"}, per_user=full.per_user)
    with_metrics = variant("champion v1", REFERENCE)
    champion = Run(name=with_metrics.name, model_dir="", test=with_metrics.test, per_user=None)
    assert failed(gate(candidate, None, champion, GateConfig())) == {
        "metrics_present_and_finite", "max_user_norm_mean", "change_vs_champion", "bootstrap_vs_champion"}


def test_per_user_values_of_different_users_do_not_pair():
    candidate = variant("candidate", REFERENCE)
    baseline = variant("baseline", REFERENCE)
    baseline.per_user["user_id"] = np.array([f"other-{i}" for i in range(USERS)])
    blessing = gate(candidate, baseline, None, GateConfig())
    check = next(c for c in blessing["checks"] if c["name"] == "bootstrap_vs_baseline")
    assert not check["passed"] and "not comparable: 0 shared of 1000 and 1000 users" in check["reason"]


def test_bootstrap_is_deterministic_and_pairs_by_user_index():
    rng = np.random.default_rng(1)
    a_hits, b_hits = rng.integers(0, 2, 500), rng.integers(0, 2, 500)
    a = per_user(a_hits)
    b = per_user(b_hits, order=rng.permutation(500))  # same users, another row order
    first = paired_bootstrap(a, b, resamples=1000, seed=3)
    assert first == paired_bootstrap(a, b, resamples=1000, seed=3)
    assert first != paired_bootstrap(a, b, resamples=1000, seed=4)
    assert first["mean_diff"] == pytest.approx(a_hits.mean() - b_hits.mean())
    assert first["ci_low"] <= first["mean_diff"] <= first["ci_high"]
    constant = paired_bootstrap(per_user(np.ones(50)), per_user(np.zeros(50)), resamples=200)
    assert constant["ci_low"] == constant["ci_high"] == 1.0


def test_bootstrap_interval_matches_the_normal_approximation():
    rng = np.random.default_rng(0)
    diffs = rng.normal(0.02, 0.3, 4000)
    result = paired_bootstrap({"user_id": np.arange(4000), "recall@10": diffs},
                              {"user_id": np.arange(4000), "recall@10": np.zeros(4000)}, resamples=2000)
    half_width = 1.96 * diffs.std() / math.sqrt(len(diffs))
    assert result["ci_high"] - result["ci_low"] == pytest.approx(2 * half_width, rel=0.1)


def test_select_candidate_ties_fewer_params_then_faster():
    def v(name, recall, params, seconds):
        return Run(name=name, model_dir="", summary={"params": params, "train_seconds": seconds},
                   valid={"recall@10": recall})

    variants = [v("a", 0.30, 200, 10), v("b", 0.31, 300, 50), v("c", 0.31, 100, 90), v("d", 0.31, 100, 20),
                v("nan", float("nan"), 1, 1)]
    assert select_candidate(variants).name == "d"
    assert select_candidate([v("nan", float("nan"), 1, 1), v("a", 0.1, 5, 5)]).name == "a"
    from_summary = Run(name="s", model_dir="", summary={"best": {"valid_recall@10": 0.5}, "params": 1,
                                                        "train_seconds": 1})
    assert select_candidate([*variants, from_summary]).name == "s"
    with pytest.raises(ValueError):
        select_candidate([])


def test_gate_config_loads_from_a_file_and_names_bad_fields(tmp_path):
    path = tmp_path / "gate.yaml"
    path.write_text("min_recall_at_10: 0.2\nbootstrap_resamples: 500\n")
    cfg = configs.load(GateConfig, path, ["confidence=0.9"])
    assert (cfg.min_recall_at_10, cfg.bootstrap_resamples, cfg.confidence) == (0.2, 500, 0.9)
    with pytest.raises(configs.ConfigError, match="GateConfig.confidence"):
        configs.load(GateConfig, path, ["confidence=1.5"])
    with pytest.raises(configs.ConfigError, match="unknown field"):
        configs.load(GateConfig, path, ["min_recal=0.1"])


def hits_of(count: int) -> np.ndarray:
    """USERS users of which the first ``count`` hit: Recall@10 = count / 1000, exact in float for the values used."""
    return (np.arange(USERS) < count).astype(int)


def check_passed(candidate: Run, reference: Run | None, config: GateConfig, name: str) -> bool:
    return next(c for c in checks_of(candidate, reference, reference, config) if c.name == name).passed


@pytest.mark.parametrize("name, config, at_threshold, past_threshold", [
    # Recall@10 0.25 == min 0.25 passes; 0.249 fails.
    ("min_recall@10", {"min_recall_at_10": 0.25}, variant("c", hits_of(250)), variant("c", hits_of(249))),
    # user norm 1000.0 == max 1000.0 passes; 1000.5 fails.
    ("max_user_norm_mean", {"max_user_norm_mean": 1000.0}, variant("c", hits_of(250), 1000.0),
     variant("c", hits_of(250), 1000.5)),
    # (0.375 - 0.5) / 0.5 = -0.25 exactly == the threshold passes; (0.374 - 0.5) / 0.5 = -0.252 fails.
    ("change_vs_champion", {"min_change_vs_champion": -0.25}, variant("c", hits_of(375)), variant("c", hits_of(374))),
    ("change_vs_baseline", {"min_change_vs_baseline": -0.25}, variant("c", hits_of(375)), variant("c", hits_of(374))),
])
def test_a_value_exactly_at_a_threshold_passes_and_one_just_past_it_fails(name, config, at_threshold,
                                                                          past_threshold):
    reference = variant("reference", hits_of(500))  # Recall@10 0.5: baseline and champion alike
    cfg = GateConfig(**config)
    assert check_passed(at_threshold, reference, cfg, name), name
    assert not check_passed(past_threshold, reference, cfg, name), name


def test_bootstrap_pairs_by_user_id_whatever_the_row_order():
    """The interval depends on which users are paired, never on the order rows come in; pairing other users'
    values (the same multiset, so the same means) gives another interval."""
    rng = np.random.default_rng(5)
    a_hits = (rng.random(400) < 0.6).astype(int)
    b_hits = np.where(rng.random(400) < 0.7, a_hits, 1 - a_hits)  # correlated with a: pairing narrows the CI
    a, b_sorted = per_user(a_hits), per_user(b_hits)
    b_shuffled = per_user(b_hits, order=rng.permutation(400))
    mismatched = {**b_sorted, "recall@10": b_sorted["recall@10"][rng.permutation(400)]}
    sorted_result = paired_bootstrap(a, b_sorted, resamples=500, seed=1)
    assert paired_bootstrap(a, b_shuffled, resamples=500, seed=1) == sorted_result
    assert paired_bootstrap(b_shuffled, a, resamples=500, seed=1)["mean_diff"] == -sorted_result["mean_diff"]
    other = paired_bootstrap(a, mismatched, resamples=500, seed=1)
    assert other["mean_diff"] == sorted_result["mean_diff"]
    assert (other["ci_low"], other["ci_high"]) != (sorted_result["ci_low"], sorted_result["ci_high"])
    assert other["ci_high"] - other["ci_low"] > sorted_result["ci_high"] - sorted_result["ci_low"]
