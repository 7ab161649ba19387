"""What a search found, as files: ``results.json`` and ``results.md`` (one row per trial) and two PNG plots drawn
by Optuna's matplotlib backend: the optimization history and the parameters' importances.

    OUTPUT/results.json  OUTPUT/results.md  OUTPUT/optimization_history.png  OUTPUT/param_importances.png
"""

from __future__ import annotations

import io
import json
import warnings
from typing import Any

import optuna
from optuna.trial import TrialState

from core import storage
from trainer.tune import METRIC, TuneConfig, summary
from trainer.tune_space import PRESET

HISTORY_PNG = "optimization_history.png"
IMPORTANCES_PNG = "param_importances.png"


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def markdown(result: dict[str, Any]) -> str:
    """The trials as a Markdown table, best first among the complete ones, with the search's settings above."""
    trials = result["trials"]
    names = sorted({name for row in trials for name in row["params"]}, key=lambda n: (n != PRESET, n))
    lines = [f"Study `{result['study']}`: {len(trials)} trials, budget {result['search']['budget']}, "
             f"pruning on validation Recall@10 by {result['resource']}.", ""]
    header = ["trial", "state", METRIC, *names, "steps", "train s", f"last report ({result['resource']})", "note"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    order = sorted(trials, key=lambda r: (r["state"] != "COMPLETE", -(r[METRIC] or 0.0), r["trial"]))
    for row in order:
        note = row["error"] or (f"retry of trial {row['retry_of']}" if row["retry_of"] is not None else
                                "interrupted, queued again" if row["state"] == "FAIL" else "")
        cells = [row["trial"], row["state"], row[METRIC], *(row["params"].get(n) for n in names), row["steps"],
                 row["train_seconds"], row["last_resource"], note]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    for record in result["final_test"]:
        lines += ["", f"Final test (once, best trial {record['trial']}): Recall@10 {record['test_recall@10']:.4f}, "
                  f"NDCG@10 {record['test_ndcg@10']:.4f} (validation Recall@10 {record[METRIC]:.4f})."]
    return "\n".join(lines) + "\n"


def _save(ax: Any, uri: str) -> None:
    figure = ax.figure
    figure.set_size_inches(8, 4.5)
    figure.tight_layout()
    png = io.BytesIO()
    figure.savefig(png, format="png", dpi=110)
    storage.write_bytes(uri, png.getvalue())
    import matplotlib.pyplot as plt  # Optuna draws on pyplot figures: close them

    plt.close(figure)


def plots(study: optuna.Study, output: str) -> dict[str, str | None]:
    """The two PNGs; importances need two complete trials that differ (None and no file otherwise)."""
    import matplotlib

    matplotlib.use("Agg")
    from optuna.visualization import matplotlib as optuna_plots

    paths: dict[str, str | None] = {"history": storage.join(output, HISTORY_PNG), "importances": None}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        _save(optuna_plots.plot_optimization_history(study, target_name=METRIC), paths["history"])
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if len(complete) >= 2 and len({json.dumps(t.params, sort_keys=True) for t in complete}) >= 2:
            paths["importances"] = storage.join(output, IMPORTANCES_PNG)
            _save(optuna_plots.plot_param_importances(study, target_name=METRIC),
                  paths["importances"])
    return paths


def write_results(study: optuna.Study, cfg: TuneConfig) -> dict[str, Any]:
    """results.json, results.md and the plots in the output directory; returns the JSON written."""
    result = summary(study, cfg)
    result["plots"] = plots(study, cfg.output)
    storage.write_json(storage.join(cfg.output, "results.json"), result)
    storage.write_text(storage.join(cfg.output, "results.md"), markdown(result))
    return result
