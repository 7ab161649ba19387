"""Atomic reads and writes on local paths and ``gs://`` URIs.

Local writes go to a temp file in the target directory, are fsynced, then renamed over the final name, so a
reader never sees a partial file. A GCS object becomes visible only once its upload completes, so a single
upload is already atomic; uploads are retried with google-cloud-storage's retry policy (503s, dropped
connections). Credentials come only from Application Default Credentials (or the emulator named by
``STORAGE_EMULATOR_HOST``), never from code or config.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

GCS_PREFIX = "gs://"


def is_gcs(uri: str) -> bool:
    return str(uri).startswith(GCS_PREFIX)


def split_gcs(uri: str) -> tuple[str, str]:
    """``gs://bucket/a/b`` -> (``bucket``, ``a/b``)."""
    if not is_gcs(uri):
        raise ValueError(f"not a gs:// URI: {uri}")
    bucket, _, name = uri[len(GCS_PREFIX):].partition("/")
    if not bucket:
        raise ValueError(f"gs:// URI without a bucket: {uri}")
    return bucket, name


def join(base: str, *parts: str) -> str:
    if is_gcs(base):
        return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])
    return str(Path(base, *parts))


@functools.cache
def gcs_client():
    """One storage.Client per process: ADC in production, the emulator when STORAGE_EMULATOR_HOST is set."""
    from google.cloud import storage

    return storage.Client()


def _blob(uri: str):
    bucket, name = split_gcs(uri)
    return gcs_client().bucket(bucket).blob(name)


def _retry():
    from google.cloud.storage.retry import DEFAULT_RETRY

    return DEFAULT_RETRY


def _temp_beside(path: Path) -> tuple[int, str]:
    """A temp file in ``path``'s directory (so the final rename is atomic) with the usual umask-based mode;
    mkstemp alone would leave the published file readable by its owner only."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, 0o666 & ~_current_umask())
    return fd, tmp


def _current_umask() -> int:
    umask = os.umask(0o022)  # the only way to read it is to set it; put it straight back
    os.umask(umask)
    return umask


def write_bytes(uri: str, data: bytes) -> None:
    if is_gcs(uri):
        # Overwriting a whole object with the same bytes is idempotent, so retrying it is safe.
        _blob(uri).upload_from_string(data, retry=_retry())
        return
    path = Path(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _temp_beside(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(uri: str, text: str) -> None:
    write_bytes(uri, text.encode("utf-8"))


def write_json(uri: str, obj: Any) -> None:
    write_text(uri, json.dumps(obj, indent=2, sort_keys=False, allow_nan=True) + "\n")


class GenerationMismatch(RuntimeError):
    """A conditional GCS write or read found another object generation than the one it expected."""


def read_with_generation(uri: str) -> tuple[bytes | None, int]:
    """GCS only: an object's bytes and its generation, or ``(None, 0)`` when it does not exist.

    The download is pinned to the generation just looked up (``if_generation_match``), so bytes and generation
    always belong together; a write in between makes it look again.
    """
    from google.api_core.exceptions import NotFound, PreconditionFailed

    bucket, name = split_gcs(uri)
    for _ in range(5):
        blob = gcs_client().bucket(bucket).get_blob(name, retry=_retry())
        if blob is None:
            return None, 0
        generation = int(blob.generation)  # the download overwrites blob.generation with its response header
        try:
            return blob.download_as_bytes(if_generation_match=generation, retry=_retry()), generation
        except (PreconditionFailed, NotFound):
            continue
    raise GenerationMismatch(f"{uri} kept changing while being read")


def write_if_generation(uri: str, data: bytes, generation: int) -> int:
    """GCS only: write ``data`` only if the object's generation is still ``generation`` (0: it must not exist).

    Returns the new generation; raises GenerationMismatch when another writer got there first. The precondition
    makes the write idempotent, so it is retried like any other. A retry whose first attempt did land also sees
    a mismatch: callers tell that case apart by reading the object back.
    """
    from google.api_core.exceptions import PreconditionFailed

    blob = _blob(uri)
    try:
        blob.upload_from_string(data, if_generation_match=generation, retry=_retry())
    except PreconditionFailed as exc:
        raise GenerationMismatch(f"{uri}: generation is no longer {generation}") from exc
    return int(blob.generation)


def upload_file(local_path: str | Path, uri: str) -> None:
    """Copy one local file to ``uri`` (local or GCS) atomically."""
    if is_gcs(uri):
        _blob(uri).upload_from_filename(str(local_path), retry=_retry())
        return
    dest = Path(uri)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _temp_beside(dest)
    os.close(fd)
    try:
        shutil.copyfile(local_path, tmp)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_bytes(uri: str) -> bytes:
    if is_gcs(uri):
        from google.api_core.exceptions import NotFound

        try:
            return _blob(uri).download_as_bytes(retry=_retry())
        except NotFound as exc:
            raise FileNotFoundError(uri) from exc
    return Path(uri).read_bytes()


def read_text(uri: str) -> str:
    return read_bytes(uri).decode("utf-8")


def read_json(uri: str) -> Any:
    return json.loads(read_text(uri))


def delete(uri: str) -> None:
    """Remove one file or object; a missing one is not an error (deleting is retried, so may already be done)."""
    if is_gcs(uri):
        from google.api_core.exceptions import NotFound

        try:
            _blob(uri).delete(retry=_retry())
        except NotFound:
            pass
        return
    Path(uri).unlink(missing_ok=True)


def exists(uri: str) -> bool:
    if is_gcs(uri):
        bucket, name = split_gcs(uri)
        if _blob(uri).exists(retry=_retry()):
            return True
        prefix = name.rstrip("/") + "/"
        return any(True for _ in gcs_client().list_blobs(bucket, prefix=prefix, max_results=1, retry=_retry()))
    return Path(uri).exists()


def list_files(uri: str) -> list[str]:
    """Every file below ``uri`` (recursively), as full URIs/paths, sorted."""
    if is_gcs(uri):
        bucket, name = split_gcs(uri)
        prefix = name.rstrip("/") + "/" if name else ""
        return sorted(f"gs://{bucket}/{b.name}" for b in gcs_client().list_blobs(bucket, prefix=prefix, retry=_retry()))
    root = Path(uri)
    return sorted(str(p) for p in root.rglob("*") if p.is_file()) if root.exists() else []


def copy_tree(src: str, dst: str) -> list[str]:
    """Copy every file below ``src`` to the same relative place below ``dst``; either side local or GCS."""
    copied = []
    for file_uri in list_files(src):
        rel = file_uri[len(src.rstrip("/")) + 1:] if is_gcs(src) else str(Path(file_uri).relative_to(src))
        target = join(dst, rel)
        if is_gcs(src):
            if is_gcs(dst):
                sb, sn = split_gcs(file_uri)
                db, dn = split_gcs(target)
                client = gcs_client()
                client.bucket(sb).copy_blob(client.bucket(sb).blob(sn), client.bucket(db), dn, retry=_retry())
            else:
                write_bytes(target, read_bytes(file_uri))
        else:
            upload_file(file_uri, target)
        copied.append(target)
    return copied


def local_dir(uri: str) -> Path:
    """A local directory for ``uri``: the path itself, or a fresh temp dir mirroring a gs:// URI's files."""
    if not is_gcs(uri):
        return Path(uri)
    tmp = Path(tempfile.mkdtemp(prefix="interest-gcs-"))
    copy_tree(uri, str(tmp))
    return tmp
