"""The rollout flow: a candidate on live traffic by a plan (a YAML file under rollout-plans/ or its
dict form), checked on a clock, then promoted or rolled back. Every strategy runs here and is
decided by `retrainer.rollout.policy.check`:

* canary (default `rollout-plans/canary.yaml`: 10% for 72 h checked every 6 h);
* linear: rising stages, each advancing only when its criteria held on enough requests;
* shadow: the candidate at weight 0, scored in shadow on every request, then a blue/green cutover;
* ab: a fixed split until the A/B test has a winner (or production stays);
* immediate: 100% at once, only with an approver.

    validate the plan (first: a bad plan changes nothing)
    pick candidate -> start (candidate -> canary, endpoint by the first stage; journal; notice)
    loop:
        check (live evidence + the stage's criteria -> Decision)
        promote/rollback?            -> leave the loop
        the stage advanced?          -> set traffic (journal, notice)
        wait for the next check      (suspended: no worker held; a human may answer instead)
        a human's promote/rollback?  -> record it, leave the loop
    notice "update.planned" before a promotion -> apply (registry + endpoint) -> journal -> report

Waiting and waking are in `tasks/waiting.py`: suspended deployment runs are resumed by the
`canary-tick` deployment (`tick` below), which each waiting run schedules for its own due time.

Idempotency: a resumed deployment run re-runs this function from the top in a new process. Every
step with a side effect (journal writes and notices included) is a task cached per (flow run,
step index) with a persisted result (tasks/rollout.py), and each wait has a fixed pause key
`check-<i>`: a wait that already fired returns the input it was resumed with at once. So a
resumed run replays the recorded checks and decisions without redoing them.

Every decision lands in the registry (status change), its audit log (actor, reason), the rollout
journal (`<home>/rollouts/<version>.json`) and a notice (`tasks/notify.py`).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task

from retrainer import clock
from retrainer.rollout import Decision, RolloutPlan
from retrainer.rollout.ab import results_document
from retrainer.rollout.journal import RolloutJournal
from tasks.notify import notify
from tasks.report import publish_evidence_package
from tasks.rollout import (
    AppliedDecision,
    CanaryStart,
    apply_decision,
    journal_decision,
    manual_decision,
    pick_candidate,
    publish_report,
    run_check,
    schedule_deferred_verdict,
    set_traffic,
    start_canary,
)
from tasks.runtime import ONCE_PER_RUN, backend_for, install_log_filter, per_run, settings_for
from tasks.waiting import CANARY_FLOW, resume_due, wait_for_check

# ---------------------------------------------------------------------------------------------
# Notifications (`tasks/notify.py`: never raises)

REPO = Path(__file__).resolve().parents[1]


@task(name="rollout-notice", cache_key_fn=per_run("notice", "key"), **ONCE_PER_RUN)
def notice(settings, kind: str, key: str, fields: dict[str, Any]) -> dict[str, Any]:
    """One notice per flow run and `key` (a resumed run does not send it again), through the
    run's own settings' notify blocks."""
    return notify(kind, settings, **fields)


def _on_failure(flow, flow_run, state) -> None:
    """A failed rollout run: its journal record (if any) -> failed, and an ERROR log line (the
    notice catalogue has no "rollout failed" kind yet)."""
    try:
        params = flow_run.parameters or {}
        settings = settings_for(params.get("home"), params.get("model"))
        journal = RolloutJournal(settings.home)
        for rec in journal.active():
            if rec.flow_run_id == str(flow_run.id):
                journal.update(rec.version, "failed", status="failed", reason=str(state.message)[:500])
    except Exception as exc:  # noqa: BLE001 - a hook must not hide the failure it reports
        logging.getLogger("retrainer.notify").error("rollout journal not updated: %s", exc)
    logging.getLogger("retrainer.notify").error(
        "rollout flow run %s FAILED: %s. A canary left running can be stopped with `retrainer canary rollback "
        "--reason ...`", flow_run.name, state.message)


# ---------------------------------------------------------------------------------------------
# The flows


@flow(name=CANARY_FLOW, log_prints=True, persist_result=True, on_failure=[_on_failure])
def canary(candidate: str | None = None, plan: dict[str, Any] | str | None = None, actor: str = "retrainer",
           home: str | None = None, approved_by: str | None = None, model: str | None = None) -> dict[str, Any]:
    """Roll `candidate` (default: the newest candidate) out by `plan` (a YAML file's path, relative
    paths from the repo root; its dict form; default: settings.canary) and promote or roll it back.
    Returns the decision, its evidence and every check. A version whose gate policy asked for a
    review, and any plan that requires an approval (immediate), needs `approved_by` (one of
    settings.approvers)."""
    install_log_filter()
    logger = get_run_logger()
    settings = settings_for(home, model)
    rollout_plan = RolloutPlan.load(_plan_path(plan) if isinstance(plan, str) else plan,
                                    None if plan else settings)  # validated before anything changes
    backend = backend_for(settings)

    version = pick_candidate(backend, candidate)
    started = CanaryStart.of(start_canary(backend, version, rollout_plan, actor, approved_by, settings.approvers,
                                          settings))
    summary = rollout_plan.summary()
    print(f"{rollout_plan.strategy} {version} vs production {started.production} at {started.traffic:.0%} "
          f"traffic; {summary}")
    if started.power:
        print(started.power["text"])
    notice(settings, "rollout.started", "started", dict(version=version, production=started.production,
                                                        strategy=rollout_plan.strategy, plan=summary,
                                                        traffic=started.traffic, actor=actor))

    decisions: list[Decision] = []
    extensions = 0
    held = False
    traffic = started.traffic
    stage = 0
    stage_started_at = started.started_at
    index = 0
    while True:
        d = run_check(backend, settings, rollout_plan, started.started_at, extensions, index, version,
                      started.progress_artifact, held, stage if rollout_plan.stages else None, stage_started_at)
        decisions.append(d)
        logger.info("check %d: %s - %s", index, d.action, d.reason)
        if d.final:
            break
        if d.action == "extend" and stage == len(rollout_plan.stages) - 1:
            extensions += 1
        held = d.action == "hold"
        advance = d.details.get("advance_to")
        if advance is not None:
            stage = int(advance)
            stage_started_at = (d.decided_at or clock.utcnow()).isoformat()
        if d.action == "continue" and d.traffic is not None and abs(d.traffic - traffic) > 1e-9:
            set_traffic(backend, version, d.traffic, index, stage, settings)
            traffic = d.traffic
            notice(settings, "rollout.stage", f"stage-{index}",
                   dict(version=version, stage=stage + 1, traffic=d.traffic, reason=d.reason))
        grace = rollout_plan.resume_grace.total_seconds() if rollout_plan.resume_grace else None
        answer = wait_for_check(index, d.next_check_at, grace)
        if answer.action != "continue":
            decisions.append(manual_decision(answer.action, answer.actor, answer.reason, started.started_at,
                                             rollout_plan, index))
            break
        index += 1

    final = decisions[-1]
    if final.action == "rollback" and not final.manual and final.reason.startswith(("guardrail", "stage ")):
        notice(settings, "guardrail.breach", "breach", dict(version=version, reason=final.reason,
                                                            measured=_measured(final), action="rolled back"))
    if final.action == "promote":
        notice(settings, "update.planned", "planned", dict(version=version, planned_at=clock.utcnow().isoformat(),
                                                           production=started.production,
                                                           change=f"{rollout_plan.strategy}: {final.reason}"))
    applied = AppliedDecision.of(apply_decision(backend, version, final))
    publish_report(version, decisions, applied)
    verdict_run = None
    if final.action == "promote" and settings.canary.deferred_verdict:
        verdict_run = schedule_deferred_verdict(version, started.production, started.started_at,
                                                final.decided_at or clock.utcnow(), settings.label_delay, home,
                                                model=settings.model_name)
    journal_decision(settings, version, final, applied, (verdict_run or {}).get("due_at"))
    ev = _evidence_fields(final)
    if final.action == "promote":
        notice(settings, "rollout.promoted", "final", dict(version=version, reason=final.reason, actor=final.actor,
                                                           previous=started.production, **ev))
    else:
        notice(settings, "rollout.rolled_back", "final", dict(version=version, reason=final.reason, actor=final.actor,
                                                              production=started.production, **ev))
    print(f"{rollout_plan.strategy} {version}: {final.action.upper()} ({final.actor}): {final.reason}")
    result = {"candidate": version, "production_before": started.production, "action": final.action,
            "actor": final.actor, "manual": final.manual, "reason": final.reason,
            "strategy": rollout_plan.strategy, "plan": rollout_plan.to_dict(),
            "auc_diff": final.auc_diff, "ci": final.ci, "checks": len(decisions), "extensions": extensions,
            "extended": extensions > 0, "power": started.power, "evidence": final.evidence,
            "deferred_verdict": verdict_run, "cutover_ms": applied.cutover_ms,
            "evidence_window": {"start": started.started_at,
                                "end": (final.decided_at or clock.utcnow()).isoformat()},
            "decisions": [{"index": x.index, "action": x.action, "reason": x.reason,
                           "elapsed_s": x.elapsed.total_seconds(), "stage": x.details.get("stage"),
                           "traffic": x.traffic} for x in decisions],
            "endpoint": applied.endpoint}
    ab = (final.evidence or {}).get("ab")
    ab_doc = None if not ab else results_document(
        ab, versions={"candidate": version, "production": started.production},
        split={"candidate": started.traffic, "production": 1 - started.traffic},
        started_at=started.started_at, decided_at=final.decided_at or clock.utcnow())
    package = publish_evidence_package(version, started.production, rollout_plan, decisions, result,
                                       settings=settings, backend=backend, ab_results=ab_doc)
    print(f"evidence package: {package.get('path') or package.get('error')}")
    return {**result, "evidence_package": package.get("path")}


def _plan_path(value: str) -> str:
    """A plan file's path: as given when it exists, else relative to the repository root."""
    p = Path(value)
    return str(p if p.is_absolute() or p.exists() else REPO / p)


def _evidence_fields(d: Decision) -> dict[str, Any]:
    """The verdict's n, positives, Δ and interval for a notice (empty when there was none)."""
    v = (d.evidence or {}).get("verdict") or {}
    out: dict[str, Any] = {}
    if v.get("n_candidate") is not None:
        out["n"] = v.get("n_candidate")
    if v.get("pos_candidate") is not None:
        out["positives"] = v.get("pos_candidate")
    if d.auc_diff is not None:
        out["delta"] = d.auc_diff
    if d.ci:
        out["interval"] = (d.ci["low"], d.ci["high"])
        out["level"] = d.ci["level"]
    if "ab" in (d.evidence or {}):
        out["evidence"] = d.evidence["ab"].get("reason")
    return out


def _measured(d: Decision) -> dict[str, Any]:
    ev = d.evidence or {}
    fired = [g for g in (ev.get("guardrails") or []) + (ev.get("criteria") or []) if g.get("fired")]
    if not fired:
        return {"reason": d.reason}
    g = fired[0]
    return {"test": g.get("name"), "n": g.get("n"), "estimate": g.get("estimate"), "bound": g.get("bound"),
            "limit": g.get("limit")}


@flow(name="canary-tick", log_prints=True)
def tick(max_wait_s: float = 60.0) -> list[str]:
    """Resume every suspended canary whose next check is due. A check due within `max_wait_s` is
    waited for (a worker may start a scheduled run early). Returns the resumed run ids."""
    resumed = resume_due(max_wait_s)
    print(f"resumed {len(resumed)} canary run(s)")
    return resumed


if __name__ == "__main__":
    canary()
