"""``interest tune``: search training recipes (trainer/tune.py) here, or emit the same search as a Katib Experiment;
``interest tune-trial``: one Katib trial (the trainer, printing each validation as Katib's ``name=value``).

    interest tune --data DATA --space space.yaml --trials 12 --budget 600 --output runs/tune
    interest tune ... --final-test          # then the best trial's test figures, once
    interest tune --katib --space space.yaml --trials 24 --budget 1200 --data gs://B/data --output gs://B/tune \\
        --image IMAGE > experiment.yaml
"""

from __future__ import annotations

import argparse
import json
import sys

import yaml

from core.configs import require
from trainer import job as train_job
from trainer.tune_space import TuneSpace


def register(subparsers: argparse._SubParsersAction) -> None:
    tune = subparsers.add_parser(
        "tune", help="search training recipes with Optuna (resumable), or emit the search as a Katib Experiment",
        description="Train --trials recipes drawn from --space (TPE), each for the same budget, reporting validation "
        "Recall@10 as they train and pruning those that fall behind; the study lives in OUTPUT/study.journal, so "
        "rerunning the command continues it. Writes results.{md,json} and PNG plots into --output.",
    )
    tune.add_argument("--space", required=True, help="search space file (YAML/JSON; trainer/tune_space.py)")
    tune.add_argument("--trials", type=int, required=True, help="finished trials the study holds at the end")
    budget = tune.add_mutually_exclusive_group(required=True)
    budget.add_argument("--budget", type=float, metavar="SECONDS", help="training seconds per trial")
    budget.add_argument("--budget-steps", type=int, metavar="N", help="optimizer steps per trial")
    tune.add_argument("--data", required=True,
                      help="preprocessed data with a validation event (protocol ours); gs:// or s3:// with --katib")
    tune.add_argument("--output", default="runs/tune", help="study journal, trial runs, results (default runs/tune)")
    tune.add_argument("--study-name", default="tune",
                      help="the study to create or continue (default tune; with --katib the Experiment's name)")
    tune.add_argument("--final-test", action="store_true",
                      help="after the search, rank the test split once with the best trial's model")
    katib = tune.add_argument_group("Katib (a cluster)")
    katib.add_argument("--katib", action="store_true",
                       help="print a Katib Experiment (kubeflow.org/v1beta1) of this search instead of running it")
    katib.add_argument("--image", help="--katib: the training image (make image)")
    katib.add_argument("--namespace", default="kubeflow", help="--katib: the Experiment's namespace")
    katib.add_argument("--parallel", type=int, default=2, help="--katib: trials running at once (default 2)")
    tune.set_defaults(func=run_tune)

    trial = subparsers.add_parser(
        "tune-trial", help="one Katib trial: train and print valid_recall_at_10=V after each validation",
        description="What a Katib trial's container runs (interest tune --katib writes the command): `interest "
        "train` with the same flags, one process, its validations printed for Katib's StdOut collector.",
    )
    train_job.add_arguments(trial)
    trial.set_defaults(func=run_tune_trial)


def run_tune(args: argparse.Namespace) -> int:
    space = TuneSpace.load(args.space)
    if args.katib:
        from pipelines.katib import experiment

        require(bool(args.image), "--image", "--katib needs the training image its trials run")
        spec = experiment(space, args.study_name, args.data, args.output, args.image, args.trials,
                          args.budget, args.budget_steps, args.parallel, args.namespace)
        yaml.safe_dump(spec, sys.stdout, sort_keys=False)
        return 0
    from trainer.tune import TuneConfig, final_test, run_search
    from trainer.tune_report import write_results

    cfg = TuneConfig(args.data, args.output, args.trials, args.budget, args.budget_steps, args.study_name)
    study = run_search(space, cfg)
    if args.final_test:
        final_test(study, cfg.data, cfg.output)
    result = write_results(study, cfg)
    print(json.dumps({"study": cfg.study_name, "best": result["best"], "final_test": result["final_test"],
                      "results": f"{cfg.output}/results.md", "plots": result["plots"]}, indent=2))
    return 0


def run_tune_trial(args: argparse.Namespace) -> int:
    from pipelines.katib import report_line
    from trainer.train import fit, summary_line

    def on_validation(history: list[dict]) -> None:
        print(report_line(history), flush=True)

    summary = fit(train_job.job_from_args(args), on_validation=on_validation)
    print(summary_line(summary))
    return 0
