"""The lifecycle rules, once, as pure functions over the registry index.

The index is a plain dict, the same for every backend:

    {"model_name": str, "versions": {version: ModelRecord dict}, "production_history": [version, ...]}

`production_history` lists versions in the order they became production (a version appears again
each time it returns). Functions here read it, refuse with a `RegistryError` subclass, or change it
in place and return the audit events to append; they never touch storage or the clock (callers pass
`now`), so both backends refuse the same things with the same messages.

    candidate -> canary -> production -> previous -> archived
         \\-> rejected       \\-> rejected (rollback of a canary)
    previous -> production (rollback); production -> previous (promotion of another, or rollback)

Production plus the KEEP_PREVIOUS most recent previous versions are always kept ready; retention
only cleans archived and rejected versions.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import IllegalTransition, RegistryError, UnknownVersion
from ..versioning import parse
from .model import STATUSES, ModelRecord, Status

Index = dict[str, Any]
Event = dict[str, Any]

KEEP_PREVIOUS = 2
ENTRY_STATUSES = (Status.PRODUCTION, Status.CANDIDATE, Status.REJECTED)
CLEANABLE = (Status.ARCHIVED, Status.REJECTED)
ALLOWED: dict[Status, frozenset[Status]] = {
    Status.CANDIDATE: frozenset({Status.CANARY, Status.REJECTED, Status.ARCHIVED, Status.PRODUCTION}),
    Status.CANARY: frozenset({Status.PRODUCTION, Status.REJECTED, Status.CANDIDATE}),
    Status.PRODUCTION: frozenset({Status.PREVIOUS}),
    Status.PREVIOUS: frozenset({Status.PRODUCTION, Status.ARCHIVED}),
    Status.ARCHIVED: frozenset(),
    Status.REJECTED: frozenset(),
}


def new_index(model_name: str) -> Index:
    """Takes a model name; returns the index of a registry with no versions."""
    return {"model_name": model_name, "versions": {}, "production_history": []}


def _event(now: str, actor: str, version: str, old: str | None, new: str, reason: str) -> Event:
    return {"time": now, "actor": actor, "version": version, "from": old, "to": new, "reason": reason}


# ---- reading -----------------------------------------------------------------------------------
def known_versions(index: Index) -> list[str]:
    """Takes an index; returns its versions, oldest semver first."""
    return sorted(index["versions"], key=parse)


def require_version(index: Index, version: str) -> dict[str, Any]:
    """Takes an index and a version; returns its record dict. UnknownVersion if it is not a
    MAJOR.MINOR.PATCH string or not registered."""
    try:
        parse(version)
    except ValueError as exc:
        raise UnknownVersion(str(exc)) from None
    rec = index["versions"].get(version)
    if rec is None:
        known = ", ".join(known_versions(index)) or "none"
        raise UnknownVersion(f"unknown version {version} (registered: {known})")
    return rec


def production_version(index: Index) -> str | None:
    """Takes an index; returns the production version, or None."""
    return next((v for v, r in index["versions"].items() if r["status"] == Status.PRODUCTION), None)


def kept_previous(index: Index) -> list[str]:
    """Takes an index; returns the previous versions, most recently production first."""
    order = dict.fromkeys(reversed(index.get("production_history", [])))
    return [v for v in order if v in index["versions"] and index["versions"][v]["status"] == Status.PREVIOUS]


# ---- status changes ----------------------------------------------------------------------------
def check_status(status: str) -> Status:
    """Takes a status name; returns it as a Status. RegistryError if it is none of the six."""
    try:
        return Status(status)
    except ValueError:
        raise RegistryError(f"unknown status {status!r} (one of {', '.join(STATUSES)})") from None


def check_transition(version: str, old: str, new: str) -> None:
    """Takes a version and its old and new status; IllegalTransition if the lifecycle forbids it."""
    if new != old and new not in ALLOWED[Status(old)]:
        raise IllegalTransition(f"{version} is {old}; it cannot become {new}")


def change_status(index: Index, version: str, status: str, *, actor: str, reason: str, now: str) -> Event:
    """Takes an index, a registered version and a status; applies the change (a version becoming
    production joins production_history) and returns its audit event. Refuses unknown statuses
    (RegistryError) and forbidden changes (IllegalTransition)."""
    rec = index["versions"][version]
    old = rec["status"]
    new = check_status(status)
    check_transition(version, old, new)
    rec["status"] = new.value
    rec["status_changed_at"] = now
    if new == Status.PRODUCTION:
        index.setdefault("production_history", []).append(version)
    return _event(now, actor, version, old, new.value, reason)


def demote_production(index: Index, *, incoming: str, actor: str, reason: str, now: str) -> list[Event]:
    """Takes an index and the version about to become production; production becomes previous and
    previous versions beyond the KEEP_PREVIOUS most recent (not counting `incoming`) are archived.
    Returns the audit events."""
    events = [change_status(index, v, Status.PREVIOUS, actor=actor, reason=reason, now=now)
              for v, r in list(index["versions"].items()) if r["status"] == Status.PRODUCTION]
    previous = [v for v in kept_previous(index) if v != incoming]
    events += [change_status(index, v, Status.ARCHIVED, actor=actor, now=now,
                             reason=f"more than {KEEP_PREVIOUS} previous versions")
               for v in previous[KEEP_PREVIOUS:]]
    return events


def promote(index: Index, version: str, *, actor: str, reason: str, now: str) -> list[Event]:
    """Takes an index and a registered version; makes it production (demoting the current one, see
    `demote_production`) and returns the audit events. RegistryError if it already is production,
    IllegalTransition if its status cannot become production."""
    status = index["versions"][version]["status"]
    if status == Status.PRODUCTION:
        raise RegistryError(f"{version} is already production")
    check_transition(version, status, Status.PRODUCTION)
    events = demote_production(index, incoming=version, actor=actor, now=now,
                               reason=f"replaced by {version}: {reason}")
    events.append(change_status(index, version, Status.PRODUCTION, actor=actor, reason=reason, now=now))
    return events


# ---- rollback ----------------------------------------------------------------------------------
def rollback_target(source: Mapping[str, Any] | Any, to: str | None) -> tuple[str, str | None, list[str]]:
    """The version a rollback returns production to.

    Takes an index dict, or a registry (anything with `previous()` and `production()`), and the
    requested version (None: the most recent kept previous one). Returns (target, current production
    version or None, kept previous versions most recent first). Raises RegistryError when nothing is
    kept or `to` is already production, IllegalTransition when `to` is not a kept previous version.
    Whether `to` is registered at all is not checked here (`require_version` does that)."""
    if isinstance(source, Mapping):
        kept, current = kept_previous(source), production_version(source)
    else:
        prod = source.production()
        kept, current = [r.version for r in source.previous()], (prod.version if prod else None)
    if to is None:
        if not kept:
            raise RegistryError("no previous production version is kept; nothing to roll back to")
        to = kept[0]
    if to == current:
        raise RegistryError(f"{to} is already production")
    if to not in kept:
        raise IllegalTransition(f"{to} is not a kept previous version (kept: {', '.join(kept) or 'none'})")
    return to, current, kept


# ---- registration ------------------------------------------------------------------------------
def check_new_record(record: ModelRecord) -> None:
    """Takes a record about to be registered; RegistryError unless it enters as candidate,
    production or rejected; ValueError if its version is not MAJOR.MINOR.PATCH."""
    if record.status not in ENTRY_STATUSES:
        raise RegistryError(f"a new version enters as candidate, production or rejected, not {record.status}")
    parse(record.version)


def check_register(index: Index, record: ModelRecord) -> None:
    """Takes an index and a new record; RegistryError if the version exists or if it would be a
    second production version."""
    if record.version in index["versions"]:
        raise RegistryError(f"version {record.version} is already registered")
    if record.status == Status.PRODUCTION and production_version(index) is not None:
        raise RegistryError("there is already a production version; new versions enter as candidates")


def add_version(index: Index, record: ModelRecord, *, actor: str, now: str) -> Event:
    """Takes an index and a checked new record (artifact fields already set); stamps created_at
    (if empty) and status_changed_at, adds it and returns its audit event."""
    record.status = Status(record.status).value
    record.created_at = record.created_at or now
    record.status_changed_at = record.created_at
    index["versions"][record.version] = record.to_dict()
    if record.status == Status.PRODUCTION:
        index.setdefault("production_history", []).append(record.version)
    reason = f"registered ({record.trigger}); {record.gate.get('reason', '')}".strip("; ")
    return _event(record.created_at, actor, record.version, None, record.status, reason)


# ---- retention ---------------------------------------------------------------------------------
def retention_candidates(index: Index) -> list[str]:
    """Takes an index; returns the archived and rejected versions whose artifacts are not yet
    recorded as removed, in index order."""
    return [v for v, r in index["versions"].items()
            if r["status"] in CLEANABLE and not (r.get("extra") or {}).get("artifacts_removed_at")]


def mark_artifacts_removed(index: Index, version: str, *, actor: str, now: str) -> Event:
    """Takes an index and a version whose artifacts were just deleted; records it and returns the
    audit event (status unchanged)."""
    rec = index["versions"][version]
    rec.setdefault("extra", {})["artifacts_removed_at"] = now
    return _event(now, actor, version, rec["status"], rec["status"], "retention: artifacts removed")
