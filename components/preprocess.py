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
    PreprocessConfig fields; ``beam_args``: Beam pipeline options (--runner=DataflowRunner ...).

    On the in-process runner Beam writes the artifact's local path, which KFP then uploads. A remote runner's
    workers (Dataflow, Flink, Spark) cannot see this pod's disk: Beam then writes the artifact's URI itself (the
    same object-store place KFP would upload to; on Vertex AI the local path is that bucket mounted), and
    downstream tasks receive it as usual."""
    from components.artifacts import log_metrics
    from components.events import Task
    from core import storage
    from core.configs import from_dict, require
    from preprocessing import datasets
    from preprocessing.config import PreprocessConfig
    from preprocessing.pipeline import remote_runner, run

    task = Task("preprocess")
    runner = remote_runner(beam_args)
    if runner:
        require(storage.is_remote(dataset), "dataset", f"{runner} workers read only object stores: give a gs:// or "
                f"s3:// URI, not {dataset!r}")
        require(storage.is_remote(data.uri), "pipeline root", f"{runner} workers write only object stores; this "
                f"artifact's URI is {data.uri!r}")
    output = data.uri if runner else data.path
    # overwrite: the artifact directory is this task's alone; a retried attempt replaces a failed one's files.
    summary = run(datasets.resolve(dataset), output, from_dict(PreprocessConfig, config), beam_args=tuple(beam_args),
                  overwrite=True)
    data.metadata.update(dataset=dataset, users=summary["users"], items=summary["items"], runner=runner or "local")
    log_metrics(stats, summary)
    task.done(f"{summary['users']:,} users, {summary['items']:,} items, {summary['interactions']:,} events")
