"""Where a registry keeps its index, audit log and artifacts: the `Storage` Protocol, plus the
file helpers every storage needs (crash-safe writes, content hashes).

A storage only stores. It knows nothing of statuses or refusals: `rules.py` decides, and the
generic registry (`core.StoredRegistry`) runs the rules inside a storage transaction. That is what
lets the local files and SageMaker Model Package Groups be two storages of one registry instead of
one backend reaching into the other's internals.
"""
from __future__ import annotations

import hashlib
import json
import os
import uuid
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

from ..errors import ArtifactIntegrityError
from .model import ModelRecord


@dataclass
class Transaction:
    """What a storage transaction yields: the index to change in place and the audit events to
    append once the changed index is stored."""

    index: dict[str, Any]
    events: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class AuditLog:
    """The readable audit events (oldest first) and how many lines could not be read (a line torn
    by a crash, or edited by hand): those are skipped and reported, never fatal."""

    events: list[dict[str, Any]]
    skipped: int = 0


TXID = "txid"  # the transaction an audit line belongs to (stored in the file, never returned)


def parse_audit_lines(text: str) -> tuple[list[dict[str, Any]], int]:
    """Takes the text of an audit log (JSON lines); returns its readable events as stored (with
    their transaction ids) and the number of unreadable lines skipped."""
    events, skipped = [], 0
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            ev = json.loads(line)
        except ValueError:
            skipped += 1
            continue
        if isinstance(ev, dict):
            events.append(ev)
        else:
            skipped += 1
    return events, skipped


def missing_events(tx: dict[str, Any], raw: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Takes a transaction (`{"txid": str, "events": [...]}`) and the audit lines as stored (with
    their transaction ids); returns the transaction's events that have no line yet (its writer died
    before or while appending them)."""
    present = sum(1 for ev in raw if ev.get(TXID) == tx["txid"])
    return list(tx["events"][present:])


def parse_audit(text: str) -> AuditLog:
    """Takes the text of an audit log (JSON lines); returns its events with their storage-only keys
    removed and the number of unreadable lines skipped."""
    events, skipped = parse_audit_lines(text)
    for ev in events:
        ev.pop(TXID, None)
    return AuditLog(events, skipped)


class Storage(Protocol):
    """Persistence of one model's registry."""

    model_name: str

    def read_index(self) -> dict[str, Any]:
        """The current index (see `rules`), unlocked; an empty one before the first version."""
        ...

    def transaction(self) -> AbstractContextManager[Transaction]:
        """Serialise writers; yield a `Transaction` on a fresh read of the index. On a clean exit
        the changed index is stored, then `transaction.events` are appended to the audit log; on
        an exception nothing is written."""
        ...

    def append_audit(self, events: list[dict[str, Any]]) -> None:
        """Append audit events (one JSON line each). `transaction()` calls it under its lock."""
        ...

    def read_audit(self) -> list[dict[str, Any]]:
        """Every readable audit event, oldest first (`read_audit_log` also counts unreadable lines)."""
        ...

    def read_audit_log(self) -> AuditLog:
        """The readable audit events and the number of unreadable lines skipped."""
        ...

    def put_artifact(self, version: str, source: Path) -> str:
        """Store a copy of the directory `source` as the artifacts of `version`; returns their URI.
        Called inside a transaction, before the index names the version."""
        ...

    def get_artifact(self, record: ModelRecord) -> Path:
        """A local directory with the artifacts of `record`; ArtifactIntegrityError if they are gone."""
        ...

    def remove_artifact(self, record: ModelRecord) -> bool:
        """Delete the artifacts of `record`; returns False if there was nothing to delete."""
        ...


def artifacts_gone(version: str) -> ArtifactIntegrityError:
    """Takes a version; returns the error for artifacts that retention (or someone) removed."""
    return ArtifactIntegrityError(f"artifacts of {version} are gone (archived and cleaned by retention)")


HASH_SCHEME = "sha256v2"
_LEGACY_HEX = frozenset("0123456789abcdef")


def _files(path: Path) -> list[Path]:
    return sorted(p for p in Path(path).rglob("*") if p.is_file())


def sha256_dir(path: Path) -> str:
    """Content hash of a directory's files, as `sha256v2:<hex>`.

    Each file contributes its relative name and its bytes, each preceded by its length (8 bytes,
    big-endian), so no two different trees hash alike (the legacy scheme, `sha256_dir_v1`,
    concatenated names and bytes with no separator: "a"+"bc" and "ab"+"c" collided)."""
    h = hashlib.sha256()
    root = Path(path)
    for f in _files(root):
        name = f.relative_to(root).as_posix().encode()
        h.update(len(name).to_bytes(8, "big"))
        h.update(name)
        h.update(f.stat().st_size.to_bytes(8, "big"))
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return f"{HASH_SCHEME}:{h.hexdigest()}"


def sha256_dir_v1(path: Path) -> str:
    """The legacy hash (bare hex; names and bytes concatenated): only to verify old records."""
    h = hashlib.sha256()
    for f in _files(path):
        h.update(str(f.relative_to(path)).encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def digest_matches(path: Path, recorded: str) -> bool:
    """Takes a directory and a recorded hash (`sha256v2:<hex>`, or a legacy bare 64-hex digest);
    True if the directory's content matches it. An empty or unknown-scheme hash never matches."""
    if not recorded:
        return False
    if recorded.startswith(f"{HASH_SCHEME}:"):
        return sha256_dir(path) == recorded
    if len(recorded) == 64 and set(recorded) <= _LEGACY_HEX:
        return sha256_dir_v1(path) == recorded
    return False


def verify_artifact(version: str, path: Path, recorded: str) -> Path:
    """Takes a version, its artifact directory and its recorded hash; returns the directory if the
    content matches. ArtifactIntegrityError when no hash is recorded (a record without one is never
    trusted: loading runs pickled code) or when the content differs."""
    if not recorded:
        raise ArtifactIntegrityError(f"artifacts of {version} have no recorded sha256; refusing to load")
    if not digest_matches(path, recorded):
        raise ArtifactIntegrityError(f"artifacts of {version} do not match their recorded sha256; refusing to load")
    return path


def fsync_dir(path: Path) -> None:
    """Takes a directory; flushes its entries (a rename in it) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path: Path, text: str, *, mode: int = 0o600,
                      _fault: Callable[[str], None] | None = None) -> None:
    """Write `text` to `path` so that a crash at any point leaves either the old or the new file.
    The file gets `mode` (default 0600, owner only) whatever the umask.

    `_fault` is called at "mid-write" and "before-replace": tests inject crashes there. A crash
    leaves a `.<name>.<hex>.tmp` file next to `path`; `stale_temp_files` finds them."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        os.fchmod(fd, mode)  # the umask may have narrowed or (never) widened it
        with open(fd, "w", encoding="utf-8") as fh:
            half = len(text) // 2
            fh.write(text[:half])
            if _fault:
                _fault("mid-write")
            fh.write(text[half:])
            fh.flush()
            os.fsync(fh.fileno())
        if _fault:
            _fault("before-replace")
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def stale_temp_files(directory: Path, name: str) -> list[Path]:
    """Takes a directory and a file name; returns the temp files `atomic_write_text` left there for
    that name (call it only while holding the lock that serialises those writes)."""
    return sorted(Path(directory).glob(f".{name}.*.tmp"))
