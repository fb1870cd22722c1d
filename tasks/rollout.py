"""Tasks of the rollout (canary and rollback). Thin wrappers over `retrainer.rollout` and
`retrainer.canary`.

A suspended canary re-runs its flow from the top in a new process when it is resumed. Every task
here that changes something is therefore cached per (flow run, step): `persist_result=True` and a
cache key built from the flow run id and the step's index, so on a resumed run the finished steps
return their persisted result instead of running again. The domain functions are idempotent as
well (second line of defence, e.g. if the result storage was lost).
"""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from prefect import task
from prefect.artifacts import (create_markdown_artifact, create_progress_artifact, create_table_artifact,
                               update_progress_artifact)
from prefect.cache_policies import NO_CACHE

from retrainer import canary as C
from retrainer import rollout
from retrainer.backends import Backend
from retrainer.settings import Settings

from .runtime import artifact_key


def per_run(step: str, *index_params: str):
    """cache_key_fn: one key per flow run and step (plus the given parameters, e.g. the check
    index), so a step runs once per flow run however many times the flow is resumed."""
    def key(context, parameters) -> str:
        run_id = context.task_run.flow_run_id
        extra = "-".join(str(parameters[p]) for p in index_params)
        return f"retrainer-{step}-{run_id}" + (f"-{extra}" if extra else "")
    return key


once = dict(persist_result=True, retries=2, retry_delay_seconds=2)   # cached per flow run + step
plain = dict(cache_policy=NO_CACHE, persist_result=False)


@task(name="pick-candidate", cache_key_fn=per_run("pick"), persist_result=True)
def pick_candidate(backend: Backend, candidate: str | None) -> str:
    return rollout.pick_candidate(backend.registry, candidate)


@task(name="start-canary", cache_key_fn=per_run("start"), **once)
def start_canary(backend: Backend, candidate: str, plan: dict[str, Any], actor: str) -> dict[str, Any]:
    """Registry candidate -> canary, endpoint green at the first stage's traffic; a progress
    artifact. Returns the rollout's start time (the clock of every later check)."""
    p = C.RolloutPlan(tuple(_stages(plan)))
    traffic = p.stages[0].traffic
    info = rollout.start_canary(backend.registry, backend.endpoint, candidate, traffic, actor=actor,
                                reason=f"canary at {traffic:.0%} for {_dur(p.duration)}")
    progress_id = create_progress_artifact(
        progress=0.0, key=artifact_key("canary-progress", candidate),
        description=f"canary {candidate}: elapsed / {_dur(p.duration)}")
    return {**info, "started_at": rollout.utcnow().isoformat(), "progress_artifact": str(progress_id)}


@task(name="canary-check", cache_key_fn=per_run("check", "index"), **once)
def run_check(backend: Backend, settings: Settings, plan: dict[str, Any], started_at: str, extended: bool,
              index: int, candidate: str, progress_artifact: str | None) -> dict[str, Any]:
    """One check: per-variant stats over the elapsed window, `canary.check`, artifacts."""
    p = C.RolloutPlan(tuple(_stages(plan)))
    start = datetime.fromisoformat(started_at)
    now = rollout.utcnow()
    stats, ci = rollout.window_stats(backend.predictions, start, now)
    cand, prod = C.arms_from_stats(stats)
    decision = C.check(p, start, now, cand, prod, settings, extended, ci=ci)
    d = decision.to_dict()
    d["index"] = index
    if progress_artifact:
        from uuid import UUID

        update_progress_artifact(UUID(progress_artifact), progress=round(100 * decision.progress, 1),
                                 description=f"canary {candidate}: {_dur(now - start)} of "
                                             f"{_dur(p.end(extended))}; last check: {decision.action}")
    create_table_artifact(table=_arm_rows(cand, prod, decision), key=artifact_key("canary", candidate),
                          description=f"check {index}: {decision.action} - {decision.reason}")
    return d


@task(name="set-canary-traffic", cache_key_fn=per_run("traffic", "index"), **once)
def set_traffic(backend: Backend, candidate: str, traffic: float, index: int) -> dict[str, Any]:
    return rollout.set_canary_traffic(backend.registry, backend.endpoint, candidate, traffic)


@task(name="manual-decision", cache_key_fn=per_run("manual", "index"), persist_result=True)
def manual_decision(action: str, actor: str, reason: str, started_at: str, plan: dict[str, Any],
                    index: int) -> dict[str, Any]:
    p = C.RolloutPlan(tuple(_stages(plan)))
    d = C.manual(action, actor, reason, now=rollout.utcnow(), started_at=datetime.fromisoformat(started_at),
                 plan=p).to_dict()
    d["index"] = index
    return d


@task(name="apply-decision", cache_key_fn=per_run("final"), **once)
def apply_decision(backend: Backend, candidate: str, decision: dict[str, Any]) -> dict[str, Any]:
    """promote: registry.promote + candidate blue at 100%; rollback: production back to 100% +
    candidate rejected. The audit log records the decision's actor and reason."""
    actor, reason = decision["actor"], decision["reason"]
    if decision["action"] == "promote":
        return rollout.promote_canary(backend.registry, backend.endpoint, candidate, actor=actor,
                                      reason=f"canary: {reason}")
    return rollout.reject_canary(backend.registry, backend.endpoint, candidate, actor=actor,
                                 reason=f"canary: {reason}")


@task(name="canary-report", cache_key_fn=per_run("report"), persist_result=True)
def publish_report(candidate: str, decisions: list[dict[str, Any]], applied: dict[str, Any]) -> None:
    final = decisions[-1]
    ci = final.get("ci")
    lines = [f"# Canary {candidate}: {final['action'].upper()}", "",
             f"- decided by **{final['actor']}**{' (manual)' if final.get('manual') else ''}: {final['reason']}",
             "- AUC difference (candidate - production): "
             + (f"{final['auc_diff']:+.4f}" if final.get("auc_diff") is not None else "n/a")
             + (f", {ci['level']:.0%} CI [{ci['low']:+.4f}, {ci['high']:+.4f}] (DeLong, unpaired)" if ci else ""),
             "- endpoint now: " + ", ".join(f"{v['variant']}={v['version']}@{v['weight']:g}"
                                             for v in (applied.get("endpoint") or {}).get("variants") or []),
             "", "| check | action | elapsed | reason |", "|---|---|---|---|"]
    for d in decisions:
        lines.append(f"| {d.get('index')} | {d['action']} | {d['elapsed_s']:.0f} s | {d['reason']} |")
    create_markdown_artifact(markdown="\n".join(lines), key=artifact_key("canary-decision", candidate),
                             description=f"canary {candidate}: {final['action']}")


@task(name="rollback-production", **plain)
def rollback_production(backend: Backend, to: str | None, actor: str, reason: str) -> dict[str, Any]:
    result = rollout.rollback_production(backend.registry, backend.endpoint, to, actor=actor, reason=reason)
    create_markdown_artifact(
        markdown=f"# Rollback to {result['version']}\n\n- replaced: {result['replaced']}\n- by {actor}: {reason}\n"
                 f"- command to 100% traffic: {result['switch_ms']:.1f} ms (registry written after: "
                 f"{result['total_ms']:.1f} ms)\n",
        key=artifact_key("rollback", result["version"]), description="production rollback")
    return result


# ---------------------------------------------------------------------------------------------

def _stages(plan: dict[str, Any]):
    for s in plan["stages"]:
        yield C.Stage(float(s["traffic"]), timedelta(seconds=float(s["duration_s"])),
                      timedelta(seconds=float(s["check_interval_s"])))


def _dur(td: timedelta) -> str:
    s = td.total_seconds()
    return f"{s / 3600:.1f} h" if s >= 3600 else f"{s:.0f} s"


def _arm_rows(cand: C.ArmStats, prod: C.ArmStats, decision: C.Decision) -> list[dict[str, Any]]:
    rows = []
    for role, arm in (("candidate", cand), ("production", prod)):
        rows.append({"arm": role, "variant": arm.variant, "version": arm.version or "-",
                     "predictions": arm.n_predictions, "labels": arm.n_labels,
                     "auc": "-" if arm.auc is None else round(arm.auc, 4),
                     "error_rate": round(arm.error_rate, 4),
                     "p95_latency_ms": "-" if arm.p95_latency_ms is None else round(arm.p95_latency_ms, 2),
                     "decision": decision.action})
    return rows
