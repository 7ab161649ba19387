"""Run directories through the CLI: readers refuse incomplete or damaged inputs in one line (exit 2) and a second
writer of any stage's output fails at once naming the first (exit 1), locally and on GCS, never mixing outputs.
(Kills mid-run: tests/pipelines/test_preprocess_command.py and tests/trainer/test_train.py.)"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from core import rundir
from pipelines import cli
from tests.support.data import write_preprocessed

# A tiny model (conftest.py of tests/trainer) as `interest train` flags.
TINY = ["--set", "d_model=16", "--set", "n_layer=1", "--set", "n_head=2", "--set", "max_len=12", "--set",
        "batch_size=6", "--set", "dropout=0.0"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """(a complete preprocessed data directory, a model trained on it for 2 steps)."""
    root = tmp_path_factory.mktemp("trained")
    data = write_preprocessed(root / "data")
    assert cli.main(["train", "--data", str(data), "--output", str(root / "model"), *TINY, "--max-steps", "2"]) == 0
    return data, root / "model"


def one_error_line(capsys) -> str:
    (line,) = capsys.readouterr().err.strip().splitlines()
    return line


def data_copy(data: Path, where: Path, damage: str | None = None) -> Path:
    copy = where / "data"
    shutil.copytree(data, copy)
    if damage == "no marker":
        (copy / "_SUCCESS.json").unlink()
    elif damage == "missing shard":
        (copy / "sequences-00001-of-00002.parquet").unlink()
    return copy


@pytest.mark.parametrize("command", ["train", "evaluate"])
@pytest.mark.parametrize("damage, missing", [
    ("no marker", "incomplete: no _SUCCESS.json"),
    ("missing shard", "incomplete: sequences-00001-of-00002.parquet is listed in _SUCCESS.json but missing"),
])
def test_train_and_evaluate_refuse_incomplete_data_naming_the_missing_piece(trained, tmp_path, capsys, command,
                                                                           damage, missing):
    data = data_copy(trained[0], tmp_path, damage)
    argv = (["train", "--data", str(data), "--output", str(tmp_path / "out"), *TINY, "--max-steps", "2"]
            if command == "train" else
            ["evaluate", "--model", str(trained[1]), "--data", str(data), "--output", str(tmp_path / "out")])
    assert cli.main(argv) == 2
    assert one_error_line(capsys).startswith(f"interest {command}: error: --data: {data}: {missing}")
    assert not (tmp_path / "out").exists() or not rundir.has_content(str(tmp_path / "out"))


def corrupt_shard(data: Path) -> str:
    """Garbage in a shard whose marker entry is rewritten to match it: complete by size and digest, unreadable."""
    shard = data / "sequences-00000-of-00002.parquet"
    garbage = os.urandom(shard.stat().st_size)
    shard.write_bytes(garbage)
    marker = json.loads((data / "_SUCCESS.json").read_text())
    marker["files"][shard.name].update(size=len(garbage), sha256=hashlib.sha256(garbage).hexdigest())
    (data / "_SUCCESS.json").write_text(json.dumps(marker))
    rundir.open_complete(str(data), verify_digests=True)
    return str(shard)


def corrupt_champion(registry: Path) -> str:
    (registry / "interest").mkdir(parents=True)
    (registry / "interest" / "champion.json").write_text('{"version": "v1", "path": ')
    return str(registry / "interest" / "champion.json")


@pytest.mark.parametrize("case", ["corrupt shard", "corrupt champion.json", "YAML syntax error"])
def test_damaged_files_are_one_line_errors_naming_the_file(trained, tmp_path, capsys, case):
    data, model = trained
    if case == "corrupt shard":
        data = data_copy(data, tmp_path)
        bad_file = corrupt_shard(data)
        argv = ["evaluate", "--model", str(model), "--data", str(data), "--output", str(tmp_path / "out")]
        says = "is not a readable Parquet shard"
    elif case == "corrupt champion.json":
        bad_file = corrupt_champion(tmp_path / "registry")
        argv = ["evaluate", "--model", f"registry:{tmp_path / 'registry'}", "--data", str(data), "--output",
                str(tmp_path / "out")]
        says = "the champion pointer is not valid JSON"
    else:
        bad_file = str(tmp_path / "train.yaml")
        Path(bad_file).write_text("train:\n  lr: [0.1\n  epochs: 3\n")
        argv = ["train", "--data", str(data), "--output", str(tmp_path / "out"), "--config", bad_file]
        says = "not valid JSON/YAML: line 3"
    assert cli.main(argv) == 2
    line = one_error_line(capsys)
    assert line.startswith(f"interest {argv[0]}: error: ") and bad_file in line and says in line, line
    assert not (tmp_path / "out").exists()
