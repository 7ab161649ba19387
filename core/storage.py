"""Atomic reads and writes on local paths, ``gs://`` and ``s3://`` (or ``minio://``) URIs: one module, one set of
guarantees, whatever the store.

What each store guarantees, and what this module builds on it:

- **local**: a write goes to a temp file in the target directory, is fsynced, then renamed over the final name,
  so a reader never sees a partial file. Compare-and-swap is the caller's ``fcntl`` lock (``core.rundir``,
  ``release.registry``): a local file has no generation.
- **GCS**: an object becomes visible only once its upload completes (a single upload is atomic), reads are
  strongly consistent, and every object has a generation: ``write_if_generation`` is ``if_generation_match``
  (0: the object must not exist). Retries use google-cloud-storage's policy (503s, dropped connections); a
  conditional write is idempotent, so it is retried too.
- **S3 / MinIO**: a PUT is atomic per object and reads after writes are strongly consistent (AWS since 2020); the
  generation is the object's ETag and conditional writes use ``If-None-Match: *`` / ``If-Match: <etag>`` (AWS and
  MinIO honour both). An ETag is a content digest, so writing back the very same bytes would repeat one: every
  compare-and-swap document here carries a fresh id. A multipart upload appears only when completed. Retries:
  botocore's ``standard`` mode.

On every store a listing reports each object's size with its name (``file_sizes``), so a reader checks a directory
against its manifest without reading it (core.rundir). Any other scheme (http://, hdfs://, file://) is refused by
``check_uri`` with one line before any work starts.

Credentials come only from the environment, as every client of these stores expects: Application Default
Credentials (or ``STORAGE_EMULATOR_HOST``) for GCS; the AWS chain (``AWS_ACCESS_KEY_ID``, profiles, instance
roles) for S3, with ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` naming a MinIO or other S3-compatible
endpoint (``minio://bucket/key`` is ``s3://bucket/key`` on that endpoint, as Kubeflow's artifact store writes it);
botocore addresses buckets path-style on such an endpoint (``http://minio-service.kubeflow:9000/bucket/key``), as
MinIO needs.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from core.errors import ConfigError

GCS_PREFIX = "gs://"
S3_PREFIXES = ("s3://", "minio://")
OBJECT_STORE_PREFIXES = (GCS_PREFIX, *S3_PREFIXES)
Generation = int | str  # a GCS generation (int) or an S3 ETag (str); 0: the object does not exist


class GenerationMismatch(RuntimeError):
    """A conditional write or read found another object generation than the one it expected."""


def is_gcs(uri: str) -> bool:
    return str(uri).startswith(GCS_PREFIX)


def is_s3(uri: str) -> bool:
    return str(uri).startswith(S3_PREFIXES)


def is_remote(uri: str) -> bool:
    """An object-store URI (gs://, s3://, minio://): no directories, no rename, conditional writes instead."""
    return str(uri).startswith(OBJECT_STORE_PREFIXES)


def check_uri(uri: str, field: str) -> str:
    """``uri`` if it is a local path or a URI of a store this module writes; else ConfigError naming ``field``."""
    scheme = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://", str(uri))
    if scheme and not is_remote(uri):
        raise ConfigError(f"{field}: {uri!r} uses the unsupported scheme {scheme.group(1)}://; use a local path, "
                          "gs://, s3:// or minio://")
    if is_remote(uri) and not split_or_none(uri):
        raise ConfigError(f"{field}: {uri!r} names no bucket")
    return str(uri)


def split_or_none(uri: str) -> tuple[str, str] | None:
    try:
        return split(uri)
    except ConfigError:
        return None


def split(uri: str) -> tuple[str, str]:
    """``gs://bucket/a/b`` (or s3://, minio://) -> (``bucket``, ``a/b``)."""
    prefix = next((p for p in OBJECT_STORE_PREFIXES if str(uri).startswith(p)), None)
    if prefix is None:
        raise ValueError(f"not an object-store URI: {uri}")
    bucket, _, name = uri[len(prefix):].partition("/")
    if not bucket:
        raise ConfigError(f"{uri}: a URI without a bucket name")
    return bucket, name


def split_gcs(uri: str) -> tuple[str, str]:
    if not is_gcs(uri):
        raise ValueError(f"not a gs:// URI: {uri}")
    return split(uri)


def join(base: str, *parts: str) -> str:
    if is_remote(base):
        return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts if p.strip("/"))])
    return str(Path(base, *parts))


def relative(root: str, uri: str) -> str:
    """``uri``'s path below ``root`` with '/' separators; ConfigError for an object key that would not stay below
    a local folder it is mapped to (a '..', '.' or empty part, a leading '/'): whoever can write to
    a bucket must not be able to write files elsewhere on the reader's machine."""
    if not is_remote(root):
        return Path(uri).relative_to(root).as_posix()
    base = root.rstrip("/") + "/"
    if not uri.startswith(base):
        raise ValueError(f"{uri} is not below {root}")
    rel = uri[len(base):]
    if any(part in ("", ".", "..") for part in rel.split("/")):
        raise ConfigError(f"{uri}: an object key with a '..', '.' or empty part below {root}; "
                          "refused: it would map outside the folder it is copied to")
    return rel


# ----------------------------------------------------------------------------------------------------- GCS


@functools.cache
def gcs_client():
    """One storage.Client per process: ADC in production, the emulator when STORAGE_EMULATOR_HOST is set."""
    from google.cloud import storage

    return storage.Client()


def _retry():
    from google.cloud.storage.retry import DEFAULT_RETRY

    return DEFAULT_RETRY


def _blob(uri: str):
    bucket, name = split(uri)
    return gcs_client().bucket(bucket).blob(name)


class _Gcs:
    @staticmethod
    def write(uri: str, data: bytes) -> None:
        # Overwriting a whole object with the same bytes is idempotent, so retrying it is safe.
        _blob(uri).upload_from_string(data, retry=_retry())

    @staticmethod
    def read(uri: str) -> bytes:
        from google.api_core.exceptions import NotFound

        try:
            return _blob(uri).download_as_bytes(retry=_retry())
        except NotFound as exc:
            raise FileNotFoundError(uri) from exc

    @staticmethod
    def read_with_generation(uri: str) -> tuple[bytes | None, Generation]:
        from google.api_core.exceptions import NotFound, PreconditionFailed

        bucket, name = split(uri)
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

    @staticmethod
    def write_if_generation(uri: str, data: bytes, generation: Generation) -> Generation:
        from google.api_core.exceptions import PreconditionFailed

        blob = _blob(uri)
        try:
            blob.upload_from_string(data, if_generation_match=int(generation), retry=_retry())
        except PreconditionFailed as exc:
            raise GenerationMismatch(f"{uri}: generation is no longer {generation}") from exc
        return int(blob.generation)

    @staticmethod
    def delete(uri: str, generation: Generation | None = None) -> None:
        from google.api_core.exceptions import NotFound, PreconditionFailed

        try:
            _blob(uri).delete(retry=_retry(), if_generation_match=None if generation is None else int(generation))
        except NotFound:
            pass
        except PreconditionFailed as exc:
            raise GenerationMismatch(f"{uri}: generation is no longer {generation}") from exc

    @staticmethod
    def exists(uri: str) -> bool:
        return _blob(uri).exists(retry=_retry())

    @staticmethod
    def sizes(uri: str) -> dict[str, int]:
        bucket, name = split(uri)
        prefix = name.rstrip("/") + "/" if name else ""
        scheme = uri[: uri.index("://") + 3]
        return {f"{scheme}{bucket}/{b.name}": int(b.size)
                for b in gcs_client().list_blobs(bucket, prefix=prefix, retry=_retry())
                if not b.name.endswith("/")}  # a console's folder placeholder is not a file

    @staticmethod
    def upload(local_path: str | Path, uri: str) -> None:
        _blob(uri).upload_from_filename(str(local_path), retry=_retry())

    @staticmethod
    def copy(src: str, dst: str) -> None:
        (sb, sn), (db, dn) = split(src), split(dst)
        client = gcs_client()
        client.bucket(sb).copy_blob(client.bucket(sb).blob(sn), client.bucket(db), dn, retry=_retry())


# ------------------------------------------------------------------------------------------------------ S3


@functools.cache
def s3_client():
    """One boto3 S3 client per process, configured from the environment (endpoint, credentials, region)."""
    import boto3
    from botocore.config import Config

    return boto3.client("s3", config=Config(retries={"mode": "standard", "max_attempts": 8}))


def _s3_error_code(exc: Exception) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))


class _S3:
    MISSING = ("NoSuchKey", "404", "NotFound")

    @staticmethod
    def _check_endpoint(uri: str) -> None:
        if uri.startswith("minio://") and not (os.environ.get("AWS_ENDPOINT_URL_S3")
                                               or os.environ.get("AWS_ENDPOINT_URL")):
            raise ConfigError(f"{uri}: minio:// needs the MinIO endpoint in AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL "
                              "(e.g. http://minio-service.kubeflow:9000)")

    @classmethod
    def write(cls, uri: str, data: bytes) -> None:
        cls._check_endpoint(uri)
        bucket, key = split(uri)
        s3_client().put_object(Bucket=bucket, Key=key, Body=data)

    @classmethod
    def read(cls, uri: str) -> bytes:
        return cls.read_with_generation(uri, missing_ok=False)[0]

    @classmethod
    def read_with_generation(cls, uri: str, missing_ok: bool = True) -> tuple[bytes | None, Generation]:
        from botocore.exceptions import ClientError

        cls._check_endpoint(uri)
        bucket, key = split(uri)
        try:
            response = s3_client().get_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if _s3_error_code(exc) in cls.MISSING:
                if missing_ok:
                    return None, 0
                raise FileNotFoundError(uri) from exc
            raise
        return response["Body"].read(), response["ETag"]  # one response: bytes and ETag belong together

    @classmethod
    def write_if_generation(cls, uri: str, data: bytes, generation: Generation) -> Generation:
        from botocore.exceptions import ClientError

        cls._check_endpoint(uri)
        bucket, key = split(uri)
        condition = {"IfNoneMatch": "*"} if generation in (0, None, "") else {"IfMatch": str(generation)}
        try:
            return s3_client().put_object(Bucket=bucket, Key=key, Body=data, **condition)["ETag"]
        except ClientError as exc:
            if _s3_error_code(exc) in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                raise GenerationMismatch(f"{uri}: generation is no longer {generation}") from exc
            raise

    @classmethod
    def delete(cls, uri: str, generation: Generation | None = None) -> None:
        from botocore.exceptions import ClientError

        cls._check_endpoint(uri)
        bucket, key = split(uri)
        condition = {} if generation is None else {"IfMatch": str(generation)}
        try:
            s3_client().delete_object(Bucket=bucket, Key=key, **condition)
        except ClientError as exc:
            if _s3_error_code(exc) in cls.MISSING:
                return
            if _s3_error_code(exc) in ("PreconditionFailed", "412"):
                raise GenerationMismatch(f"{uri}: generation is no longer {generation}") from exc
            raise

    @classmethod
    def exists(cls, uri: str) -> bool:
        from botocore.exceptions import ClientError

        cls._check_endpoint(uri)
        bucket, key = split(uri)
        try:
            s3_client().head_object(Bucket=bucket, Key=key)
            return True
        except ClientError as exc:
            if _s3_error_code(exc) in cls.MISSING:
                return False
            raise

    @classmethod
    def sizes(cls, uri: str) -> dict[str, int]:
        cls._check_endpoint(uri)
        bucket, name = split(uri)
        prefix = name.rstrip("/") + "/" if name else ""
        scheme = uri[: uri.index("://") + 3]
        found = {}
        for page in s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            found.update({f"{scheme}{bucket}/{obj['Key']}": int(obj["Size"]) for obj in page.get("Contents", [])
                          if not obj["Key"].endswith("/")})  # a console's folder placeholder is not a file
        return found

    @classmethod
    def upload(cls, local_path: str | Path, uri: str) -> None:
        cls._check_endpoint(uri)
        bucket, key = split(uri)
        s3_client().upload_file(str(local_path), bucket, key)  # multipart: the object appears when complete

    @classmethod
    def copy(cls, src: str, dst: str) -> None:
        cls._check_endpoint(src)
        cls._check_endpoint(dst)
        (sb, sk), (db, dk) = split(src), split(dst)
        s3_client().copy({"Bucket": sb, "Key": sk}, db, dk)


def _store(uri: str):
    return _Gcs if is_gcs(uri) else _S3


# ---------------------------------------------------------------------------------------------------- local


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


def _write_local(path: Path, data: bytes) -> None:
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


# ------------------------------------------------------------------------------------------------- the API


def write_bytes(uri: str, data: bytes) -> None:
    if is_remote(uri):
        _store(uri).write(uri, data)
    else:
        _write_local(Path(uri), data)


def write_text(uri: str, text: str) -> None:
    write_bytes(uri, text.encode("utf-8"))


def write_json(uri: str, obj: Any) -> None:
    write_text(uri, json.dumps(obj, indent=2, sort_keys=False, allow_nan=True) + "\n")


def read_bytes(uri: str) -> bytes:
    if is_remote(uri):
        return _store(uri).read(uri)
    return Path(uri).read_bytes()


def digest(uri: str) -> tuple[int, str]:
    """(size, sha256) of one file from a single read; a local file is opened without following a symbolic link
    (ELOOP: a link is never taken for the file it points to)."""
    if is_remote(uri):
        data = read_bytes(uri)
        return len(data), hashlib.sha256(data).hexdigest()
    fd = os.open(uri, os.O_RDONLY | os.O_NOFOLLOW)
    sha256, size = hashlib.sha256(), 0
    with os.fdopen(fd, "rb") as handle:
        while chunk := handle.read(1 << 20):
            sha256.update(chunk)
            size += len(chunk)
    return size, sha256.hexdigest()


def read_text(uri: str) -> str:
    return read_bytes(uri).decode("utf-8")


def read_json(uri: str) -> Any:
    return json.loads(read_text(uri))


def read_with_generation(uri: str) -> tuple[bytes | None, Generation]:
    """Object stores only: an object's bytes and its generation, or ``(None, 0)`` when it does not exist; bytes
    and generation always belong together (GCS: the download is pinned to the generation looked up)."""
    return _store(uri).read_with_generation(uri)


def write_if_generation(uri: str, data: bytes, generation: Generation) -> Generation:
    """Object stores only: write ``data`` only if the object's generation is still ``generation`` (0: it must not
    exist). Returns the new generation; raises GenerationMismatch when another writer got there first. A retry
    whose first attempt did land also sees a mismatch: callers tell that case apart by reading the object back."""
    return _store(uri).write_if_generation(uri, data, generation)


def delete(uri: str, generation: Generation | None = None) -> None:
    """Remove one file or object; a missing one is not an error (deleting is retried, so may already be done).
    ``generation`` (object stores): only if it is still that one (else GenerationMismatch)."""
    if is_remote(uri):
        _store(uri).delete(uri, generation)
    else:
        Path(uri).unlink(missing_ok=True)


def delete_tree(uri: str) -> None:
    """Remove every file below ``uri`` (and a local directory itself)."""
    if is_remote(uri):
        for file_uri in list_files(uri):
            delete(file_uri)
    else:
        shutil.rmtree(uri, ignore_errors=True)


def exists(uri: str) -> bool:
    """A file, an object, or a directory / prefix holding any."""
    if is_remote(uri):
        if _store(uri).exists(uri):
            return True
        return bool(list_files(uri))
    return Path(uri).exists()


def is_file(uri: str) -> bool:
    return _store(uri).exists(uri) if is_remote(uri) else Path(uri).is_file()


def list_files(uri: str) -> list[str]:
    """Every file below ``uri`` (recursively), as full URIs/paths, sorted."""
    return sorted(file_sizes(uri))


def file_sizes(uri: str) -> dict[str, int]:
    """Every file below ``uri`` (recursively) with its size in bytes, from one listing (object stores report
    sizes with the names, so checking a directory's completeness reads no file)."""
    if is_remote(uri):
        return _store(uri).sizes(uri)
    root = Path(uri)
    return {str(p): p.stat().st_size for p in root.rglob("*") if p.is_file()} if root.is_dir() else {}


def upload_file(local_path: str | Path, uri: str) -> None:
    """Copy one local file to ``uri`` (local or an object store) atomically."""
    if is_remote(uri):
        _store(uri).upload(local_path, uri)
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


def copy_file(src: str, dst: str) -> None:
    """Copy one file between any two places (server-side within one object store)."""
    if is_remote(src) and is_remote(dst) and _store(src) is _store(dst):
        _store(src).copy(src, dst)
    elif is_remote(src):
        write_bytes(dst, read_bytes(src))
    else:
        upload_file(src, dst)


def copy_tree(src: str, dst: str, skip: tuple[str, ...] = ()) -> list[str]:
    """Copy every file below ``src`` to the same relative place below ``dst``; either side local or remote.
    ``skip``: top-level entries of ``src`` left out."""
    copied = []
    for file_uri in list_files(src):
        rel = relative(src, file_uri)
        if rel.split("/")[0] in skip:
            continue
        target = join(dst, rel)
        copy_file(file_uri, target)
        copied.append(target)
    return copied
