"""Small but complete model, evaluation and data directories (docs/contracts.md) for registry tests."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

USERS = 300


def write_run(root: Path, name: str, seed: int, hit_rate: float = 0.3) -> tuple[str, str]:
    """A trained-model dir and its test-split evaluation dir; returns (model_dir, eval_dir)."""
    rng = np.random.default_rng(seed)
    model_dir, eval_dir = root / name / "model", root / name / "eval-test"
    (model_dir / "tensorboard").mkdir(parents=True)
    (model_dir / "checkpoints").mkdir()
    eval_dir.mkdir(parents=True)
    (model_dir / "model.pt").write_bytes(rng.bytes(50_000))  # stands in for the weights: only bytes matter here
    (model_dir / "checkpoints" / "step-00000100.pt").write_bytes(b"resumable state, never shipped")
    (model_dir / "tensorboard" / "events.out.tfevents.1").write_bytes(rng.bytes(2_000))
    for config in ("model_config.json", "train_config.json"):
        (model_dir / config).write_text(json.dumps({"name": name, "seed": seed}))
    (model_dir / "vocab.json").write_text(json.dumps({"padding_index": 0, "items": ["a", "b", "c"]}))
    (model_dir / "summary.json").write_text(json.dumps({"preset": name, "params": 1000 + seed, "train_seconds": 10.0,
                                                        "tokens_per_second": 5e4, "history": []}))
    hits = (rng.random(USERS) < hit_rate).astype(np.float64)
    buffer = io.BytesIO()
    pq.write_table(pa.table({"user_index": np.arange(USERS), "rank": np.where(hits > 0, 3, 50),
                             "recall@10": hits}), buffer)
    (eval_dir / "per_user.parquet").write_bytes(buffer.getvalue())
    (eval_dir / "metrics.json").write_text(json.dumps({"recall@10": hits.mean(), "ndcg@10": hits.mean() / 2,
                                                       "mrr": hits.mean() / 3, "user_norm_mean": 50.0,
                                                       "users": USERS, "split": "test"}))
    return str(model_dir), str(eval_dir)


def write_data_dir(root: Path) -> str:
    data = root / "data"
    data.mkdir(parents=True)
    (data / "stats.json").write_text(json.dumps({"input_rows": 10, "interactions": 10, "users": 3, "items": 3}))
    (data / "split.json").write_text(json.dumps({"method": "leave_one_out", "cutoff": None}))
    return str(data)


def blessing_for(model_dir: str, eval_dir: str, champion_generation: int, blessed: bool = True) -> dict:
    """A minimal blessing, as pipelines.gate.gate writes it, for tests that are about the push alone."""
    return {"blessed": blessed, "candidate": {"name": Path(model_dir).parent.name, "model_dir": model_dir,
                                              "test_dir": eval_dir},
            "champion_generation": champion_generation, "checks": []}
