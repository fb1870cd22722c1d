"""What a registry holds and offers, whatever the backend: the six statuses, the version record,
and the `Registry` Protocol. Each operation is documented here once; `rules.py` decides, each
backend's storage only stores (local files: `local.py`; SageMaker Model Package Groups:
`retrainer.backends.sagemaker.registry`)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol


class Status(StrEnum):
    """A version's lifecycle status. A StrEnum, so records and JSON keep plain strings."""

    CANDIDATE = "candidate"
    CANARY = "canary"
    PRODUCTION = "production"
    PREVIOUS = "previous"
    ARCHIVED = "archived"
    REJECTED = "rejected"


STATUSES: tuple[Status, ...] = tuple(Status)


@dataclass
class ModelRecord:
    """Everything the registry knows about one version: lineage, fingerprints, metrics, status."""

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
        """The record as a plain dict (what the index stores)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelRecord":
        """A record from a stored dict; unknown keys (from newer writers) are ignored."""
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})


class Registry(Protocol):
    """What flows need from a registry, whatever the backend.

    Every refusal is a `RegistryError` (subclasses: `UnknownVersion`, `IllegalTransition`,
    `ArtifactIntegrityError`, `CorruptRegistry`) with the same message on every backend, and a
    refused change changes nothing. Every status change appends one audit line."""

    def list(self) -> list[ModelRecord]:
        """All versions, oldest semver first."""
        ...

    def get(self, version: str) -> ModelRecord:
        """The record of `version`; UnknownVersion if it is unregistered or not MAJOR.MINOR.PATCH."""
        ...

    def production(self) -> ModelRecord | None:
        """The production version, or None before the first one."""
        ...

    def previous(self) -> list[ModelRecord]:
        """The kept previous production versions (at most two), most recent first."""
        ...

    def with_status(self, *statuses: str) -> list[ModelRecord]:
        """The versions whose status is one of `statuses`, oldest semver first."""
        ...

    def register(self, record: ModelRecord, artifact_dir: Path, *, actor: str) -> ModelRecord:
        """Add a version (as candidate, production or rejected) with a copy of `artifact_dir`.

        Artifacts are stored first, then the record, then the audit line; fills in the record's
        artifact_sha256, artifact_uri, created_at and status_changed_at and returns it."""
        ...

    def set_status(self, version: str, status: str, *, actor: str, reason: str) -> ModelRecord:
        """Move `version` to `status` if the lifecycle allows it (to production: a promotion)."""
        ...

    def promote(self, version: str, *, actor: str, reason: str) -> ModelRecord:
        """Make `version` production: production becomes previous, previous beyond two are archived."""
        ...

    def rollback(self, to: str | None = None, *, actor: str, reason: str) -> ModelRecord:
        """Return production to a kept previous version (default: the most recent one)."""
        ...

    def retention(self, *, actor: str) -> list[str]:
        """Delete the artifacts of archived and rejected versions (records stay); returns those versions.
        Never touches production, previous, canary or candidate versions."""
        ...

    def audit(self) -> list[dict[str, Any]]:
        """The audit log: one dict per change (time, actor, version, from, to, reason), oldest first.
        Unreadable lines (torn by a crash, edited by hand) are skipped."""
        ...

    def audit_log(self) -> Any:
        """`storage.AuditLog`: the readable events of `audit()` and how many lines were skipped."""
        ...

    def artifact_dir(self, version: str) -> Path:
        """A local directory with the artifacts of `version`; ArtifactIntegrityError if they are gone."""
        ...

    def verify(self, version: str) -> Path:
        """`artifact_dir(version)` after checking its sha256 against the record: ArtifactIntegrityError
        if they differ or if the record has no hash (never loaded unverified)."""
        ...
