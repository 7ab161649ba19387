"""``run``: raw interaction logs -> the preprocessed data directory of docs/contracts.md, as one Beam pipeline.

    interest preprocess --input ~/.cache/interest-pipeline/ml-1m.parquet --output runs/ml1m-prep
    interest preprocess --input 'gs://bucket/logs/*.csv.gz' --output gs://bucket/prep -- \\
        --runner=DataflowRunner --project=P --region=R --temp_location=gs://bucket/tmp

Everything after ``--`` is handed to Beam's PipelineOptions unchanged. Without ``--runner`` the pipeline runs
in-process on Beam's FnApiRunner: the engine Beam's DirectRunner itself runs batch pipelines on when it does
not use Prism. Naming it directly skips DirectRunner's attempt to download the Prism binary from GitHub, which
fails offline and leaves a ``beam-temp*`` staging directory in the system temp folder on every run. Beam's
file sinks stage under ``OUTPUT/beam-temp-*`` and remove it when they finish.
"""

from __future__ import annotations

import logging
import os
import posixpath
import time
from collections.abc import Sequence

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines import configs, storage
from pipelines.configs import ConfigError
from preprocessing.config import PreprocessConfig
from preprocessing.schema import (
    CONFIG_FILE,
    DEAD_LETTER_PREFIX,
    SEQUENCES_PREFIX,
    SPLIT_FILE,
    STATS_FILE,
    VOCAB_FILE,
)
from preprocessing.sources import Source, check_first_source, list_sources
from preprocessing.stats import PreprocessError, check_usable
from preprocessing.tables import length_histogram
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
    """Preprocess ``input`` (path, directory or glob; local or gs://) into ``output``; return stats.json.

    Raises ConfigError for usage problems found before any work starts (no files, unknown columns, output
    not empty without ``overwrite``) and PreprocessError when the input is unusable as a whole; in that case
    the dead letters and stats.json are written first, so nothing is lost. preprocess_config.json is written
    last and only on success, so its presence marks a complete directory.
    """
    cfg = config.resolved()
    options = pipeline_options(beam_args)
    _anonymous_gcs_for_emulator()
    sources = list_sources(input, cfg.format)
    check_first_source(sources, cfg)
    prepare_output(output, overwrite)
    log.info("preprocessing %d file(s) matching %s into %s", len(sources), input, output)
    start = time.monotonic()
    with beam.Pipeline(options=options) as pipeline:
        build(pipeline, sources, output, cfg)
    seconds = time.monotonic() - start
    stats = storage.read_json(storage.join(output, STATS_FILE))
    storage.write_json(storage.join(output, SPLIT_FILE), {"method": cfg.split, "cutoff": cfg.cutoff})
    _log_stages(stats, seconds)
    check_usable(stats, output, cfg.min_item_count, cfg.min_user_events)
    configs.save(cfg, storage.join(output, CONFIG_FILE))  # last: it marks a complete, usable directory
    return stats


def build(pipeline: beam.Pipeline, sources: list[Source], output: str, cfg: PreprocessConfig) -> None:
    """Add every stage, in the order of issue 3, to ``pipeline``."""
    parsed = pipeline | "ParseAndValidate" >> ParseAndValidate(sources, cfg)
    buckets = parsed[EVENTS] | "GroupByUserBucket" >> GroupByUserBucket(cfg.user_buckets)
    deduplicated = buckets | "DeduplicateEvents" >> DeduplicateEvents()
    filtered = deduplicated[EVENTS] | "FilterSparse" >> FilterSparse(
        cfg.min_rating, cfg.min_item_count, cfg.min_user_events)
    events = filtered[EVENTS]
    vocab = events | "BuildVocabulary" >> SortedDistinct("item")
    users = events | "IndexUsers" >> SortedDistinct("user")
    time_range = events | "TimeRange" >> TimeRange()
    sequences = (
        events
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
    ) | "AllCounts" >> beam.Flatten()
    stats = counts | "Stats" >> Summarize(time_range)
    {"sequences": sequences, "dead_letters": parsed[DEAD_LETTERS], "vocab": vocab, "stats": stats} | (
        "WriteOutputs" >> WriteOutputs(output, cfg.num_shards))


def pipeline_options(beam_args: Sequence[str]) -> PipelineOptions:
    """Beam options from the pass-through arguments, on the in-process runner unless they name one."""
    args = list(beam_args)
    if not any(a == "--runner" or a.startswith("--runner=") for a in args):
        args.insert(0, f"--runner={DEFAULT_RUNNER}")
    return PipelineOptions(args)


OUTPUT_PREFIXES = (f"{SEQUENCES_PREFIX}-", f"{DEAD_LETTER_PREFIX}-")
OUTPUT_FILES = (VOCAB_FILE, SPLIT_FILE, STATS_FILE, CONFIG_FILE)


def prepare_output(output: str, overwrite: bool) -> None:
    """Refuse an output directory that holds an earlier run's files (stale shards would mix with new ones),
    or with ``overwrite`` delete exactly those files."""
    found = [m.path for m in FileSystems.match([storage.join(output, "*")])[0].metadata_list]
    ours = [p for p in found
            if posixpath.basename(p) in OUTPUT_FILES or posixpath.basename(p).startswith(OUTPUT_PREFIXES)]
    if ours and not overwrite:
        raise ConfigError(f"--output: {output} already holds preprocessed data ({len(ours)} files); "
                          "pass --overwrite to replace it or choose another directory")
    if ours:
        log.info("removing %d files of an earlier run in %s", len(ours), output)
        FileSystems.delete(ours)


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
