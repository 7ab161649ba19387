"""The contract between stages (docs/contracts.md): what each directory is called, what it holds, and the
readers and writers of what crosses a stage boundary. Both sides of every boundary import these names.

Every directory below is written with ``core.rundir`` (staged, published whole with a ``_SUCCESS.json``
manifest) and read through ``core.rundir.open_complete``, which refuses an incomplete one.
"""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

import numpy as np

from core import rundir, storage
from core.configs import ConfigError

# --- preprocessed data directory (preprocess -> train, evaluate, push) ---
DATA_KIND = "preprocessed-data"
SEQUENCES_PREFIX = "sequences"  # sequences-SSSSS-of-NNNNN.parquet, one row per user
DEAD_LETTER_PREFIX = "dead_letter"  # dead_letter-SSSSS-of-NNNNN.jsonl, one bad input row per line
VOCAB = "vocab.json"  # {"padding_index": 0, "items": [item_id of index 1, ...]}
SPLIT = "split.json"  # how targets were chosen
STATS = "stats.json"  # row accounting, users, items, timestamp range
PREPROCESS_CONFIG = "preprocess_config.json"  # the resolved PreprocessConfig
FINGERPRINT = "fingerprint.json"  # the input files and a content digest of the rows kept (data lineage)

# --- model artifact directory (train -> evaluate, gate, push) ---
MODEL_KIND = "model"
WEIGHTS = "model.pt"  # state_dict of the best validated weights; torch.load(weights_only=True)
MODEL_CONFIG = "model_config.json"  # trainer.model_config.ModelConfig: the forward pass and the weights' shapes
OBJECTIVE_CONFIG = "objective_config.json"  # trainer.objective.ObjectiveConfig
# What model_config.json also held before objective_config.json existed (champions in registries are that old).
LEGACY_OBJECTIVE_FIELDS = ("loss", "num_negatives", "penalty", "penalty_lambda", "penalty_tau")
TRAIN_CONFIG = "train_config.json"
SUMMARY = "summary.json"  # steps, time, tokens/s, best validation, history
LINEAGE = "lineage.json"  # the data it was trained on (fingerprint, time range) and what it started from
TENSORBOARD = "tensorboard"  # SummaryWriter event files (working state while training; moved out by the DAG)
CHECKPOINTS = "checkpoints"  # resumable training state (working state; never shipped)
MODEL_WORKING_STATE = (CHECKPOINTS, TENSORBOARD)

# --- evaluation directory (evaluate -> gate, push, report) ---
EVALUATION_KIND = "evaluation"
METRICS = "metrics.json"
PER_USER = "per_user.parquet"  # user_id, user_index, rank and one column per per-user metric
# What an evaluation measured, in metrics.json (this key) and in per_user.parquet's metadata: model_sha256 (of the
# model.pt bytes loaded), data_digest (the data dir's rundir content digest), split, protocol, items (catalogue).
MEASURED_KEY = "measured"
SPLITS = ("valid", "test")  # evaluation sub-directories: the candidate is chosen on valid, gated on test

# --- release ---
BLESSING = "blessing.json"
CHAMPION_REF = "champion_ref.json"  # {"champion": ChampionRef | null}: the pointer as one pipeline run read it
CHAMPION_POINTER = "champion.json"  # <registry>/<model-name>/champion.json: the registry's pointer (release.registry)
REGISTRY_VERSION_KIND = "registry-version"  # a model as the registry keeps it: the model dir plus its release files
MODEL_KINDS = (MODEL_KIND, REGISTRY_VERSION_KIND)  # what evaluation and warm starts read a model from
REPORT_KIND = "report"
REPORT_HTML = "report.html"
REPORT_MARKDOWN = "report.md"
REPORT_COMPARISON = "comparison.json"  # the report's numbers (release.comparison.Comparison.to_json)

# --- a pipeline run's own place: <pipeline root>/runs/<run id>/ (components.artifacts.run_root) ---
RUN_RECORD = "run.json"  # the pipeline run's end state and its finished runs (the exit handler's task)
RUN_MARKDOWN = "run.md"  # the same as a table

PerUser = dict[str, np.ndarray]


def read_json(directory: str, name: str, kind: str | None = None) -> Any:
    """A JSON file of a complete directory."""
    return storage.read_json(rundir.open_complete(directory, kind).path(name))


def read_optional_json(directory: str | None, name: str) -> Any | None:
    """A JSON file of a complete directory, or None when the directory or the file is absent."""
    if not directory or not rundir.is_complete(directory):
        return None
    uri = rundir.open_complete(directory).optional_path(name)
    return storage.read_json(uri) if uri else None


# torch.save stores an archive's members uncompressed, so they add up to about the file's own size; an archive that
# expands by more than this factor (a zip bomb in place of model.pt) is refused before torch.load allocates it.
MAX_WEIGHTS_EXPANSION = 1.5


def check_weights_archive(data: bytes, where: str) -> None:
    """ConfigError unless ``data`` is a zip archive whose members expand to at most MAX_WEIGHTS_EXPANSION times
    its size (torch.load's format); checked from the archive's directory, before anything is decompressed."""
    try:
        members = zipfile.ZipFile(io.BytesIO(data)).infolist()
    except zipfile.BadZipFile:
        raise ConfigError(f"{where}: not a torch.save archive (a zip file)") from None
    expanded = sum(member.file_size for member in members)
    if expanded > MAX_WEIGHTS_EXPANSION * len(data) + 4096:
        raise ConfigError(f"{where}: its members expand to {expanded:,} bytes from {len(data):,} (more than "
                          f"{MAX_WEIGHTS_EXPANSION}x: torch.save never compresses); refused before loading it")


def write_per_user(path: str, columns: dict[str, Any], measured: dict[str, Any] | None = None) -> None:
    """Write per-user evaluation values (``user_id`` first) as Parquet at ``path``; ``measured`` (what was
    evaluated: model, data, split, protocol, catalogue) goes into the file's own metadata, so the per-user values
    name what they measured wherever they are copied."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(columns)
    if measured is not None:
        table = table.replace_schema_metadata({MEASURED_KEY: json.dumps(measured, sort_keys=True)})
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    storage.write_bytes(path, buffer.getvalue())


def read_measured(evaluation_dir: str) -> dict[str, Any] | None:
    """What the per-user values of an evaluation measured (its Parquet metadata), or None when not recorded."""
    import pyarrow.parquet as pq

    uri = rundir.open_complete(evaluation_dir).optional_path(PER_USER)
    if uri is None:
        return None
    metadata = pq.read_schema(io.BytesIO(storage.read_bytes(uri))).metadata or {}
    raw = metadata.get(MEASURED_KEY.encode())
    return json.loads(raw) if raw else None


def read_per_user(evaluation_dir: str) -> PerUser | None:
    """The per-user columns of a complete evaluation directory as numpy arrays, or None if it has none."""
    import pyarrow.parquet as pq

    uri = rundir.open_complete(evaluation_dir).optional_path(PER_USER)
    if uri is None:
        return None
    table = pq.read_table(io.BytesIO(storage.read_bytes(uri)))
    return {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}
