"""core.storage on local paths and on a real GCS emulator (127.0.0.1)."""

from __future__ import annotations

import os

import pytest

from core import storage


def test_local_atomic_write_replaces_whole_file(tmp_path):
    target = str(tmp_path / "a" / "b.json")
    storage.write_json(target, {"x": 1})
    storage.write_json(target, {"x": 2})
    assert storage.read_json(target) == {"x": 2}
    assert os.listdir(tmp_path / "a") == ["b.json"]


def test_local_failed_write_leaves_old_content(tmp_path, monkeypatch):
    target = tmp_path / "f.txt"
    storage.write_text(str(target), "old")

    def broken_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="disk full"):
        storage.write_text(str(target), "new")
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["f.txt"]


def test_split_and_join():
    assert storage.split_gcs("gs://b/x/y") == ("b", "x/y")
    assert storage.join("gs://b/x/", "y", "/z") == "gs://b/x/y/z"
    with pytest.raises(ValueError, match="without a bucket"):
        storage.split_gcs("gs:///x")


def test_gcs_round_trip_and_copy_tree(gcs_bucket, tmp_path):
    src = tmp_path / "model"
    (src / "sub").mkdir(parents=True)
    (src / "weights.bin").write_bytes(b"\x00\x01" * 1000)
    (src / "sub" / "config.json").write_text('{"a": 1}')
    dest = f"{gcs_bucket}/registry/m/1"
    storage.copy_tree(str(src), dest)
    assert storage.list_files(dest) == [f"{dest}/sub/config.json", f"{dest}/weights.bin"]
    assert storage.exists(dest) and not storage.exists(f"{gcs_bucket}/registry/other")
    assert storage.read_json(f"{dest}/sub/config.json") == {"a": 1}
    copy = f"{gcs_bucket}/copy"
    storage.copy_tree(dest, copy)
    back = tmp_path / "back"
    storage.copy_tree(copy, str(back))
    assert (back / "weights.bin").read_bytes() == (src / "weights.bin").read_bytes()
    with pytest.raises(FileNotFoundError):
        storage.read_bytes(f"{gcs_bucket}/missing")


def test_local_files_get_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        storage.write_text(str(tmp_path / "a.txt"), "x")
        src = tmp_path / "src.bin"
        src.write_bytes(b"y")
        storage.upload_file(src, str(tmp_path / "b.bin"))
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b.bin").stat().st_mode & 0o777 == 0o644


def test_delete_local_and_gcs_is_idempotent(gcs_bucket, tmp_path):
    for uri in (str(tmp_path / "x.bin"), f"{gcs_bucket}/x.bin"):
        storage.write_bytes(uri, b"x")
        storage.delete(uri)
        assert not storage.exists(uri)
        storage.delete(uri)  # already gone: no error
