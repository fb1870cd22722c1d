"""Trigger policy, pure: whether to emit the chosen trigger's event (cooldown), who may approve a
manual retrain and whether they did, whether a retrain is duplicate work, and the name of the
limit that keeps one retrain per model running at a time.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from .config import ManualTrigger, Trigger, as_utc, format_duration
from .evaluate import TriggerEvaluation


@dataclass(frozen=True)
class EmitDecision:
    """Whether the monitor emits the reported trigger's event, and why."""

    emit: bool
    reason: str


def emit_decision(evaluation: TriggerEvaluation | None, last_emitted: datetime | None, now: datetime,
                  cooldown: timedelta) -> EmitDecision:
    """Emit the chosen trigger's event unless the same trigger was emitted within `cooldown`
    (persistent drift must not start a retrain every hour)."""
    if evaluation is None:
        return EmitDecision(False, "no trigger fired")
    if evaluation.event is None:
        return EmitDecision(False, f"{evaluation.name} has no event")
    if last_emitted is not None and now - last_emitted < cooldown:
        return EmitDecision(False, f"{evaluation.name} already emitted at {last_emitted.isoformat()} "
                                   f"(cooldown {format_duration(cooldown)})")
    return EmitDecision(True, f"{evaluation.name} fired: {evaluation.event}")


def effective_approvers(settings_approvers: list[str], manual: ManualTrigger | None) -> list[str]:
    """settings.approvers, narrowed by the manual trigger's own list when it has one."""
    if manual is not None and manual.approvers is not None:
        return [a for a in settings_approvers if a in manual.approvers]
    return list(settings_approvers)


@dataclass(frozen=True)
class ApprovalDecision:
    """Whether a manual retrain goes ahead, and why."""

    approved: bool
    reason: str


def approval_decision(approver: str, approve: bool, reason: str, approvers: list[str]) -> ApprovalDecision:
    """Approved only when `approver` is one of `approvers` and said yes; the reason says who and why."""
    who = (approver or "").strip()
    if who not in approvers:
        return ApprovalDecision(False, f"rejected: {who or '(nobody)'} is not an approver "
                                       f"(approvers: {', '.join(approvers) or 'none'})")
    if not approve:
        return ApprovalDecision(False, f"rejected by {who}: {reason or 'no reason given'}")
    return ApprovalDecision(True, f"approved by {who}: {reason or 'no reason given'}")


@dataclass(frozen=True)
class DuplicateDecision:
    """Whether a retrain is duplicate work (and of which registered version), and why."""

    duplicate: bool
    reason: str
    version: str | None = None


def duplicate_decision(*, schema_hash: str, data_hash: str, params_hash: str, records: list,
                       run_created_at: str | datetime | None, now: datetime, window: timedelta,
                       trigger: Trigger) -> DuplicateDecision:
    """Skip a retrain as duplicate work when a version with the same fingerprint (schema, training
    data and parameters) was registered after this run was created (another run did the same work
    meanwhile), or - for automatic triggers - within `window` before now (debounce). A manual
    retrain is only skipped by the first rule: someone asked for it explicitly."""
    same = [r for r in records if (r.schema_hash, r.data_hash, r.params_hash) == (schema_hash, data_hash, params_hash)]
    if not same:
        return DuplicateDecision(False, "no registered version has this training data and settings")
    newest = max(same, key=lambda r: as_utc(r.created_at))
    created = as_utc(newest.created_at)
    if run_created_at is not None and created >= as_utc(run_created_at):
        return DuplicateDecision(True, f"duplicate: {newest.version} was registered from the same data and "
                                       f"settings after this run was created", newest.version)
    age = now - created
    if trigger != "manual" and age < window:
        shown = format_duration(timedelta(seconds=int(age.total_seconds())) or timedelta(seconds=1))
        return DuplicateDecision(True, f"duplicate: {newest.version} was registered from the same data and "
                                       f"settings {shown} ago (debounce {format_duration(window)})", newest.version)
    return DuplicateDecision(False, f"{newest.version} has the same data but was registered "
                                    f"{'before this run' if trigger == 'manual' else 'outside the debounce window'}")


def concurrency_limit_name(model_name: str) -> str:
    """The concurrency limit that lets one retrain of `model_name` run at a time."""
    return f"retrain-{model_name}"
