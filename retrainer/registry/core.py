"""`StoredRegistry`: the `Registry` Protocol as the lifecycle rules (`rules.py`) run inside a
storage's transactions (`storage.Storage`).

Every backend is this class with its own storage (`LocalRegistry`: files; `SageMakerRegistry`:
Model Package Groups), so the refusals, messages and audit lines are the same everywhere by
construction, and no backend depends on another's internals.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..clock import utcnow_iso
from ..versioning import parse
from . import rules
from .model import ModelRecord, Status
from .storage import AuditLog, Storage, sha256_dir, verify_artifact


class StoredRegistry:
    """A registry on `storage`; see `Registry` for what each operation does."""

    def __init__(self, storage: Storage):
        self.storage = storage

    @property
    def model_name(self) -> str:
        """The model this registry versions."""
        return self.storage.model_name

    # ---- reading -------------------------------------------------------------------------------
    def list(self) -> list[ModelRecord]:
        """All versions, oldest semver first."""
        idx = self.storage.read_index()
        return sorted((ModelRecord.from_dict(r) for r in idx["versions"].values()), key=lambda r: parse(r.version))

    def get(self, version: str) -> ModelRecord:
        """The record of `version` (UnknownVersion if unregistered or malformed)."""
        return ModelRecord.from_dict(rules.require_version(self.storage.read_index(), version))

    def production(self) -> ModelRecord | None:
        """The production version, or None."""
        return next((r for r in self.list() if r.status == Status.PRODUCTION), None)

    def with_status(self, *statuses: str) -> list[ModelRecord]:
        """The versions whose status is one of `statuses`, oldest semver first."""
        return [r for r in self.list() if r.status in statuses]

    def previous(self) -> list[ModelRecord]:
        """Previous production versions, most recent first."""
        idx = self.storage.read_index()
        return [ModelRecord.from_dict(idx["versions"][v]) for v in rules.kept_previous(idx)]

    def audit(self) -> list[dict[str, Any]]:
        """The audit log, oldest first (unreadable lines skipped; `audit_log` counts them)."""
        return self.storage.read_audit()

    def audit_log(self) -> AuditLog:
        """The readable audit events, oldest first, and how many unreadable lines were skipped."""
        return self.storage.read_audit_log()

    def artifact_dir(self, version: str) -> Path:
        """A local directory with the artifacts of `version` (ArtifactIntegrityError if gone)."""
        return self.storage.get_artifact(self.get(version))

    def verify(self, version: str) -> Path:
        """Artifact directory of `version`, after checking its content hash against the record."""
        rec = self.get(version)
        if not rec.artifact_sha256:  # refuse before downloading anything
            return verify_artifact(version, Path(), "")
        return verify_artifact(version, self.storage.get_artifact(rec), rec.artifact_sha256)

    # ---- writing -------------------------------------------------------------------------------
    def register(self, record: ModelRecord, artifact_dir: Path, *, actor: str) -> ModelRecord:
        """Add a version: artifacts first, then the index, then the audit line; returns `record`
        with its artifact fields and timestamps filled in."""
        rules.check_new_record(record)
        record.artifact_sha256 = sha256_dir(artifact_dir)
        with self.storage.transaction() as tx:
            rules.check_register(tx.index, record)
            record.artifact_uri = self.storage.put_artifact(record.version, Path(artifact_dir))
            tx.events.append(rules.add_version(tx.index, record, actor=actor, now=utcnow_iso()))
        return record

    def set_status(self, version: str, status: str, *, actor: str, reason: str) -> ModelRecord:
        """Move `version` to `status` (to production: `promote`); returns the new record."""
        self.get(version)
        if status == Status.PRODUCTION:
            return self.promote(version, actor=actor, reason=reason)
        with self.storage.transaction() as tx:
            rules.require_version(tx.index, version)
            tx.events.append(rules.change_status(tx.index, version, status, actor=actor, reason=reason,
                                                 now=utcnow_iso()))
        return self.get(version)

    def promote(self, version: str, *, actor: str, reason: str) -> ModelRecord:
        """Make `version` production; production becomes previous; the oldest previous is archived."""
        self.get(version)
        with self.storage.transaction() as tx:
            rules.require_version(tx.index, version)
            tx.events += rules.promote(tx.index, version, actor=actor, reason=reason, now=utcnow_iso())
        return self.get(version)

    def rollback(self, to: str | None = None, *, actor: str, reason: str) -> ModelRecord:
        """Return production to a kept previous version (default: the most recent one)."""
        idx = self.storage.read_index()  # refusals need no lock
        if to is not None:
            rules.require_version(idx, to)
        target, _, _ = rules.rollback_target(idx, to)
        with self.storage.transaction() as tx:
            target, _, _ = rules.rollback_target(tx.index, target)  # re-checked under the lock
            tx.events += rules.promote(tx.index, target, actor=actor, reason=f"rollback: {reason}",
                                       now=utcnow_iso())
        return self.get(target)

    def retention(self, *, actor: str) -> list[str]:
        """Delete artifacts of archived and rejected versions (records stay); returns those versions.
        Never touches production, previous, canary or candidate versions."""
        removed = []
        with self.storage.transaction() as tx:
            now = utcnow_iso()
            for v in rules.retention_candidates(tx.index):
                if self.storage.remove_artifact(ModelRecord.from_dict(tx.index["versions"][v])):
                    tx.events.append(rules.mark_artifacts_removed(tx.index, v, actor=actor, now=now))
                    removed.append(v)
        return removed
