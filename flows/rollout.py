"""The automatic rollout of a registered version: the `rollout-on-registered` deployment's
automation (prefect.yaml `triggers:`) runs it for every `retrainer.model.registered` event of a
candidate (the retrain flow emits it after registration).

    read the version -> choose its rollout (selection: plan by trigger, approval by the gate)
    not a candidate?               -> done, with the reason
    another version on canary?     -> done, with the reason (one rollout at a time)
    the gate asked for a human?    -> journal waiting-approval, notice, wait Suspended on the form
                                      (no process); an approver's no rejects the version
    start the canary deployment run with the plan (and approved_by), not waited for

No person and no demo code in the chain: drift event -> retrain -> registered -> this -> canary.
"""
from __future__ import annotations

from typing import Any

from prefect import flow

from retrainer import triggers
from tasks.registered import (
    ask_for_approval,
    busy_with,
    choose_rollout,
    read_version,
    record_refusal,
    start_canary_run,
    wait_for_approval,
)
from tasks.runtime import backend_for, install_log_filter, settings_for


@flow(name="rollout-on-registered", log_prints=True, persist_result=True)
def rollout_on_registered(version: str, status: str | None = None, trigger: str | None = None,
                          event_id: str | None = None, home: str | None = None,
                          model: str | None = None) -> dict[str, Any]:
    """`version` (and, from the event, its `status` and `trigger` at registration, `event_id`);
    the registry's record decides, not the event."""
    install_log_filter()
    settings = settings_for(home, model)
    backend = backend_for(settings)
    out: dict[str, Any] = {"version": version, "event_id": event_id, "trigger": trigger}

    record = read_version(backend, version)
    selection = choose_rollout(record, settings)
    out.update(plan=selection.plan, plan_source=selection.plan_source, emergency=selection.emergency,
               needs_approval=selection.needs_approval)
    if selection.action == "skip":
        print(selection.reason)
        return {**out, "outcome": "skipped", "reason": selection.reason}
    busy = busy_with(backend, version)
    if busy:
        print(busy)
        return {**out, "outcome": "busy", "reason": busy}

    approved_by = None
    if selection.needs_approval:
        ask_for_approval(record, selection, settings)
        answer = wait_for_approval(version, settings.rollout.approval_timeout_s)
        decision = triggers.approval_decision(answer.approver, answer.approve, answer.reason, settings.approvers)
        print(decision.reason)
        if not decision.approved:
            said_no = answer.approver.strip() in settings.approvers and not answer.approve
            record_refusal(backend, settings, version, answer.approver, said_no, decision.reason)
            return {**out, "outcome": "not-approved", "reason": decision.reason, "approver": answer.approver}
        approved_by = answer.approver.strip()

    run = start_canary_run(record, selection, settings, approved_by, home)
    print(f"{selection.reason}; canary run {run['flow_run_name']} ({run['flow_run_id']})"
          + (f", approved by {approved_by}" if approved_by else ""))
    return {**out, "outcome": "started", "reason": selection.reason, "approved_by": approved_by,
            "canary_run": run}
