"""The canary: a candidate on a share of live traffic, checked on a clock, then promoted or rolled
back. The default plan is one stage, 10% for 72 h checked every 6 h (settings.canary); any
`RolloutPlan` works (`plan={"stages": [{"traffic", "duration_s", "check_interval_s"}, ...]}`).

    pick candidate -> start (candidate -> canary, green at the first stage's traffic)
    loop:
        check (per-variant stats since the start -> Decision)
        promote/rollback?            -> leave the loop
        a new stage's traffic?       -> set traffic
        wait for the next check      (suspended: no worker held; a human may answer instead)
        a human's promote/rollback?  -> record it, leave the loop
    apply the decision (registry + endpoint) -> report

Waiting and waking are in `tasks/waiting.py`: suspended deployment runs are resumed by the
`canary-tick` deployment (`tick` below), which each waiting run schedules for its own due time.

Idempotency: a resumed deployment run re-runs this function from the top in a new process. Every
step with a side effect is a task cached per (flow run, step index) with a persisted result
(tasks/rollout.py), and each wait has a fixed pause key `check-<i>`: a wait that already fired
returns the input it was resumed with at once. So a resumed run replays the recorded checks and
decisions without redoing them, then continues with the next check.

Every decision lands in the registry (status change), its audit log (actor, reason) and a
notification (flow hooks; block named by RETRAINER_NOTIFY_BLOCK, e.g. "slack-webhook/ml-alerts",
otherwise the log).
"""
from __future__ import annotations

import logging
import os
from typing import Any

from prefect import flow, get_run_logger
from prefect.blocks.core import Block

from retrainer import clock
from retrainer.rollout import Decision, RolloutPlan
from tasks.rollout import (
    AppliedDecision,
    CanaryStart,
    apply_decision,
    manual_decision,
    pick_candidate,
    publish_report,
    run_check,
    schedule_deferred_verdict,
    set_traffic,
    start_canary,
)
from tasks.runtime import backend_for, install_log_filter, settings_for
from tasks.waiting import CANARY_FLOW, resume_due, wait_for_check

# ---------------------------------------------------------------------------------------------
# Notifications


def notify(text: str, subject: str) -> None:
    """Send `text` through the block named by RETRAINER_NOTIFY_BLOCK, else log it as a warning."""
    block = os.environ.get("RETRAINER_NOTIFY_BLOCK")
    if block:
        try:
            Block.load(block).notify(body=text, subject=subject)
            return
        except Exception as exc:  # noqa: BLE001 - a broken notifier must not hide the decision
            logging.getLogger("retrainer.notify").error("notification block %s failed: %s", block, exc)
    logging.getLogger("retrainer.notify").warning("%s: %s", subject, text)


def result_of(state) -> Any:
    """A finished run's result for a notification hook, or None when it cannot be read."""
    try:
        return state.result(raise_on_failure=False)
    except Exception:  # noqa: BLE001 - a result that cannot be read still gets a notification
        return None


def _on_completion(flow, flow_run, state) -> None:
    result = result_of(state)
    if isinstance(result, dict) and "action" in result:
        text = (f"canary {result.get('candidate')}: {result['action'].upper()} by {result.get('actor')}: "
                f"{result.get('reason')}")
    else:
        text = f"flow run {flow_run.name} completed"
    notify(text, f"retrainer {flow.name}")


def _on_failure(flow, flow_run, state) -> None:
    notify(f"flow run {flow_run.name} FAILED: {state.message}. A canary left running can be "
            "stopped with `retrainer canary rollback --reason ...`", f"retrainer {flow.name} failed")


# ---------------------------------------------------------------------------------------------
# The flows


@flow(name=CANARY_FLOW, log_prints=True, persist_result=True, on_completion=[_on_completion],
      on_failure=[_on_failure])
def canary(candidate: str | None = None, plan: dict[str, Any] | None = None, actor: str = "retrainer",
           home: str | None = None, approved_by: str | None = None) -> dict[str, Any]:
    """Roll `candidate` (default: the newest candidate) out by `plan` (default: settings.canary)
    and promote or roll it back. Returns the decision, its evidence and every check. A version
    whose gate policy asked for a review needs `approved_by` (one of settings.approvers)."""
    install_log_filter()
    logger = get_run_logger()
    settings = settings_for(home)
    backend = backend_for(settings)
    rollout_plan = RolloutPlan.from_dict(plan, settings)

    version = pick_candidate(backend, candidate)
    started = CanaryStart.of(start_canary(backend, version, rollout_plan, actor, approved_by, settings.approvers,
                                          settings))
    print(f"canary {version} vs production {started.production} at {started.traffic:.0%} traffic; "
          f"plan {rollout_plan.to_dict()}")
    if started.power:
        print(started.power["text"])

    decisions: list[Decision] = []
    extensions = 0
    held = False
    traffic = started.traffic
    index = 0
    while True:
        d = run_check(backend, settings, rollout_plan, started.started_at, extensions, index, version,
                      started.progress_artifact, held)
        decisions.append(d)
        logger.info("check %d: %s - %s", index, d.action, d.reason)
        if d.final:
            break
        if d.action == "extend":
            extensions += 1
        held = d.action == "hold"
        if d.action == "continue" and d.traffic is not None and abs(d.traffic - traffic) > 1e-9:
            set_traffic(backend, version, d.traffic, index)
            traffic = d.traffic
        grace = rollout_plan.resume_grace.total_seconds() if rollout_plan.resume_grace else None
        answer = wait_for_check(index, d.next_check_at, grace)
        if answer.action != "continue":
            decisions.append(manual_decision(answer.action, answer.actor, answer.reason, started.started_at,
                                             rollout_plan, index))
            break
        index += 1

    final = decisions[-1]
    applied = AppliedDecision.of(apply_decision(backend, version, final))
    publish_report(version, decisions, applied)
    verdict_run = None
    if final.action == "promote" and settings.canary.deferred_verdict:
        verdict_run = schedule_deferred_verdict(version, started.production, started.started_at,
                                                final.decided_at or clock.utcnow(), settings.label_delay, home)
    print(f"canary {version}: {final.action.upper()} ({final.actor}): {final.reason}")
    return {"candidate": version, "production_before": started.production, "action": final.action,
            "actor": final.actor, "manual": final.manual, "reason": final.reason,
            "auc_diff": final.auc_diff, "ci": final.ci, "checks": len(decisions), "extensions": extensions,
            "extended": extensions > 0, "power": started.power, "evidence": final.evidence,
            "deferred_verdict": verdict_run,
            "evidence_window": {"start": started.started_at,
                                "end": (final.decided_at or clock.utcnow()).isoformat()},
            "decisions": [{"index": x.index, "action": x.action, "reason": x.reason,
                           "elapsed_s": x.elapsed.total_seconds()} for x in decisions],
            "endpoint": applied.endpoint}


@flow(name="canary-tick", log_prints=True)
def tick(max_wait_s: float = 60.0) -> list[str]:
    """Resume every suspended canary whose next check is due. A check due within `max_wait_s` is
    waited for (a worker may start a scheduled run early). Returns the resumed run ids."""
    resumed = resume_due(max_wait_s)
    print(f"resumed {len(resumed)} canary run(s)")
    return resumed


if __name__ == "__main__":
    canary()
