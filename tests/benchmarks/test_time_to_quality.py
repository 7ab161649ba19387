"""benchmarks/time_to_quality.py on tiny data: both protocols, test Recall@10 after each paused segment, the
seconds to the published thresholds, one plot."""

import json

from benchmarks import time_to_quality
from tests.support.data import write_preprocessed

TINY = ["--set", "d_model=16", "--set", "n_layer=1", "--set", "n_head=2", "--set", "max_len=12", "--set",
        "batch_size=6", "--set", "lr=0.003", "--set", "log_every_steps=5", "--set", "patience=0"]


def test_both_protocols_are_trained_in_segments_and_plotted(tmp_path):
    ours, gr = write_preprocessed(tmp_path / "ours"), write_preprocessed(tmp_path / "gr", last_event=True)
    result_path = tmp_path / "ttq.json"
    out = time_to_quality.main(["--preset", "baseline", *TINY, "--time-budget", "1.5", "--test-every", "0.5",
                                "--eval-every", "4", "--data-ours", str(ours),
                                "--data-generative-recommenders", str(gr), "--output", str(tmp_path / "runs"),
                                "--result", str(result_path)])
    assert json.loads(result_path.read_text())["protocols"].keys() == {"ours", "generative-recommenders"}
    assert (tmp_path / "ttq.png").stat().st_size > 0
    for run in out["protocols"].values():
        tests = run["tests"]
        assert len(tests) >= 2 and run["stopped"] == "time_budget", run["stop_note"]
        assert [t["step"] for t in tests] == sorted(t["step"] for t in tests)  # one run, resumed segment by segment
        assert tests[-1]["train_seconds"] >= 1.5
        assert set(run["seconds_to_test_recall@10"]) == {"SASRec 0.2853", "target 0.31"}
        assert run["final_test_recall@10"] == tests[-1]["test_recall@10"]
    assert out["protocols"]["generative-recommenders"]["validation_history"] == []  # no validation event
    assert out["protocols"]["ours"]["validation_history"]
    assert out["protocols"]["generative-recommenders"]["tests"][-1]["best_step"] is None
