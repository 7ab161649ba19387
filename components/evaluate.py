"""Component: full-catalogue evaluation of one variant on the validation and test targets."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def evaluate(
    model: Input[Model],
    data: Input[Dataset],
    torch_threads: int,
    metrics: Output[Metrics],
    evaluation: Output[Artifact],
):
    """Writes ``evaluation/<split>/metrics.json`` and ``per_user.parquet`` (docs/contracts.md) for the valid and
    test splits; the gate bootstraps over the per-user vectors. Metrics are logged as ``<split>.<name>``."""
    import os

    from components.artifacts import SPLITS, VARIANT_KEY, log_metrics, set_torch_threads
    from components.events import Task
    from trainer.evaluate import evaluate as evaluate_split

    task = Task("evaluate", model.metadata[VARIANT_KEY])
    set_torch_threads(torch_threads)
    recall = {}
    for split in SPLITS:
        result = evaluate_split(model.path, data.path, split=split, output_dir=os.path.join(evaluation.path, split))
        log_metrics(metrics, result, prefix=f"{split}.")
        recall[split] = result["recall@10"]
    evaluation.metadata[VARIANT_KEY] = model.metadata[VARIANT_KEY]
    task.done(", ".join(f"{split} Recall@10 {value:.4f}" for split, value in recall.items()))
