"""The gate talked round, the way a second review tried it (issue 24): real tiny models trained and evaluated
through the CLI, a weak one shipped five ways. Each test here shipped the weak model (exit 0) on the code before
evaluations named what they measured, the policy came from the pipeline and the champion claim was checked."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from core import contract, rundir
from pipelines import cli
from release import registry
from release.gate import BlessingInvalid, EvaluationMismatch, GateConfig, decide
from release.records import Run
from tests.support.data import write_preprocessed
from tests.support.fake_artifacts import LENIENT, LENIENT_POLICY, write_evaluation

TINY = ["--set", "d_model=16", "--set", "n_layer=1", "--set", "n_head=2", "--set", "max_len=12", "--set",
        "batch_size=6", "--set", "dropout=0.0"]


def load(name: str, model_dir: str, valid_dir: str | None, test_dir: str | None) -> Run:
    return Run.load(name=name, model_dir=str(model_dir), valid_dir=valid_dir and str(valid_dir),
                    test_dir=test_dir and str(test_dir))


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Two real models on one data set (good: 30 steps; weak: 1 step, another seed), each evaluated on valid and
    test, and a second data set (other users) with good evaluated on it."""
    root = tmp_path_factory.mktemp("runs")
    data, other = write_preprocessed(root / "data"), write_preprocessed(root / "other-data", seed=9)
    out = {"data": data, "other-data": other}
    for name, steps, seed in (("good", 30, 0), ("weak", 1, 7)):
        model = root / "m" / name
        assert cli.main(["train", "--data", str(data), "--output", str(model), *TINY, "--max-steps", str(steps),
                         "--set", f"seed={seed}"]) == 0
        out[name] = model
        for split in ("valid", "test"):
            out[f"{name}-{split}"] = root / "e" / f"{name}-{split}"
            assert cli.main(["evaluate", "--model", str(model), "--data", str(data), "--split", split,
                             "--output", str(out[f"{name}-{split}"])]) == 0
    out["good-other-test"] = root / "e" / "good-other-test"
    assert cli.main(["evaluate", "--model", str(out["good"]), "--data", str(other), "--output",
                     str(out["good-other-test"])]) == 0
    return out


def test_an_evaluation_names_the_model_data_split_protocol_and_catalogue_it_measured(runs):
    metrics = contract.read_json(str(runs["weak-test"]), contract.METRICS)
    measured = metrics[contract.MEASURED_KEY]
    assert measured == contract.read_measured(str(runs["weak-test"]))  # beside per_user.parquet too
    assert measured["model_sha256"] == rundir.sha256_of(str(runs["weak"] / "model.pt"))
    assert measured["data_digest"] == rundir.open_complete(str(runs["data"])).content_digest
    assert (measured["split"], measured["items"]) == ("test", 40) and measured["protocol"] == metrics["protocol"]


def test_the_weak_model_with_the_good_models_evaluations_is_refused(runs, tmp_path, capsys):
    """Finding 3: `interest gate --variant name=weak,model=m/weak,valid=e/good-valid,test=e/good-test`."""
    variant = f"name=weak,model={runs['weak']},valid={runs['good-valid']},test={runs['good-test']}"
    argv = ["gate", "--variant", variant, "--baseline", "none", "--registry", str(tmp_path / "r"),
            "--output", str(tmp_path / "blessing.json")]
    assert cli.main(argv) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "given as weak's test evaluation) measured a model.pt of sha256" in line
    assert not (tmp_path / "blessing.json").exists()


def test_an_evaluation_of_other_data_or_split_is_refused(runs, tmp_path):
    weak = load("good", str(runs["good"]), str(runs["good-test"]), str(runs["good-other-test"]))
    with pytest.raises(EvaluationMismatch) as refused:
        decide([weak], None, None, LENIENT)
    assert "was trained on" in str(refused.value) or "data_digest" in str(refused.value)
    swapped = load("good", str(runs["good"]), str(runs["good-test"]), str(runs["good-test"]))
    with pytest.raises(EvaluationMismatch, match="measured the 'test' split, not 'valid'"):
        decide([swapped], None, None, LENIENT)


def test_metrics_and_per_user_values_of_two_evaluations_put_together_are_refused(runs, tmp_path):
    mixed = tmp_path / "mixed"
    with rundir.writing(str(mixed), contract.EVALUATION_KIND) as staging:
        shutil.copy(runs["good-test"] / contract.METRICS, staging.join(contract.METRICS))
        shutil.copy(runs["weak-test"] / contract.PER_USER, staging.join(contract.PER_USER))
    variant = load("good", str(runs["good"]), None, str(mixed))
    with pytest.raises(EvaluationMismatch, match="name different measurements"):
        decide([variant], None, None, LENIENT)


def push_champion(runs, root: str, name: str = "good") -> registry.ChampionRef:
    blessing = decide([load(name, str(runs[name]), str(runs[f"{name}-valid"]), str(runs[f"{name}-test"]))],
                      None, None, LENIENT)
    registry.push(blessing, root, version=f"{name}-v1", policy=LENIENT_POLICY)
    return registry.read_champion(root)


def test_a_champion_evaluation_of_another_model_is_refused(runs, tmp_path):
    """--champion-eval must measure the champion version's own model.pt, on this run's data."""
    champion = push_champion(runs, str(tmp_path / "registry"))
    weak = load("weak", str(runs["weak"]), str(runs["weak-valid"]), str(runs["weak-test"]))
    with pytest.raises(EvaluationMismatch, match="given as champion good-v1's test evaluation"):
        decide([weak], None, champion, LENIENT, champion_evaluation=str(runs["weak-test"]))


def forged_no_champion(blessing: dict) -> dict:
    checks = [{**c, "value": None, "threshold": None, "passed": True, "reason": "skipped: no production champion yet"}
              if c["name"].endswith("_vs_champion") else c for c in blessing["checks"]]
    inputs = {k: v for k, v in blessing["inputs"].items() if not k.startswith("champion_")}
    return {**blessing, "champion": None, "checks": checks, "inputs": inputs, "blessed": True}


def test_a_blessing_that_says_there_is_no_champion_is_refused(runs, tmp_path, capsys):
    """Finding 1: champion null, its checks marked skipped, blessed true; the pointer at the blessing's
    generation names a champion."""
    root = str(tmp_path / "registry")
    champion = push_champion(runs, root)
    weak = load("weak", str(runs["weak"]), str(runs["weak-valid"]), str(runs["weak-test"]))
    honest = decide([weak], None, champion, LENIENT, champion_evaluation=str(runs["good-test"])).to_json()
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps(forged_no_champion(honest)))
    with pytest.raises(BlessingInvalid, match="the registry's pointer at generation 1 names 'good-v1'"):
        registry.push(json.loads(forged.read_text()), root, policy=LENIENT_POLICY)
    assert registry.read_champion(root).version == "good-v1"


def test_a_blessing_judged_by_its_own_lower_thresholds_is_refused(runs, tmp_path, capsys):
    """Finding 2: the weak model gated with thresholds of its choosing; the push holds it to the pipeline's
    policy (recorded with the registry here; the pipeline's push task passes its own GateConfig)."""
    root = str(tmp_path / "registry")
    policy = registry.Policy(GateConfig(min_recall_at_10=0.9))
    registry.record_policy(root, "interest", policy)
    variant = f"name=weak,model={runs['weak']},valid={runs['weak-valid']},test={runs['weak-test']}"
    gate = ["gate", "--variant", variant, "--baseline", "none", "--registry", root, "--output", str(tmp_path / "b.json")]
    assert cli.main([*gate, "--set", "min_recall_at_10=0.9"]) == 0
    assert not json.loads((tmp_path / "b.json").read_text())["blessed"]  # what the pipeline's policy says
    assert cli.main([*gate, "--set", "min_recall_at_10=0"]) == 0
    assert json.loads((tmp_path / "b.json").read_text())["blessed"]
    assert cli.main(["push", "--blessing", str(tmp_path / "b.json"), "--registry", root]) == 3
    err = capsys.readouterr().err
    assert "judged by another policy than this push's (min_recall_at_10 differ)" in err
    assert cli.main(["push", "--blessing", str(tmp_path / "b.json"), "--registry", root, "--set",
                     "min_recall_at_10=0.9"]) == 3  # a policy passed to push: the same rule
    assert registry.read_champion(root) is None and registry.read_policy(root, "interest") == policy


def test_a_candidate_evaluated_on_a_subset_is_not_compared_with_a_full_data_champion(tmp_path):
    """Finding 4: 46 of 300 users, every one a hit, against a champion over all 300: the overlap is measured
    from both sides and the change on paired users, so it is 'not comparable', never +x% 'vs champion'."""
    from tests.support.fake_artifacts import write_run

    champion_model, champion_eval = write_run(tmp_path, "champion", seed=1, hit_rate=0.3)
    root = str(tmp_path / "registry")
    registry.push(decide([load("champion", champion_model, None, champion_eval)], None, None, LENIENT),
                  root, version="v1", policy=LENIENT_POLICY)
    model, _ = write_run(tmp_path, "subset", seed=2)
    users = [f"u{i:04d}" for i in range(0, 300, 300 // 46)][:46]
    subset_eval = write_evaluation(tmp_path / "subset" / "eval-46", Path(model), np.ones(46), users)
    blessing = decide([load("subset", model, None, subset_eval)], None, registry.read_champion(root),
                      GateConfig(min_recall_at_10=0.0, bootstrap_resamples=100))
    checks = {c.name: c for c in blessing.checks}
    assert not blessing.blessed
    for name in ("change_vs_champion", "bootstrap_vs_champion"):
        assert not checks[name].passed and "not comparable: 46 shared of 46 and 300 users" in checks[name].reason


def test_a_blessing_without_the_policys_baseline_is_refused(tmp_path):
    """The no-baseline claim: gated with no baseline (or another one) when the pipeline's policy names one."""
    from tests.support.fake_artifacts import write_run

    runs = {name: write_run(tmp_path, name, seed=seed, hit_rate=0.5 if name == "cand" else 0.3)
            for seed, name in enumerate(("cand", "base", "other"))}
    variants = [load(name, model, None, test) for name, (model, test) in runs.items()]
    policy = registry.Policy(LENIENT, baseline="base")
    for baseline in (None, "other"):
        blessing = decide(variants, baseline, None, LENIENT)
        assert blessing.blessed and blessing.candidate["name"] == "cand"
        with pytest.raises(BlessingInvalid, match=f"compared with baseline {baseline!r}, the policy's is 'base'"):
            registry.push(blessing, str(tmp_path / "registry"), policy=policy)
    assert registry.read_champion(str(tmp_path / "registry")) is None
    assert registry.push(decide(variants, "base", None, LENIENT), str(tmp_path / "registry"),
                         policy=policy).outcome == "pushed"
