"""``PreprocessConfig.shuffle = "files"`` (preprocessing/spill.py): the events wait between stages in Parquet files
and Beam carries only their paths; the rows must be exactly those of Beam's own shuffle."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from preprocessing import spill
from preprocessing.config import PreprocessConfig
from preprocessing.pipeline import run
from preprocessing.synthetic import SyntheticConfig, generate

NOW = 2_000_000_000


def output(out) -> dict:
    return {
        "sequences": pq.read_table(sorted(out.glob("sequences-*.parquet"))).sort_by("user_index").to_pylist(),
        "vocab": json.loads((out / "vocab.json").read_text()),
        "stats": json.loads((out / "stats.json").read_text()),
        "manifest": json.loads((out / "_SUCCESS.json").read_text()),
    }


@pytest.mark.parametrize("beam_args", [[], ["--direct_num_workers=2", "--direct_running_mode=in_memory"]])
def test_files_shuffle_gives_the_rows_of_beams_shuffle(tmp_path, monkeypatch, beam_args):
    # A parse element writes its buffered rows every 2,000 rows: several parts per bucket and source file.
    monkeypatch.setattr(spill, "FLUSH_ROWS", 2_000)
    generate(SyntheticConfig(events=20_000, rows_per_file=5_000, items=2_000, seed=26), tmp_path / "logs")
    beam_cfg = PreprocessConfig(max_timestamp=NOW, user_buckets=8)
    files_cfg = PreprocessConfig(max_timestamp=NOW, user_buckets=8, shuffle="files")
    run(str(tmp_path / "logs"), str(tmp_path / "beam"), beam_cfg)
    run(str(tmp_path / "logs"), str(tmp_path / "files"), files_cfg, beam_args=beam_args)
    by_beam, by_files = output(tmp_path / "beam"), output(tmp_path / "files")
    assert by_files["stats"] == by_beam["stats"] and by_files["stats"]["filtered_reasons"]["min_item_count"] > 0
    assert by_files["vocab"] == by_beam["vocab"]
    assert by_files["sequences"] == by_beam["sequences"]
    # One file per user bucket, nothing of the spill left, and the manifest counts every user.
    names = sorted(p.name for p in (tmp_path / "files").glob("sequences-*"))
    assert names == [f"sequences-{b:05d}-of-00008.parquet" for b in range(8)]
    assert not (tmp_path / "files" / "_shuffle").exists()
    assert not any("_shuffle" in name for name in json.dumps(by_files["manifest"]).split('"'))
    assert by_files["manifest"]["users"] == by_beam["stats"]["users"]


def test_movielens_gives_the_same_rows_and_digest_through_files(tmp_path, ml100k):
    """Real MovieLens-100K: the kept rows (content digest), vocabulary and every sequence match Beam's shuffle."""
    run(str(ml100k), str(tmp_path / "beam"), PreprocessConfig(max_timestamp=NOW))
    run(str(ml100k), str(tmp_path / "files"), PreprocessConfig(max_timestamp=NOW, shuffle="files"))
    by_beam, by_files = output(tmp_path / "beam"), output(tmp_path / "files")
    assert by_files["stats"] == by_beam["stats"] and by_beam["stats"]["users"] == 943
    assert by_files["vocab"] == by_beam["vocab"]
    assert by_files["sequences"] == by_beam["sequences"]
