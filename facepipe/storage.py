"""Where user data lives: local paths and object-storage URIs behind one set of functions.

A location is a plain path (``photos/``, ``/data/out``) or a URI that :func:`pyarrow.fs.FileSystem.from_uri`
resolves: ``s3://bucket/prefix``, ``gs://bucket/prefix``, ``file:///abs/path``. Credentials and endpoints
come from where the AWS CLI and Ray take them (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``,
``AWS_ENDPOINT_URL``, ``AWS_DEFAULT_REGION``, instance and pod roles; for GCS the application default
credentials, and ``STORAGE_EMULATOR_HOST`` for an emulator, as the Google client libraries take it):
this module passes nothing of its own.

What each store guarantees, and how this module uses it:

* writes are whole: :func:`write_bytes` on a local path writes a temporary and renames it; on an object
  store it is one PUT (an object is visible whole or not at all), so no temporaries are ever left there;
* listing (:func:`list_tree`) is one recursive listing call, giving size and modification time per object
  (no GET);
* a lock (:func:`exclusive`) is ``fcntl`` on a local file (released by the OS when the process dies) and,
  on S3, an object created only if absent (``If-None-Match: *``) carrying its holder and a heartbeat;
  the takeover rule for a lock left by a killed run is in :func:`exclusive`.

Errors a user can cause (an unknown scheme, a bucket that does not exist, missing credentials, a
refused write) are :class:`StorageError`: one line naming the location.
"""
from __future__ import annotations

import contextlib
import functools
import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import NamedTuple

__all__ = ["StorageError", "StorageLocked", "Entry", "is_uri", "resolve", "join", "name_of", "parent_of", "info", "exists", "read_bytes",
           "write_bytes", "stat", "list_tree", "open_read", "delete", "move", "exclusive", "local_copy", "staged_output"]


class StorageError(ValueError):
    """A location that cannot be used as asked; the message is one line naming it."""


class StorageLocked(RuntimeError):
    """Another process holds the lock (:func:`exclusive`)."""


def is_uri(location: str | os.PathLike) -> bool:
    """Whether ``location`` names an object store (``scheme://...``, not ``file://``) rather than a local path."""
    text = os.fspath(location)
    scheme, sep, _ = text.partition("://")
    return bool(sep) and scheme.isidentifier() and scheme.lower() != "file"


def _local(location: str | os.PathLike) -> str:
    text = os.fspath(location)
    return text[len("file://"):] if text.startswith("file://") else text


def _one_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    text = lines[0] if lines else type(e).__name__
    # pyarrow's AWS errors end with request ids and retry details nobody can act on
    for cut in (" (Request ID:", ". Detail:"):
        text = text.split(cut)[0]
    return text[:300]


@functools.lru_cache(maxsize=64)
def _filesystem(scheme: str, bucket: str):
    import pyarrow.fs as pafs

    try:
        emulator = os.environ.get("STORAGE_EMULATOR_HOST") if scheme == "gs" else None
        if emulator:  # the Google client libraries' rule: a GCS emulator at that address, no credentials
            http, _, host = emulator.rpartition("://")
            fs = pafs.GcsFileSystem(anonymous=True, endpoint_override=host.rstrip("/"), scheme=http or "http")
        else:
            fs, _ = pafs.FileSystem.from_uri(f"{scheme}://{bucket}/")
    except Exception as e:  # noqa: BLE001 - pyarrow raises ArrowInvalid, OSError, ... for a bad URI
        if "Unrecognized filesystem type" in str(e):
            raise StorageError(f"{scheme}://{bucket}: unknown storage scheme '{scheme}' (give a local path, or an s3:// or gs:// URI)") from None
        raise StorageError(f"{scheme}://{bucket}: cannot reach the store: {_one_line(e)}") from None
    return fs


def resolve(location: str | os.PathLike):
    """``(pyarrow filesystem, path inside it)`` for a location (a local path: the local file system and its absolute path)."""
    import pyarrow.fs as pafs

    if not is_uri(location):
        return pafs.LocalFileSystem(), os.path.abspath(_local(location))
    text = os.fspath(location)
    scheme, _, rest = text.partition("://")
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise StorageError(f"{text}: no bucket in the URI")
    return _filesystem(scheme.lower(), bucket), f"{bucket}/{key}".rstrip("/")


def _scheme(location: str | os.PathLike) -> str:
    return os.fspath(location).partition("://")[0].lower() if is_uri(location) else ""


def join(base: str | os.PathLike, *names: str) -> str:
    """``base/name/...`` for a path or a URI (URIs always join with ``/``)."""
    if not is_uri(base):
        return os.path.join(_local(base), *names)
    return "/".join([os.fspath(base).rstrip("/"), *(n.strip("/") for n in names)])


def name_of(location: str | os.PathLike) -> str:
    """The last component of a path or URI (``s3://b/x/y.jpg`` → ``y.jpg``)."""
    return os.fspath(location).rstrip("/").rsplit("/", 1)[-1]


def parent_of(location: str | os.PathLike) -> str:
    """The folder (prefix) a path or URI lies in."""
    if not is_uri(location):
        return os.path.dirname(os.path.abspath(_local(location)))
    text = os.fspath(location).rstrip("/")
    head, _, _ = text.rpartition("/")
    return head if "://" in head and head.partition("://")[2] else text  # the bucket itself has no parent here


def absolute(location: str | os.PathLike) -> str:
    """A path made absolute (symlinks resolved), a URI without its trailing slash."""
    return os.fspath(location).rstrip("/") if is_uri(location) else str(Path(_local(location)).resolve())


class Entry(NamedTuple):
    """One listed file or object (a named tuple: listings make one per file of the largest folders)."""

    path: str  # relative to the listed folder, POSIX separators
    size: int  # -1: unknown (a dangling local symlink)
    mtime_ns: int
    ctime_ns: int = -1  # local inode change time; -1 on object stores (an object's time moves on every PUT)


def _error(location, action: str, e: BaseException) -> StorageError:
    text = _one_line(e)
    if "NO_SUCH_BUCKET" in text or "bucket does not exist" in text:
        return StorageError(f"{location}: the bucket does not exist")
    if _scheme(location) == "s3" and not _aws_credentials_found():
        return StorageError(f"{location}: cannot {action}: no AWS credentials found (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                            f"or AWS_PROFILE, or run with an instance role); the store said: {text}")
    if "ACCESS_DENIED" in text or "AccessDenied" in text or "403" in text:
        return StorageError(f"{location}: access denied ({action}); check the credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or the role) "
                            "and that they may do this")
    return StorageError(f"{location}: cannot {action}: {text}")


def _aws_credentials_found() -> bool:
    """Whether the standard AWS chain (variables, profiles, instance role) gives any credentials;
    asked only after a request failed, to say so when there are none."""
    try:
        import boto3

        return boto3.Session().get_credentials() is not None
    except Exception:  # noqa: BLE001 - a broken config file: let the store's own error speak
        return True


def info(location: str | os.PathLike) -> tuple[str, int, int] | None:
    """``(kind, size, mtime_ns)`` with kind ``file`` or ``dir``, or None when nothing is there."""
    import pyarrow.fs as pafs

    fs, path = resolve(location)
    try:
        fi = fs.get_file_info(path)
    except OSError as e:
        raise _error(location, "look it up", e) from None
    if fi.type == pafs.FileType.NotFound:
        return None
    kind = "dir" if fi.type == pafs.FileType.Directory else "file"
    return kind, int(fi.size or 0) if kind == "file" else 0, int(fi.mtime_ns or 0)


def exists(location: str | os.PathLike) -> bool:
    return info(location) is not None


def read_bytes(location: str | os.PathLike, max_bytes: int | None = None) -> bytes:
    """The whole content; OSError (as the local one would be) when it cannot be read, or holds more than ``max_bytes``."""
    if not is_uri(location):
        with open(_local(location), "rb") as f:
            return f.read() if max_bytes is None else f.read(max_bytes + 1)
    fs, path = resolve(location)
    with fs.open_input_stream(path) as f:
        return f.read() if max_bytes is None else f.read(max_bytes + 1)


TMP_PREFIX = ".tmp-"


def write_bytes(location: str | os.PathLike, data: bytes, fsync: bool = False) -> str:
    """Write a whole file: a reader sees the old content or the new, never a part. Local: a
    temporary (``.tmp-<hex>``, removed when the write fails) renamed over the name (``fsync``: data
    and folder flushed to disk first); an object store: one PUT. The location written."""
    if not is_uri(location):
        path = Path(_local(location))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{TMP_PREFIX}{uuid.uuid4().hex[:12]}")
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                if fsync:
                    f.flush()
                    os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        if fsync:
            fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        return str(path)
    fs, path = resolve(location)
    try:
        # One write of the whole buffer, then close: pyarrow sends it as a single PutObject
        # (below its multipart threshold), which the store applies whole or not at all.
        with fs.open_output_stream(path) as f:
            f.write(data)
    except OSError as e:
        raise _error(location, "write", e) from None
    return os.fspath(location)


def stat(location: str | os.PathLike) -> Entry | None:
    """The file or object at ``location`` (its name as ``path``), or None when there is none (or it is a folder)."""
    if not is_uri(location):
        try:
            st = os.stat(_local(location))
        except FileNotFoundError:
            return None
        import stat as stat_

        return Entry(name_of(location), int(st.st_size), int(st.st_mtime_ns), int(st.st_ctime_ns)) if stat_.S_ISREG(st.st_mode) else None
    got = info(location)
    return Entry(name_of(location), got[1], got[2]) if got and got[0] == "file" else None


def list_tree(location: str | os.PathLike, recursive: bool = True, include_hidden: bool = True) -> tuple[list[Entry], list[tuple[str, str]]]:
    """Regular files under a folder or prefix: ``(entries sorted by path, unreadable)``, where
    unreadable holds ``(relative folder, reason)`` for local folders that could not be listed (an
    object store lists a prefix whole in one paginated call, or fails: :class:`StorageError`).
    Without ``include_hidden``, names starting with ``.`` are left out, and hidden local folders are
    not entered. Local symlinked folders are not entered; symlinks to files are listed with their
    target's size and times (a dangling one with size -1)."""
    if not is_uri(location):
        entries, unreadable = _list_local(Path(_local(location)), recursive, include_hidden)
    else:
        import pyarrow.fs as pafs

        fs, path = resolve(location)
        try:
            # allow_not_found: an empty prefix is an empty listing, but a missing bucket must say so
            if fs.get_file_info(path.split("/", 1)[0]).type == pafs.FileType.NotFound:
                raise StorageError(f"{location}: the bucket does not exist")
            infos = fs.get_file_info(pafs.FileSelector(path, recursive=recursive, allow_not_found=True))
        except OSError as e:
            raise _error(location, "list it", e) from None
        prefix = path.rstrip("/") + "/"
        entries = [Entry(fi.path[len(prefix):], int(fi.size or 0), int(fi.mtime_ns or 0)) for fi in infos
                   if fi.type == pafs.FileType.File and fi.path.startswith(prefix)]
        if not include_hidden:
            entries = [e for e in entries if not any(part.startswith(".") for part in e.path.split("/"))]
        unreadable = []
    return sorted(entries, key=lambda e: e.path), unreadable


def _list_local(root: Path, recursive: bool, include_hidden: bool) -> tuple[list[Entry], list[tuple[str, str]]]:
    import stat as stat_

    entries: list[Entry] = []
    unreadable: list[tuple[str, str]] = []

    def refused(e: OSError) -> None:
        rel = Path(e.filename).relative_to(root).as_posix() if e.filename else "."
        unreadable.append((rel, e.strerror or str(e)))

    if recursive:
        walker = os.walk(root, followlinks=False, onerror=refused)
    else:
        try:
            walker = [(str(root), [], os.listdir(root))]
        except OSError as e:
            refused(e)
            walker = []
    top = len(str(root).rstrip(os.sep)) + 1
    for dirpath, dirnames, filenames in walker:
        if not include_hidden:
            dirnames[:] = [n for n in dirnames if not n.startswith(".")]
        # string slicing, not pathlib: this loop runs once per file of the largest folders
        folder = dirpath[top:].replace(os.sep, "/")
        for name in filenames:
            if not include_hidden and name.startswith("."):
                continue
            full = os.path.join(dirpath, name)
            try:
                st = os.stat(full)
            except OSError:  # dangling symlink: still a file, its read reports it
                st = None
            if st is not None and not stat_.S_ISREG(st.st_mode):
                continue
            rel = f"{folder}/{name}" if folder else name
            entries.append(Entry(rel, st.st_size, st.st_mtime_ns, st.st_ctime_ns) if st else Entry(rel, -1, -1, -1))
    return entries, unreadable


@contextlib.contextmanager
def open_read(location: str | os.PathLike, seekable: bool = False):
    """A binary reader of a file or object, with its ``(size, mtime_ns)`` when known (local: from
    the open file itself; an object store: None, the listing's hold). A local path is opened
    non-blocking and must be a regular file (a FIFO swapped in after listing would block forever).
    ``seekable``: an object is read by ranges as the reader seeks (a video segment's task reads
    only its stretch), not streamed from its start."""
    if not is_uri(location):
        import stat as stat_

        fd = os.open(_local(location), os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat_.S_ISREG(st.st_mode):
                raise OSError(0, "not a regular file")
            yield f, (int(st.st_size), int(st.st_mtime_ns))
        return
    fs, path = resolve(location)
    with (fs.open_input_file(path) if seekable else fs.open_input_stream(path)) as f:
        yield f, None


def delete(location: str | os.PathLike) -> None:
    """Remove a file or object (gone already: nothing to do)."""
    if not is_uri(location):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(_local(location))
        return
    fs, path = resolve(location)
    with contextlib.suppress(FileNotFoundError):
        fs.delete_file(path)


def move(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Move a file (local: a rename; an object store: copy, then delete the source)."""
    if not is_uri(src):
        Path(_local(dst)).parent.mkdir(parents=True, exist_ok=True)
        os.replace(_local(src), _local(dst))
        return
    fs, path = resolve(src)
    _, target = resolve(dst)
    fs.copy_file(path, target)
    fs.delete_file(path)


# --- locks ---------------------------------------------------------------------------------------

#: Seconds after its last heartbeat that an object-store lock counts as abandoned (its holder
#: refreshes it every third of that). ``FACEPIPE_LOCK_TTL_S`` overrides it.
LOCK_TTL_S = 120.0


def _lock_ttl() -> float:
    return float(os.environ.get("FACEPIPE_LOCK_TTL_S", LOCK_TTL_S))


@contextlib.contextmanager
def exclusive(location: str | os.PathLike, what: str = "run"):
    """Hold an exclusive lock at ``location`` (a lock file or object) for the ``with`` body, or
    raise :class:`StorageLocked` naming the holder.

    Local: ``fcntl.flock`` on the file; the OS releases it when the holder dies, even by kill -9.
    S3: the lock object is created only if absent (``If-None-Match: *``) and names its holder
    (host, pid, run id) and a heartbeat the holder rewrites every ``TTL/3`` seconds. A lock left
    by a killed run is taken over (deleted and created again, said on stderr) when its holder ran
    on this host and that process is gone, or when its heartbeat is older than the TTL
    (:data:`LOCK_TTL_S`, ``FACEPIPE_LOCK_TTL_S``); otherwise the run is refused. Other object
    stores get the same rule with a create that is checked by reading the lock back (two runs
    starting within the same moment could both pass: schedule them apart).
    """
    if not is_uri(location):
        with _flock(Path(_local(location)), what):
            yield
        return
    token = uuid.uuid4().hex
    _acquire_object_lock(location, token, what)
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(location, token, stop), daemon=True, name="facepipe-lock-heartbeat")
    beat.start()
    try:
        yield
    finally:
        stop.set()
        beat.join(timeout=5)
        with contextlib.suppress(Exception):  # a lock that cannot be removed expires by its TTL
            if _read_lock(location).get("token") == token:
                delete(location)


@contextlib.contextmanager
def _flock(path: Path, what: str):
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StorageLocked(f"another {what} holds {path}") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)  # closing releases the flock


def _lock_body(token: str) -> bytes:
    return json.dumps({"token": token, "host": socket.gethostname(), "pid": os.getpid(), "heartbeat": time.time()}).encode()


def _read_lock(location) -> dict:
    try:
        body = json.loads(read_bytes(location))
        return body if isinstance(body, dict) else {}
    except (OSError, ValueError):
        return {}


def _create_if_absent(location, body: bytes) -> bool:
    """Create the object only if nothing is there; whether this call created it."""
    if _scheme(location) == "s3":
        import boto3
        import botocore.exceptions

        bucket, _, key = os.fspath(location).partition("://")[2].partition("/")
        try:
            boto3.client("s3").put_object(Bucket=bucket, Key=key, Body=body, IfNoneMatch="*")
            return True
        except botocore.exceptions.ClientError as e:
            code = e.response.get("Error", {}).get("Code", "")
            if code in ("PreconditionFailed", "ConditionalRequestConflict", "412", "409"):
                return False
            raise _error(location, "create the lock", e) from None
        except botocore.exceptions.BotoCoreError as e:
            raise _error(location, "create the lock", e) from None
    if exists(location):
        return False
    write_bytes(location, body)
    return json.loads(read_bytes(location)).get("token") == json.loads(body)["token"]


def _abandoned(holder: dict) -> str | None:
    """Why a lock's holder is gone (the takeover rule of :func:`exclusive`), or None while it may still run."""
    if not holder:
        return "unreadable lock object"
    if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
        try:
            os.kill(holder["pid"], 0)
        except ProcessLookupError:
            return f"its process {holder['pid']} on this host has ended"
        except PermissionError:
            pass
    age = time.time() - float(holder.get("heartbeat") or 0)
    if age > _lock_ttl():
        return f"no heartbeat for {age:.0f} s (> {_lock_ttl():.0f} s)"
    return None


def _acquire_object_lock(location, token: str, what: str) -> None:
    import sys

    for _ in range(3):
        if _create_if_absent(location, _lock_body(token)):
            return
        holder = _read_lock(location)
        why = _abandoned(holder)
        if why is None:
            raise StorageLocked(f"another {what} holds {location} (host {holder.get('host')}, pid {holder.get('pid')}, "
                                f"heartbeat {time.time() - float(holder.get('heartbeat') or 0):.0f} s ago; it is taken over "
                                f"{_lock_ttl():.0f} s after its last heartbeat)")
        print(f"facepipe: taking over the lock {location} left by a run that ended ({why})", file=sys.stderr, flush=True)
        delete(location)
    raise StorageLocked(f"could not take the lock {location}: other runs keep creating it")


def _heartbeat(location, token: str, stop: threading.Event) -> None:
    while not stop.wait(_lock_ttl() / 3):
        with contextlib.suppress(Exception):  # a missed beat is retried; the TTL allows two
            if _read_lock(location).get("token") == token:
                write_bytes(location, _lock_body(token))


# --- model directories and other small inputs ------------------------------------------------------


def local_copy(location: str | os.PathLike, cache: str | os.PathLike | None = None) -> str:
    """A local path holding ``location``: the path itself, or the object (or every object under the
    prefix: a model directory) copied once into ``cache`` (default: a folder under the system's
    temporary folder, keyed by the URI and the objects' sizes and times, so a changed object is
    fetched again). A single object keeps its name (its suffix says how it is compressed)."""
    if not is_uri(location):
        return _local(location)
    import hashlib
    import tempfile

    alone = stat(location)
    entries = [alone] if alone is not None else list_tree(location, recursive=True)[0]
    if not entries:
        raise StorageError(f"{location}: nothing there")
    key = hashlib.sha256(json.dumps([os.fspath(location), [(e.path, e.size, e.mtime_ns) for e in entries]]).encode()).hexdigest()[:16]
    target = Path(cache or tempfile.gettempdir()) / "facepipe-fetched" / key
    if not (target / ".complete").exists():
        for e in entries:
            write_bytes(target / e.path, read_bytes(location if alone is not None else join(location, e.path)))
        (target / ".complete").write_text(os.fspath(location))
    return str(target / alone.path) if alone is not None else str(target)


@contextlib.contextmanager
def staged_output(location: str | os.PathLike, prefix: str = "facepipe-out-"):
    """A local folder for a command that writes files with ordinary file APIs (plots, reports):
    the path itself, or for a URI a temporary folder whose files are uploaded under the URI, one
    whole object each, when the block ends without an error (nothing is uploaded after a failure)."""
    import tempfile

    if not is_uri(location):
        Path(_local(location)).mkdir(parents=True, exist_ok=True)
        yield _local(location)
        return
    uri = absolute(location)
    with tempfile.TemporaryDirectory(prefix=prefix) as staging:
        yield staging
        for p in sorted(q for q in Path(staging).rglob("*") if q.is_file()):
            write_bytes(join(uri, p.relative_to(staging).as_posix()), p.read_bytes())
