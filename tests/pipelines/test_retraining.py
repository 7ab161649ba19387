"""Nightly retraining on data that changes, with the real commands on real data (MovieLens-100K cut by time).

Day 1 trains on the events before a cutoff and pushes the first champion. Day 2 has every event, so new users
and new items: the champion is re-evaluated on day 2's own splits (items matched by id, users paired by id), a
better candidate is blessed and pushed, a deliberately worse one is not and the report says why, and a warm
start from the champion reaches the champion's validation recall in fewer steps than training from scratch.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from core import contract, rundir
from pipelines.cli import main
from release.registry import list_versions, read_champion

# A small, quick model: the scenario is about the release path, not about quality.
MODEL = ["--set", "d_model=32", "--set", "n_layer=1", "--set", "n_head=2", "--set", "max_len=50",
         "--set", "dropout=0.1", "--set", "batch_size=64", "--set", "lr=0.003", "--set", "patience=0",
         "--set", "log_every_steps=50", "--set", "checkpoint_every_steps=1000"]
CUTOFF_QUANTILE = 0.7  # day 1 sees the first 70% of the events in time


def interest(*argv: str) -> None:
    assert main(list(argv)) == 0, argv


def evaluate(model: str, data: Path, out: Path) -> dict[str, str]:
    """Both splits of ``model`` on ``data``; the gate's variant flags."""
    for split in contract.SPLITS:
        interest("evaluate", "--model", model, "--data", str(data), "--split", split, "--output", str(out / split))
    return {split: str(out / split) for split in contract.SPLITS}


def first_step_reaching(model_dir: Path, recall: float) -> int | None:
    history = json.loads((model_dir / contract.SUMMARY).read_text())["history"]
    return next((h["step"] for h in history if h["valid_recall@10"] >= recall), None)


@pytest.mark.slow
def test_nightly_retraining_re_evaluates_the_champion_and_ships_only_what_beats_it(ml100k, tmp_path, monkeypatch,
                                                                                  capsys):
    import torch

    torch.set_num_threads(1)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    events = pq.read_table(ml100k)
    cutoff = int(np.quantile(events.column("timestamp").to_numpy(), CUTOFF_QUANTILE))
    pq.write_table(events.filter(pc.less(events.column("timestamp"), cutoff)), tmp_path / "day1.parquet")
    pq.write_table(events, tmp_path / "day2.parquet")
    registry = str(tmp_path / "registry")

    # --- day 1: the first champion ---
    interest("preprocess", "--input", str(tmp_path / "day1.parquet"), "--output", str(tmp_path / "data1"))
    interest("train", "--data", str(tmp_path / "data1"), "--output", str(tmp_path / "day1"), *MODEL,
             "--max-steps", "150", "--set", "eval_every_steps=50")
    day1 = evaluate(str(tmp_path / "day1"), tmp_path / "data1", tmp_path / "day1-eval")
    interest("gate", "--variant", f"name=day1,model={tmp_path / 'day1'},valid={day1['valid']},test={day1['test']}",
             "--baseline", "none", "--registry", registry, "--output", str(tmp_path / "blessing1.json"))
    interest("push", "--blessing", str(tmp_path / "blessing1.json"), "--registry", registry,
             "--data", str(tmp_path / "data1"))
    champion = read_champion(registry)
    assert champion is not None

    # --- day 2: every event; new users and new items ---
    interest("preprocess", "--input", str(tmp_path / "day2.parquet"), "--output", str(tmp_path / "data2"))
    stats1, stats2 = (contract.read_json(str(tmp_path / d), contract.STATS) for d in ("data1", "data2"))
    assert stats2["users"] > stats1["users"] and stats2["items"] > stats1["items"]
    assert stats2["content_digest"] != stats1["content_digest"]
    # The champion judged on day 2's own splits: items matched by id (the new ones it cannot recommend).
    judged = evaluate(f"registry:{registry}", tmp_path / "data2", tmp_path / "champion-eval")
    champion_test = contract.read_json(judged["test"], contract.METRICS)
    assert champion_test["users"] == stats2["users"] and champion_test["unseen_items"] > 0
    champion_valid = contract.read_json(judged["valid"], contract.METRICS)["recall@10"]

    # A candidate trained from scratch on day 2, and one warm-started from the champion.
    interest("train", "--data", str(tmp_path / "data2"), "--output", str(tmp_path / "scratch"), *MODEL,
             "--max-steps", "300", "--set", "eval_every_steps=10")
    interest("train", "--data", str(tmp_path / "data2"), "--output", str(tmp_path / "warm"), *MODEL,
             "--max-steps", "300", "--set", "eval_every_steps=10", "--set", f"init_from=registry:{registry}")
    warm_lineage = json.loads((tmp_path / "warm" / contract.LINEAGE).read_text())
    assert warm_lineage["init_from"]["model_dir"] == champion.uri and warm_lineage["init_from"]["items_new"] > 0
    warm_step = first_step_reaching(tmp_path / "warm", champion_valid)
    scratch_step = first_step_reaching(tmp_path / "scratch", champion_valid)
    assert warm_step is not None and scratch_step is not None, (warm_step, scratch_step, champion_valid)
    assert warm_step < scratch_step  # steps, not seconds
    with capsys.disabled():  # the figures of the README's retraining section
        print(f"\nchampion valid Recall@10 on day 2 {champion_valid:.4f}: reached at step {warm_step} warm-started, "
              f"{scratch_step} from scratch")

    # --- the gate on day 2, against the champion as re-evaluated on day 2 ---
    better = evaluate(str(tmp_path / "scratch"), tmp_path / "data2", tmp_path / "scratch-eval")
    flags = ["--baseline", "none", "--registry", registry, "--champion-eval", judged["test"]]
    interest("gate", "--variant", f"name=scratch,model={tmp_path / 'scratch'},valid={better['valid']},"
             f"test={better['test']}", *flags, "--output", str(tmp_path / "blessing2.json"))
    blessing = json.loads((tmp_path / "blessing2.json").read_text())
    checks = {c["name"]: c for c in blessing["checks"]}
    assert blessing["champion"]["re_evaluated"] and not blessing["champion"]["same_data"]
    assert checks["bootstrap_vs_champion"]["value"]["users"] == stats2["users"]  # paired by id, every user
    assert blessing["blessed"], [c["reason"] for c in blessing["checks"] if not c["passed"]]

    # A deliberately worse candidate (a few steps) is not blessed, and the report says why.
    interest("train", "--data", str(tmp_path / "data2"), "--output", str(tmp_path / "worse"), *MODEL,
             "--max-steps", "3", "--set", "eval_every_steps=3")
    worse = evaluate(str(tmp_path / "worse"), tmp_path / "data2", tmp_path / "worse-eval")
    worse_flag = f"name=worse,model={tmp_path / 'worse'},valid={worse['valid']},test={worse['test']}"
    interest("gate", "--variant", worse_flag, *flags, "--output", str(tmp_path / "blessing3.json"))
    refused = json.loads((tmp_path / "blessing3.json").read_text())
    assert not refused["blessed"] and not {c["name"]: c for c in refused["checks"]}["change_vs_champion"]["passed"]
    interest("report", "--variant", worse_flag, "--baseline", "none", "--blessing", str(tmp_path / "blessing3.json"),
             "--output", str(tmp_path / "report"))
    page = (tmp_path / "report" / contract.REPORT_HTML).read_text()
    assert "NOT BLESSED" in page and "failed: " in page and "change_vs_champion" in page
    assert "re-evaluated on this run" in page and "trained on other data" in page
    # Without the re-evaluation, the metrics stored on day 1 measured other data: the gate refuses to compare.
    capsys.readouterr()
    stale = ["--baseline", "none", "--registry", registry]
    assert main(["gate", "--variant", f"name=scratch,model={tmp_path / 'scratch'},valid={better['valid']},"
                 f"test={better['test']}", *stale, "--output", str(tmp_path / "blessing-stale.json")]) == 2
    assert "test evaluation) measured data_digest" in capsys.readouterr().err
    assert not (tmp_path / "blessing-stale.json").exists()

    # The better candidate ships: a new version whose lineage records day 2's data; the old champion stays listed.
    capsys.readouterr()
    interest("push", "--blessing", str(tmp_path / "blessing2.json"), "--registry", registry,
             "--data", str(tmp_path / "data2"))
    pushed = json.loads(capsys.readouterr().out)
    assert pushed["outcome"] == "pushed" and pushed["previous_version"] == champion.version
    new = read_champion(registry)
    lineage = contract.read_json(new.uri, contract.LINEAGE)
    assert lineage["data_fingerprint"]["content_digest"] == stats2["content_digest"]
    assert [v["status"] for v in list_versions(registry)] == ["complete", "complete"]
    assert rundir.is_complete(champion.uri)  # versions are immutable: day 1's is still there
