"""Small but complete model, evaluation and data directories (docs/contracts.md, published through core.rundir)
and real blessings of them (release.gate.decide) for the registry and push tests."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from core import contract, rundir
from core.configs import to_dict
from release.gate import GateConfig, decide
from release.records import Blessing, ChampionRef, Run
from release.registry import Policy

USERS = 300
# Thresholds that let any fake run through, so that a test is about the push, not the gate's judgement.
LENIENT = GateConfig(min_recall_at_10=0.0, min_change_vs_champion=-1.0, min_change_vs_baseline=-1.0,
                     bootstrap_resamples=100)
# The release policy the fake runs' pushes are held to: the thresholds they were gated with.
LENIENT_POLICY = Policy(LENIENT)
DATA_DIGEST = "d" * 64  # the data every fake evaluation measured
# Thresholds no fake run meets.
STRICT = GateConfig(min_recall_at_10=1.0, bootstrap_resamples=100)


def write_run(root: Path, name: str, seed: int, hit_rate: float = 0.3,
              data_digest: str | None = None) -> tuple[str, str]:
    """A trained-model dir (with working state beside its files) and its test-split evaluation dir; returns
    (model_dir, eval_dir)."""
    rng = np.random.default_rng(seed)
    model_dir, eval_dir = root / name / "model", root / name / "eval-test"
    with rundir.writing(str(model_dir), contract.MODEL_KIND) as staging:
        out = Path(staging.path)
        (out / "model.pt").write_bytes(rng.bytes(50_000))  # stands in for the weights: only bytes matter here
        for config in ("model_config.json", "train_config.json"):
            (out / config).write_text(json.dumps({"name": name, "seed": seed}))
        (out / "vocab.json").write_text(json.dumps({"padding_index": 0, "items": ["a", "b", "c"]}))
        (out / "summary.json").write_text(json.dumps({"preset": name, "params": 1000 + seed, "train_seconds": 10.0,
                                                      "tokens_per_second": 5e4, "history": []}))
    # Working state the trainer keeps beside the export: never part of the manifest, never shipped.
    (model_dir / "tensorboard").mkdir()
    (model_dir / "tensorboard" / "events.out.tfevents.1").write_bytes(rng.bytes(2_000))
    (model_dir / "checkpoints").mkdir()
    (model_dir / "checkpoints" / "step-00000100.pt").write_bytes(b"resumable state, never shipped")
    hits = (rng.random(USERS) < hit_rate).astype(np.float64)
    return str(model_dir), write_evaluation(eval_dir, model_dir, hits, data_digest=data_digest or DATA_DIGEST)


def write_evaluation(eval_dir: Path, model_dir: Path, hits: np.ndarray, users: list[str] | None = None,
                     split: str = "test", data_digest: str = DATA_DIGEST) -> str:
    """An evaluation of ``model_dir`` with these per-user hits, naming what it measured as trainer.evaluate does."""
    users = users or [f"u{i:04d}" for i in range(len(hits))]
    measured = {"model_sha256": hashlib.sha256(Path(model_dir, "model.pt").read_bytes()).hexdigest(),
                "data_digest": data_digest, "split": split, "protocol": "whole_history", "items": 3}
    buffer = io.BytesIO()
    table = pa.table({"user_id": users, "user_index": np.arange(len(hits)), "rank": np.where(hits > 0, 3, 50),
                      "recall@10": hits})
    pq.write_table(table.replace_schema_metadata({contract.MEASURED_KEY: json.dumps(measured, sort_keys=True)}),
                   buffer)
    with rundir.writing(str(eval_dir), contract.EVALUATION_KIND) as staging:
        Path(staging.join("per_user.parquet")).write_bytes(buffer.getvalue())
        Path(staging.join("metrics.json")).write_text(json.dumps({
            "recall@10": hits.mean(), "ndcg@10": hits.mean() / 2, "mrr": hits.mean() / 3, "user_norm_mean": 50.0,
            "users": len(hits), "split": split, contract.MEASURED_KEY: measured}))
    return str(eval_dir)


def write_data_dir(root: Path) -> str:
    data = root / "data"
    with rundir.writing(str(data), contract.DATA_KIND) as staging:
        Path(staging.join("stats.json")).write_text(json.dumps({"input_rows": 10, "interactions": 10, "users": 3,
                                                                "items": 3}))
        Path(staging.join("split.json")).write_text(json.dumps({"method": "leave_one_out", "cutoff": None}))
    return str(data)


def policy_flags(config: GateConfig) -> list[str]:
    """``interest push --set`` flags for the policy ``config`` (its fields that differ from the defaults)."""
    default = to_dict(GateConfig())
    return [flag for key, value in to_dict(config).items() if default[key] != value
            for flag in ("--set", f"{key}={value}")]


def blessing_for(model_dir: str, eval_dir: str, champion: ChampionRef | None = None,
                 blessed: bool = True) -> Blessing:
    """A real blessing of one variant (release.gate.decide), blessed or not, gated against ``champion`` (None:
    as if the registry had none)."""
    run = Run.load(name=Path(model_dir).parent.name, model_dir=model_dir, test_dir=eval_dir)
    blessing = decide([run], None, champion, LENIENT if blessed else STRICT)
    assert blessing.blessed is blessed, [c for c in blessing.checks if not c.passed]
    return blessing
