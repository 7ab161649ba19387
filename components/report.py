"""Component: the comparison report of every variant (HTML page + Markdown for the KFP UI + comparison.json +
the plots as PNG files)."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, Input, Markdown, Model, Output

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def report(
    models: Input[list[Model]],
    evaluations: Input[list[Artifact]],
    blessing: Input[Artifact],
    baseline: str,
    html: Output[HTML],
    markdown: Output[Markdown],
    comparison: Output[Artifact],
    plots: Output[Artifact],
):
    """Per variant (replicates grouped): Recall@10 with intervals across seeds, the paired difference to the
    baseline with its bootstrap interval and significance, NDCG@10, norms, parameters, steps and time; the penalty
    table, the gate's checks and the training curves (release.report). ``comparison``: comparison.json, the
    tables' numbers (what ``interest run`` prints); ``plots``: the same figures as PNG files."""
    import json

    from components.artifacts import load_runs
    from components.events import Task
    from release.records import Blessing
    from release.report import write_report

    task = Task("report")
    with open(blessing.path) as f:
        decision = Blessing.from_json(json.load(f), blessing.path)
    runs = load_runs(models, evaluations)
    write_report(runs, decision, html.path, markdown.path, plots.path, baseline=baseline,
                 output_json=comparison.path, plots_label=plots.uri)
    comparison.metadata["format"] = "release.report comparison.json"
    plots.metadata["format"] = "directory of PNG plots"
    task.done(f"{len(runs)} runs compared")
