"""Small but complete model, evaluation and data directories (docs/contracts.md, published through core.rundir)
and real blessings of them (release.gate.decide) for the registry and push tests."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from core import contract, rundir
from release.gate import GateConfig, decide
from release.records import Blessing, ChampionRef, Run

USERS = 300
# Thresholds that let any fake run through, so that a test is about the push, not the gate's judgement.
LENIENT = GateConfig(min_recall_at_10=0.0, min_change_vs_champion=-1.0, min_change_vs_baseline=-1.0,
                     bootstrap_resamples=100)
# Thresholds no fake run meets.
STRICT = GateConfig(min_recall_at_10=1.0, bootstrap_resamples=100)


def write_run(root: Path, name: str, seed: int, hit_rate: float = 0.3) -> tuple[str, str]:
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
    buffer = io.BytesIO()
    pq.write_table(pa.table({"user_id": [f"u{i:04d}" for i in range(USERS)], "user_index": np.arange(USERS),
                             "rank": np.where(hits > 0, 3, 50), "recall@10": hits}), buffer)
    with rundir.writing(str(eval_dir), contract.EVALUATION_KIND) as staging:
        Path(staging.join("per_user.parquet")).write_bytes(buffer.getvalue())
        Path(staging.join("metrics.json")).write_text(json.dumps({
            "recall@10": hits.mean(), "ndcg@10": hits.mean() / 2, "mrr": hits.mean() / 3, "user_norm_mean": 50.0,
            "users": USERS, "split": "test"}))
    return str(model_dir), str(eval_dir)


def write_data_dir(root: Path) -> str:
    data = root / "data"
    with rundir.writing(str(data), contract.DATA_KIND) as staging:
        Path(staging.join("stats.json")).write_text(json.dumps({"input_rows": 10, "interactions": 10, "users": 3,
                                                                "items": 3}))
        Path(staging.join("split.json")).write_text(json.dumps({"method": "leave_one_out", "cutoff": None}))
    return str(data)


def blessing_for(model_dir: str, eval_dir: str, champion: ChampionRef | None = None,
                 blessed: bool = True) -> Blessing:
    """A real blessing of one variant (release.gate.decide), blessed or not, gated against ``champion`` (None:
    as if the registry had none)."""
    run = Run.load(name=Path(model_dir).parent.name, model_dir=model_dir, test_dir=eval_dir)
    blessing = decide([run], None, champion, LENIENT if blessed else STRICT)
    assert blessing.blessed is blessed, [c for c in blessing.checks if not c.passed]
    return blessing
