"""Component: raw events -> per-user sequences (the Beam pipeline of ``preprocessing``), statistics as metrics."""

from kfp import dsl
from kfp.dsl import Dataset, Metrics, Output

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def preprocess(
    dataset: str,
    config: dict,
    beam_args: list[str],
    data: Output[Dataset],
    stats: Output[Metrics],
):
    """``dataset``: a public data set name (ml-1m, ml-100k) or a path/URI of an events file; ``config``:
    PreprocessConfig fields; ``beam_args``: Beam pipeline options (--runner=DataflowRunner ...)."""
    from components.artifacts import log_metrics
    from components.events import Task
    from core.configs import from_dict
    from preprocessing import datasets
    from preprocessing.config import PreprocessConfig
    from preprocessing.pipeline import run

    task = Task("preprocess")
    # overwrite: the artifact directory is this task's alone; a retried attempt replaces a failed one's files.
    summary = run(datasets.resolve(dataset), data.path, from_dict(PreprocessConfig, config),
                  beam_args=tuple(beam_args), overwrite=True)
    data.metadata.update(dataset=dataset, users=summary["users"], items=summary["items"])
    log_metrics(stats, summary)
    task.done(f"{summary['users']:,} users, {summary['items']:,} items, {summary['interactions']:,} events")
