"""Evaluated runs in memory (``release.records.Run`` with summaries, histories and per-user hits paired with a
shared baseline) and the gate's blessing of one: what the report, compare and run-summary tests build on."""

from __future__ import annotations

import numpy as np

from release.comparison import Bootstrap, difference
from release.gate import GateConfig, gate_checks
from release.records import Blessing, Run

USERS = 1500
BASE = (np.random.default_rng(0).random(USERS) < 0.3).astype(float)  # the baseline's hits: Recall@10 about 0.3


def history(final: float, steps: int = 5, seconds_per_step: float = 0.3) -> list[dict]:
    return [{"step": 100 * i, "wall_seconds": seconds_per_step * 100 * i, "train_loss": 5.0 - i,
             "valid_recall@10": final * i / steps, "valid_ndcg@10": final / 2, "user_norm_mean": 10.0 + 20 * i}
            for i in range(1, steps + 1)]


def hits_like(base: np.ndarray, gained: int, seed: int, lost: int = 0) -> np.ndarray:
    """``base`` with ``gained`` more users hit and ``lost`` fewer (a negative ``gained`` loses that many)."""
    gained, lost = max(gained, 0), lost + max(-gained, 0)
    rng, out = np.random.default_rng(seed), base.copy()
    out[rng.choice(np.flatnonzero(base == 0), gained, replace=False)] = 1
    out[rng.choice(np.flatnonzero(base == 1), lost, replace=False)] = 0
    return out


BASE = (np.random.default_rng(0).random(USERS) < 0.3).astype(float)


def fake_run(name: str, gained: int, seed: int | None = None, variant: str = "", norm: float = 80.0,
             steps: int = 500, penalty: dict | None = None, model: dict | None = None, lost: int = 0) -> Run:
    """A run whose users hit like the baseline's, ``gained`` more and ``lost`` fewer (paired), on both splits."""
    hits = hits_like(BASE, gained, seed or 0, lost)
    users = {"user_id": np.array([f"u{i}" for i in range(USERS)]), "user_index": np.arange(USERS), "recall@10": hits}
    recall = float(hits.mean())
    return Run(name=name, variant=variant, seed=seed, model_dir=f"/m/{name}", valid_dir=f"/v/{name}",
               test_dir=f"/e/{name}",
               summary={"params": 120_000, "train_seconds": 95.0 + (seed or 0), "tokens_per_second": 48_000.0,
                        "steps": steps, "history": history(recall)},
               valid={"recall@10": recall, "user_norm_mean": norm},
               test={"recall@10": recall, "ndcg@10": 0.15, "mrr": 0.12, "coverage@10": 0.4, "user_norm_mean": norm,
                     "user_norm_p95": 120.0, "item_norm_mean": 3.0, "params": 120_000},
               per_user=users, valid_per_user=users,
               model_config={"d_model": 64, "penalty": "none", **(model or {}), **(penalty or {})})


def blessing_of(candidate: Run, baseline: Run) -> Blessing:
    """The gate's blessing of ``candidate`` (its checks; no files to bind here)."""
    vs = difference([candidate], [baseline], "test", baseline.variant, Bootstrap())
    checks = gate_checks(candidate, vs, None, GateConfig())
    return Blessing(blessed=all(c.passed for c in checks),
                    candidate={"name": candidate.name, "variant": candidate.variant},
                    candidate_metrics=dict(candidate.test), baseline=baseline.variant, champion=None,
                    champion_generation=0, checks=checks, config={"bootstrap_resamples": 500}, runs={}, inputs={},
                    created_at="2026-12-01T00:00:00+00:00")
