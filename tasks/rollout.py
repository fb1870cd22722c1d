"""Tasks of the rollout (canary and rollback): thin wrappers over `retrainer.rollout`.

A suspended canary re-runs its flow from the top in a new process when it is resumed. Every task
here that changes something is therefore cached per (flow run, step): `ONCE_PER_RUN` with a cache
key from the flow run id and the step's index (`per_run`), so on a resumed run the finished steps
return their persisted result instead of running again. The domain functions are idempotent as
well (second line of defence, e.g. if the result storage was lost). Plans cross as `RolloutPlan`,
checks as `Decision`, the start as `CanaryStart` and the applied decision as `AppliedDecision`.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from prefect import get_run_logger, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound
from prefect.runtime import flow_run
from prefect.states import Scheduled

from retrainer import clock, rollout
from retrainer.backends import Backend
from retrainer.rollout import Decision, RolloutPlan, format_duration, verdict
from retrainer.rollout.journal import RolloutJournal
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
    power: dict[str, Any] = field(default_factory=dict)  # the day-0 power statement (`text` and numbers)
    strategy: str = "canary"

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
    cutover_ms: float | None = None  # promote: the call to the endpoint confirming 100% on the candidate

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
def start_canary(backend: Backend, candidate: str, plan: RolloutPlan, actor: str,
                 approved_by: str | None = None, approvers: list[str] | None = None,
                 settings: Settings | None = None) -> CanaryStart:
    """Registry candidate -> canary, endpoint green at the first stage's traffic (a shadow stage:
    weight 0, scored in shadow; on SageMaker a shadow variant on the plan's sampling percentage
    of requests; an immediate plan: unchanged until its promotion, and only with an
    approver); the rollout journal's record; a progress artifact; the day-0 power statement
    (logged and in a markdown artifact). Returns the rollout's start time (the clock of every
    later check)."""
    immediate = plan.strategy == "immediate"
    traffic = 1.0 if immediate else plan.stages[0].traffic
    why = ((f"an immediate rollout (plan {plan.source})" if plan.source else "an immediate rollout") if immediate
           else (f"plan {plan.source or plan.strategy}" if plan.approval else None))
    info = rollout.start_canary(backend.registry, backend.endpoint, candidate, traffic, actor=actor,
                                reason=f"{plan.strategy} at {traffic:.0%} for {format_duration(plan.duration)}",
                                approved_by=approved_by, approvers=approvers, approval_required=why,
                                route=not immediate, shadow_sampling=plan.shadow_sampling)
    progress_id = create_progress_artifact(
        progress=0.0, key=artifact_key("canary-progress", candidate),
        description=f"{plan.strategy} {candidate}: elapsed / {format_duration(plan.duration)}")
    now = clock.utcnow()
    power: dict[str, Any] = {}
    if settings is not None and plan.stages:
        power = rollout.power_at_start(backend.predictions, backend.registry, settings, plan, candidate, now)
        get_run_logger().info("canary %s: %s", candidate, power["text"])
        create_markdown_artifact(markdown=f"# Canary {candidate}: what the rule needs\n\n{power['text']}\n",
                                 key=artifact_key("canary-power", candidate),
                                 description=f"canary {candidate}: power statement at the start")
    if settings is not None:
        journal = RolloutJournal(settings.home)
        rec = journal.get(candidate)
        fields = dict(production=info["production"], strategy=plan.strategy, plan=plan.to_dict(),
                      traffic=float(info["traffic"]), flow_run_id=_flow_run_id())
        if rec is not None and rec.active:  # e.g. written by flows/rollout.py while it waited for an approval
            journal.update(candidate, "started", status="running", started_at=now.isoformat(), stage=0, **fields)
        else:
            journal.start(candidate, fields.pop("production"), fields.pop("strategy"), fields.pop("plan"), now,
                          **fields)
    return CanaryStart(candidate=info["candidate"], production=info["production"], traffic=info["traffic"],
                       started_at=now.isoformat(), progress_artifact=str(progress_id),
                       endpoint=info["endpoint"], power=power, strategy=plan.strategy)


def _flow_run_id() -> str | None:
    return str(flow_run.id) if flow_run.id else None


@task(name="canary-check", cache_key_fn=per_run("check", "index"), **ONCE_PER_RUN)
def run_check(backend: Backend, settings: Settings, plan: RolloutPlan, started_at: str, extensions: int,
              index: int, candidate: str, progress_artifact: str | None, held: bool = False,
              stage: int | None = None, stage_started_at: str | None = None) -> Decision:
    """One check: the live evidence over the elapsed window (`rollout.live.gather`, with the
    current stage's criteria on the stage's rows), the policy's decision on it (`rollout.check`),
    artifacts showing both, and the journal's next check time."""
    start = datetime.fromisoformat(started_at)
    stage_start = datetime.fromisoformat(stage_started_at) if stage_started_at else None
    now = clock.utcnow()
    live = rollout.gather(backend.predictions, backend.registry, settings, candidate_version=candidate,
                          start=start, now=now, checks=rollout.checks_planned(plan, settings), plan=plan,
                          stage=stage, stage_start=stage_start)
    decision = replace(rollout.check(plan, start, now, live, settings, extensions, held=held, stage=stage,
                                     stage_started_at=stage_start), index=index)
    _journal(settings, candidate, "check", next_check_at=_iso(decision.next_check_at),
             details={"index": index, "action": decision.action, "reason": decision.reason})
    if progress_artifact:
        update_progress_artifact(UUID(progress_artifact), progress=round(100 * decision.progress, 1),
                                 description=f"canary {candidate}: {format_duration(now - start)} of "
                                             f"{format_duration(plan.end(extensions))}; last check: {decision.action}")
    create_table_artifact(table=evidence_rows(live, decision), key=artifact_key("canary", candidate),
                          description=f"check {index}: {decision.action} - {decision.reason}")
    return decision


@task(name="set-canary-traffic", cache_key_fn=per_run("traffic", "index"), **ONCE_PER_RUN)
def set_traffic(backend: Backend, candidate: str, traffic: float, index: int, stage: int | None = None,
                settings: Settings | None = None) -> dict[str, Any]:
    """Move the candidate to `traffic` (a stage boundary) and record the new stage in the journal."""
    out = rollout.set_canary_traffic(backend.registry, backend.endpoint, candidate, traffic)
    if settings is not None:
        _journal(settings, candidate, "stage", stage=int(stage or 0), traffic=float(traffic))
    return out


def _journal(settings: Settings, version: str, event: str, **changes: Any) -> None:
    """One journal event for a rollout the journal knows (a run started before the journal existed
    has none: nothing to update)."""
    journal = RolloutJournal(settings.home)
    if journal.get(version) is not None:
        journal.update(version, event, **changes)


def _iso(t: datetime | None) -> str | None:
    return t.isoformat() if t is not None else None


@task(name="journal-decision", cache_key_fn=per_run("journal-final"), **ONCE_PER_RUN)
def journal_decision(settings: Settings, candidate: str, decision: Decision, applied: AppliedDecision,
                     verdict_due_at: str | None = None) -> None:
    """The final decision in the rollout journal: status promoted/rolled_back, when, why, and when a
    deferred verdict will re-check a promotion."""
    status = "promoted" if decision.action == "promote" else "rolled_back"
    _journal(settings, candidate, "decision", status=status, decision=decision.action,
             decided_at=_iso(decision.decided_at) or clock.utcnow().isoformat(), reason=decision.reason,
             traffic=1.0 if decision.action == "promote" else 0.0, next_check_at=None,
             verdict_due_at=verdict_due_at,
             details={"actor": decision.actor, "manual": decision.manual, "cutover_ms": applied.cutover_ms})


@task(name="manual-decision", cache_key_fn=per_run("manual", "index"), persist_result=True)
def manual_decision(action: str, actor: str, reason: str, started_at: str, plan: RolloutPlan,
                    index: int) -> Decision:
    """A human's promote/rollback, recorded as a Decision at check `index`."""
    return replace(rollout.manual(action, actor, reason, now=clock.utcnow(),
                                  started_at=datetime.fromisoformat(started_at), plan=plan), index=index)


@task(name="apply-decision", cache_key_fn=per_run("final"), **ONCE_PER_RUN)
def apply_decision(backend: Backend, candidate: str, decision: Decision) -> AppliedDecision:
    """promote: registry.promote + candidate blue at 100% (the blue/green cutover: `cutover_ms`);
    rollback: production back to 100% + candidate rejected (idempotent: a candidate the guardrails
    deployment already rejected only gets the steady weights re-applied). The audit log records
    the decision's actor and reason."""
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


def evidence_rows(live: rollout.LiveEvidence, decision: Decision) -> list[dict[str, Any]]:
    """One row per piece of evidence: what was measured, on how many rows, the estimate, its
    interval or bound, and what it says."""
    rows = []
    for role, arm in (("candidate", live.candidate), ("production", live.production)):
        rows.append({"evidence": f"traffic ({role} {arm.variant} {arm.version or '-'})", "n": arm.n_predictions,
                     "positives": "-", "estimate": f"error rate {arm.error_rate:.4f}; p95 "
                     + ("-" if arm.p95_latency_ms is None else f"{arm.p95_latency_ms:.1f} ms"),
                     "interval": "-", "says": "shown"})
    for g in live.guardrails:
        d = g.to_dict()
        rows.append({"evidence": f"guardrail {d.get('name', type(g).__name__)}", "n": d.get("n", "-"),
                     "positives": "-", "estimate": _num(d.get("estimate")), "interval": _num(d.get("bound")),
                     "says": "FIRED" if g.fired else "ok"})
    if live.label_free is not None:
        d = live.label_free.to_dict()
        rows.append({"evidence": "label-free ΔAUC (CBPE)", "n": d.get("n", "-"), "positives": "-",
                     "estimate": _num(d.get("delta")), "interval": f"[{_num(d.get('low'))}, {_num(d.get('high'))}]",
                     "says": "worse" if getattr(live.label_free, "worse", False) else "not worse"})
    v = live.verdict
    if v is not None:
        rows.append({"evidence": f"ΔAUC on matured labels ({v.source})", "n": v.candidate.n,
                     "positives": v.candidate.positives, "estimate": _num(v.delta),
                     "interval": "-" if v.low is None else f"[{v.low:+.4f}, {v.high:+.4f}]", "says": v.verdict})
    for note in live.notes:
        rows.append({"evidence": "note", "n": "-", "positives": "-", "estimate": "-", "interval": "-", "says": note})
    rows.append({"evidence": "decision", "n": "-", "positives": "-", "estimate": "-", "interval": "-",
                 "says": f"{decision.action}: {decision.reason}"})
    return rows


def _num(x) -> Any:
    return round(x, 4) if isinstance(x, float) else ("-" if x is None else x)


# ---------------------------------------------------------------------------------------------
# The deferred verdict

VERDICT_DEPLOYMENT = "deferred-verdict/deferred-verdict"
# A scheduled run may start a little before its time: Prefect's server rounds the wait it orders
# to whole seconds (a run 0.4 s early is let through), and a worker prefetches. The verdict waits
# out so short a remainder rather than ending `not_due` with nothing re-scheduled.
EARLY_START = timedelta(seconds=60)


@task(name="schedule-deferred-verdict", cache_key_fn=per_run("verdict-schedule"), persist_result=True)
def schedule_deferred_verdict(version: str, previous: str | None, window_start: str, window_end: datetime,
                              label_delay: timedelta, home: str | None, model: str | None = None) -> dict[str, Any]:
    """Create ONE scheduled run of the deferred-verdict deployment at the time the canary period's
    labels mature (a scheduled run holds no worker until then). Without that deployment (a plain
    local run) the result says which command to run when the labels are in."""
    due = verdict.due_at(window_end, label_delay)
    params = {"version": version, "previous": previous, "window_start": window_start,
              "window_end": window_end.isoformat(), "home": home, "model": model}
    command = (f"retrainer canary verdict {version} --previous {previous} --start {window_start} "
               f"--end {window_end.isoformat()}")
    name = os.environ.get("RETRAINER_VERDICT_DEPLOYMENT", VERDICT_DEPLOYMENT)
    try:
        with get_client(sync_client=True) as client:
            dep = client.read_deployment_by_name(name)
            run = client.create_flow_run_from_deployment(
                dep.id, parameters=params, state=Scheduled(scheduled_time=due),
                idempotency_key="-".join(["deferred-verdict", *([model] if model else []), version, window_start]))
        get_run_logger().info("deferred verdict on %s scheduled for %s (flow run %s)", version, due, run.id)
        return {"due_at": due.isoformat(), "flow_run_id": str(run.id), "command": command}
    except ObjectNotFound:
        get_run_logger().warning("no %s deployment: run `%s` after %s", name, command, due.isoformat())
        return {"due_at": due.isoformat(), "flow_run_id": None, "command": command}


@task(name="deferred-verdict", **IN_PROCESS)
def deferred_verdict(backend: Backend, settings: Settings, version: str, previous: str | None,
                     window_start: datetime, window_end: datetime) -> dict[str, Any]:
    """`rollout.verdict.run` and a markdown artifact with its evidence. A run started a moment
    before its labels are due (up to `EARLY_START`) waits for them instead of ending `not_due`."""
    due = verdict.due_at(window_end, settings.label_delay)
    if timedelta(0) < due - clock.utcnow() <= EARLY_START:
        clock.current().wait_until(due, threading.Event())
    out = verdict.run(backend.predictions, backend.registry, backend.endpoint, settings, version=version,
                      previous=previous, window_start=window_start, window_end=window_end, now=clock.utcnow())
    ev = out.get("evidence") or {}
    lines = [f"# Deferred verdict on {version}: {out['outcome'].upper()}", "", f"- {out['reason']}",
             f"- canary period {out['window_start']} .. {out['window_end']}; labels mature at {out['due_at']}"]
    if ev:
        lines.append(f"- evidence: {ev.get('method') or '-'}, {ev.get('n_candidate', 0):,} rows "
                     f"({ev.get('pos_candidate', 0):,} positives), ΔAUC "
                     + ("n/a" if ev.get("delta") is None else
                        f"{ev['delta']:+.4f}, {ev['level']:.0%} CI [{ev['low']:+.4f}, {ev['high']:+.4f}]")
                     + f", tolerance {ev.get('tolerance')}")
    create_markdown_artifact(markdown="\n".join(lines), key=artifact_key("deferred-verdict", version),
                             description=f"deferred verdict on {version}: {out['outcome']}")
    return out
