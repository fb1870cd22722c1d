"""Where the prediction store's files live: a local directory or an S3 prefix, behind one small
interface (`Location`), so the store's logic (de-identification, schemas, reads, labels,
compaction) is written once and its contract suite runs on both.

- `LocalLocation(root)`: files 0600, directories 0700, written under a hidden temporary name and
  renamed (`os.replace`) so readers only see complete files; temp files of killed writers are swept.
- `S3Location("s3://bucket/prefix")`: pyarrow's S3 filesystem. A PUT (or a completed multipart
  upload) is atomic: an object is visible complete or not at all, so no temp names. The
  filesystem is built lazily from the AWS credential chain (env, profile, instance or task role)
  and `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL` (moto in the tests); a pickled location carries
  no credentials, only where it points.

`check()` is the start-up check: it lists the prefix, writes and deletes one probe object, and
turns a missing bucket, denied access or an unreachable endpoint into one `ConfigError` line.
"""
from __future__ import annotations

import fnmatch
import logging
import os
import stat
import time
import uuid
from pathlib import Path
from typing import Protocol
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from ..errors import ConfigError

log = logging.getLogger(__name__)

FILE_MODE = 0o600  # store files: owner read/write only, whatever the umask
DIR_MODE = 0o700  # store directories: owner only
TEMP_GLOB = ".part-*.parquet.tmp"  # what `write_atomic` leaves behind when its process dies
STALE_TEMP_SECONDS = 600.0  # no live write takes this long: older temp files are orphans


def one_line(exc: BaseException) -> str:
    """`Type: first line of the message` (at most 200 characters) for logs and one-line errors."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


class Location(Protocol):
    """A store root. `rel` paths use "/" and are relative to the root."""

    url: str

    @property
    def fs(self) -> pafs.FileSystem: ...
    def path(self, rel: str) -> str: ...
    def list_files(self, rel: str, pattern: str = "*") -> list[str]: ...
    def list_dirs(self, rel: str, pattern: str = "*") -> list[str]: ...
    def write_table(self, rel_dir: str, table: pa.Table, compression: str | None, *,
                    prefix: str = "part") -> str: ...
    def write_bytes(self, rel_dir: str, data: pa.Buffer | bytes, *, prefix: str = "part") -> str: ...
    def delete(self, rel: str) -> bool: ...
    def check(self) -> None: ...


# --------------------------------------------------------------------------------------------------
# Local disk

def private_dirs(directory: Path, private_from: Path) -> None:
    """Create `directory` with mode 0700 and make every directory from `private_from` down to it
    0700 (mkdir's mode is filtered by the umask and `parents=True` ignores it, hence the chmod).
    Parents above `private_from` that do not exist are created 0700 too; existing ones are left."""
    directory, private_from = Path(directory), Path(private_from)
    chain = [directory, *directory.parents]
    inside = chain[: chain.index(private_from) + 1] if private_from in chain else [directory]
    for d in reversed(chain):
        if d.exists():
            if d in inside:
                os.chmod(d, DIR_MODE)
            continue
        try:
            d.mkdir(mode=DIR_MODE)
        except FileExistsError:  # a concurrent writer made it
            pass
        os.chmod(d, DIR_MODE)


def to_parquet(table: pa.Table, compression: str | None, row_group_rows: int | None = None) -> pa.Buffer:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression=compression or "none", row_group_size=row_group_rows)
    return sink.getvalue()


def write_atomic(data: pa.Buffer | bytes, directory: Path, *, private_from: Path | None = None,
                 prefix: str = "part") -> Path:
    """Write `data` (a whole Parquet file) as a new file in `directory` (temp name, fsync, rename),
    mode 0600; directories from `private_from` (default: `directory`) down are made 0700."""
    private_dirs(directory, private_from or directory)
    name = f"{prefix}-{uuid.uuid4().hex}.parquet"
    tmp = directory / (f".{name}.tmp" if prefix == "part" else f".part-{name}.tmp")  # TEMP_GLOB finds both
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        os.fchmod(fd, FILE_MODE)  # the umask may have removed bits; never more than 0600 either
        with os.fdopen(fd, "wb") as fh:
            fh.write(memoryview(data))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, directory / name)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return directory / name


class LocalLocation:
    def __init__(self, root: Path | str):
        self.root = Path(root)
        self.url = str(self.root)
        self._swept_at: float | None = None  # monotonic time of this instance's last temp-file sweep

    def __repr__(self) -> str:
        return f"LocalLocation({self.url!r})"

    @property
    def fs(self) -> pafs.FileSystem:
        return pafs.LocalFileSystem()

    def path(self, rel: str) -> str:
        return str(self.root / rel)

    def list_files(self, rel: str, pattern: str = "*") -> list[str]:
        d = self.root / rel
        if not d.is_dir():
            return []
        return sorted(p.name for p in d.glob(pattern) if p.is_file() and not p.is_symlink())

    def list_dirs(self, rel: str, pattern: str = "*") -> list[str]:
        d = self.root / rel
        if not d.is_dir():
            return []
        return sorted(p.name for p in d.glob(pattern) if p.is_dir() and not p.is_symlink())

    def write_table(self, rel_dir: str, table: pa.Table, compression: str | None, *, prefix: str = "part") -> str:
        return self.write_bytes(rel_dir, to_parquet(table, compression), prefix=prefix)

    def write_bytes(self, rel_dir: str, data: pa.Buffer | bytes, *, prefix: str = "part") -> str:
        self._sweep_if_due()
        top = self.root / rel_dir.split("/", 1)[0]
        return write_atomic(data, self.root / rel_dir, private_from=top, prefix=prefix).name

    def delete(self, rel: str) -> bool:
        try:
            (self.root / rel).unlink()
        except FileNotFoundError:
            return False
        return True

    def check(self) -> None:
        """The root must be a directory we can create and write (one line otherwise)."""
        try:
            private_dirs(self.root, self.root)
            probe = self.root / f".probe-{uuid.uuid4().hex}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise ConfigError(f"prediction store {self.url}: cannot write ({exc.strerror or type(exc).__name__})") \
                from None

    # -- temp files of killed writers ------------------------------------------------------------
    def sweep_stale_temp_files(self, older_than: float = STALE_TEMP_SECONDS) -> int:
        """Delete the temp files (`TEMP_GLOB`) that writers killed mid-write left in `labels/` and
        the `date=` partitions, if not modified for `older_than` seconds; returns how many. Nothing
        else under the root is touched. Called by the first write (and then every `older_than`)."""
        self._swept_at = time.monotonic()
        dirs = [self.root / "labels"]
        preds = self.root / "predictions"
        if preds.is_dir():
            dirs += sorted(d for d in preds.glob("date=*") if d.is_dir() and not d.is_symlink())
        cutoff = time.time() - older_than
        removed = 0
        for d in dirs:
            for tmp in d.glob(TEMP_GLOB) if d.is_dir() else ():
                try:
                    st = tmp.lstat()
                    if stat.S_ISREG(st.st_mode) and st.st_mtime < cutoff:
                        tmp.unlink()
                        removed += 1
                except FileNotFoundError:  # another process swept it first
                    continue
                except OSError as exc:  # never fail a write for a leftover
                    log.warning("cannot remove stale temp file %s: %s", tmp, one_line(exc))
        if removed:
            log.info("removed %d stale temp file(s) left by killed writers under %s", removed, self.root)
        return removed

    def _sweep_if_due(self) -> None:
        if self._swept_at is None or time.monotonic() - self._swept_at >= STALE_TEMP_SECONDS:
            self.sweep_stale_temp_files()


# --------------------------------------------------------------------------------------------------
# S3

def s3_endpoint() -> tuple[str | None, str]:
    """(host[:port] or None, scheme) from AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL (moto, MinIO)."""
    url = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if not url:
        return None, "https"
    parsed = urlparse(url if "://" in url else f"https://{url}")
    return parsed.netloc, parsed.scheme or "https"


class S3Location:
    """`s3://bucket/prefix`: the store's files under that prefix (see module docstring)."""

    def __init__(self, url: str, *, region: str | None = None, connect_timeout: float = 5.0,
                 request_timeout: float = 30.0, max_attempts: int = 3, check_first: bool = False):
        parsed = urlparse(url)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise ConfigError(f"prediction store {url!r}: expected s3://bucket/prefix")
        self.bucket, self.prefix = parsed.netloc, parsed.path.strip("/")
        if any(part in ("", ".", "..") for part in self.prefix.split("/")) and self.prefix:
            raise ConfigError(f"prediction store {url!r}: the prefix has an empty, '.' or '..' segment")
        self.url = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        self.region = region
        self.connect_timeout, self.request_timeout, self.max_attempts = connect_timeout, request_timeout, max_attempts
        self._fs: pafs.S3FileSystem | None = None
        self._client = None
        self._unchecked = check_first  # run `check()` before the first use (one line, not a stack of OSErrors)

    def __repr__(self) -> str:
        return f"S3Location({self.url!r})"

    def __getstate__(self) -> dict:  # no filesystem or client (and so no credentials) in a pickle
        return {**self.__dict__, "_fs": None, "_client": None}

    @property
    def client(self):
        """A boto3 S3 client for deletes: pyarrow's delete_file writes an empty directory marker
        when a "directory" becomes empty, which would litter the bucket."""
        if self._client is None:
            import boto3  # noqa: PLC0415 - only for deletes

            self._client = boto3.session.Session().client("s3", region_name=self._region())
        return self._client

    def _region(self) -> str | None:
        return self.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")

    @property
    def fs(self) -> pafs.S3FileSystem:
        if self._fs is None:
            host, scheme = s3_endpoint()
            region = self._region()
            kwargs = {"region": region} if region else {}
            if host:
                kwargs.update(endpoint_override=host, scheme=scheme)
            # allow_delayed_open: a small file is one PutObject at close instead of create + part +
            # complete (3x fewer billed requests; 26.5 -> 9.7 ms a capture file, bench_s3_store.py)
            self._fs = pafs.S3FileSystem(
                **kwargs, allow_delayed_open=True, connect_timeout=self.connect_timeout,
                request_timeout=self.request_timeout,
                retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=self.max_attempts))
        if self._unchecked:
            self._unchecked = False
            self.check()
        return self._fs

    def path(self, rel: str) -> str:
        return "/".join(p for p in (self.bucket, self.prefix, rel.strip("/")) if p)

    def _entries(self, rel: str, pattern: str, kind) -> list[str]:
        infos = self.fs.get_file_info(pafs.FileSelector(self.path(rel), recursive=False, allow_not_found=True))
        return sorted(i.base_name for i in infos if i.type == kind and fnmatch.fnmatchcase(i.base_name, pattern))

    def list_files(self, rel: str, pattern: str = "*") -> list[str]:
        return self._entries(rel, pattern, pafs.FileType.File)

    def list_dirs(self, rel: str, pattern: str = "*") -> list[str]:
        return self._entries(rel, pattern, pafs.FileType.Directory)

    def write_table(self, rel_dir: str, table: pa.Table, compression: str | None, *, prefix: str = "part") -> str:
        return self.write_bytes(rel_dir, to_parquet(table, compression), prefix=prefix)

    def write_bytes(self, rel_dir: str, data: pa.Buffer | bytes, *, prefix: str = "part") -> str:
        """One upload of a finished file: serialised first, so a failure can never leave a
        truncated object (pyarrow's S3 stream completes the upload on close, even after an error)."""
        name = f"{prefix}-{uuid.uuid4().hex}.parquet"
        with self.fs.open_output_stream(self.path(f"{rel_dir}/{name}")) as out:
            out.write(data)
        return name

    def put(self, rel: str, data: bytes) -> None:
        """One small object at `rel` (retention's audit events and markers), uploaded whole."""
        with self.fs.open_output_stream(self.path(rel)) as out:
            out.write(data)

    def read(self, rel: str) -> bytes:
        with self.fs.open_input_stream(self.path(rel)) as f:
            return f.read()

    def key(self, rel: str) -> str:
        return "/".join(p for p in (self.prefix, rel.strip("/")) if p)

    def delete(self, rel: str) -> bool:
        """Delete one object; False if it was not there."""
        try:
            self.client.head_object(Bucket=self.bucket, Key=self.key(rel))
        except Exception as exc:
            if getattr(exc, "response", {}).get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise OSError(f"cannot delete s3://{self.bucket}/{self.key(rel)}: {one_line(exc)}") from None
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.key(rel))
        except Exception as exc:
            raise OSError(f"cannot delete s3://{self.bucket}/{self.key(rel)}: {one_line(exc)}") from None
        return True

    def check(self) -> None:
        """List the prefix, then write and delete one probe object: one ConfigError line naming
        what is wrong (no bucket, access denied, endpoint unreachable)."""
        probe = f"_probe/{uuid.uuid4().hex}"
        step = "list"
        try:
            info = self.fs.get_file_info(self.bucket)
            if info.type == pafs.FileType.NotFound:
                raise ConfigError(f"prediction store {self.url}: bucket {self.bucket!r} does not exist")
            self.fs.get_file_info(pafs.FileSelector(self.path(""), recursive=False, allow_not_found=True))
            step = "write"
            with self.fs.open_output_stream(self.path(probe)) as out:
                out.write(b"")
            step = "delete"
            self.delete(probe)
        except ConfigError:
            raise
        except OSError as exc:
            raise ConfigError(f"prediction store {self.url}: {describe_s3_error(exc, step)}") from None


def describe_s3_error(exc: BaseException, step: str) -> str:
    """A one-line reason for an S3 error raised by pyarrow (its messages carry the AWS error name)."""
    text = str(exc)
    if "NO_SUCH_BUCKET" in text or "NoSuchBucket" in text:
        return "the bucket does not exist"
    if "ACCESS_DENIED" in text or "AccessDenied" in text or "Forbidden" in text or "403" in text:
        need = {"list": "s3:ListBucket", "write": "s3:PutObject", "delete": "s3:DeleteObject"}.get(step, "access")
        return f"access denied when trying to {step} (the role needs {need} on this prefix)"
    if "NETWORK_CONNECTION" in text or "Could not connect" in text or "curlCode" in text or "timed out" in text.lower():
        host, scheme = s3_endpoint()
        return f"cannot reach S3 at {scheme}://{host or 's3.amazonaws.com'} ({step})"
    return f"cannot {step}: {one_line(exc)}"


def location_for(root, *, check_first: bool = False) -> Location:
    """A `Location` from a path, an `s3://` URL or a `Location`; `check_first`: an S3 location runs
    its start-up check before its first use."""
    if isinstance(root, (LocalLocation, S3Location)):
        return root
    if isinstance(root, str) and root.startswith("s3://"):
        return S3Location(root, check_first=check_first)
    return LocalLocation(root)
