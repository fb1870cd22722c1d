"""Where a registry keeps its index, audit log and artifacts: the `Storage` Protocol, plus the
file helpers every storage needs (crash-safe writes, content hashes).

A storage only stores. It knows nothing of statuses or refusals: `rules.py` decides, and the
generic registry (`core.StoredRegistry`) runs the rules inside a storage transaction. That is what
lets the local files and SageMaker Model Package Groups be two storages of one registry instead of
one backend reaching into the other's internals.
"""
from __future__ import annotations

import hashlib
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
        """Every audit event, oldest first."""
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


def sha256_dir(path: Path) -> str:
    """Content hash of a directory's files (names and bytes), for integrity checks."""
    h = hashlib.sha256()
    for f in sorted(p for p in Path(path).rglob("*") if p.is_file()):
        h.update(str(f.relative_to(path)).encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def fsync_dir(path: Path) -> None:
    """Takes a directory; flushes its entries (a rename in it) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path: Path, text: str, *, _fault: Callable[[str], None] | None = None) -> None:
    """Write `text` to `path` so that a crash at any point leaves either the old or the new file.

    `_fault` is called at "mid-write" and "before-replace": tests inject crashes there."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
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
