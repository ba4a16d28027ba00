"""Object storage behind one small interface: a local folder or ``s3://bucket/prefix`` (pyarrow.fs).

Writes are atomic and durable: local objects go to a uuid-named temporary file that is fsynced, renamed into place,
and the folder fsynced (the temp file is removed on failure); an S3 PUT is atomic by itself.
:meth:`ObjectStore.exists_verified` counts an object as present only when its size and sha256 match.
Credentials come from :class:`~crystalvision.core.settings.StorageSettings` and are never logged, nor pickled: an S3
filesystem (:func:`filesystem_for`) is a :class:`WorkerS3` that Ray ships to tasks, actors and Train workers as its
settings minus the keys, and builds the real pyarrow filesystem in each process from that process's own
environment (``CRYSTALVISION_AWS_*`` or ``AWS_*``) or role.

An unreachable S3 endpoint (connection refused, timeouts, 5xx) is retried: the S3 client makes 5 attempts with
back-off, and each store operation repeats that for up to ``s3_retry_timeout_s`` before it raises one
:class:`~crystalvision.core.errors.StorageError` naming the endpoint. Missing objects and denied access fail at once.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import posixpath
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import pyarrow.fs as pafs

from crystalvision.core import StorageError, StorageSettings, get_settings

log = logging.getLogger(__name__)

# Markers of a transient failure in pyarrow's S3 error text (AWS SDK error names, curl and HTTP codes).
TRANSIENT_MARKERS = (
    "NETWORK_CONNECTION",
    "curlCode: 7",
    "curlCode: 28",
    "Could not connect",
    "Connection refused",
    "timed out",
    "SERVICE_UNAVAILABLE",
    "SLOW_DOWN",
    "INTERNAL_FAILURE",
    "HTTP response code: 5",
)
MAX_BACKOFF_S = 4.0


def is_transient(exc: BaseException) -> bool:
    """True when an S3 error means 'endpoint unreachable or overloaded', not 'missing' or 'denied'."""
    return not isinstance(exc, FileNotFoundError) and any(m in str(exc) for m in TRANSIENT_MARKERS)


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def s3_filesystem(settings: StorageSettings) -> pafs.S3FileSystem:
    """A pyarrow S3 filesystem honouring the endpoint override and bounded retries (it pickles with its keys: ship
    :class:`WorkerS3` instead). Writes are synchronous: ``pyarrow.fs.copy_files`` (Ray Train's checkpoint upload)
    can deadlock on background writes through a wrapped filesystem."""
    kwargs: dict = {"region": settings.s3_region, "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=5)}
    kwargs["background_writes"] = False
    if settings.s3_endpoint_url:
        scheme, _, host = settings.s3_endpoint_url.partition("://")
        kwargs.update(endpoint_override=host or scheme, scheme=scheme if host else "https")
        kwargs.update(connect_timeout=5, request_timeout=30)
    kwargs.update(_explicit_credentials(settings))
    return pafs.S3FileSystem(**kwargs)


def _explicit_credentials(settings: StorageSettings) -> dict[str, str]:
    """Keys to hand pyarrow, or {} when the AWS default chain (``AWS_*`` env, profile, role) finds them itself.

    A filesystem built without explicit keys pickles without them, so the filesystems and stores that Ray ships to
    tasks, actors and Train workers carry no credentials: each worker reads its own environment or role.
    """
    if not settings.aws_access_key_id:
        settings = get_settings().storage  # shipped without keys: this process's own environment
    if not (settings.aws_access_key_id and settings.aws_secret_access_key):
        return {}
    creds = {
        "access_key": settings.aws_access_key_id.get_secret_value(),
        "secret_key": settings.aws_secret_access_key.get_secret_value(),
    }
    if settings.aws_session_token:
        creds["session_token"] = settings.aws_session_token.get_secret_value()
    from_env = {
        "access_key": os.environ.get("AWS_ACCESS_KEY_ID"),
        "secret_key": os.environ.get("AWS_SECRET_ACCESS_KEY"),
        "session_token": os.environ.get("AWS_SESSION_TOKEN"),
    }
    return {} if all(from_env[k] == v for k, v in creds.items()) else creds


def without_credentials(settings: StorageSettings | None) -> StorageSettings | None:
    """``settings`` minus the S3 keys: what may travel in Ray task and actor arguments."""
    if settings is None:
        return None
    return settings.model_copy(
        update={"aws_access_key_id": None, "aws_secret_access_key": None, "aws_session_token": None}
    )


class WorkerS3(pafs.FileSystemHandler):
    """An S3 filesystem built in the process that uses it: pickled (Ray task and actor arguments, Ray Train's
    ``RunConfig.storage_filesystem``, Ray Data read tasks) it is only its settings without keys; the receiving
    process builds :func:`s3_filesystem` on first use with its own credentials. Wrap it: ``pafs.PyFileSystem(h)``."""

    def __init__(self, settings: StorageSettings):
        self.settings = settings
        self._fs: pafs.S3FileSystem | None = None

    def __reduce__(self):
        return type(self), (without_credentials(self.settings),)

    @property
    def fs(self) -> pafs.S3FileSystem:
        if self._fs is None:
            self._fs = s3_filesystem(self.settings)
        return self._fs

    def get_type_name(self) -> str:
        return "crystalvision-s3"

    def equals(self, other) -> bool:
        handler = getattr(other, "handler", other)
        return isinstance(handler, WorkerS3) and without_credentials(handler.settings) == without_credentials(
            self.settings
        )

    def normalize_path(self, path: str) -> str:
        return self.fs.normalize_path(path)

    def get_file_info(self, paths: list[str]) -> list:
        return self.fs.get_file_info(paths)

    def get_file_info_selector(self, selector: pafs.FileSelector) -> list:
        return self.fs.get_file_info(selector)

    def create_dir(self, path: str, recursive: bool) -> None:
        self.fs.create_dir(path, recursive=recursive)

    def delete_dir(self, path: str) -> None:
        self.fs.delete_dir(path)

    def delete_dir_contents(self, path: str, missing_dir_ok: bool = False) -> None:
        self.fs.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)

    def delete_root_dir_contents(self) -> None:
        self.fs.delete_dir_contents("/", accept_root_dir=True)

    def delete_file(self, path: str) -> None:
        self.fs.delete_file(path)

    def move(self, src: str, dest: str) -> None:
        self.fs.move(src, dest)

    def copy_file(self, src: str, dest: str) -> None:
        self.fs.copy_file(src, dest)

    # Compression is PyFileSystem's job: the handler opens raw streams.
    def open_input_stream(self, path: str):
        return self.fs.open_input_stream(path, compression=None)

    def open_input_file(self, path: str):
        return self.fs.open_input_file(path)

    def open_output_stream(self, path: str, metadata=None):
        return self.fs.open_output_stream(path, compression=None, metadata=metadata)

    def open_append_stream(self, path: str, metadata=None):
        return self.fs.open_append_stream(path, compression=None, metadata=metadata)


def filesystem_for(uri: str, settings: StorageSettings | None = None) -> tuple[pafs.FileSystem, str]:
    """(pyarrow filesystem, path inside it) for a URI; what Ray Data's ``filesystem=`` and Ray Train's
    ``storage_filesystem`` want. An S3 one pickles without keys (:class:`WorkerS3`)."""
    if is_s3(uri):
        handler = WorkerS3(settings or get_settings().storage)
        return pafs.PyFileSystem(handler), uri[len("s3://") :].rstrip("/")
    return pafs.LocalFileSystem(), str(Path(uri).resolve())


@dataclass
class ObjectStore:
    """Keys under one root URI. Keys use '/' and must not escape the root."""

    root: str
    settings: StorageSettings | None = None

    def __getstate__(self) -> dict:
        """Pickle (Ray task/actor arguments) without credentials or the live filesystem: the receiving worker
        reads its own credentials (environment or role) when it first touches the store."""
        return {"root": self.root, "settings": without_credentials(self.settings)}

    @cached_property
    def _fs_and_base(self) -> tuple[pafs.FileSystem, str]:
        return filesystem_for(self.root, self.settings)

    @property
    def fs(self) -> pafs.FileSystem:
        return self._fs_and_base[0]

    @property
    def base(self) -> str:
        return self._fs_and_base[1]

    @property
    def local(self) -> bool:
        return not is_s3(self.root)

    @property
    def endpoint(self) -> str:
        """The S3 endpoint in words, for error messages ('' for local stores)."""
        if self.local:
            return ""
        settings = self.settings or get_settings().storage
        return settings.s3_endpoint_url or f"AWS S3 ({settings.s3_region})"

    def _retry(self, what: str, op: Callable[[], object]) -> object:
        """Run ``op``; on S3 retry transient failures for up to ``s3_retry_timeout_s``, then a StorageError."""
        if self.local:
            return op()
        budget = (self.settings or get_settings().storage).s3_retry_timeout_s
        start, attempt, delay = time.monotonic(), 1, 0.5
        while True:
            try:
                return op()
            except OSError as exc:
                elapsed = time.monotonic() - start
                if not is_transient(exc):
                    raise
                if elapsed + delay > budget:
                    raise StorageError(
                        f"S3 endpoint {self.endpoint} is unreachable: cannot {what} after {attempt} attempts in "
                        f"{elapsed:.0f} s ({str(exc)[:300]}); check the endpoint URL and that the service is up"
                    ) from exc
                log.warning("S3 endpoint %s unreachable (%s, attempt %d); retrying", self.endpoint, what, attempt)
                time.sleep(delay)
                attempt, delay = attempt + 1, min(delay * 2, MAX_BACKOFF_S)

    def path(self, key: str) -> str:
        """Filesystem path of ``key`` (rejects absolute keys and '..')."""
        norm = posixpath.normpath(key)
        if key.startswith("/") or norm.startswith("..") or "/../" in f"/{norm}/":
            raise StorageError(f"object key '{key}' escapes the store root; use a relative key without '..'")
        return f"{self.base}/{norm}"

    def uri(self, key: str) -> str:
        """Full URI of ``key`` (s3://... or an absolute local path)."""
        return f"s3://{self.path(key)}" if not self.local else self.path(key)

    def exists(self, key: str) -> bool:
        path = self.path(key)
        try:
            return self._retry(f"check {self.uri(key)}", lambda: self.fs.get_file_info(path).type == pafs.FileType.File)
        except OSError as exc:
            raise StorageError(f"object store {self.root} is unreachable ({exc}); check the endpoint") from exc

    def put_bytes(self, key: str, data: bytes) -> str:
        """Write ``data`` under ``key`` atomically; returns the object's URI."""
        target = self.path(key)
        try:
            if self.local:
                write_durably(target, data)
            else:
                self._retry(f"write {self.uri(key)}", lambda: self._put_s3(target, data))
        except OSError as exc:
            raise StorageError(f"cannot write {self.uri(key)} ({exc}); check the store URI and credentials") from exc
        return self.uri(key)

    def _put_s3(self, target: str, data: bytes) -> None:
        with self.fs.open_output_stream(target) as out:
            out.write(data)

    def _get(self, path: str) -> bytes:
        with self.fs.open_input_stream(path) as fh:
            return fh.read()

    def get_bytes(self, key: str) -> bytes:
        path = self.path(key)
        try:
            return self._retry(f"read {self.uri(key)}", lambda: self._get(path))
        except FileNotFoundError as exc:
            raise StorageError(f"object {self.uri(key)} does not exist; run the stage that writes it") from exc
        except OSError as exc:
            raise StorageError(f"cannot read {self.uri(key)} ({exc}); check the store URI and credentials") from exc

    def size(self, key: str) -> int | None:
        """Size in bytes of ``key``, or None when it does not exist."""
        path = self.path(key)
        info = self._retry(f"check {self.uri(key)}", lambda: self.fs.get_file_info(path))
        return info.size if info.type == pafs.FileType.File else None

    def exists_verified(self, key: str, size: int, sha256: str) -> bool:
        """True only when ``key`` exists with exactly ``size`` bytes and this sha256 (a torn or foreign object
        counts as missing, so the stage that writes it runs again)."""
        try:
            if self.size(key) != size:
                return False
            return hashlib.sha256(self.get_bytes(key)).hexdigest() == sha256
        except StorageError:
            return False
        except OSError as exc:
            raise StorageError(f"object store {self.root} is unreachable ({exc}); check the endpoint") from exc

    def put_text(self, key: str, text: str) -> str:
        return self.put_bytes(key, text.encode())

    def get_text(self, key: str) -> str:
        return self.get_bytes(key).decode()

    def list(self, prefix: str = "") -> list[str]:
        """Keys under ``prefix`` (recursive), relative to the root; temporary files are skipped."""
        base = self.path(prefix) if prefix else self.base
        selector = pafs.FileSelector(base, recursive=True, allow_not_found=True)
        try:
            infos = self._retry(f"list {self.root}/{prefix}", lambda: self.fs.get_file_info(selector))
        except OSError as exc:
            raise StorageError(f"cannot list {self.root}/{prefix} ({exc})") from exc
        keys = [i.path[len(self.base) + 1 :] for i in infos if i.type == pafs.FileType.File]
        return sorted(k for k in keys if ".tmp-" not in k)

    def remove_stale_temp(self, prefix: str, older_than: float) -> int:
        """Delete temp files under ``prefix`` last written before ``older_than`` (epoch seconds): what a writer
        killed between write and rename left behind. Local stores only (an S3 put leaves no temp object)."""
        if not self.local:
            return 0
        removed = 0
        for path in Path(self.path(prefix)).rglob("*.tmp-*"):
            with contextlib.suppress(FileNotFoundError):
                if path.is_file() and path.stat().st_mtime < older_than:
                    path.unlink()
                    removed += 1
        return removed


def write_durably(target: str, data: bytes) -> None:
    """Write ``target`` atomically and durably: a uuid-named temp file, fsync, rename, fsync of the folder.
    The temp file is removed when any step fails, so a crash or a full disk leaves no partial object."""
    folder = posixpath.dirname(target)
    os.makedirs(folder, exist_ok=True)
    tmp = f"{target}.tmp-{uuid.uuid4().hex}"
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def open_store(uri: str | None = None) -> ObjectStore:
    """The configured object store (or ``uri``)."""
    settings = get_settings().storage
    return ObjectStore(uri or settings.object_store_uri, settings)
