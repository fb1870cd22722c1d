"""The canary: a candidate on a share of live traffic, checked on a clock, then promoted or rolled
back. The default plan is one stage, 10% for 72 h checked every 6 h (settings.canary); any
`RolloutPlan` works (`plan={"stages": [{"traffic", "duration_s", "check_interval_s"}, ...]}`).

How it waits without holding a worker
-------------------------------------
Between checks the run is *suspended* (deployment runs: `suspend_flow_run`, the process exits and
the worker slot is free) or *paused* (plain local runs, where Prefect cannot suspend: the same
code blocks in `pause_flow_run` and a timer thread resumes it when the check is due). Either way
the run waits for a `CanaryInput` (action continue/promote/rollback, reason, actor), so a human
can act at any check from the Prefect UI (the resume form) or the CLI (`act(...)` below).

Who resumes a suspended run: the `canary-tick` deployment (`tick` below). Before suspending, the
canary writes its next check time into the flow run's labels (`retrainer.canary.next_check_at`,
`retrainer.canary.pause_key`) and creates ONE scheduled run of canary-tick at that time
(idempotency key per run and check, so a re-run does not add another). The tick resumes every
suspended canary whose check is due, with input `{"action": "continue", ...}`. The tick's own
5-minute interval schedule in prefect.yaml is only a safety net (on these machines the Prefect
3.8.8 server's scheduler service fails with SQLAlchemy 2.1 - "Can't evaluate bulk DML
statement" - so interval schedules create no runs; the self-scheduled wake-up does not need it). The suspend
timeout is the wait plus max(wait, 1 h), so the tick always comes first (a timeout FAILS the run).

Idempotency
-----------
A resumed deployment run re-runs this function from the top in a new process. Every step with a
side effect is a task cached per (flow run, step index) with a persisted result (tasks/rollout.py),
and each wait has a fixed pause key `check-<i>`: a wait that already fired returns the input it
was resumed with at once. So a resumed run replays the recorded checks and decisions without
redoing them, then continues with the next check. The domain functions are idempotent too.

Every decision lands in the registry (status change), its audit log (actor, reason) and a
notification (flow hooks; block named by RETRAINER_NOTIFY_BLOCK, e.g. "slack-webhook/ml-alerts",
otherwise the log).
"""
from __future__ import annotations

import contextvars
import os
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

from prefect import flow, get_run_logger
from prefect.input import RunInput

from tasks.rollout import (apply_decision, manual_decision, pick_candidate, publish_report, run_check,
                           set_traffic, start_canary)
from tasks.runtime import backend_for, install_log_filter, settings_for

LABEL_NEXT = "retrainer.canary.next_check_at"
LABEL_KEY = "retrainer.canary.pause_key"
FLOW_NAME = "canary"
TICK_DEPLOYMENT = "canary-tick/canary-tick"
MIN_GRACE_S = 3600.0


class CanaryInput(RunInput):
    """What resumes a waiting canary: the scheduled tick sends "continue"; a human may send
    "promote" or "rollback" (with a reason) at any check."""
    action: Literal["continue", "promote", "rollback"] = "continue"
    reason: str = "scheduled check"
    actor: str = "canary-tick"


def plan_from(plan: dict[str, Any] | None, settings) -> dict[str, Any]:
    from retrainer.canary import RolloutPlan, Stage

    if plan is None:
        return RolloutPlan.default(settings).to_dict()
    stages = plan.get("stages") if isinstance(plan, dict) else None
    if not stages:
        from retrainer.errors import ConfigError

        raise ConfigError('plan must be {"stages": [{"traffic", "duration_s", "check_interval_s"}, ...]}')
    try:  # validate through the domain type
        RolloutPlan(tuple(Stage(float(s["traffic"]), timedelta(seconds=float(s["duration_s"])),
                                timedelta(seconds=float(s["check_interval_s"]))) for s in stages))
    except (KeyError, TypeError, ValueError) as exc:
        from retrainer.errors import ConfigError

        raise ConfigError(f"bad rollout plan: {exc}") from None
    out = {"stages": [dict(s) for s in stages]}
    if plan.get("resume_grace_s") is not None:  # how long past a due check the run may wait
        out["resume_grace_s"] = float(plan["resume_grace_s"])
    return out


# ---------------------------------------------------------------------------------------------
# Notifications

def _notify(text: str, subject: str) -> None:
    import logging

    block = os.environ.get("RETRAINER_NOTIFY_BLOCK")
    if block:
        try:
            from prefect.blocks.core import Block

            Block.load(block).notify(body=text, subject=subject)
            return
        except Exception as exc:  # a broken notifier must not hide the decision
            logging.getLogger("retrainer.notify").error("notification block %s failed: %s", block, exc)
    logging.getLogger("retrainer.notify").warning("%s: %s", subject, text)


def _on_completion(flow, flow_run, state) -> None:
    try:
        result = state.result(raise_on_failure=False)
    except Exception:
        result = None
    if isinstance(result, dict) and "action" in result:
        text = (f"canary {result.get('candidate')}: {result['action'].upper()} by {result.get('actor')}: "
                f"{result.get('reason')}")
    else:
        text = f"flow run {flow_run.name} completed"
    _notify(text, f"retrainer {flow.name}")


def _on_failure(flow, flow_run, state) -> None:
    _notify(f"flow run {flow_run.name} FAILED: {state.message}. A canary left running can be "
            "stopped with `retrainer canary rollback --reason ...`", f"retrainer {flow.name} failed")


# ---------------------------------------------------------------------------------------------
# Waiting

def _in_deployment() -> bool:
    from prefect.runtime import deployment

    return bool(deployment.id)


def wait_for_check(index: int, due: datetime, grace_s: float | None = None) -> CanaryInput:
    """Wait until `due` (or a human's input). Suspends in a deployment run, pauses in process
    otherwise. Returns the input the run was resumed with."""
    from prefect.flow_runs import pause_flow_run, suspend_flow_run
    from prefect.runtime import flow_run

    key = f"check-{index}"
    wait = max(0.0, (due - datetime.now(timezone.utc)).total_seconds())
    timeout = int(wait + max(wait, grace_s if grace_s is not None else MIN_GRACE_S)) + 1
    run_id = flow_run.id
    if _in_deployment():
        _label(run_id, {LABEL_NEXT: due.isoformat(), LABEL_KEY: key})
        _schedule_tick(run_id, key, due)
        return suspend_flow_run(wait_for_input=CanaryInput, timeout=timeout, key=key)
    stop = threading.Event()
    ctx = contextvars.copy_context()
    resumer = threading.Thread(target=ctx.run, args=(_resume_when_due, run_id, key, due, stop),
                               name=f"canary-resumer-{index}", daemon=True)
    resumer.start()
    try:
        return pause_flow_run(wait_for_input=CanaryInput, timeout=timeout,
                              poll_interval=max(1, min(10, int(wait / 4) or 1)), key=key)
    finally:
        stop.set()


def _label(run_id, labels: dict[str, str]) -> None:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        client.update_flow_run_labels(run_id, labels)


def _schedule_tick(run_id, key: str, due: datetime) -> None:
    """Schedule one run of the tick deployment at `due` (idempotent per wait: same idempotency
    key on a re-run). The deployment's own interval schedule is the safety net; this makes the
    wake-up independent of the server's scheduler service and of the tick interval."""
    from prefect.client.orchestration import get_client
    from prefect.states import Scheduled

    name = os.environ.get("RETRAINER_CANARY_TICK_DEPLOYMENT", TICK_DEPLOYMENT)
    try:
        with get_client(sync_client=True) as client:
            dep = client.read_deployment_by_name(name)
            client.create_flow_run_from_deployment(
                dep.id, parameters={"max_wait_s": 60.0}, state=Scheduled(scheduled_time=due),
                idempotency_key=f"canary-tick-{run_id}-{key}")
    except Exception as exc:  # no tick deployment: the schedule, a human or the CLI resumes
        get_run_logger().warning("could not schedule the %s wake-up (%s: %s); relying on its schedule",
                                 name, type(exc).__name__, exc)


def _paused_key(client, run_id) -> str | None:
    fr = client.read_flow_run(run_id)
    if fr.state is None or not fr.state.is_paused():
        return None
    return fr.state.state_details.pause_key


def _resume_when_due(run_id, key: str, due: datetime, stop: threading.Event) -> None:
    """The in-process stand-in for the tick: at `due`, resume the run if it still waits on `key`."""
    from prefect.client.orchestration import get_client
    from prefect.flow_runs import resume_flow_run

    delay = (due - datetime.now(timezone.utc)).total_seconds()
    if delay > 0 and stop.wait(delay):
        return
    deadline = time.monotonic() + 120
    while not stop.is_set() and time.monotonic() < deadline:
        try:
            with get_client(sync_client=True) as client:
                if _paused_key(client, run_id) == key:
                    resume_flow_run(run_id, run_input={"action": "continue", "reason": "scheduled check",
                                                       "actor": "canary-timer"})
                    return
        except Exception:
            pass
        stop.wait(0.3)


# ---------------------------------------------------------------------------------------------
# The flow

@flow(name=FLOW_NAME, log_prints=True, persist_result=True, on_completion=[_on_completion],
      on_failure=[_on_failure])
def canary(candidate: str | None = None, plan: dict[str, Any] | None = None, actor: str = "retrainer",
           home: str | None = None) -> dict[str, Any]:
    install_log_filter()
    logger = get_run_logger()
    settings = settings_for(home)
    backend = backend_for(settings)
    plan = plan_from(plan, settings)

    version = pick_candidate(backend, candidate)
    started = start_canary(backend, version, plan, actor)
    print(f"canary {version} vs production {started['production']} at {started['traffic']:.0%} traffic; "
          f"plan {plan}")

    decisions: list[dict[str, Any]] = []
    extended = False
    traffic = started["traffic"]
    index = 0
    while True:
        d = run_check(backend, settings, plan, started["started_at"], extended, index, version,
                      started["progress_artifact"])
        decisions.append(d)
        logger.info("check %d: %s - %s", index, d["action"], d["reason"])
        if d["action"] in ("promote", "rollback"):
            break
        if d["action"] == "extend":
            extended = True
        if d.get("traffic") is not None and d["action"] == "continue" and abs(d["traffic"] - traffic) > 1e-9:
            set_traffic(backend, version, d["traffic"], index)
            traffic = d["traffic"]
        answer = wait_for_check(index, datetime.fromisoformat(d["next_check_at"]),
                                plan.get("resume_grace_s"))
        if answer.action != "continue":
            decisions.append(manual_decision(answer.action, answer.actor, answer.reason, started["started_at"],
                                             plan, index))
            break
        index += 1

    final = decisions[-1]
    applied = apply_decision(backend, version, final)
    publish_report(version, decisions, applied)
    print(f"canary {version}: {final['action'].upper()} ({final['actor']}): {final['reason']}")
    return {"candidate": version, "production_before": started["production"], "action": final["action"],
            "actor": final["actor"], "manual": final.get("manual", False), "reason": final["reason"],
            "auc_diff": final.get("auc_diff"), "ci": final.get("ci"), "checks": len(decisions),
            "extended": extended, "decisions": [{k: x.get(k) for k in ("index", "action", "reason", "elapsed_s")}
                                               for x in decisions],
            "endpoint": applied.get("endpoint")}


# ---------------------------------------------------------------------------------------------
# The tick: resumes suspended canaries whose check is due (deployment "canary-tick")

def _waiting_runs(client) -> list:
    from prefect.client.schemas.filters import (FlowFilter, FlowFilterName, FlowRunFilter, FlowRunFilterState,
                                                FlowRunFilterStateType)
    from prefect.client.schemas.objects import StateType

    return client.read_flow_runs(
        flow_filter=FlowFilter(name=FlowFilterName(any_=[FLOW_NAME])),
        flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))),
        limit=200)


@flow(name="canary-tick", log_prints=True)
def tick(max_wait_s: float = 60.0) -> list[str]:
    """Resume every suspended canary whose next check is due (labels written by the canary). A
    check due within `max_wait_s` is waited for (a worker may start a scheduled run early)."""
    from prefect.client.orchestration import get_client
    from prefect.flow_runs import resume_flow_run

    resumed: list[str] = []
    until = time.monotonic() + max_wait_s
    while True:
        now = datetime.now(timezone.utc)
        soonest = None
        with get_client(sync_client=True) as client:
            runs = _waiting_runs(client)
        for fr in runs:
            labels = fr.labels or {}
            due, key = labels.get(LABEL_NEXT), labels.get(LABEL_KEY)
            if not due or key != fr.state.state_details.pause_key:
                continue
            due = datetime.fromisoformat(str(due))
            if due > now:
                soonest = due if soonest is None else min(soonest, due)
                continue
            try:
                resume_flow_run(fr.id, run_input={"action": "continue", "reason": "scheduled check",
                                                  "actor": "canary-tick"})
                resumed.append(str(fr.id))
                print(f"resumed {fr.name} ({key}, due {due.isoformat()})")
            except Exception as exc:  # resumed by someone else meanwhile
                print(f"could not resume {fr.name}: {type(exc).__name__}: {exc}")
        if soonest is None:
            break
        delay = (soonest - datetime.now(timezone.utc)).total_seconds()
        if time.monotonic() + delay > until:
            break
        time.sleep(max(0.0, delay) + 0.05)
    print(f"resumed {len(resumed)} canary run(s)")
    return resumed


# ---------------------------------------------------------------------------------------------
# For the CLI (`retrainer canary status|promote|rollback`)

def waiting_canaries(home: str | None = None) -> list[dict[str, Any]]:
    from prefect.client.orchestration import get_client

    out = []
    with get_client(sync_client=True) as client:
        for fr in _waiting_runs(client):
            if home is not None and str((fr.parameters or {}).get("home")) != str(home):
                continue
            out.append({"flow_run_id": str(fr.id), "name": fr.name, "state": fr.state.name,
                        "next_check_at": (fr.labels or {}).get(LABEL_NEXT),
                        "pause_key": fr.state.state_details.pause_key})
    return out


def status(home: str | None = None) -> dict[str, Any]:
    """Registry, routing and live per-variant stats of the canary, plus the waiting Prefect runs."""
    from retrainer import rollout

    settings = settings_for(home)
    backend = backend_for(settings)
    out = rollout.status(backend.registry, backend.endpoint, backend.predictions)
    try:
        out["runs"] = waiting_canaries(home)
    except Exception as exc:
        out["runs"] = f"Prefect API unavailable: {type(exc).__name__}"
    return out


def act(action: str, reason: str, actor: str, home: str | None = None, flow_run_id: str | None = None,
        wait_s: float = 30.0) -> dict[str, Any]:
    """A human's promote/rollback/continue for the waiting canary: resumes its run with the
    decision as input (the run applies and records it). With no canary run waiting, a rollback
    is applied directly (so a canary whose run failed can still be stopped); promote refuses."""
    from prefect.flow_runs import resume_flow_run

    from retrainer import rollout
    from retrainer.errors import RolloutError

    if action not in ("promote", "rollback", "continue"):
        raise RolloutError(f"unknown action {action!r} (promote, rollback or continue)")
    if not reason or not reason.strip():
        raise RolloutError("a reason is required (--reason)")
    deadline = time.monotonic() + wait_s
    while True:
        runs = waiting_canaries(home)
        if flow_run_id:
            runs = [r for r in runs if r["flow_run_id"] == flow_run_id]
        if len(runs) > 1:
            raise RolloutError("several canary runs are waiting: pass the flow run id ("
                               + ", ".join(r["flow_run_id"] for r in runs) + ")")
        if runs:
            run = runs[0]
            try:
                resume_flow_run(run["flow_run_id"], run_input={"action": action, "reason": reason, "actor": actor})
                return {"applied": "flow", "flow_run_id": run["flow_run_id"], "action": action}
            except Exception:  # it was resumed (checking) in between: try again
                pass
        if not _canary_running(home) or time.monotonic() > deadline:
            break
        time.sleep(0.5)  # a check is running: its run waits again in a moment
    if action != "rollback":
        raise RolloutError(f"no canary run is waiting for a decision; cannot {action}")
    settings = settings_for(home)
    backend = backend_for(settings)
    canaries = [r.version for r in backend.registry.list() if r.status == "canary"]
    if not canaries:
        raise RolloutError("no version is on canary")
    res = rollout.reject_canary(backend.registry, backend.endpoint, canaries[-1], actor=actor,
                                reason=f"canary: manual rollback by {actor}: {reason}")
    return {"applied": "direct", **res}


def _canary_running(home: str | None) -> bool:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (FlowFilter, FlowFilterName, FlowRunFilter, FlowRunFilterState,
                                                FlowRunFilterStateType)
    from prefect.client.schemas.objects import StateType

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[FLOW_NAME])),
            flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(
                any_=[StateType.RUNNING, StateType.PENDING, StateType.SCHEDULED]))), limit=50)
    return any(home is None or str((r.parameters or {}).get("home")) == str(home) for r in runs)


if __name__ == "__main__":
    canary()
