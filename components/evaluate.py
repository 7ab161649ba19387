"""Component: full-catalogue evaluation of one run on the validation and test targets."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def evaluate(
    model: Input[Model],
    data: Input[Dataset],
    torch_threads: int,
    pipeline_root: str,
    run_id: str,
    metrics: Output[Metrics],
    evaluation: Output[Artifact],
):
    """Writes ``evaluation/<split>/metrics.json`` and ``per_user.parquet`` (docs/contracts.md) for the valid and
    test splits; the gate bootstraps over the per-user vectors. Metrics are logged as ``<split>.<name>``. The
    run is then noted as finished in the pipeline run's own place (``pipeline_root``/``run_id``), where the exit
    handler finds it even when another run failed and the gate never ran."""
    import os

    from components import artifacts
    from components.artifacts import SPLITS, identity, log_metrics, set_torch_threads, tag
    from components.events import Task
    from trainer.evaluate import evaluate as evaluate_split

    run = identity(model.metadata)
    task = Task("evaluate", run["name"])
    set_torch_threads(torch_threads)
    recall = {}
    for split in SPLITS:
        result = evaluate_split(model.path, data.path, split=split, output_dir=os.path.join(evaluation.path, split))
        log_metrics(metrics, result, prefix=f"{split}.")
        recall[split] = result["recall@10"]
    tag(evaluation, run["name"], run["variant"], run["seed"])
    artifacts.record_finished(artifacts.run_root(pipeline_root, run_id), run["name"], run["variant"], run["seed"],
                              model.uri, evaluation.uri)
    task.done(", ".join(f"{split} Recall@10 {value:.4f}" for split, value in recall.items()))
