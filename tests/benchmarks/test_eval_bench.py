"""The evaluation benchmark at a tiny size: a catalogue in several item blocks, its result file, and the peak
memory it reports."""

import json

from benchmarks.eval_bench import main


def test_eval_bench_runs_a_blocked_catalogue_and_reports_memory(tmp_path):
    out = tmp_path / "eval.json"
    result = main(["--users", "40", "--items", "700", "--item-block", "64", "--repeats", "1", "--output", str(out)])
    assert json.loads(out.read_text()) == result
    assert (result["users"], result["items"], result["item_block"]) == (40, 700, 64)
    assert 0 < result["inputs_rss_mib"] <= result["peak_rss_mib"]
    assert 0.0 <= result["recall@10_random"] <= 1.0 and result["users_per_second"] > 0
