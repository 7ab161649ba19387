"""Issue 27: the same events give the same data on any number of Beam workers.

A synthetic log (preprocessing/synthetic.py) of several files runs once on one worker and again on Beam's local
multi-worker runner, whose ParallelBundleManager cuts every stage's input (the files, the user buckets after the
GroupByKey, the per-bucket item counts and distinct values before the global combines) into one bundle per worker,
each pre-combined on its own and in another order. Everything a consumer reads must be identical. The modes whose
workers talk to the runner over gRPC are refused: Beam loses elements there (benchmarks/beam_local_workers.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from core.configs import ConfigError
from preprocessing.config import PreprocessConfig
from preprocessing.pipeline import pipeline_options, run
from preprocessing.synthetic import SyntheticConfig, generate

NOW = 2_000_000_000


def output(out: Path) -> dict:
    """Per-user sequences (every column, in user order), vocabulary, stats (digest included), split."""
    return {
        "sequences": pq.read_table(sorted(out.glob("sequences-*.parquet"))).sort_by("user_index").to_pylist(),
        "vocab": json.loads((out / "vocab.json").read_text()),
        "stats": json.loads((out / "stats.json").read_text()),
        "split": json.loads((out / "split.json").read_text()),
    }


@pytest.fixture(scope="module")
def logs_and_one_worker(tmp_path_factory):
    root = tmp_path_factory.mktemp("multiworker")
    # 4 files, ~600 users, items with fewer than 5 events (filtered only when counted over every bucket).
    generate(SyntheticConfig(events=30_000, rows_per_file=7_500, items=3_000, seed=27), root / "logs")
    cfg = PreprocessConfig(max_timestamp=NOW, user_buckets=16)
    run(str(root / "logs"), str(root / "one"), cfg)
    return root, cfg, output(root / "one")


@pytest.mark.slow
@pytest.mark.parametrize("workers", [2, 3])
def test_split_bundles_give_the_one_worker_output(logs_and_one_worker, workers):
    root, cfg, one = logs_and_one_worker
    assert one["stats"]["filtered_reasons"]["min_item_count"] > 0 and one["stats"]["input_files"] == 4
    run(str(root / "logs"), str(root / f"workers-{workers}"), cfg,
        beam_args=[f"--direct_num_workers={workers}", "--direct_running_mode=in_memory"])
    two = output(root / f"workers-{workers}")
    assert two["stats"] == one["stats"]
    assert two["vocab"] == one["vocab"]
    assert two["split"] == one["split"]
    assert len(two["sequences"]) == len(one["sequences"]) == one["stats"]["users"]
    assert two["sequences"] == one["sequences"]


@pytest.mark.parametrize("workers", ["2", "0"])
@pytest.mark.parametrize("mode", ["multi_processing", "multi_threading"])
def test_local_grpc_workers_are_refused_before_any_work(workers, mode):
    with pytest.raises(ConfigError, match=f"{mode}.*refused.*issue 27"):
        pipeline_options([f"--direct_num_workers={workers}", f"--direct_running_mode={mode}"])


@pytest.mark.parametrize("beam_args", [
    ["--direct_num_workers=1", "--direct_running_mode=multi_processing"],
    ["--direct_num_workers=3", "--direct_running_mode=in_memory"],
    ["--runner=DataflowRunner", "--direct_num_workers=2", "--direct_running_mode=multi_processing"],
])
def test_other_worker_settings_are_accepted(beam_args):
    pipeline_options(beam_args)
