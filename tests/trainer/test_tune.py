"""``interest tune``'s search (trainer/tune.py, trainer/tune_space.py, trainer/tune_report.py) on the tiny
learnable data set: a real search of a few trials of a few steps with the real trainer, a pruned trial, a
resumed study, a search killed mid-trial and resumed, and the refusals that keep a search honest."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from optuna.trial import TrialState

from core.configs import ConfigError
from trainer import tune
from trainer.job import resolve_configs
from trainer.tune import TuneConfig, final_test, run_search
from trainer.tune_report import write_results
from trainer.tune_space import TuneSpace

TINY = {"model.d_model": 16, "model.n_layer": 1, "model.n_head": 2, "model.max_len": 12, "model.dropout": 0.0,
        "train.batch_size": 6, "train.eval_every_steps": 4, "train.checkpoint_every_steps": 4,
        "train.patience": 0, "train.log_every_steps": 2}
GOOD_LR, BAD_LR = 1e-2, 1e-7  # a learning rate that learns the walk in a few steps, and one that cannot


def space(**extra) -> TuneSpace:
    """lr searched; the first two trials queued: one that learns, then one that cannot (pruned at step 8)."""
    data = {"preset": "baseline",
            "params": {"train.lr": {"type": "log-float", "low": BAD_LR, "high": GOOD_LR}},
            "fixed": TINY,
            "enqueue": [{"train.lr": GOOD_LR}, {"train.lr": BAD_LR}],
            "pruner": {"type": "successive_halving", "min_resource": 8, "reduction_factor": 2},
            "sampler": {"seed": 0, "n_startup_trials": 1}, **extra}
    return TuneSpace.from_dict(data)


def config(data: Path, out: Path, trials: int, steps: int = 16) -> TuneConfig:
    return TuneConfig(str(data), str(out), trials, budget_steps=steps)


def test_search_prunes_the_worse_trial_and_a_rerun_adds_trials_without_redoing_any(tiny_data, tmp_path):
    cfg = config(tiny_data, tmp_path / "tune", trials=2)
    study = run_search(space(), cfg)
    first, second = study.trials
    assert first.state == TrialState.COMPLETE and first.params == {"train.lr": GOOD_LR}
    assert second.state == TrialState.PRUNED and second.params == {"train.lr": BAD_LR}
    # Pruned at the first rung (step 8), where the first trial stood higher: reported as it trained.
    assert max(second.intermediate_values) == 8
    assert second.intermediate_values[8] < first.intermediate_values[8]
    assert sorted(first.intermediate_values) == [4, 8, 12, 16]
    assert first.value == max(first.intermediate_values.values())
    trial0_model = tmp_path / "tune" / "trials" / "trial-0" / "model.pt"
    exported = trial0_model.stat().st_mtime_ns

    study = run_search(space(), config(tiny_data, tmp_path / "tune", trials=4))
    assert [t.number for t in study.trials] == [0, 1, 2, 3]
    assert [t.state for t in study.trials[:2]] == [TrialState.COMPLETE, TrialState.PRUNED]
    assert study.trials[0].datetime_complete == first.datetime_complete  # not redone
    assert trial0_model.stat().st_mtime_ns == exported
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials[2:])
    assert all(BAD_LR <= t.params["train.lr"] <= GOOD_LR for t in study.trials[2:])

    # The same command once more runs nothing.
    assert len(run_search(space(), config(tiny_data, tmp_path / "tune", trials=4)).trials) == 4

    result = write_results(study, config(tiny_data, tmp_path / "tune", trials=4))
    table = (tmp_path / "tune" / "results.md").read_text()
    assert "| 1 | PRUNED |" in table and "| 0 | COMPLETE |" in table
    assert result["best"]["trial"] == max((t for t in study.trials if t.state == TrialState.COMPLETE),
                                          key=lambda t: t.value).number
    for png in result["plots"].values():
        assert Path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_test_split_is_read_once_for_the_best_trial(tiny_data, tmp_path, monkeypatch):
    cfg = config(tiny_data, tmp_path / "tune", trials=1)
    study = run_search(space(), cfg)
    import trainer.evaluate

    calls = []
    real = trainer.evaluate.evaluate
    monkeypatch.setattr(trainer.evaluate, "evaluate", lambda *a, **k: calls.append(a) or real(*a, **k))
    record = final_test(study, cfg.data, cfg.output)
    assert calls and calls[0][2] == "test" and record["trial"] == 0
    assert 0.0 <= record["test_recall@10"] <= 1.0
    assert final_test(study, cfg.data, cfg.output) == record
    assert len(calls) == 1
    assert study.user_attrs["final_test"] == [record]


@pytest.mark.slow
def test_a_search_killed_mid_trial_resumes_that_trial_from_its_checkpoint(tiny_data, tmp_path):
    out = tmp_path / "tune"
    space_file = tmp_path / "space.json"
    space_file.write_text(json.dumps({
        "preset": "baseline", "params": {"train.lr": {"type": "log-float", "low": 1e-3, "high": 1e-2}},
        "fixed": TINY, "enqueue": [{"train.lr": 3e-3}], "pruner": {"type": "none"}}))
    command = [sys.executable, "-m", "pipelines.cli", "tune", "--space", str(space_file), "--trials", "1",
               "--budget-steps", "400", "--data", str(tiny_data), "--output", str(out)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    checkpoints = out / "trials" / "trial-0" / "checkpoints"
    deadline = time.monotonic() + 120
    while not any(checkpoints.glob("step-*.pt.sha256")) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the search ended before it could be killed mid-trial"

    cfg = TuneConfig(str(tiny_data), str(out), 1, budget_steps=400)
    killed = tune.open_study(TuneSpace.load(str(space_file)), cfg).trials[0]
    assert killed.state == TrialState.RUNNING  # what a SIGKILL leaves in the journal
    study = run_search(TuneSpace.load(str(space_file)), cfg)
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.COMPLETE]
    retry = study.trials[1]
    assert retry.params == {"train.lr": 3e-3} and retry.user_attrs[tune.RETRY_OF] == 0
    summary = json.loads((out / "trials" / "trial-0" / "summary.json").read_text())
    assert summary["resumed_from"] and summary["resumed_from"][0] >= 4 and summary["steps"] == 400
    assert sorted(retry.intermediate_values)[0] == 4  # the killed attempt's validations reported again
    assert tune.finished(study) == 1


def test_data_without_a_validation_event_is_refused(tmp_path, kit):
    data = kit.write_preprocessed(tmp_path / "gr", last_event=True)
    with pytest.raises(ConfigError, match="no validation event"):
        run_search(space(), config(data, tmp_path / "tune", trials=1))


def test_a_study_continues_only_the_same_search(tiny_data, tmp_path):
    run_search(space(), config(tiny_data, tmp_path / "tune", trials=1, steps=8))
    with pytest.raises(ConfigError, match="searched another budget"):
        run_search(space(), config(tiny_data, tmp_path / "tune", trials=2, steps=12))
    other = space(params={"train.lr": {"type": "log-float", "low": 1e-4, "high": GOOD_LR}})
    with pytest.raises(ConfigError, match="searched another space"):
        run_search(other, config(tiny_data, tmp_path / "tune", trials=2, steps=8))


@pytest.mark.parametrize("params, message", [
    ({"model.d_modle": {"type": "int", "low": 16, "high": 32}}, r"params.model.d_modle=16: --set model.d_modle: not a"),
    ({"model.dropout": {"type": "float", "low": 0.1, "high": 1.5}}, r"params.model.dropout=1.5: ModelConfig.dropout"),
    ({"train.schedule": {"type": "categorical", "choices": ["constant", "cosin"]}}, "params.train.schedule='cosin'"),
    ({"train.lr": {"type": "log-float", "low": 0, "high": 1e-3}}, "log-float needs low > 0"),
    ({"train.lr": {"type": "uniform", "low": 0.1, "high": 1}}, "'uniform' is not allowed"),
    ({"model.n_layer": {"type": "int", "low": 1.5, "high": 3}}, "whole numbers"),
])
def test_a_bad_space_fails_before_any_trial_naming_the_parameter(params, message):
    with pytest.raises(ConfigError, match=message):
        TuneSpace.from_dict({"params": params})


def test_a_bad_preset_or_enqueued_trial_is_refused():
    with pytest.raises(ConfigError, match="unknown preset 'bset'"):
        TuneSpace.from_dict({"preset": {"type": "categorical", "choices": ["best", "bset"]},
                             "params": {"train.lr": {"type": "float", "low": 1e-3, "high": 2e-3}}})
    with pytest.raises(ConfigError, match="enqueue\\[0\\]: 'model.d_model' is not a searched parameter"):
        TuneSpace.from_dict({"params": {"train.lr": {"type": "float", "low": 1e-3, "high": 2e-3}},
                             "enqueue": [{"model.d_model": 32}]})


def test_a_search_interrupted_by_ctrl_c_retries_that_trial_once(tiny_data, tmp_path, monkeypatch):
    import trainer.train

    real = trainer.train.fit

    def interrupted_at_step_8(job, configs=None, on_validation=None):
        def hook(history):
            on_validation(history)
            if history[-1]["step"] == 8:
                raise KeyboardInterrupt

        return real(job, configs, on_validation=hook)

    monkeypatch.setattr(trainer.train, "fit", interrupted_at_step_8)
    one_queued = space(enqueue=[{"train.lr": GOOD_LR}])
    cfg = config(tiny_data, tmp_path / "tune", trials=1)
    with pytest.raises(KeyboardInterrupt):
        run_search(one_queued, cfg)
    monkeypatch.setattr(trainer.train, "fit", real)
    study = run_search(one_queued, cfg)
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert study.trials[1].user_attrs[tune.RETRY_OF] == 0 and study.trials[1].params == {"train.lr": GOOD_LR}
    summary = json.loads((tmp_path / "tune" / "trials" / "trial-0" / "summary.json").read_text())
    assert summary["resumed_from"] == [4]  # the step-4 checkpoint; step 8's validation came before its own
    assert len(run_search(one_queued, config(tiny_data, tmp_path / "tune", trials=1)).trials) == 2  # no second retry


@pytest.mark.parametrize("pruner, kind", [("hyperband", "HyperbandPruner"), ("none", "NopPruner")])
def test_the_other_pruners_run_a_search(tiny_data, tmp_path, pruner, kind):
    chosen = space(pruner={"type": pruner, "reduction_factor": 2})
    cfg = config(tiny_data, tmp_path / "tune", trials=2)
    assert type(tune.make_pruner(chosen, cfg)).__name__ == kind
    study = run_search(chosen, cfg)
    assert study.trials[0].state == TrialState.COMPLETE and len(study.trials) == 2
    if pruner == "none":
        assert study.trials[1].state == TrialState.COMPLETE  # the bad trial runs to the end


def test_every_config_section_is_searchable_by_its_set_key():
    searched = TuneSpace.from_dict({"preset": "best", "params": {
        "objective.penalty_lambda": {"type": "log-float", "low": 1e-5, "high": 1e-3},
        "model.n_layer": {"type": "int", "low": 1, "high": 4}, "train.warmup_fraction": {"type": "float",
                                                                                        "low": 0.0, "high": 0.1}}})
    configs = resolve_configs(
        "best", searched.overrides({"objective.penalty_lambda": 3e-4, "model.n_layer": 3,
                                    "train.warmup_fraction": 0.05}))
    assert (configs.objective.penalty_lambda, configs.model.n_layer, configs.train.warmup_fraction) == (3e-4, 3, 0.05)
