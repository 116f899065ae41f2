"""Artifact store: one interface, a local-directory backend and an S3 backend.

Keys are `/`-separated relative paths and mean the same on both backends. Every write is atomic
(a reader sees the old object or the new one, never a partial one). Two primitives make
concurrent writers safe without a database:

* `put_if_absent` creates a key only if nobody else has (O_EXCL-style link locally,
  `IfNoneMatch="*"` on S3); the registry allocates version numbers and audit events with it.
* `compare_and_swap` replaces a small JSON object only if it still holds what the caller read
  (a content hash under an exclusive lock locally, the ETag with `IfMatch` on S3); aliases such as
  `production` move only through it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import hashlib
import json
import logging
import math
import os
import stat
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from mlops_tasks.errors import ConcurrentUpdateError, IntegrityError, NotFoundError, StoreError

if TYPE_CHECKING:
    from mlops_tasks.signing import Keyring

log = logging.getLogger(__name__)


@functools.cache
def _file_mode() -> int:
    """0666 less the process umask (read once, on first write)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


#: Opaque version token of a JSON object: a content hash locally, the ETag on S3.
Token = str

#: How old (by modification time) a local temporary file must be before it is taken for one a
#: killed writer left behind and removed. A live writer renames its temporary file as soon as
#: its last byte is on disk (a compare-and-swap first waits for the object's lock), so an hour
#: leaves a wide margin; a writer stalled for longer fails with a StoreError when it renames,
#: and never leaves a partial object.
STALE_TEMPORARY_SECONDS = 3600.0


def _check_key(key: str) -> str:
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise StoreError(
            f"invalid store key {key!r}: must be a relative path without '..'", key=key
        )
    return key


#: OSError codes that may clear up by themselves (space freed, a flaky disk or mount).
_TRANSIENT = {
    errno.ENOSPC,
    errno.EDQUOT,
    errno.EIO,
    errno.EAGAIN,
    errno.EINTR,
    errno.EBUSY,
    errno.ETIMEDOUT,
    errno.ESTALE,
}


def _os_error(op: str, uri: str, err: OSError) -> StoreError:
    """A local file-system failure as a StoreError naming the operation and the object."""
    code = errno.errorcode.get(err.errno or 0, "unknown")
    error = StoreError(
        f"{op} {uri} failed: {err.strerror or err} ({code})", uri=uri, op=op, errno=code
    )
    error.retryable = err.errno in _TRANSIENT
    return error


#: Where a document records the non-finite numbers it was given (`encode_json`).
NON_FINITE = "non_finite"


def encode_json(obj: Any) -> bytes:
    """The canonical bytes of a store document: sorted keys, two-space indent, a newline.

    JSON has no Infinity or NaN. `json.dumps` writes them anyway, and strict readers (the
    CLI's `--json`, browsers, most languages) then refuse the whole document. So each
    non-finite number is stored as null, and a document that is an object says what it was
    under `non_finite` (a JSON Pointer to each, e.g. `{"/failures/0/observed_value":
    "Infinity"}`; each object of a list says it of its own). Documents written before this
    still hold `Infinity` and `NaN` (Python parses them); readers convert them with `finite`
    before showing them.
    """
    try:
        text = json.dumps(obj, indent=2, sort_keys=True, default=str, allow_nan=False)
    except ValueError:  # a non-finite float somewhere (the only ValueError of allow_nan)
        text = json.dumps(finite(obj), indent=2, sort_keys=True, default=str, allow_nan=False)
    return (text + "\n").encode()


def finite(obj: Any) -> Any:
    """`obj` with each non-finite float replaced by None; an object also records them under
    `non_finite` (JSON Pointer -> "Infinity", "-Infinity" or "NaN"), merged with any it had,
    and a list (of documents, such as audit events) has each of its items do so."""
    if isinstance(obj, list | tuple):
        return [finite(item) for item in obj]
    found: dict[str, str] = {}
    clean = _finite(obj, "", found)
    if found and isinstance(clean, dict):
        earlier = clean.get(NON_FINITE)
        clean[NON_FINITE] = {**(earlier if isinstance(earlier, dict) else {}), **found}
    return clean


def _finite(obj: Any, path: str, found: dict[str, str]) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        found[path or "/"] = "NaN" if math.isnan(obj) else ("Infinity" if obj > 0 else "-Infinity")
        return None
    if isinstance(obj, dict):
        return {k: _finite(v, f"{path}/{_pointer(k)}", found) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v, f"{path}/{i}", found) for i, v in enumerate(obj)]
    return obj


def _pointer(key: Any) -> str:
    """One JSON Pointer segment (RFC 6901: `~` and `/` escaped)."""
    return str(key).replace("~", "~0").replace("/", "~1")


class ArtifactStore(ABC):
    """Where datasets, models, reports, aliases and audit events live."""

    uri: str
    #: The keys the registry signs and checks its documents and audit events with
    #: (`Settings.keyring`, set by `Settings.open_store`); the store itself never reads them.
    keyring: Keyring | None = None
    #: Packages a custom estimator's stored types may come from (`Settings.trusted_packages`,
    #: set by `Settings.open_store`); the store itself never reads them.
    trusted_packages: tuple[str, ...] = ()

    def uri_for(self, key: str) -> str:
        return f"{self.uri.rstrip('/')}/{_check_key(key)}"

    @abstractmethod
    def get_bytes(self, key: str, *, no_symlinks: bool = False) -> bytes:
        """Return an object's bytes; NotFoundError if it does not exist.

        `no_symlinks`: refuse (IntegrityError) an object that is a symbolic link or lies under
        one, for readers that serve objects to people who may not read the machine's files (S3
        has no links: there it changes nothing).
        """

    @abstractmethod
    def put_bytes(self, key: str, data: bytes) -> None:
        """Atomically write an object (replacing it if present)."""

    @abstractmethod
    def put_if_absent(self, key: str, data: bytes) -> bool:
        """Atomically create an object; False (and nothing written) if the key exists."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def list_keys(self, prefix: str = "") -> list[str]:
        """All keys under `prefix` (recursively), sorted."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove an object if present (used only for scratch data, never for history)."""

    @abstractmethod
    def read_bytes_versioned(self, key: str) -> tuple[bytes | None, Token | None]:
        """An object's bytes and version token; (None, None) when the key does not exist."""

    def read_json_versioned(self, key: str) -> tuple[Any, Token | None]:
        """A JSON object and its version token; (None, None) when the key does not exist."""
        data, token = self.read_bytes_versioned(key)
        return (None, None) if data is None else (self._decode(key, data), token)

    @abstractmethod
    def compare_and_swap(self, key: str, obj: Any, expected: Token | None) -> Token:
        """Write `obj` only if the key still has version `expected` (None: must not exist).

        Returns the new token; raises ConcurrentUpdateError if someone else changed it first.
        """

    # Convenience built on the primitives -------------------------------------------------
    def get_json(self, key: str) -> Any:
        return self._decode(key, self.get_bytes(key))

    def decode_json(self, key: str, data: bytes) -> Any:
        """Parse bytes read from `key` (IntegrityError naming its URI when they are not JSON)."""
        return self._decode(key, data)

    def _decode(self, key: str, data: bytes) -> Any:
        """Parse a stored JSON object; a corrupt one is an IntegrityError naming its URI."""
        try:
            return json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            uri = self.uri_for(key)
            raise IntegrityError(f"{uri}: not valid JSON: {err}", key=key, uri=uri) from None

    def put_json(self, key: str, obj: Any) -> None:
        self.put_bytes(key, encode_json(obj))

    def list_dirs(self, prefix: str) -> list[str]:
        """Immediate child names under `prefix/` (like `ls`)."""
        prefix = prefix.rstrip("/") + "/"
        return sorted({k[len(prefix) :].split("/", 1)[0] for k in self.list_keys(prefix)})

    def remove_stale_temporaries(self, older_than: float = STALE_TEMPORARY_SECONDS) -> list[str]:
        """Remove the temporary files that writers killed mid-write left behind, when older
        than `older_than` seconds; the paths removed, relative to the store. Nothing to do on
        S3, where a write is one request and leaves no temporary object."""
        return []


def _is_temporary(name: str) -> bool:
    """A local writer's temporary file (`.<name>.<random>.tmp`), never an object."""
    return name.startswith(".") and name.endswith(".tmp")


class LocalStore(ArtifactStore):
    """A directory on local disk. Atomic writes via temp file + rename; CAS under flock.

    A writer killed between creating its temporary file and renaming it leaves the file
    behind. Writing removes such files once they are `STALE_TEMPORARY_SECONDS` old: each store
    object looks at most once in that time, and the age of `.temporaries-swept` in the root
    tells every process when the last sweep was, so one process sweeps per period.
    """

    #: In the root: its modification time is when temporaries were last swept.
    SWEPT = ".temporaries-swept"

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        self.uri = self.root.as_uri()
        self._next_sweep = 0.0  # time.monotonic() before which writes do not look again

    def remove_stale_temporaries(self, older_than: float = STALE_TEMPORARY_SECONDS) -> list[str]:
        cutoff = time.time() - older_than
        removed: list[str] = []
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                if not _is_temporary(name):
                    continue
                path = Path(dirpath, name)
                try:
                    info = path.lstat()
                    if not stat.S_ISREG(info.st_mode) or info.st_mtime > cutoff:
                        continue  # young: its writer may be about to rename it
                    path.unlink()
                except FileNotFoundError:
                    continue  # its writer renamed or removed it meanwhile
                except OSError as err:
                    raise _os_error("delete", path.as_uri(), err) from err
                removed.append(path.relative_to(self.root).as_posix())
                self._prune([p for p in path.parents if self.root in p.parents])
        if removed:
            log.warning(
                "%s: removed %d temporary file(s) older than %.0f s that killed writers left: %s",
                self.uri,
                len(removed),
                older_than,
                ", ".join(removed[:5]) + (" ..." if len(removed) > 5 else ""),
            )
        return removed

    def _sweep_when_due(self) -> None:
        """Before a write: remove stale temporaries if nobody did in the last period.

        Housekeeping must not fail the write it precedes: trouble is logged, and the next
        period tries again (the write itself reports a failing disk)."""
        now = time.monotonic()
        if now < self._next_sweep:
            return
        self._next_sweep = now + STALE_TEMPORARY_SECONDS
        marker = self.root / self.SWEPT
        try:
            if time.time() - marker.stat().st_mtime < STALE_TEMPORARY_SECONDS:
                return
        except FileNotFoundError:
            if not self.root.is_dir():
                return  # a new store: nothing written yet, nothing left behind
        except OSError as err:
            log.warning("%s: cannot tell when temporaries were last swept: %s", self.uri, err)
            return
        try:
            marker.touch()  # first, so that other processes skip this period's sweep
            self.remove_stale_temporaries()
        except (OSError, StoreError) as err:
            log.warning("%s: could not remove stale temporary files: %s", self.uri, err)

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def _mkdirs(self, directory: Path) -> list[Path]:
        """Create `directory` and its missing parents; the ones created, deepest first."""
        created: list[Path] = []
        d = directory
        while not d.is_dir() and d != d.parent:
            created.append(d)
            d = d.parent
        directory.mkdir(parents=True, exist_ok=True)
        return created

    def _prune(self, created: list[Path]) -> None:
        """Remove directories this write created if they are still empty (no empty folders
        left behind by a failed write; a directory another writer filled stays)."""
        for d in created:
            with contextlib.suppress(OSError):
                d.rmdir()

    def _tmp(self, path: Path, data: bytes, op: str, key: str) -> Path:
        """A complete, fsynced temporary file next to `path` (renamed or linked into place)."""
        self._sweep_when_due()
        created: list[Path] = []
        try:
            for attempt in range(3):
                try:
                    created += self._mkdirs(path.parent)
                    fd, tmp = tempfile.mkstemp(
                        dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
                    )
                    break
                except FileNotFoundError:  # a failed writer pruned the empty directory
                    if attempt == 2:
                        raise
            try:
                os.fchmod(fd, _file_mode())  # mkstemp makes 0600; objects follow the umask
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
            except BaseException:
                os.unlink(tmp)
                raise
        except OSError as err:
            self._prune(created)
            raise _os_error(op, self.uri_for(key), err) from err
        except BaseException:
            self._prune(created)
            raise
        return Path(tmp)

    def get_bytes(self, key: str, *, no_symlinks: bool = False) -> bytes:
        try:
            if no_symlinks:
                return self._read_unlinked(key)
            return self._path(key).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            raise NotFoundError(f"{self.uri_for(key)} does not exist", key=key) from None
        except OSError as err:
            raise _os_error("read", self.uri_for(key), err) from err

    def _read_unlinked(self, key: str) -> bytes:
        """The bytes of the regular file at `key`, reached through no symbolic link.

        Someone who may write to a store folder could link a report to /etc/passwd or to
        Airflow's secrets. Each folder from the root down, then the file, is opened with
        O_NOFOLLOW relative to the folder above, so the file read is the one that is under the
        root at the moment it is opened, whatever is renamed or linked meanwhile.
        """
        parts = _check_key(key).split("/")
        fds = [os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)]
        try:
            for i, part in enumerate(parts):
                last = i == len(parts) - 1
                flags = os.O_RDONLY | os.O_NOFOLLOW | (os.O_NONBLOCK if last else os.O_DIRECTORY)
                try:
                    fds.append(os.open(part, flags, dir_fd=fds[-1]))
                except OSError as err:  # ELOOP (a file) or ENOTDIR (a folder) for a link
                    if err.errno not in (errno.ELOOP, errno.ENOTDIR) or not stat.S_ISLNK(
                        os.stat(part, dir_fd=fds[-1], follow_symlinks=False).st_mode
                    ):
                        raise
                    uri = self.uri_for(key)
                    raise IntegrityError(
                        f"{uri}: {'/'.join(parts[: i + 1])} is a symbolic link; refused",
                        key=key,
                        uri=uri,
                    ) from None
            if not stat.S_ISREG(os.fstat(fds[-1]).st_mode):  # a FIFO or a device
                raise FileNotFoundError(errno.ENOENT, "not a regular file", key)
            with os.fdopen(fds.pop(), "rb") as fh:
                return fh.read()
        finally:
            for fd in fds:
                os.close(fd)

    def put_bytes(self, key: str, data: bytes) -> None:
        path = self._path(key)
        tmp = self._tmp(path, data, "write", key)
        try:
            os.replace(tmp, path)
        except OSError as err:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise _os_error("write", self.uri_for(key), err) from err

    def put_if_absent(self, key: str, data: bytes) -> bool:
        path = self._path(key)
        tmp = self._tmp(path, data, "create", key)
        try:
            os.link(tmp, path)  # fails atomically if the name exists; the content is complete
            return True
        except FileExistsError:
            return False
        except OSError as err:
            raise _os_error("create", self.uri_for(key), err) from err
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list_keys(self, prefix: str = "") -> list[str]:
        base = self.root / prefix.rstrip("/") if prefix else self.root
        # A prefix may also be a partial file name (S3 semantics): walk its parent.
        walk_root = base if base.is_dir() else base.parent
        if not walk_root.is_dir():
            return []
        keys = []
        for dirpath, _dirs, files in os.walk(walk_root):
            for f in files:
                if _is_temporary(f) or (f.startswith(".") and f.endswith(".lock")):
                    continue
                if f == self.SWEPT and dirpath == str(self.root):
                    continue
                key = Path(dirpath, f).relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink()
        except FileNotFoundError:
            return
        except OSError as err:
            raise _os_error("delete", self.uri_for(key), err) from err
        parents = [p for p in path.parents if p != self.root and self.root in p.parents]
        self._prune(parents)  # the directory of a removed scratch object goes too

    @contextlib.contextmanager
    def _locked(self, path: Path) -> Iterator[None]:
        # flock is released by the kernel when the holder dies, even on SIGKILL: no stale locks.
        fd = os.open(path.with_name(f".{path.name}.lock"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def read_bytes_versioned(self, key: str) -> tuple[bytes | None, Token | None]:
        try:
            data = self._path(key).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None, None
        except OSError as err:
            raise _os_error("read", self.uri_for(key), err) from err
        return data, hashlib.sha256(data).hexdigest()

    def compare_and_swap(self, key: str, obj: Any, expected: Token | None) -> Token:
        path = self._path(key)
        data = encode_json(obj)
        tmp = self._tmp(path, data, "compare-and-swap", key)
        try:
            with self._locked(path):
                try:
                    current: str | None = hashlib.sha256(path.read_bytes()).hexdigest()
                except FileNotFoundError:
                    current = None
                if current != expected:
                    raise ConcurrentUpdateError(
                        f"{self.uri_for(key)} changed since it was read", key=key
                    )
                os.replace(tmp, path)
        except OSError as err:
            raise _os_error("compare-and-swap", self.uri_for(key), err) from err
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        return hashlib.sha256(data).hexdigest()


@functools.cache
def _service_models() -> Any:
    """botocore's loader of service models and endpoint rules, shared by every store's session:
    it only caches files read from botocore's data directory, nothing about who calls."""
    from botocore.loaders import create_loader

    return create_loader()


def _session() -> Any:
    """A new botocore session (its own credentials, resolved from the AWS chain when the
    client is created) that shares the service models loaded once per process: a plain
    `boto3.session.Session()` would parse them again, 0.6 s per store (docs/reliability.md)."""
    from botocore.session import get_session

    session = get_session()
    session.register_component("data_loader", _service_models())
    return session


class S3Store(ArtifactStore):
    """An S3 bucket and prefix through boto3; conditional writes give atomic create and CAS.

    `endpoint_url` points at an S3-compatible server (MinIO, moto, ...), None for AWS. Keys
    given here (the Airflow layer passes those of its `aws` connection) take precedence; without
    them boto3's standard chain applies (environment, shared files, instance or task role). The
    keys stay in memory (the client, and `sibling` for other buckets): nothing here logs them,
    returns them or writes them anywhere.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        max_attempts: int = 4,
        *,
        aws_access_key_id: str | None = None,
        aws_secret_access_key: str | None = None,
        aws_session_token: str | None = None,
        region_name: str | None = None,
        client: Any = None,
    ) -> None:
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url
        # What a store for another bucket (an `s3://` data URI) needs to reach it the same way.
        self._options: dict[str, Any] = {
            "endpoint_url": endpoint_url,
            "connect_timeout": connect_timeout,
            "read_timeout": read_timeout,
            "max_attempts": max_attempts,
            "aws_access_key_id": aws_access_key_id,
            "aws_secret_access_key": aws_secret_access_key,
            "aws_session_token": aws_session_token,
            "region_name": region_name,
        }
        # Explicit bounds: a stalled endpoint fails after `max_attempts` tries of at most
        # connect + read timeout each (plus the standard mode's short backoff), not minutes.
        config = Config(
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"total_max_attempts": max_attempts, "mode": "standard"},
            s3={"addressing_style": "path"} if endpoint_url else {},
        )
        # A session of its own, not boto3's default one: that resolves the AWS chain once and
        # keeps the credentials for the life of the process, so a store would go on using keys
        # the environment no longer has (a rotation, or another test's keys). `client`: one
        # already built with these options (`sibling` shares its own).
        self.client = client or _session().create_client(
            "s3",
            endpoint_url=endpoint_url,
            config=config,
            aws_access_key_id=aws_access_key_id,
            aws_secret_access_key=aws_secret_access_key,
            aws_session_token=aws_session_token,
            region_name=region_name,
        )
        self.uri = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"

    def __repr__(self) -> str:
        return f"S3Store({self.uri!r}, endpoint_url={self.endpoint_url!r})"

    def sibling(self, bucket: str, prefix: str = "") -> S3Store:
        """Another bucket reached through the same endpoint with the same credentials (and the
        same client: a bucket is a parameter of each request)."""
        return S3Store(bucket, prefix, **self._options, client=self.client)

    def _key(self, key: str) -> str:
        _check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _error_code(self, err: Exception) -> str:
        return str(getattr(err, "response", {}).get("Error", {}).get("Code", ""))

    def _fail(self, op: str, key: str, err: Exception) -> StoreError:
        return StoreError(f"S3 {op} {self.uri_for(key)} failed: {err}", key=key)

    def get_bytes(self, key: str, *, no_symlinks: bool = False) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            body: bytes = self.client.get_object(Bucket=self.bucket, Key=self._key(key))[
                "Body"
            ].read()
            return body
        except ClientError as err:
            if self._error_code(err) in ("NoSuchKey", "404"):
                raise NotFoundError(f"{self.uri_for(key)} does not exist", key=key) from None
            raise self._fail("get", key, err) from err
        except BotoCoreError as err:
            raise self._fail("get", key, err) from err

    def _put(self, key: str, data: bytes, **conditions: Any) -> dict[str, Any]:
        out: Any = self.client.put_object(
            Bucket=self.bucket, Key=self._key(key), Body=data, **conditions
        )
        return dict(out)

    def put_bytes(self, key: str, data: bytes) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._put(key, data)
        except (ClientError, BotoCoreError) as err:
            raise self._fail("put", key, err) from err

    def _conditional(self, key: str, data: bytes, **conditions: str) -> str | None:
        """Conditional put: the new ETag, or None when the precondition failed."""
        from botocore.exceptions import BotoCoreError, ClientError

        for attempt in range(6):
            try:
                return str(self._put(key, data, **conditions)["ETag"])
            except ClientError as err:
                code = self._error_code(err)
                if code in ("PreconditionFailed", "412"):
                    return None
                if code in ("ConditionalRequestConflict", "409") and attempt < 5:
                    time.sleep(0.05 * 2**attempt)  # another conditional write is in flight
                    continue
                raise self._fail("conditional put", key, err) from err
            except BotoCoreError as err:
                raise self._fail("conditional put", key, err) from err
        return None

    def put_if_absent(self, key: str, data: bytes) -> bool:
        return self._conditional(key, data, IfNoneMatch="*") is not None

    def exists(self, key: str) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except ClientError as err:
            if self._error_code(err) in ("404", "NoSuchKey", "NotFound"):
                return False
            raise self._fail("head", key, err) from err
        except BotoCoreError as err:
            raise self._fail("head", key, err) from err

    def list_keys(self, prefix: str = "") -> list[str]:
        from botocore.exceptions import BotoCoreError, ClientError

        full = f"{self.prefix}/{prefix}" if self.prefix else prefix
        strip = len(self.prefix) + 1 if self.prefix else 0
        keys: list[str] = []
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=full
            ):
                keys.extend(obj["Key"][strip:] for obj in page.get("Contents", []))
        except (ClientError, BotoCoreError) as err:
            raise StoreError(f"S3 list {self.uri}/{prefix} failed: {err}", key=prefix) from err
        return sorted(keys)

    def delete(self, key: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except (ClientError, BotoCoreError) as err:
            raise self._fail("delete", key, err) from err

    def read_bytes_versioned(self, key: str) -> tuple[bytes | None, Token | None]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            resp = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
            data: bytes = resp["Body"].read()
        except ClientError as err:
            if self._error_code(err) in ("NoSuchKey", "404"):
                return None, None
            raise self._fail("get", key, err) from err
        except BotoCoreError as err:
            raise self._fail("get", key, err) from err
        return data, str(resp["ETag"])

    def compare_and_swap(self, key: str, obj: Any, expected: Token | None) -> Token:
        cond = {"IfMatch": expected} if expected else {"IfNoneMatch": "*"}
        etag = self._conditional(key, encode_json(obj), **cond)
        if etag is None:
            raise ConcurrentUpdateError(f"{self.uri_for(key)} changed since it was read", key=key)
        return etag


@dataclass(frozen=True)
class S3Credentials:
    """Keys (and region) for S3 handed down by the deployment layer, e.g. from an Airflow
    connection; a field left None comes from boto3's chain. The secrets stay out of `repr`,
    so a logged object never shows them."""

    aws_access_key_id: str | None = field(default=None, repr=False)
    aws_secret_access_key: str | None = field(default=None, repr=False)
    aws_session_token: str | None = field(default=None, repr=False)
    region_name: str | None = None


def open_store(
    uri: str, endpoint_url: str | None = None, credentials: S3Credentials | None = None
) -> ArtifactStore:
    """The store at `uri`: `file:///dir`, `s3://bucket/prefix`, or a plain absolute path.

    `endpoint_url` and `credentials` apply to S3 only; without credentials boto3's chain does.
    """
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        if parsed.netloc:
            raise StoreError(
                f"invalid store URI {uri!r}: file:// needs an absolute path, as in "
                f"file:///{parsed.netloc}{parsed.path} (three slashes)",
                uri=uri,
            )
        return LocalStore(parsed.path)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise StoreError(f"invalid store URI {uri!r}: missing bucket name", uri=uri)
        keys = vars(credentials) if credentials else {}
        return S3Store(parsed.netloc, parsed.path, endpoint_url=endpoint_url, **keys)
    if parsed.scheme == "" and uri:
        return LocalStore(uri)  # a plain path, for convenience on the command line
    raise StoreError(
        f"unsupported store URI {uri!r}: use file:///path or s3://bucket/prefix", uri=uri
    )


def resolve(uri: str, store: ArtifactStore) -> tuple[ArtifactStore, str]:
    """Split a data URI into (store, key). `store://key` means a key in `store`."""
    parsed = urlparse(uri)
    if parsed.scheme == "store":
        return store, (parsed.netloc + parsed.path).strip("/")
    if parsed.scheme == "file":
        if parsed.netloc:
            raise StoreError(
                f"invalid data URI {uri!r}: file:// needs an absolute path (file:///...)", uri=uri
            )
        return LocalStore("/"), parsed.path.lstrip("/")
    if parsed.scheme == "s3":
        # Another bucket is reached the way the store is: same endpoint, same credentials.
        other = store.sibling(parsed.netloc) if isinstance(store, S3Store) else None
        return other or S3Store(parsed.netloc), parsed.path.lstrip("/")
    raise StoreError(f"unsupported data URI {uri!r}: use store://, file:// or s3://", uri=uri)
