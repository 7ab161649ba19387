"""The Markdown table of `make bench`."""

from benchmarks.report import markdown_table

TRAIN = {
    "device": "cpu", "threads": 2, "data": {"max_len": 200},
    "peak": {"flops_per_second": 290e9, "dtype": "float32"},
    "reference": {"tokens_per_second": 9500.0, "mfu": 0.1},
    "presets": {"baseline": {"tokens_per_second": 21000.0, "ratio_vs_reference": 21000 / 9500, "mfu": 0.26,
                             "step": {"tokens_per_second": 22000.0}, "trainer_vs_step": 21000 / 22000}},
    "same_model_as": {"cosine": "baseline"},
    "steps": 16, "rounds": 3, "load_average": (1.5, 1.25, 1.0),
}


def test_table_has_one_row_per_result_and_the_mfu_basis():
    table = markdown_table(TRAIN, {"rows_per_second": 41234.5}, {"users": 6040, "items": 3416,
                                                                   "users_per_second": 52000.0})
    lines = table.splitlines()
    assert lines[0].startswith("| benchmark | throughput | reference | ours / reference | MFU |")
    assert "| train `baseline` | 21,000 tokens/s | 9,500 tokens/s | 2.21x | 26.0% |" in lines
    assert "| train `cosine` | same model as `baseline` | | | |" in lines
    assert any(line.startswith("| train reference SASRec") and "10.0%" in line for line in lines)
    assert any("41,234 rows/s" in line for line in lines)
    assert any("52,000 users/s" in line and "6,040 users" in line for line in lines)
    assert "peak 290 GFLOP/s" in table
    assert "over 16 real steps, median of 3 rounds" in table
    assert "`baseline` 22,000 tokens/s (trainer / step 0.95)" in table and "Load average 1.5, 1.2, 1.0" in table


def test_missing_results_are_left_out():
    assert markdown_table(evaluation=None).splitlines() == markdown_table().splitlines()
    assert "tokens/s" not in markdown_table(preprocess={"rows_per_second": 1.0})
