"""core.storage: one suite run on a local directory, a real GCS emulator and a real S3 server (moto) on 127.0.0.1
(``storage_root``), plus what only one store has (local permissions and failed writes, minio:// settings)."""

from __future__ import annotations

import os

import pytest

from core import storage
from core.configs import ConfigError


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


def test_round_trip_listing_and_copy_tree(storage_root, tmp_path):
    src = tmp_path / "model"
    (src / "sub").mkdir(parents=True)
    (src / "weights.bin").write_bytes(b"\x00\x01" * 1000)
    (src / "sub" / "config.json").write_text('{"a": 1}')
    dest = storage.join(storage_root, "registry", "m", "1")
    storage.copy_tree(str(src), dest)
    assert storage.list_files(dest) == [storage.join(dest, "sub", "config.json"), storage.join(dest, "weights.bin")]
    assert storage.file_sizes(dest)[storage.join(dest, "weights.bin")] == 2000
    assert storage.exists(dest) and not storage.exists(storage.join(storage_root, "registry", "other"))
    assert storage.is_file(storage.join(dest, "weights.bin")) and not storage.is_file(dest)
    assert storage.read_json(storage.join(dest, "sub", "config.json")) == {"a": 1}
    copy = storage.join(storage_root, "copy")
    storage.copy_tree(dest, copy)  # server-side within one object store
    back = tmp_path / "back"
    storage.copy_tree(copy, str(back))
    assert (back / "weights.bin").read_bytes() == (src / "weights.bin").read_bytes()
    with pytest.raises(FileNotFoundError):
        storage.read_bytes(storage.join(storage_root, "missing"))
    storage.delete_tree(copy)
    assert storage.list_files(copy) == []


def test_create_if_absent_and_compare_and_swap(storage_root):
    """The primitives the locks and the champion pointer stand on, on object stores: create-if-absent (generation
    0), then write-if-unchanged. Locally the compare-and-swap is the caller's fcntl lock (core.rundir,
    release.registry), so a local path has no generations to test."""
    uri = storage.join(storage_root, "pointer.json")
    if not storage.is_remote(uri):
        with pytest.raises(ValueError, match="not an object-store URI"):
            storage.write_if_generation(uri, b"{}", 0)
        return
    first = storage.write_if_generation(uri, b'{"v": 1, "id": "a"}', 0)
    with pytest.raises(storage.GenerationMismatch):  # exists: the first writer keeps it
        storage.write_if_generation(uri, b'{"v": 2, "id": "b"}', 0)
    data, generation = storage.read_with_generation(uri)
    assert data == b'{"v": 1, "id": "a"}' and generation == first and generation not in (0, None, "")
    newer = storage.write_if_generation(uri, b'{"v": 2, "id": "c"}', generation)
    with pytest.raises(storage.GenerationMismatch):  # a writer that read the old generation loses
        storage.write_if_generation(uri, b'{"v": 3, "id": "d"}', generation)
    with pytest.raises(storage.GenerationMismatch):  # and a delete of a generation that is gone
        storage.delete(uri, generation)
    assert storage.read_with_generation(uri) == (b'{"v": 2, "id": "c"}', newer)
    storage.delete(uri, newer)
    assert storage.read_with_generation(uri) == (None, 0)


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


def test_delete_is_idempotent(storage_root):
    uri = storage.join(storage_root, "x.bin")
    storage.write_bytes(uri, b"x")
    storage.delete(uri)
    assert not storage.exists(uri)
    storage.delete(uri)  # already gone: no error


def test_minio_uris_are_s3_on_the_configured_endpoint(s3_bucket, monkeypatch):
    """``minio://bucket/key`` (Kubeflow's default artifact store) is the same object as ``s3://bucket/key`` on
    the endpoint of AWS_ENDPOINT_URL; without an endpoint it is one clear error, not a request to AWS."""
    minio = s3_bucket.replace("s3://", "minio://") + "/a/b.json"
    storage.write_json(minio, {"ok": True})
    assert storage.read_json(s3_bucket + "/a/b.json") == {"ok": True}
    assert storage.list_files(s3_bucket.replace("s3://", "minio://") + "/a") == [minio]
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    with pytest.raises(ConfigError, match="AWS_ENDPOINT_URL"):
        storage.read_json(minio)


@pytest.mark.parametrize("uri, message", [
    ("http://example.com/events.csv", "unsupported scheme http://"),
    ("hdfs://nn/data", "unsupported scheme hdfs://"),
    ("gs:///no-bucket", "names no bucket"),
])
def test_other_schemes_are_refused_in_one_line(uri, message):
    with pytest.raises(ConfigError, match=message) as caught:
        storage.check_uri(uri, "--dataset")
    assert "\n" not in str(caught.value) and str(caught.value).startswith("--dataset: ")
    for fine in ("gs://b/x", "s3://b/x", "minio://b/x", "relative/path", "/abs/path"):
        assert storage.check_uri(fine, "--dataset") == fine


@pytest.mark.parametrize("key", ["../outside.txt", "sub/../../outside.txt", "sub//x", "./x"])
def test_copy_tree_refuses_a_key_that_leaves_the_destination(s3_bucket, tmp_path, key):
    """core.storage maps object keys to local paths in one place (``relative``): a key with a '..', '.' or empty
    part is refused there, so copy_tree (and every reader of a listing) never writes outside its destination."""
    bucket = s3_bucket.removeprefix("s3://")
    storage.s3_client().put_object(Bucket=bucket, Key=f"logs/{key}", Body=b"owned")
    destination = tmp_path / "a" / "b"
    with pytest.raises(ConfigError, match="an object key with a '..', '.' or empty part"):
        storage.copy_tree(f"{s3_bucket}/logs", str(destination))
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []
