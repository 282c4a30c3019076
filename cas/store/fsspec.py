"""A Store over any fsspec URL (``s3://``, ``file://``, ``memory://``, ``gs://``, ...).

Like every store it knows nothing of hashes or Git: keys in, bytes out. What it adds over the
plain fsspec calls is what a remote needs to be safe and to fail well:

- Atomic puts. Object stores publish a PUT whole or not at all; a local folder does not, so on a
  local filesystem a put writes ``tmp/<random>`` under the root and renames it into place (a kill
  -9 leaves at most an orphan in ``tmp/``, never a partial object under its final key).
- Retries with exponential backoff for transient failures (timeouts, connection resets, 5xx,
  throttling), and none for permanent ones (bad credentials, a missing bucket), which become one
  :class:`~cas.errors.StorageError` line built from the caller's ``hints``, so the message names
  the remote and the fix without this module knowing what a remote is.
- Every method is safe to call from many threads at once (fsspec's async backends run their
  requests on one event loop; sync calls from a thread pool block only their own thread), so the
  caller bounds concurrency with its own pool of ``--jobs`` threads.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import socket
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol, TypeVar

from cas.errors import StorageError
from cas.store.local import STALE_TMP_SECONDS, pid_alive, storage_error

T = TypeVar("T")
_HOST = re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname()) or "host"

ATTEMPTS = 5
PUT_WHOLE = 64 << 20  # see FsspecStore.put_file
PIECE = 1 << 20  # a local copy in put_reader moves this much at a time
BACKOFF_SECONDS = 0.25
BACKOFF_CAP_SECONDS = 4.0
_TRANSIENT_ERRNOS = {
    errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED, errno.ETIMEDOUT, errno.EPIPE,
    errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ENETDOWN, errno.EAGAIN,
}  # fmt: skip
_TRANSIENT_CODES = {
    "SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "RequestTimeTooSkewed",
    "InternalError", "ServiceUnavailable", "503", "500", "502", "504",
}  # fmt: skip
_AUTH_CODES = {
    "InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403", "ExpiredToken",
    "InvalidToken", "AllAccessDisabled",
}  # fmt: skip
_MISSING_ROOT_CODES = {"NoSuchBucket"}
_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}

DEFAULT_HINTS = {
    "auth": "permission denied for {url}: check the credentials",
    "missing_root": "{url} does not exist: create it or fix the URL",
    "unreachable": "cannot reach {url}: check the endpoint and the network",
}


class Reader(Protocol):
    """What :meth:`FsspecStore.put_reader` uploads from: a readable binary file that rewinds
    to 0, and whose ``failure`` is the error that stopped a read, if one did."""

    failure: BaseException | None

    def read(self, size: int = -1, /) -> bytes: ...

    def seek(self, offset: int, whence: int = 0, /) -> int: ...


def _error_code(err: BaseException) -> str | None:
    """The S3 error code behind an exception, if any (s3fs wraps ClientError in OSError)."""
    for exc in (err, err.__cause__, err.__context__):
        response = getattr(exc, "response", None)
        if isinstance(response, dict):
            error = response.get("Error", {})
            code = error.get("Code")
            return str(code) if code else None
    return None


def classify(err: BaseException) -> str:
    """``missing`` (a key that is not there), ``auth``, ``missing_root``, ``transient`` or
    ``fatal``: the retry loop and the error message both follow from it."""
    code = _error_code(err)
    if code in _AUTH_CODES or isinstance(err, PermissionError):
        return "auth"
    if code in _MISSING_ROOT_CODES:
        return "missing_root"
    if code in _TRANSIENT_CODES:
        return "transient"
    if isinstance(err, FileNotFoundError):
        return "missing"
    if isinstance(err, (ConnectionError, TimeoutError)):
        return "transient"
    if isinstance(err, OSError) and err.errno in _TRANSIENT_ERRNOS:
        return "transient"
    module = type(err).__module__
    if module.startswith(("botocore", "aiobotocore", "aiohttp")):
        # Connection, timeout and protocol failures of the HTTP stack (EndpointConnectionError,
        # ReadTimeoutError, ClientPayloadError...) are worth another attempt.
        name = type(err).__name__
        if any(word in name for word in ("Connect", "Timeout", "Payload", "Parser", "HTTP")):
            return "transient"
    return "fatal"


class FsspecStore:
    """Immutable key -> bytes under a URL prefix. ``label`` names the store in messages (e.g.
    "remote 'origin' (s3://bucket/cas)"); ``hints`` map a failure kind (``auth``,
    ``missing_root``, ``unreachable``) to the fix shown to the user."""

    def __init__(
        self,
        url: str,
        storage_options: Mapping[str, Any] | None = None,
        label: str | None = None,
        hints: Mapping[str, str] | None = None,
        attempts: int = ATTEMPTS,
        remote: str | None = None,
    ) -> None:
        import fsspec
        from fsspec.implementations.local import LocalFileSystem

        self.url = url.rstrip("/")
        self.fs, root = fsspec.core.url_to_fs(self.url, **dict(storage_options or {}))
        self.root = root.rstrip("/")
        self.label = label or self.url
        self.remote = remote  # the remote's name, for the errors' ``remote`` field
        self.hints = {**DEFAULT_HINTS, **(hints or {})}
        self.attempts = attempts
        self.atomic_puts = not isinstance(self.fs, LocalFileSystem)

    # -- error handling ----------------------------------------------------------------------
    def _fail(self, kind: str, err: BaseException, what: str) -> StorageError:
        code = _error_code(err)
        detail = f" ({code})" if code else ""
        if kind in self.hints:
            failure = StorageError(self.hints[kind].format(url=self.url) + detail)
        elif isinstance(err, OSError) and err.errno in _DISK_ERRNOS:
            # a full or read-only disk (the local store's on a download): say so, with the fix
            failure = storage_error(err, f"{what} on {self.label} failed")
        else:
            reason = getattr(err, "strerror", None) or str(err) or type(err).__name__
            failure = StorageError(f"{what} on {self.label} failed: {reason}{detail}")
        failure.remote = self.remote
        return failure

    def _call(self, what: str, key: str, fn: Callable[[], T]) -> T:
        """Run ``fn`` with retries; a missing key becomes ``KeyError(key)``."""
        for attempt in range(self.attempts):
            try:
                return fn()
            except Exception as err:  # classified below: mapped, retried or re-raised
                kind = classify(err)
                if kind == "missing":
                    raise KeyError(key) from err
                if kind == "transient" and attempt + 1 < self.attempts:
                    time.sleep(min(BACKOFF_SECONDS * 2**attempt, BACKOFF_CAP_SECONDS))
                    continue
                if kind == "transient":
                    kind = "unreachable"
                if kind == "fatal" and not isinstance(err, OSError):
                    raise
                raise self._fail(kind, err, what) from err
        raise AssertionError("unreachable: the loop returns or raises")

    # -- the Store contract ------------------------------------------------------------------
    def path(self, key: str) -> str:
        return f"{self.root}/{key}"

    def exists(self, key: str) -> bool:
        return self._call("checking an object", key, lambda: bool(self.fs.exists(self.path(key))))

    def get(self, key: str) -> bytes:
        return self._call("reading an object", key, lambda: self.fs.cat_file(self.path(key)))

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        def read() -> bytes:
            data = self.fs.cat_file(self.path(key), start=offset, end=offset + length)
            if len(data) != length:
                raise StorageError(
                    f"{self.label} returned {len(data)} bytes for a {length}-byte range of {key}"
                )
            return data

        return self._call("reading a byte range", key, read)

    def get_file(self, key: str, dest: Path) -> None:
        """Stream an object to a local file (big packs never sit whole in memory). The local
        file is created first: a read-only local store is not the remote's permission error."""
        try:
            dest.touch()
        except OSError as err:
            raise storage_error(err, f"cannot write {dest}") from err
        self._call("downloading an object", key, lambda: self.fs.get_file(self.path(key), dest))

    def size(self, key: str) -> int:
        return self._call(
            "reading an object's size", key, lambda: int(self.fs.size(self.path(key)))
        )

    def put_bytes(self, key: str, data: bytes) -> None:
        if self.atomic_puts:
            self._call("writing an object", key, lambda: self.fs.pipe_file(self.path(key), data))
            return

        def put(tmp: str) -> None:
            self.fs.pipe_file(tmp, data)

        self._put_via_temp(key, put)

    def put_file(self, key: str, path: Path) -> None:
        """Upload a local file; it is read, never consumed. Push sends metadata objects this
        way; packs go through :meth:`put_reader`, which never holds one whole.

        To an object store, a file of up to PUT_WHOLE bytes is read here, on the
        caller's thread, into a ``bytearray`` sent as one PUT. fsspec's async backends run every
        request on one event-loop thread, which a push kept busy when it also read each pack
        there and copied it twice (botocore wraps ``bytes`` in a BytesIO, which aiohttp copies
        again; a ``bytearray`` goes out as it is): 25% less CPU for that thread, measured."""
        if not self.atomic_puts:
            self._put_via_temp(key, lambda tmp: self.fs.put_file(str(path), tmp))
            return
        data = _read_small(path, PUT_WHOLE)
        if data is None:
            self._call(
                "uploading an object", key, lambda: self.fs.put_file(str(path), self.path(key))
            )
        else:
            self._call("uploading an object", key, lambda: self.fs.pipe_file(self.path(key), data))

    def put_reader(self, key: str, reader: Reader, size: int) -> None:
        """Upload the ``size`` bytes ``reader`` yields (it is rewound to 0 for each attempt)
        without ever holding them whole: the bounded-memory path of every pack push.

        To S3 the reader is the PUT's body: aiohttp reads it in 256 KiB pieces on a worker
        thread and waits for the socket before reading more, so neither the caller's thread nor
        the event loop holds a pack (holding each job's 32 MiB pack, plus asyncio's copy of what
        the socket did not take at once, cost 911 MiB of RSS at --jobs 8). A local folder gets
        the pieces copied into a temp file, renamed when complete; another fsspec backend gets
        the bytes in one call. A reader that refuses its own bytes (``reader.failure`` set, as
        :class:`cas.objects.PackReader` does) stops the upload before its last byte, so no
        object is published, and its error is raised (not the HTTP stack's wrapper of it, and
        never retried)."""
        path = self.path(key)

        def attempt(send: Callable[[], object]) -> Callable[[], None]:
            def run() -> None:
                reader.seek(0)
                try:
                    send()
                except Exception:
                    if reader.failure is not None:
                        raise reader.failure from None
                    raise

            return run

        if not self.atomic_puts:

            def copy(tmp: str) -> None:
                with self.fs.open(tmp, "wb") as f:
                    shutil.copyfileobj(reader, f, PIECE)  # type: ignore[misc]

            self._put_via_temp(key, lambda tmp: attempt(lambda: copy(tmp))())
            return
        call_s3 = getattr(self.fs, "call_s3", None)
        if call_s3 is None:
            send: Callable[[], object] = lambda: self.fs.pipe_file(path, reader.read())  # noqa: E731
        else:
            bucket, name, _ = self.fs.split_path(path)

            def send() -> object:
                out = call_s3("put_object", Bucket=bucket, Key=name, Body=reader,
                              ContentLength=size)  # fmt: skip
                self.fs.invalidate_cache(path)
                return out

        self._call("uploading an object", key, attempt(send))

    def _put_via_temp(self, key: str, write: Callable[[str], None]) -> None:
        """Write beside the root, then rename: a local folder has no atomic PUT."""
        tmp = self.path(f"tmp/{_HOST}-{os.getpid()}-{uuid.uuid4().hex}")

        def put() -> None:
            self.fs.makedirs(self.path("tmp"), exist_ok=True)
            self.fs.makedirs(self.path(key).rsplit("/", 1)[0], exist_ok=True)
            try:
                write(tmp)
                self.fs.mv(tmp, self.path(key))
            except BaseException:
                if self.fs.exists(tmp):
                    self.fs.rm_file(tmp)
                raise

        self._call("writing an object", key, put)

    def clean_tmp(self) -> None:
        """Remove upload temp files a kill -9 left: this machine's of dead processes, anyone's
        older than a day (a live upload from another machine is younger)."""
        if self.atomic_puts:
            return
        cutoff = time.time() - STALE_TMP_SECONDS
        for key, (modified, _size) in self.list_info("tmp/").items():
            host, _, rest = key.split("/", 1)[1].rpartition("-")[0].rpartition("-")
            dead = host == _HOST and rest.isdigit() and not pid_alive(int(rest))
            if dead or modified < cutoff:
                self.delete(key)

    def list(self, prefix: str) -> Iterator[str]:
        """Every key under ``prefix``: one paginated listing, not a request per object."""
        return iter(sorted(self._find(prefix)))

    def list_info(self, prefix: str) -> dict[str, tuple[float, int]]:
        """Every key under ``prefix`` with its last-modified time (epoch seconds) and size, from
        the same one listing: what remote gc's grace period is measured against."""
        return {k: (_modified(i), int(i.get("size") or 0)) for k, i in self._find(prefix).items()}

    def _find(self, prefix: str) -> dict[str, dict]:
        base = self.path(prefix.rstrip("/"))

        def find() -> dict[str, dict]:
            self.fs.invalidate_cache(base)
            return self.fs.find(base, detail=True)

        try:
            found = self._call("listing objects", prefix, find)
        except KeyError:
            return {}
        cut = len(self.root) + 1
        # Some servers (SeaweedFS) list a folder left empty by a delete as an object of its own.
        keys = ((p[cut:].rstrip("/"), info) for p, info in found.items())
        return {k: info for k, info in keys if k.startswith(prefix) and len(k) > len(prefix)}

    def delete(self, key: str) -> None:
        try:
            self._call("deleting an object", key, lambda: self.fs.rm_file(self.path(key)))
        except KeyError:
            return


def _read_small(path: Path, limit: int) -> bytearray | None:
    """The whole file, if it holds at most ``limit`` bytes; else None."""
    try:
        with open(path, "rb", buffering=0) as f:
            size = os.fstat(f.fileno()).st_size
            if size > limit:
                return None
            data = bytearray(size)
            view, done = memoryview(data), 0
            while done < size and (got := f.readinto(view[done:])):
                done += got
    except OSError as err:
        raise storage_error(err, f"cannot read {path}") from err
    if done != size:
        raise StorageError(f"{path} shrank while it was read for upload; rerun")
    return data


def _modified(info: dict) -> float:
    """A listing entry's last-modified time: S3 gives ``LastModified`` (a datetime), a local
    folder ``mtime``, the memory filesystem ``created``."""
    for name in ("LastModified", "mtime", "created"):
        value = info.get(name)
        if value is not None:
            return value.timestamp() if hasattr(value, "timestamp") else float(value)
    raise StorageError(f"the listing of {info.get('name')} has no modification time")
