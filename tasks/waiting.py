"""How a rollout waits between checks without holding a worker, and how it is woken.

In a deployment run the flow *suspends* (`suspend_flow_run`: the process exits and the worker slot
is free). In a plain local run, where Prefect cannot suspend, the same code *pauses*
(`pause_flow_run` blocks in process) and a timer thread resumes it when the check is due. Either
way the run waits for a `CanaryInput`, so a human can act at any check from the Prefect UI (the
resume form) or the CLI (`retrainer canary promote|rollback`).

Who resumes a suspended run: the `canary-tick` deployment (`flows/canary.py: tick`). Before
suspending, the run writes its next check time into its labels (`LABEL_NEXT`, `LABEL_KEY`) and
creates ONE scheduled run of canary-tick at that time (idempotency key per run and check, so a
re-run does not add another). The tick's own interval schedule in prefect.yaml is a safety net.
The suspend timeout is the wait plus max(wait, grace), so the tick always comes first: a timeout
FAILS the run, it never means "carry on".

Time comes from `retrainer.clock`: with a `ManualClock` installed (tests, the demo) a 6-hour wait
ends when the clock is advanced past it, not six hours later.
"""
from __future__ import annotations

import contextvars
import os
import threading
import time
from datetime import datetime
from typing import Literal

import httpx
from prefect import get_run_logger
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.exceptions import FlowPauseTimeout, NotPausedError, ObjectNotFound
from prefect.flow_runs import pause_flow_run, resume_flow_run, suspend_flow_run
from prefect.input import RunInput
from prefect.runtime import deployment, flow_run
from prefect.states import Scheduled

from retrainer import clock

LABEL_NEXT = "retrainer.canary.next_check_at"
LABEL_KEY = "retrainer.canary.pause_key"
CANARY_FLOW = "canary"
TICK_DEPLOYMENT = "canary-tick/canary-tick"
MIN_GRACE_S = 3600.0
# What `resume` raises when the run is not waiting (any more): it was resumed meanwhile, or timed out.
RESUME_REFUSED = (NotPausedError, FlowPauseTimeout, RuntimeError)


class CanaryInput(RunInput):
    """What resumes a waiting canary: the scheduled tick sends "continue"; a human may send
    "promote" or "rollback" (with a reason) at any check."""
    action: Literal["continue", "promote", "rollback"] = "continue"
    reason: str = "scheduled check"
    actor: str = "canary-tick"


def in_deployment() -> bool:
    """True in a deployment run (which can suspend), False in a plain local run."""
    return bool(deployment.id)


def wait_for_check(index: int, due: datetime, grace_s: float | None = None) -> CanaryInput:
    """Wait until `due` (or a human's input) before check `index + 1`.

    Args: `index` the check just made, `due` when the next one is due, `grace_s` how long past
    `due` the run may stay waiting (default an hour, or the wait itself if longer).
    Returns the input the run was resumed with.
    """
    key = f"check-{index}"
    wait = max(0.0, (due - clock.utcnow()).total_seconds())
    timeout = int(wait + max(wait, grace_s if grace_s is not None else MIN_GRACE_S)) + 1
    run_id = flow_run.id
    if in_deployment():
        label_run(run_id, {LABEL_NEXT: due.isoformat(), LABEL_KEY: key})
        schedule_tick(run_id, key, due)
        return suspend_flow_run(wait_for_input=CanaryInput, timeout=timeout, key=key)
    stop = threading.Event()
    ctx = contextvars.copy_context()
    resumer = threading.Thread(target=ctx.run, args=(_resume_when_due, run_id, key, due, stop),
                               name=f"canary-resumer-{index}", daemon=True)
    resumer.start()
    try:
        # On the system clock, poll a quarter of the wait (1-10 s); on a clock that a test or the
        # demo moves, the wait is not real time, so notice the resume within a second.
        poll = max(1, min(10, int(wait / 4) or 1)) if isinstance(clock.current(), clock.SystemClock) else 1
        return pause_flow_run(wait_for_input=CanaryInput, timeout=timeout, poll_interval=poll, key=key)
    finally:
        stop.set()


def label_run(run_id, labels: dict[str, str]) -> None:
    """Write `labels` onto flow run `run_id`."""
    with get_client(sync_client=True) as client:
        client.update_flow_run_labels(run_id, labels)


def schedule_tick(run_id, key: str, due: datetime) -> None:
    """Schedule one run of the tick deployment at `due` (idempotent per wait: same idempotency
    key on a re-run). This makes the wake-up independent of the server's scheduler service and of
    the tick's interval; with no tick deployment the schedule, a human or the CLI resumes."""
    name = os.environ.get("RETRAINER_CANARY_TICK_DEPLOYMENT", TICK_DEPLOYMENT)
    try:
        with get_client(sync_client=True) as client:
            dep = client.read_deployment_by_name(name)
            client.create_flow_run_from_deployment(
                dep.id, parameters={"max_wait_s": 60.0}, state=Scheduled(scheduled_time=due),
                idempotency_key=f"canary-tick-{run_id}-{key}")
    except ObjectNotFound:
        get_run_logger().warning("no %s deployment to schedule the wake-up with; relying on its schedule", name)


def paused_key(client, run_id) -> str | None:
    """The pause key flow run `run_id` waits on, or None when it is not paused."""
    fr = client.read_flow_run(run_id)
    if fr.state is None or not fr.state.is_paused():
        return None
    return fr.state.state_details.pause_key


def resume(run_id, action: str = "continue", reason: str = "scheduled check", actor: str = "canary-tick") -> None:
    """Resume a waiting canary run with `CanaryInput(action, reason, actor)`."""
    resume_flow_run(run_id, run_input={"action": action, "reason": reason, "actor": actor})


def _resume_when_due(run_id, key: str, due: datetime, stop: threading.Event) -> None:
    """The in-process stand-in for the tick: at `due`, resume the run if it still waits on `key`."""
    if not clock.current().wait_until(due, stop):
        return
    deadline = time.monotonic() + 120
    while not stop.is_set() and time.monotonic() < deadline:
        try:
            with get_client(sync_client=True) as client:
                if paused_key(client, run_id) == key:
                    resume(run_id, actor="canary-timer")
                    return
        except (*RESUME_REFUSED, httpx.HTTPError):  # not paused yet, or the API hiccupped: look again
            pass
        stop.wait(0.3)


def waiting_runs(client) -> list:
    """Canary flow runs that are paused or suspended, waiting for a check or a decision."""
    return client.read_flow_runs(
        flow_filter=FlowFilter(name=FlowFilterName(any_=[CANARY_FLOW])),
        flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))),
        limit=200)


def canary_running(home: str | None) -> bool:
    """True when a canary run for state directory `home` (any, if None) is running, pending or
    scheduled: it will be waiting for input again in a moment."""
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[CANARY_FLOW])),
            flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(
                any_=[StateType.RUNNING, StateType.PENDING, StateType.SCHEDULED]))), limit=50)
    return any(home is None or str((r.parameters or {}).get("home")) == str(home) for r in runs)


def resume_due(max_wait_s: float, log=print) -> list[str]:
    """Resume every waiting canary whose next check is due (labels written by `wait_for_check`).
    A check due within `max_wait_s` is waited for (a worker may start a scheduled run early).
    Returns the ids of the runs resumed."""
    resumed: list[str] = []
    until = time.monotonic() + max_wait_s
    while True:
        now = clock.utcnow()
        soonest = None
        with get_client(sync_client=True) as client:
            runs = waiting_runs(client)
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
                resume(fr.id)
                resumed.append(str(fr.id))
                log(f"resumed {fr.name} ({key}, due {due.isoformat()})")
            except RESUME_REFUSED as exc:  # resumed by someone else meanwhile
                log(f"could not resume {fr.name}: {exc}")
        if soonest is None:
            break
        delay = (soonest - clock.utcnow()).total_seconds()
        if time.monotonic() + delay > until:
            break
        time.sleep(max(0.0, delay) + 0.05)
    return resumed
