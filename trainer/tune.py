"""Search training recipes with Optuna: the library behind ``interest tune``.

    interest tune --data DATA --space space.yaml --trials 12 --budget 600 --output runs/tune [--final-test]

Each trial is one run of the real trainer (``trainer.train.fit``) with a recipe the TPE sampler draws from
the space (trainer/tune_space.py), trained for the same budget: ``--budget`` seconds of training (the LR schedule
follows the budget, trainer/schedules.py) or ``--budget-steps`` steps. Every validation reports Recall@10 to
Optuna (``trial.report``) at the resource spent so far (training seconds, or steps), and the pruner (successive
halving or Hyperband) stops a trial that falls behind the others at the same resource. The trial's value is its
best validation Recall@10: tuning selects on the validation split only, so the data must come from a protocol
with a validation event (``ours``; generative-recommenders has none, docs/protocols.md). ``final_test`` touches
the test split once, for the best trial, and records the figure in the study.

The study lives in a journal file (``OUTPUT/study.journal``, Optuna's JournalStorage): rerunning the command
continues it up to ``--trials`` finished trials, redoing nothing. A trial killed mid-run (SIGKILL leaves it
RUNNING in the journal, Ctrl-C FAIL) is queued again by the next run with the same parameters, and the retry
resumes the killed run's training from its checkpoint (``OUTPUT/trials/trial-N`` is named after the first
attempt).
One process searches a study at a time: it holds the output's writer lock (core.rundir).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from core import contract, protocols, rundir, storage
from core.configs import ConfigError, require, to_dict
from trainer.job import TrainJob
from trainer.tune_space import PRESET, TuneSpace

log = logging.getLogger("trainer.tune")

METRIC = "valid_recall@10"  # what a trial reports and maximizes
STUDY_FILE = "study.journal"
TRIALS = "trials"  # OUTPUT/trials/trial-N: one model artifact directory per trial
RETRY_OF = "retry_of"  # user attr: the number of the killed trial this one retries (its run directory)
FINAL_TEST = "final_test"  # study user attr: the test figures of the best trial, once


@dataclass(frozen=True)
class TuneConfig:
    data: str  # preprocessed directory with validation targets (protocol ours)
    output: str  # local directory: study.journal, trials/trial-N, results.{md,json}, plots
    trials: int  # finished trials (complete, pruned or failed) the study holds when the command ends
    budget_seconds: float | None = None  # training seconds per trial (the LR schedule spans them)
    budget_steps: int | None = None  # or optimizer steps per trial (deterministic: what tests use)
    study_name: str = "tune"  # the study in the journal; the same name continues it

    def __post_init__(self) -> None:
        require(self.trials >= 1, "--trials", f"must be >= 1, got {self.trials}")
        require((self.budget_seconds is None) != (self.budget_steps is None), "--budget",
                "give exactly one of --budget SECONDS and --budget-steps N")
        require(self.budget_seconds is None or self.budget_seconds > 0, "--budget",
                f"must be > 0 seconds, got {self.budget_seconds}")
        require(self.budget_steps is None or self.budget_steps >= 1, "--budget-steps",
                f"must be >= 1, got {self.budget_steps}")
        require(not storage.is_remote(self.output), "--output",
                "the study journal needs a local directory (on a cluster, use --katib)")
        require(bool(self.study_name.strip()), "--study-name", "must not be empty")

    @property
    def resource(self) -> str:
        """The unit trials are compared in: training seconds under a time budget, steps under a step budget."""
        return "seconds" if self.budget_seconds is not None else "steps"

    @property
    def max_resource(self) -> int:
        return int(self.budget_seconds if self.budget_seconds is not None else self.budget_steps)

    def budget_overrides(self) -> tuple[str, ...]:
        if self.budget_seconds is not None:
            return (f"train.time_budget_seconds={self.budget_seconds}",)
        return (f"train.max_steps={self.budget_steps}", "train.epochs=null")

    def resource_of(self, point: Mapping[str, Any]) -> int:
        """Where a validation point (trainer history) stands in the budget."""
        return int(point["wall_seconds"] if self.resource == "seconds" else point["step"])


def check_validation_data(data: str) -> None:
    """Tuning on data without validation targets would select on nothing (or on test): refuse it."""
    from trainer.data import open_data

    split = open_data(data).optional_path(contract.SPLIT)
    protocol = protocols.get_protocol((storage.read_json(split) if split else {}).get("protocol",
                                                                                    protocols.DEFAULT))
    require(protocol.validation, "--data",
            f"{data} is {protocol.name} data, which has no validation event to tune on; preprocess with "
            f"--protocol ours and tune there (the test split is touched once, by --final-test)")


def make_pruner(space: TuneSpace, cfg: TuneConfig) -> optuna.pruners.BasePruner:
    pruner = space.pruner
    min_resource = max(1, int(pruner.min_resource or cfg.max_resource / 8))
    if pruner.type == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=min_resource,
                                                      reduction_factor=pruner.reduction_factor)
    if pruner.type == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=min_resource, max_resource=cfg.max_resource,
                                              reduction_factor=pruner.reduction_factor)
    return optuna.pruners.NopPruner()


def open_study(space: TuneSpace, cfg: TuneConfig) -> optuna.Study:
    """The study of ``cfg.study_name`` in the output's journal (created, or continued with the same search)."""
    Path(cfg.output).mkdir(parents=True, exist_ok=True)
    journal = JournalStorage(JournalFileBackend(storage.join(cfg.output, STUDY_FILE)))
    sampler = optuna.samplers.TPESampler(seed=space.sampler.seed, n_startup_trials=space.sampler.n_startup_trials)
    study = optuna.create_study(storage=journal, study_name=cfg.study_name, direction="maximize", sampler=sampler,
                                pruner=make_pruner(space, cfg), load_if_exists=True)
    search = json.loads(json.dumps({"space": to_dict(space), "budget": cfg.budget_overrides(), "data": cfg.data}))
    before = study.user_attrs.get("search")
    if before is None:
        study.set_user_attr("search", search)
        for params in space.enqueue:
            study.enqueue_trial(dict(params))
    elif before != search:
        changed = sorted(k for k in search if search[k] != before.get(k))
        raise ConfigError(f"--study-name {cfg.study_name}: the study in {cfg.output} searched another "
                          f"{', '.join(changed)}; rerun with the same --space, budget and --data to continue it, or "
                          "choose another --study-name or --output")
    return study


def recover_interrupted(study: optuna.Study) -> list[int]:
    """Trials a search left unfinished, each queued again once with the same parameters (the retry resumes the
    same run directory from its checkpoint): RUNNING ones (the process was killed: only one process searches a
    study at a time, the output lock sees to it) are marked failed first, and failed ones without an ``error``
    of their own were interrupted (Ctrl-C) or crashed. Returns the numbers queued again."""
    trials = study.get_trials(deepcopy=False)
    queued = []
    for trial in trials:
        if trial.state not in (TrialState.RUNNING, TrialState.FAIL) or "error" in trial.user_attrs:
            continue
        if trial.state == TrialState.RUNNING:
            study.tell(trial.number, state=TrialState.FAIL)
        run = trial.user_attrs.get(RETRY_OF, trial.number)
        if any(t.number > trial.number and t.user_attrs.get(RETRY_OF) == run for t in trials):
            continue  # retried already
        study.enqueue_trial(dict(trial.params), user_attrs={RETRY_OF: run})
        queued.append(trial.number)
        log.warning("trial %d did not finish (killed, interrupted or crashed): queued again, resuming its "
                    "checkpoint in %s", trial.number, f"trial-{run}")
    return queued


def finished(study: optuna.Study) -> int:
    """Trials that count towards ``--trials``: complete, pruned, or failed for a reason of their own (a recipe
    the configs refuse, a run that validated nothing: the ``error`` attr). A killed trial is retried instead, and
    a crash stops the search without counting."""
    return sum(1 for t in study.get_trials(deepcopy=False)
               if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
               or (t.state == TrialState.FAIL and "error" in t.user_attrs))


class Objective:
    """One trial: draw a recipe, train it with the real trainer, report every validation, return the best."""

    def __init__(self, space: TuneSpace, cfg: TuneConfig):
        self.space, self.cfg = space, cfg

    def params(self, trial: optuna.Trial) -> dict[str, Any]:
        drawn = {}
        for name, d in self.space.params.items():
            if d.type == "categorical":
                drawn[name] = trial.suggest_categorical(name, list(d.choices))
            elif d.type == "int":
                drawn[name] = trial.suggest_int(name, int(d.low), int(d.high), step=int(d.step or 1))
            else:
                drawn[name] = trial.suggest_float(name, d.low, d.high, step=d.step, log=d.type == "log-float")
        return drawn

    def job(self, trial: optuna.Trial, params: Mapping[str, Any]) -> TrainJob:
        run = trial.user_attrs.get(RETRY_OF, trial.number)
        return TrainJob(self.cfg.data, storage.join(self.cfg.output, TRIALS, f"trial-{run}"),
                        self.space.preset_of(params, self.space.fixed),
                        (*self.space.overrides(params), *self.cfg.budget_overrides()))

    def __call__(self, trial: optuna.Trial) -> float:
        from trainer.train import fit  # torch: only when a trial trains

        params = self.params(trial)
        job = self.job(trial, params)
        trial.set_user_attr("run", job.output)
        trial.set_user_attr("preset", job.preset)
        trial.set_user_attr("overrides", list(job.overrides))
        try:
            job.configs()
        except ConfigError as exc:  # a combination the configs refuse (e.g. d_model not divisible by n_head)
            trial.set_user_attr("error", str(exc))
            raise
        reported: set[int] = set()

        def on_validation(history: list[dict[str, Any]]) -> None:
            for point in history:  # a resumed run's earlier points too (a retried trial reports them again)
                resource = self.cfg.resource_of(point)
                if resource not in reported:
                    trial.report(point[METRIC], resource)
                    reported.add(resource)
            if trial.should_prune():
                last = history[-1]
                trial.set_user_attr("pruned_at", {"step": last["step"], "wall_seconds": last["wall_seconds"],
                                                  METRIC: last[METRIC]})
                raise optuna.TrialPruned(f"{METRIC} {last[METRIC]:.4f} at {self.cfg.resource_of(last)} "
                                         f"{self.cfg.resource}")

        summary = fit(job, on_validation=on_validation)
        trial.set_user_attr("steps", summary["steps"])
        trial.set_user_attr("train_seconds", summary["train_seconds"])
        trial.set_user_attr("tokens_per_second", round(summary["tokens_per_second"], 1))
        trial.set_user_attr("stop_note", summary["stop_note"])
        value = summary["best"][METRIC]
        if value is None or not math.isfinite(value):
            trial.set_user_attr("error", "no validation result")
            raise ConfigError(f"trial {trial.number}: the run validated nothing ({summary['stop_note']})")
        return float(value)


def run_search(space: TuneSpace, cfg: TuneConfig) -> optuna.Study:
    """Continue (or start) the study until it holds ``cfg.trials`` finished trials; returns it."""
    check_validation_data(cfg.data)
    with rundir.locked(cfg.output):
        study = open_study(space, cfg)
        recover_interrupted(study)
        remaining = cfg.trials - finished(study)
        log.info("study %s: %d finished trials, %d to run (budget %d %s each)", cfg.study_name, finished(study),
                 max(remaining, 0), cfg.max_resource, cfg.resource)
        if remaining > 0:
            study.optimize(Objective(space, cfg), n_trials=remaining, catch=(ConfigError,), gc_after_trial=True)
    return study


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial:
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    require(bool(complete), "--final-test", "the study has no complete trial yet")
    return max(complete, key=lambda t: (t.value, -t.number))


def final_test(study: optuna.Study, data: str, output: str) -> dict[str, Any]:
    """Test figures of the best trial's model on ``data``'s test split, evaluated once per best trial: a
    repeated call returns the recorded figures, and every trial ever tested stays listed."""
    from trainer.evaluate import evaluate

    best = best_trial(study)
    tested = study.user_attrs.get(FINAL_TEST, [])
    for record in tested:
        if record["trial"] == best.number:
            return record
    if tested:
        log.warning("the best trial changed since the test split was last read (trials %s tested before)",
                    ", ".join(str(r["trial"]) for r in tested))
    metrics = evaluate(best.user_attrs["run"], data, "test", storage.join(output, "final-test"))
    record = {"trial": best.number, METRIC: best.value, "test_recall@10": metrics["recall@10"],
              "test_ndcg@10": metrics["ndcg@10"], "test_mrr": metrics.get("mrr"), "users": metrics.get("users"),
              "params": best.params, "run": best.user_attrs["run"]}
    study.set_user_attr(FINAL_TEST, [*tested, record])
    return record


def trial_rows(study: optuna.Study) -> list[dict[str, Any]]:
    """One row per trial: its state, value, parameters and what its run did."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        last = max(t.intermediate_values) if t.intermediate_values else None
        rows.append({"trial": t.number, "state": t.state.name, METRIC: t.value,
                     "params": {PRESET: t.user_attrs.get("preset"), **t.params},
                     "reports": len(t.intermediate_values), "last_resource": last,
                     "steps": t.user_attrs.get("steps"), "train_seconds": t.user_attrs.get("train_seconds"),
                     "retry_of": t.user_attrs.get(RETRY_OF), "error": t.user_attrs.get("error"),
                     "run": t.user_attrs.get("run")})
    return rows


def summary(study: optuna.Study, cfg: TuneConfig) -> dict[str, Any]:
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    best = best_trial(study) if complete else None
    return {"study": cfg.study_name, "config": dataclasses.asdict(cfg), "resource": cfg.resource,
            "search": study.user_attrs.get("search"), "trials": trial_rows(study),
            "best": {"trial": best.number, METRIC: best.value, "params": trial_rows(study)[best.number]["params"],
                     "overrides": best.user_attrs.get("overrides")} if best else None,
            FINAL_TEST: study.user_attrs.get(FINAL_TEST, [])}
