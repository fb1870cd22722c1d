"""Tasks of the rollout (canary and rollback): thin wrappers over `retrainer.rollout`.

A suspended canary re-runs its flow from the top in a new process when it is resumed. Every task
here that changes something is therefore cached per (flow run, step): `ONCE_PER_RUN` with a cache
key from the flow run id and the step's index (`per_run`), so on a resumed run the finished steps
return their persisted result instead of running again. The domain functions are idempotent as
well (second line of defence, e.g. if the result storage was lost). Plans cross as `RolloutPlan`,
checks as `Decision`, the start as `CanaryStart` and the applied decision as `AppliedDecision`.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any
from uuid import UUID

from prefect import task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from retrainer import clock, rollout
from retrainer.backends import Backend
from retrainer.rollout import ArmStats, Decision, RolloutPlan, format_duration
from retrainer.settings import Settings

from .runtime import IN_PROCESS, ONCE_PER_RUN, artifact_key, per_run


@dataclass(frozen=True)
class CanaryStart:
    """What `start_canary` hands the later steps of the canary flow."""

    candidate: str
    production: str | None  # the production version the candidate is compared with
    traffic: float  # the candidate's share at the first stage
    started_at: str  # ISO time: the clock of every later check
    progress_artifact: str  # the progress artifact's id
    endpoint: dict[str, Any] = field(default_factory=dict)  # the endpoint's variants after the start

    @classmethod
    def of(cls, value: CanaryStart | dict[str, Any]) -> CanaryStart:
        """`value` as is, or from the dict a run started before this type persisted as its result."""
        if isinstance(value, cls):
            return value
        return cls(**{k: value[k] for k in cls.__dataclass_fields__ if k in value})


@dataclass(frozen=True)
class AppliedDecision:
    """What `apply_decision` did: the action, the version it concerned, the endpoint after it."""

    action: str  # "promote" or "rollback"
    version: str
    endpoint: dict[str, Any] | None = None
    replaced: str | None = None  # promote: the production version it replaced

    @classmethod
    def of(cls, value: AppliedDecision | dict[str, Any]) -> AppliedDecision:
        """`value` as is, or from the dict a run started before this type persisted as its result."""
        if isinstance(value, cls):
            return value
        return cls(**{k: value[k] for k in cls.__dataclass_fields__ if k in value})


@task(name="pick-candidate", cache_key_fn=per_run("pick"), persist_result=True)
def pick_candidate(backend: Backend, candidate: str | None) -> str:
    return rollout.pick_candidate(backend.registry, candidate)


@task(name="start-canary", cache_key_fn=per_run("start"), **ONCE_PER_RUN)
def start_canary(backend: Backend, candidate: str, plan: RolloutPlan, actor: str) -> CanaryStart:
    """Registry candidate -> canary, endpoint green at the first stage's traffic; a progress
    artifact. Returns the rollout's start time (the clock of every later check)."""
    traffic = plan.stages[0].traffic
    info = rollout.start_canary(backend.registry, backend.endpoint, candidate, traffic, actor=actor,
                                reason=f"canary at {traffic:.0%} for {format_duration(plan.duration)}")
    progress_id = create_progress_artifact(
        progress=0.0, key=artifact_key("canary-progress", candidate),
        description=f"canary {candidate}: elapsed / {format_duration(plan.duration)}")
    return CanaryStart(candidate=info["candidate"], production=info["production"], traffic=info["traffic"],
                       started_at=clock.utcnow().isoformat(), progress_artifact=str(progress_id),
                       endpoint=info["endpoint"])


@task(name="canary-check", cache_key_fn=per_run("check", "index"), **ONCE_PER_RUN)
def run_check(backend: Backend, settings: Settings, plan: RolloutPlan, started_at: str, extended: bool,
              index: int, candidate: str, progress_artifact: str | None) -> Decision:
    """One check: per-variant stats over the elapsed window, `rollout.check`, artifacts."""
    start = datetime.fromisoformat(started_at)
    now = clock.utcnow()
    stats, ci = rollout.window_stats(backend.predictions, start, now)
    cand, prod = rollout.arms_from_stats(stats)
    decision = replace(rollout.check(plan, start, now, cand, prod, settings, extended, ci=ci), index=index)
    if progress_artifact:
        update_progress_artifact(UUID(progress_artifact), progress=round(100 * decision.progress, 1),
                                 description=f"canary {candidate}: {format_duration(now - start)} of "
                                             f"{format_duration(plan.end(extended))}; last check: {decision.action}")
    create_table_artifact(table=_arm_rows(cand, prod, decision), key=artifact_key("canary", candidate),
                          description=f"check {index}: {decision.action} - {decision.reason}")
    return decision


@task(name="set-canary-traffic", cache_key_fn=per_run("traffic", "index"), **ONCE_PER_RUN)
def set_traffic(backend: Backend, candidate: str, traffic: float, index: int) -> dict[str, Any]:
    """Move the candidate to `traffic` (a stage boundary)."""
    return rollout.set_canary_traffic(backend.registry, backend.endpoint, candidate, traffic)


@task(name="manual-decision", cache_key_fn=per_run("manual", "index"), persist_result=True)
def manual_decision(action: str, actor: str, reason: str, started_at: str, plan: RolloutPlan,
                    index: int) -> Decision:
    """A human's promote/rollback, recorded as a Decision at check `index`."""
    return replace(rollout.manual(action, actor, reason, now=clock.utcnow(),
                                  started_at=datetime.fromisoformat(started_at), plan=plan), index=index)


@task(name="apply-decision", cache_key_fn=per_run("final"), **ONCE_PER_RUN)
def apply_decision(backend: Backend, candidate: str, decision: Decision) -> AppliedDecision:
    """promote: registry.promote + candidate blue at 100%; rollback: production back to 100% +
    candidate rejected. The audit log records the decision's actor and reason."""
    actor, reason = decision.actor, decision.reason
    if decision.action == "promote":
        done = rollout.promote_canary(backend.registry, backend.endpoint, candidate, actor=actor,
                                      reason=f"canary: {reason}")
    else:
        done = rollout.reject_canary(backend.registry, backend.endpoint, candidate, actor=actor,
                                     reason=f"canary: {reason}")
    return AppliedDecision.of(done)


@task(name="canary-report", cache_key_fn=per_run("report"), persist_result=True)
def publish_report(candidate: str, decisions: list[Decision], applied: AppliedDecision) -> None:
    """The decision and every check as a markdown artifact."""
    final = decisions[-1]
    ci = final.ci
    lines = [f"# Canary {candidate}: {final.action.upper()}", "",
             f"- decided by **{final.actor}**{' (manual)' if final.manual else ''}: {final.reason}",
             "- AUC difference (candidate - production): "
             + (f"{final.auc_diff:+.4f}" if final.auc_diff is not None else "n/a")
             + (f", {ci['level']:.0%} CI [{ci['low']:+.4f}, {ci['high']:+.4f}] (DeLong, unpaired)" if ci else ""),
             "- endpoint now: " + ", ".join(f"{v['variant']}={v['version']}@{v['weight']:g}"
                                             for v in (applied.endpoint or {}).get("variants") or []),
             "", "| check | action | elapsed | reason |", "|---|---|---|---|"]
    for d in decisions:
        lines.append(f"| {d.index} | {d.action} | {d.elapsed.total_seconds():.0f} s | {d.reason} |")
    create_markdown_artifact(markdown="\n".join(lines), key=artifact_key("canary-decision", candidate),
                             description=f"canary {candidate}: {final.action}")


@task(name="rollback-production", **IN_PROCESS)
def rollback_production(backend: Backend, to: str | None, actor: str, reason: str) -> dict[str, Any]:
    """Production back to a kept previous version (endpoint first, then registry); an artifact."""
    result = rollout.rollback_production(backend.registry, backend.endpoint, to, actor=actor, reason=reason)
    create_markdown_artifact(
        markdown=f"# Rollback to {result['version']}\n\n- replaced: {result['replaced']}\n- by {actor}: {reason}\n"
                 f"- command to 100% traffic: {result['switch_ms']:.1f} ms (registry written after: "
                 f"{result['total_ms']:.1f} ms)\n",
        key=artifact_key("rollback", result["version"]), description="production rollback")
    return result


def _arm_rows(cand: ArmStats, prod: ArmStats, decision: Decision) -> list[dict[str, Any]]:
    rows = []
    for role, arm in (("candidate", cand), ("production", prod)):
        rows.append({"arm": role, "variant": arm.variant, "version": arm.version or "-",
                     "predictions": arm.n_predictions, "labels": arm.n_labels,
                     "auc": "-" if arm.auc is None else round(arm.auc, 4),
                     "error_rate": round(arm.error_rate, 4),
                     "p95_latency_ms": "-" if arm.p95_latency_ms is None else round(arm.p95_latency_ms, 2),
                     "decision": decision.action})
    return rows
