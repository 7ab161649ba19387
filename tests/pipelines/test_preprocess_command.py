"""``interest preprocess``: flags -> PreprocessConfig, exit codes and messages."""

from __future__ import annotations

import json
import re

import pytest

from core.configs import ConfigError
from pipelines.cli import main
from pipelines.commands.preprocess import parse_cutoff


def test_preprocess_runs_and_passes_beam_options_through(tmp_path, capsys):
    (tmp_path / "e.tsv").write_text("uid\tsku\tts\n" + "".join(f"u{n % 2}\ti{n % 3}\t{1_600_000_000_000 + 1000 * n}\n"
                                                                for n in range(12)))
    (tmp_path / "c.yaml").write_text("min_item_count: 1\nnum_shards: 2\n")
    code = main(["preprocess", "--input", str(tmp_path / "e.tsv"), "--output", str(tmp_path / "out"),
                 "--columns", "user=uid,item=sku,timestamp=ts", "--timestamp-unit", "ms", "--config",
                 str(tmp_path / "c.yaml"), "--set", "min_user_events=2", "--", "--direct_num_workers=1"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary == {"input_rows": 12, "dead_letter_rows": 0, "duplicate_rows": 0, "filtered_rows": 0,
                       "interactions": 12, "users": 2, "items": 3}
    saved = json.loads((tmp_path / "out" / "preprocess_config.json").read_text())
    assert (saved["timestamp_unit"], saved["min_item_count"], saved["num_shards"], saved["columns"]["item"]) == (
        "ms", 1, 2, "sku")
    assert len(list((tmp_path / "out").glob("sequences-*-of-00002.parquet"))) == 2


@pytest.mark.parametrize("flags, message", [
    (["--columns", "user=uid"], "no column 'uid' for user in .*; columns found: 'user_id', 'item_id', 'timestamp'"),
    (["--columns", "usr=uid"], "PreprocessConfig.columns: unknown role 'usr'; roles are user, item, timestamp, rating"),
    (["--split", "temporal"], "PreprocessConfig.cutoff: split='temporal' needs a cutoff"),
    (["--cutoff", "soon"], "--cutoff: expected seconds since the epoch or an ISO date"),
    (["--set", "min_item_count=0"], "PreprocessConfig.min_item_count: must be >= 1, got 0"),
    (["--set", "split=random"], "PreprocessConfig.split: 'random' is not allowed; choose one of 'leave_one_out', 'temporal'"),
])
def test_usage_errors_exit_2_naming_the_flag(tmp_path, capsys, flags, message):
    (tmp_path / "e.csv").write_text("user_id,item_id,timestamp\nu,i,1\n")
    assert main(["preprocess", "--input", str(tmp_path / "e.csv"), "--output", str(tmp_path / "out"), *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("interest preprocess: error: ") and re.search(message, err), err


def test_unusable_input_exits_1_with_the_reason(tmp_path, capsys):
    (tmp_path / "e.csv").write_text("user_id,item_id,timestamp\nu,i,1700000000000\n")
    assert main(["preprocess", "--input", str(tmp_path / "e.csv"), "--output", str(tmp_path / "out")]) == 1
    assert "timestamps look like milliseconds: use --timestamp-unit ms" in capsys.readouterr().err


def test_cutoff_accepts_seconds_and_iso_dates():
    assert parse_cutoff("1046454590") == 1046454590
    assert parse_cutoff("2003-01-01") == 1041379200
    assert parse_cutoff("2003-01-01T01:00:00+01:00") == 1041379200
    with pytest.raises(ConfigError):
        parse_cutoff("2003-13-01")
