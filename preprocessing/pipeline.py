"""``run``: raw interaction logs -> the preprocessed data directory of docs/contracts.md, as one Beam pipeline.

    interest preprocess --input ~/.cache/interest-pipeline/ml-1m.parquet --output runs/ml1m-prep
    interest preprocess --input 'gs://bucket/logs/*.csv.gz' --output gs://bucket/prep -- \\
        --runner=DataflowRunner --project=P --region=R --temp_location=gs://bucket/tmp

Everything after ``--`` is handed to Beam's PipelineOptions unchanged. Without ``--runner`` the pipeline runs
in-process on Beam's FnApiRunner: the engine Beam's DirectRunner itself runs batch pipelines on when it does
not use Prism. Naming it directly skips DirectRunner's attempt to download the Prism binary from GitHub, which
fails offline and leaves a ``beam-temp*`` staging directory in the system temp folder on every run.

The output directory is written through ``core.rundir``: locked against a second writer, staged beside the
target (for a remote runner, the staging prefix is on the same object store, so its workers write it), and
published whole with a ``_SUCCESS.json`` manifest listing every shard with its size and row count. A failed or
killed run leaves the previous output as it was; an unusable input keeps its dead letters and stats.json in
``<output>.rejected/`` (local) or the run's prefix below the output (object stores) for a person to read.
"""

from __future__ import annotations

import io
import logging
import os
import time
from collections.abc import Sequence

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from core import configs, contract, rundir, storage
from core.configs import ConfigError
from preprocessing.config import PreprocessConfig
from preprocessing.sources import Source, check_first_source, list_sources
from preprocessing.spill import spill_bucket
from preprocessing.stats import PreprocessError, check_usable
from preprocessing.tables import content_digest, length_histogram
from preprocessing.transforms import (
    COUNTS,
    DEAD_LETTERS,
    EVENTS,
    AddTemporalFeatures,
    AssignSplit,
    DeduplicateEvents,
    FilterSparse,
    GroupByUserBucket,
    GroupPerUser,
    ParseAndValidate,
    SortedDistinct,
    Summarize,
    TimeRange,
    WriteOutputs,
)

__all__ = ["PreprocessError", "build", "run"]

log = logging.getLogger(__name__)

DEFAULT_RUNNER = "FnApiRunner"


def run(input: str, output: str, config: PreprocessConfig, beam_args: Sequence[str] = (),
        overwrite: bool = False) -> dict:
    """Preprocess ``input`` (path, directory or glob; local or an object store) into ``output``; return stats.json.

    Raises ConfigError for usage problems found before any work starts (no files, unknown columns, an output
    that already holds data without ``overwrite``), OutputLocked when another run is writing ``output``, and
    PreprocessError when the input is unusable as a whole (its dead letters and stats.json are kept aside).
    """
    cfg = config.resolved()
    storage.check_uri(output, "--output")
    options = pipeline_options(beam_args)
    _anonymous_gcs_for_emulator()
    sources = list_sources(input, cfg.format)
    check_first_source(sources, cfg)
    with rundir.locked(output):
        if not overwrite and rundir.has_content(output):
            raise ConfigError(f"--output: {output} already holds preprocessed data; pass --overwrite to replace it (the "
                              "new data replaces it only once complete) or choose another directory")
        with rundir.publishing(output, contract.DATA_KIND, overwrite=overwrite) as staging:
            log.info("preprocessing %d file(s) matching %s into %s", len(sources), input, output)
            start = time.monotonic()
            try:
                with beam.Pipeline(options=options) as pipeline:
                    build(pipeline, sources, staging.path, cfg)
            finally:
                storage.delete_tree(spill_directory(staging.path))
            seconds = time.monotonic() - start
            stats = storage.read_json(staging.join(contract.STATS))
            storage.write_json(staging.join(contract.SPLIT),
                               {"method": cfg.split, "cutoff": cfg.cutoff, "protocol": cfg.protocol})
            _log_stages(stats, seconds)
            try:
                check_usable(stats, staging.rejected_path(), cfg.min_item_count, cfg.min_user_events)
            except PreprocessError:
                staging.reject()
                raise
            describe_shards(staging, stats)
            storage.write_json(staging.join(contract.FINGERPRINT), fingerprint(sources, stats))
            configs.save(cfg, staging.join(contract.PREPROCESS_CONFIG))
    return stats


def describe_shards(staging: rundir.Staging, stats: dict) -> None:
    """Record each sequence shard's row count in the manifest; they must add up to stats.json's users."""
    total = 0
    for uri in storage.list_files(staging.path):
        name = storage.relative(staging.path, uri)
        if name.startswith(f"{contract.SEQUENCES_PREFIX}-") and name.endswith(".parquet"):
            rows = pq.ParquetFile(io.BytesIO(storage.read_bytes(uri))).metadata.num_rows
            staging.describe(name, rows=rows)
            total += rows
    if total != stats["users"]:
        raise PreprocessError(f"the sequence shards hold {total} users, stats.json says {stats['users']}")
    staging.meta["users"] = total


def fingerprint(sources: list[Source], stats: dict) -> dict:
    """What the data was made from: every input file (size, modification time or generation as the filesystem
    reports it) and the digest of the rows kept (``stats.content_digest``)."""
    files = []
    for result in FileSystems.match([source.path for source in sources]):
        for meta in result.metadata_list:
            files.append({"path": meta.path, "size": meta.size_in_bytes,
                          "modified": getattr(meta, "last_updated_in_seconds", None)})
    return {"input_files": files, "content_digest": stats["content_digest"], "interactions": stats["interactions"],
            "users": stats["users"], "items": stats["items"], "timestamp_min": stats["timestamp_min"],
            "timestamp_max": stats["timestamp_max"]}


def spill_directory(output: str) -> str:
    """Where ``shuffle="files"`` keeps the events between stages: inside the staged output, deleted before it is
    published (on a cluster runner the staging prefix is on the object store its workers share)."""
    return storage.join(output, "_shuffle")


def build(pipeline: beam.Pipeline, sources: list[Source], output: str, cfg: PreprocessConfig) -> None:
    """Add every stage, in the order of issue 3, to ``pipeline``."""
    spill = spill_directory(output) if cfg.shuffle == "files" else None
    parsed = pipeline | "ParseAndValidate" >> ParseAndValidate(sources, cfg, spill)
    buckets = parsed[EVENTS] | "GroupByUserBucket" >> GroupByUserBucket(cfg.user_buckets, spilled=bool(spill))
    deduplicated = buckets | "DeduplicateEvents" >> DeduplicateEvents()
    filtered = deduplicated[EVENTS] | "FilterSparse" >> FilterSparse(
        cfg.min_rating, cfg.min_item_count, cfg.min_user_events, spill)
    events = filtered[EVENTS]
    vocab = events | "BuildVocabulary" >> SortedDistinct("item")
    users = events | "IndexUsers" >> SortedDistinct("user")
    time_range = events | "TimeRange" >> TimeRange()
    waiting = events | "SpillFiltered" >> beam.Map(spill_bucket, spill, "filtered") if spill else events
    sequences = (
        waiting
        | "GroupPerUser" >> GroupPerUser(vocab, users)
        | "TemporalFeatures" >> AddTemporalFeatures(time_range)
        | "AssignSplit" >> AssignSplit(cfg.split, cfg.cutoff)
    )
    counts = (
        parsed[COUNTS],
        deduplicated[COUNTS],
        filtered[COUNTS],
        vocab | "CountItems" >> beam.Map(lambda items: {"items": len(items)}),
        sequences | "CountLengths" >> beam.Map(lambda t: {"sequence_length_hist": length_histogram(t)}),
        sequences | "ContentDigest" >> beam.Map(lambda t: {"content_digest": content_digest(t)}),
    ) | "AllCounts" >> beam.Flatten()
    stats = counts | "Stats" >> Summarize(time_range)
    {"sequences": sequences, "dead_letters": parsed[DEAD_LETTERS], "vocab": vocab, "stats": stats} | (
        "WriteOutputs" >> WriteOutputs(output, cfg.num_shards, cfg.user_buckets if spill else None))


def pipeline_options(beam_args: Sequence[str]) -> PipelineOptions:
    """Beam options from the pass-through arguments, on the in-process runner unless they name one."""
    args = list(beam_args)
    if not any(a == "--runner" or a.startswith("--runner=") for a in args):
        args.insert(0, f"--runner={DEFAULT_RUNNER}")
    options = PipelineOptions(args)
    check_local_workers(options)
    return options


def check_local_workers(options: PipelineOptions) -> None:
    """Refuse Beam's local runner with several workers behind its gRPC data plane (issue 27). With
    ``--direct_num_workers=2`` and ``--direct_running_mode=multi_threading`` or ``multi_processing``, Beam 2.77's
    FnApiRunner lost or garbled elements that are Arrow tables: 3 of 4 runs at 30M synthetic events lost partial
    counts of whole user buckets, multi_threading lost rows at 3M, and ``benchmarks/beam_local_workers.py``
    reproduces it in Beam alone. ``in_memory`` workers (bundles split, no gRPC) give the one-worker output."""
    from apache_beam.options.pipeline_options import DirectOptions, StandardOptions

    direct = options.view_as(DirectOptions)
    runner = options.view_as(StandardOptions).runner
    local = isinstance(runner, str) and runner.lower() in LOCAL_RUNNERS
    if local and direct.direct_running_mode in GRPC_RUNNING_MODES and direct.direct_num_workers != 1:
        raise ConfigError(
            f"--direct_running_mode={direct.direct_running_mode} with --direct_num_workers other than 1 is refused: "
            "Beam's local runner loses elements between its gRPC workers (benchmarks/README.md, issue 27; "
            "python -m benchmarks.beam_local_workers reproduces it). Run on one worker (the default; no slower on "
            "2 cores), or on a cluster runner (--runner=DataflowRunner, FlinkRunner, SparkRunner)")


# Beam's local running modes whose workers exchange data with the runner over gRPC.
GRPC_RUNNING_MODES = frozenset({"multi_threading", "multi_processing"})
# Runners that execute in this process or on this machine; any other (DataflowRunner, FlinkRunner, SparkRunner,
# PortableRunner, ...) runs on workers that see only what an object store holds.
LOCAL_RUNNERS = frozenset({"direct", "directrunner", "bundlebaseddirectrunner", "switchingdirectrunner",
                           "fnapirunner", "prism", "prismrunner", "interactiverunner"})


def remote_runner(beam_args: Sequence[str]) -> str | None:
    """The runner ``beam_args`` name when its workers are other machines (``--runner=DataflowRunner``), else None;
    parsed by Beam's own option parser, so ``--runner X`` and ``--runner=X`` read alike."""
    from apache_beam.options.pipeline_options import StandardOptions

    runner = pipeline_options(beam_args).view_as(StandardOptions).runner
    name = runner if isinstance(runner, str) else type(runner).__name__
    return None if name.lower() in LOCAL_RUNNERS else name


def _anonymous_gcs_for_emulator() -> None:
    """Against a storage emulator (STORAGE_EMULATOR_HOST), hand Beam's gcsio anonymous credentials up front:
    otherwise it first retries google.auth.default() for about 27 s. Real GCS keeps Application Default
    Credentials."""
    if not os.environ.get("STORAGE_EMULATOR_HOST"):
        return
    from apache_beam.internal.gcp import auth

    with auth._Credentials._credentials_lock:
        auth._Credentials._credentials = None
        auth._Credentials._credentials_init = True


def _log_stages(stats: dict, seconds: float) -> None:
    reasons = ", ".join(f"{k} {v:,}" for k, v in stats["dead_letter_reasons"].items()) or "none"
    filtered = ", ".join(f"{k} {v:,}" for k, v in stats["filtered_reasons"].items())
    lengths = stats["sequence_length"]
    log.info("parse:     %s rows in %d file(s); %s dead letters (%s)", f"{stats['input_rows']:,}",
             stats["input_files"], f"{stats['dead_letter_rows']:,}", reasons)
    log.info("dedup:     %s exact duplicates", f"{stats['duplicate_rows']:,}")
    log.info("filter:    %s rows (%s)", f"{stats['filtered_rows']:,}", filtered)
    log.info("sequences: %s users, %s items, %s interactions; length p50 %d, p90 %d, max %d",
             f"{stats['users']:,}", f"{stats['items']:,}", f"{stats['interactions']:,}",
             lengths["p50"], lengths["p90"], lengths["max"])
    log.info("done in %.1f s (%s input rows/s)", seconds, f"{stats['input_rows'] / max(seconds, 1e-9):,.0f}")
