"""Model registry: versions, lineage, statuses and the audit log.

`Registry` is the Protocol every backend implements (local files here; SageMaker Model Package
Groups in `retrainer.backends.sagemaker`). `LocalRegistry` keeps everything under one directory:

    registry/
      index.json          # every version's record (written atomically: temp file + os.replace)
      audit.jsonl         # one line per status change: time, actor, version, from, to, reason
      versions/<ver>/     # model artifacts, moved into place before the index names them
      .lock               # fcntl lock: writers are serialised across processes

Lifecycle of statuses:

    candidate -> canary -> production -> previous -> archived
         \\-> rejected       \\-> rejected (rollback of a canary)
    previous -> production (rollback); production -> previous (promotion of another, or rollback)

Production plus the two most recent previous versions are always kept ready; retention never
deletes their artifacts.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

from .errors import ArtifactIntegrityError, CorruptRegistry, IllegalTransition, RegistryError, UnknownVersion
from .versioning import parse

STATUSES = ("candidate", "canary", "production", "previous", "archived", "rejected")
KEEP_PREVIOUS = 2
ALLOWED = {
    "candidate": {"canary", "rejected", "archived", "production"},
    "canary": {"production", "rejected", "candidate"},
    "production": {"previous"},
    "previous": {"production", "archived"},
    "archived": set(),
    "rejected": set(),
}


def utcnow() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@dataclass
class ModelRecord:
    version: str
    status: str
    created_at: str
    trigger: str
    parent: str | None
    bump: str
    bump_reason: str
    schema_hash: str
    data_hash: str
    params_hash: str
    code_version: str
    params: dict[str, Any]
    metrics: dict[str, Any]
    data: dict[str, Any]  # row count, time range, files
    validation: dict[str, Any]  # GX result summary
    gate: dict[str, Any]  # promotion gate decision
    artifact_sha256: str = ""
    artifact_uri: str = ""
    status_changed_at: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelRecord":
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})


class Registry(Protocol):
    """What flows need from a registry, whatever the backend."""

    def list(self) -> list[ModelRecord]: ...
    def get(self, version: str) -> ModelRecord: ...
    def production(self) -> ModelRecord | None: ...
    def previous(self) -> list[ModelRecord]: ...
    def register(self, record: ModelRecord, artifact_dir: Path, *, actor: str) -> ModelRecord: ...
    def set_status(self, version: str, status: str, *, actor: str, reason: str) -> ModelRecord: ...
    def promote(self, version: str, *, actor: str, reason: str) -> ModelRecord: ...
    def rollback(self, to: str | None = None, *, actor: str, reason: str) -> ModelRecord: ...
    def retention(self, *, actor: str) -> list[str]: ...
    def audit(self) -> list[dict[str, Any]]: ...
    def artifact_dir(self, version: str) -> Path: ...


def sha256_dir(path: Path) -> str:
    """Content hash of a directory's files (names and bytes), for integrity checks."""
    h = hashlib.sha256()
    for f in sorted(p for p in Path(path).rglob("*") if p.is_file()):
        h.update(str(f.relative_to(path)).encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path: Path, text: str, *, _fault: Callable[[str], None] | None = None) -> None:
    """Write `text` to `path` so that a crash at any point leaves either the old or the new file."""
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
        _fsync_dir(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


class LocalRegistry:
    """On-disk registry under `root` (normally $RETRAINER_HOME/registry)."""

    def __init__(self, root: Path | str, model_name: str = "readmission-30d",
                 *, fault_hook: Callable[[str], None] | None = None):
        self.root = Path(root)
        self.model_name = model_name
        self._index_path = self.root / "index.json"
        self._audit_path = self.root / "audit.jsonl"
        self._versions = self.root / "versions"
        self._fault = fault_hook  # tests inject crashes at named points

    # ---- reading -------------------------------------------------------------------------
    def _read_index(self) -> dict[str, Any]:
        if not self._index_path.exists():
            return {"model_name": self.model_name, "versions": {}, "production_history": []}
        try:
            return json.loads(self._index_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CorruptRegistry(f"registry index {self._index_path} is corrupt ({exc.__class__.__name__});"
                                " restore it from backup") from None

    def list(self) -> list[ModelRecord]:
        idx = self._read_index()
        return sorted((ModelRecord.from_dict(r) for r in idx["versions"].values()),
                      key=lambda r: parse(r.version))

    def get(self, version: str) -> ModelRecord:
        try:
            parse(version)
        except ValueError as exc:
            raise UnknownVersion(str(exc)) from None
        rec = self._read_index()["versions"].get(version)
        if rec is None:
            known = ", ".join(r.version for r in self.list()) or "none"
            raise UnknownVersion(f"unknown version {version} (registered: {known})")
        return ModelRecord.from_dict(rec)

    def production(self) -> ModelRecord | None:
        return next((r for r in self.list() if r.status == "production"), None)

    def with_status(self, *statuses: str) -> list[ModelRecord]:
        return [r for r in self.list() if r.status in statuses]

    def previous(self) -> list[ModelRecord]:
        """Previous production versions, most recent first."""
        idx = self._read_index()
        order = list(reversed(idx.get("production_history", [])))
        recs = {v: ModelRecord.from_dict(r) for v, r in idx["versions"].items() if r["status"] == "previous"}
        return [recs[v] for v in dict.fromkeys(order) if v in recs]

    def audit(self) -> list[dict[str, Any]]:
        if not self._audit_path.exists():
            return []
        return [json.loads(line) for line in self._audit_path.read_text(encoding="utf-8").splitlines() if line]

    def artifact_dir(self, version: str) -> Path:
        self.get(version)
        path = self._versions / version
        if not path.is_dir():
            raise ArtifactIntegrityError(f"artifacts of {version} are gone (archived and cleaned by retention)")
        return path

    def verify(self, version: str) -> Path:
        """Artifact directory of `version`, after checking its content hash against the record."""
        rec = self.get(version)
        path = self.artifact_dir(version)
        if rec.artifact_sha256 and sha256_dir(path) != rec.artifact_sha256:
            raise ArtifactIntegrityError(f"artifacts of {version} do not match their recorded sha256; refusing to load")
        return path

    # ---- writing -------------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        """Serialise writers across processes; yields the index to mutate; writes it atomically."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                idx = self._read_index()
                events: list[dict[str, Any]] = []
                yield idx, events
                atomic_write_text(self._index_path, json.dumps(idx, indent=2, sort_keys=True), _fault=self._fault)
                if events:
                    with open(self._audit_path, "a", encoding="utf-8") as fh:
                        for ev in events:
                            fh.write(json.dumps(ev, sort_keys=True) + "\n")
                        fh.flush()
                        os.fsync(fh.fileno())
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    @staticmethod
    def _change(idx, events, version: str, status: str, actor: str, reason: str) -> None:
        rec = idx["versions"][version]
        old = rec["status"]
        if status not in STATUSES:
            raise RegistryError(f"unknown status {status!r} (one of {', '.join(STATUSES)})")
        if status != old and status not in ALLOWED[old]:
            raise IllegalTransition(f"{version} is {old}; it cannot become {status}")
        now = utcnow()
        rec["status"] = status
        rec["status_changed_at"] = now
        if status == "production":
            idx.setdefault("production_history", []).append(version)
        events.append({"time": now, "actor": actor, "version": version, "from": old, "to": status,
                       "reason": reason})

    def register(self, record: ModelRecord, artifact_dir: Path, *, actor: str) -> ModelRecord:
        """Add a version: artifacts first (moved into place), then the index, then the audit line."""
        if record.status not in ("production", "candidate", "rejected"):
            raise RegistryError(f"a new version enters as candidate, production or rejected, not {record.status}")
        parse(record.version)
        record.artifact_sha256 = sha256_dir(artifact_dir)
        self._versions.mkdir(parents=True, exist_ok=True)
        with self._locked() as (idx, events):
            if record.version in idx["versions"]:
                raise RegistryError(f"version {record.version} is already registered")
            if record.status == "production" and any(r["status"] == "production" for r in idx["versions"].values()):
                raise RegistryError("there is already a production version; new versions enter as candidates")
            final = self._versions / record.version
            if final.exists():  # left over by a crash before the index named it
                shutil.rmtree(final)
            staging = self._versions / f".{record.version}.{uuid.uuid4().hex}.partial"
            shutil.copytree(artifact_dir, staging)
            os.replace(staging, final)
            record.artifact_uri = str(final.resolve())
            record.created_at = record.created_at or utcnow()
            record.status_changed_at = record.created_at
            idx["versions"][record.version] = record.to_dict()
            if record.status == "production":
                idx.setdefault("production_history", []).append(record.version)
            events.append({"time": record.created_at, "actor": actor, "version": record.version,
                           "from": None, "to": record.status,
                           "reason": f"registered ({record.trigger}); {record.gate.get('reason', '')}".strip("; ")})
        return record

    def set_status(self, version: str, status: str, *, actor: str, reason: str) -> ModelRecord:
        self.get(version)
        if status == "production":
            return self.promote(version, actor=actor, reason=reason)
        with self._locked() as (idx, events):
            self._change(idx, events, version, status, actor, reason)
        return self.get(version)

    def _demote_production(self, idx, events, actor: str, reason: str, incoming: str) -> None:
        for v, r in idx["versions"].items():
            if r["status"] == "production":
                self._change(idx, events, v, "previous", actor, reason)
        # Keep only the KEEP_PREVIOUS most recent previous versions ready; archive the rest.
        history = list(dict.fromkeys(reversed(idx.get("production_history", []))))
        previous = [v for v in history if idx["versions"][v]["status"] == "previous" and v != incoming]
        for v in previous[KEEP_PREVIOUS:]:
            self._change(idx, events, v, "archived", actor, f"more than {KEEP_PREVIOUS} previous versions")

    def promote(self, version: str, *, actor: str, reason: str) -> ModelRecord:
        """Make `version` production; production becomes previous; the oldest previous is archived."""
        self.get(version)
        with self._locked() as (idx, events):
            status = idx["versions"][version]["status"]
            if status == "production":
                raise RegistryError(f"{version} is already production")
            if "production" not in ALLOWED[status]:
                raise RegistryError(f"{version} is {status}; it cannot become production")
            self._demote_production(idx, events, actor, f"replaced by {version}: {reason}", version)
            self._change(idx, events, version, "production", actor, reason)
        return self.get(version)

    def rollback(self, to: str | None = None, *, actor: str, reason: str) -> ModelRecord:
        """Return production to a kept previous version (default: the most recent one)."""
        kept = [r.version for r in self.previous()]
        current = self.production()
        if to is None:
            if not kept:
                raise RegistryError("no previous production version is kept; nothing to roll back to")
            to = kept[0]
        else:
            self.get(to)
        if current is not None and to == current.version:
            raise RegistryError(f"{to} is already production")
        if to not in kept:
            raise RegistryError(f"{to} is not a kept previous version (kept: {', '.join(kept) or 'none'})")
        return self.promote(to, actor=actor, reason=f"rollback: {reason}")

    def retention(self, *, actor: str) -> list[str]:
        """Delete artifacts of archived and rejected versions (records stay). Never touches
        production, previous, canary or candidate versions."""
        removed = []
        with self._locked() as (idx, events):
            for v, r in idx["versions"].items():
                path = self._versions / v
                if r["status"] in ("archived", "rejected") and path.exists():
                    shutil.rmtree(path)
                    r.setdefault("extra", {})["artifacts_removed_at"] = utcnow()
                    events.append({"time": utcnow(), "actor": actor, "version": v, "from": r["status"],
                                   "to": r["status"], "reason": "retention: artifacts removed"})
                    removed.append(v)
        return removed
