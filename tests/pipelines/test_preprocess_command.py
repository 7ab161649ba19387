"""``interest preprocess``: flags -> PreprocessConfig, exit codes and messages."""

from __future__ import annotations

import hashlib
import json
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core import rundir
from core.configs import ConfigError
from pipelines.cli import main
from pipelines.commands.preprocess import parse_cutoff

ROOT = Path(__file__).resolve().parents[2]


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
    (["--set", "max_timestamp=1e30"], r"max_timestamp: 1000000000000000019884624838656 does not fit in a 64-bit"),
    (["--set", "max_timestamp=1.0e+30"], r"max_timestamp: 1000000000000000019884624838656 does not fit in a 64-bit"),
    (["--set", "max_timestamp=1000000000000000"], r"PreprocessConfig.max_timestamp: must be seconds since the epoch in \[0, "),
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


@pytest.mark.parametrize("scale, flags, hint", [
    (1, ["--timestamp-unit", "ms"], "timestamps look like seconds: use --timestamp-unit s"),
    (1_000_000, [], "timestamps look like microseconds: use --timestamp-unit us"),
])
def test_timestamps_in_another_unit_fail_with_the_flag_that_reads_them(tmp_path, capsys, scale, flags, hint):
    """Seconds read as milliseconds land in January 1970, microseconds read as seconds far in the future: the run
    fails naming the --timestamp-unit that reads them, and that flag then works."""
    (tmp_path / "e.csv").write_text("user_id,item_id,timestamp\n" + "".join(
        f"u{n % 3},i{n % 2},{(1_600_000_000 + 60 * n) * scale}\n" for n in range(12)))
    argv = ["preprocess", "--input", str(tmp_path / "e.csv"), "--output", str(tmp_path / "out"), "--set",
            "min_item_count=1", "--set", "max_timestamp=2000000000"]
    assert main([*argv, *flags]) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert hint in line and "dead_letter-*.jsonl" in line and not (tmp_path / "out").exists()
    assert main([*argv, "--timestamp-unit", hint.rsplit(" ", 1)[1]]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["interactions"] == 12


def test_cutoff_accepts_seconds_and_iso_dates():
    assert parse_cutoff("1046454590") == 1046454590
    assert parse_cutoff("2003-01-01") == 1041379200
    assert parse_cutoff("2003-01-01T01:00:00+01:00") == 1041379200
    with pytest.raises(ConfigError):
        parse_cutoff("2003-13-01")


def published(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A complete preprocessed directory ``out`` and the sha256 of every file in it, the marker included."""
    (tmp_path / "good.csv").write_text("user_id,item_id,timestamp\n" + "".join(
        f"u{n % 5},i{n % 4},{1_600_000_000 + n}\n" for n in range(40)))
    out = tmp_path / "out"
    assert main(["preprocess", "--input", str(tmp_path / "good.csv"), "--output", str(out), "--set",
                 "min_item_count=1"]) == 0
    return out, snapshot(out)


def snapshot(out: Path) -> dict[str, str]:
    """Every file of a complete directory with its sha256, after checking each against the marker."""
    listed = rundir.open_complete(str(out)).files
    files = {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest() for p in out.rglob("*") if p.is_file()}
    assert set(files) == {*listed, "_SUCCESS.json"}
    return files


def test_overwrite_with_an_unusable_input_keeps_the_previous_output(tmp_path, capsys):
    out, before = published(tmp_path)
    (tmp_path / "bad.csv").write_text("user_id,item_id,timestamp\nu1,i1,soon\n,i2,5\n")
    capsys.readouterr()
    assert main(["preprocess", "--input", str(tmp_path / "bad.csv"), "--output", str(out), "--overwrite"]) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "no valid rows: all 2 rows are dead letters" in line
    assert snapshot(out) == before
    assert json.loads((tmp_path / "out.rejected" / "stats.json").read_text())["dead_letter_rows"] == 2


def test_sigkill_mid_preprocess_keeps_the_previous_output(tmp_path):
    """A real `interest preprocess --overwrite` process is killed as soon as its staging directory exists, i.e.
    while Beam runs: 300k rows keep Beam busy for seconds, and publishing comes only after it. The staging
    directory it leaves has no marker (the kill landed before the publish); the output is the previous one."""
    out, before = published(tmp_path)
    rng = random.Random(0)
    with open(tmp_path / "big.csv", "w") as f:
        f.write("user_id,item_id,timestamp\n")
        f.writelines(f"u{rng.randrange(5000)},i{rng.randrange(800)},{1_600_000_000 + n}\n" for n in range(300_000))
    victim = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "preprocess", "--input", str(tmp_path / "big.csv"),
                               "--output", str(out), "--overwrite"], cwd=ROOT, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".out.staging-*")):
        assert victim.poll() is None and time.monotonic() < deadline, victim.communicate()[1]
        time.sleep(0.005)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    assert victim.returncode == -signal.SIGKILL
    (staging,) = tmp_path.glob(".out.staging-*")
    assert not (staging / "_SUCCESS.json").exists()
    assert snapshot(out) == before
    with rundir.locked(str(out)):  # the kernel released the dead writer's lock
        pass
