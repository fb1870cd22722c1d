"""The retrain lifecycle: data -> Great Expectations -> time split -> (duplicate check) -> train ->
reference profile -> evaluate against production -> semver registry.

One retrain per model at a time: the whole lifecycle holds the `retrain-<model_name>` global
concurrency slot, and a run whose training data and settings were registered after it was created
(or, for automatic triggers, within the debounce window of triggers.yaml) ends as "skipped".

`manual_retrain` waits for an approver first (a form in the Prefect UI).

A summary's `outcome` says how the run ended (`retrainer.lifecycle.Outcome`: registered, skipped,
not-approved); its `status` is the registered version's registry status when there is one, so an
approved run whose model the gate rejected has outcome "registered" and status "rejected".
"""
from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.input import RunInput

from retrainer.errors import ValidationFailed
from retrainer.triggers import Trigger
from tasks.approval import approvers, publish_approval, request_approval
from tasks.lifecycle import (
    build_reference_profile,
    check_duplicate,
    current_run_created_at,
    emit_registered,
    evaluate_models,
    load_data,
    publish_report,
    register_model,
    retrain_slot,
    split_data,
    train_candidate,
    validate_data,
)
from tasks.notify import notify, result_of, settings_of_run
from tasks.runtime import backend_for, install_log_filter, settings_for


def _on_failure(flow, flow_run, state) -> None:
    """retrain.failed (a validation failure was already notified as validation.failed)."""
    if isinstance(result_of(state), ValidationFailed):
        return
    params = getattr(flow_run, "parameters", None) or {}
    notify("retrain.failed", settings_of_run(flow_run), error=state.message or "failed",
           flow_run=flow_run.name, trigger=params.get("trigger"))


@flow(name="retrain", log_prints=True, on_failure=[_on_failure])
def retrain(data: str | None = None, trigger: Trigger = "manual", actor: str = "retrainer",
            context: dict[str, Any] | None = None, home: str | None = None,
            model: str | None = None) -> dict[str, Any]:
    """`data` defaults to settings.training_data (deployments never pass paths); `context` is
    kept in the version's lineage (an automation passes the triggering event's payload). Prefect
    refuses a `trigger` outside `Trigger` before the run starts (the CLI checks it first)."""
    install_log_filter()
    settings = settings_for(home, model)
    backend = backend_for(settings)
    data = data or str(settings.training_data)
    created_at = current_run_created_at()

    with retrain_slot(settings):
        frame, files = load_data(data)
        try:
            validation = validate_data(frame, settings)
        except ValidationFailed as exc:
            failures = exc.result.failure_lines() if exc.result is not None else [str(exc)]
            notify("validation.failed", settings, failures=failures, data=data, rows=len(frame),
                   suite=settings.validation.suite, trigger=trigger)
            raise
        split = split_data(frame, settings)
        duplicate = check_duplicate(backend, split, settings, trigger, created_at)
        if duplicate.duplicate:
            print(f"skipped: {duplicate.reason}")
            return {"version": None, "outcome": "skipped", "status": "skipped", "duplicate_of": duplicate.version,
                    "reason": duplicate.reason, "trigger": trigger}
        model_dir = train_candidate(backend, split, settings)
        build_reference_profile(model_dir, split, settings, trigger)
        metrics = evaluate_models(backend, model_dir, split, settings)
        record = register_model(backend, model_dir, frame, files, split, metrics, validation,
                                trigger, settings, actor, context)
        publish_report(record)
        emit_registered(record, settings)  # retrainer.model.registered: the rollout automation's cue

    prod = metrics.production
    evidence = (record.gate.get("evidence") or {}).get("reason")
    print(f"registered {record.version} as {record.status}: {record.gate['reason']}")
    if evidence:
        print(f"gate evidence: {evidence}")
    if record.status == "rejected":
        notify("model.rejected", settings, version=record.version, reason=record.gate["reason"], evidence=evidence,
               trigger=trigger, policy=settings.gate.policy)
    else:
        notify("model.registered", settings, version=record.version, evidence=evidence or record.gate["reason"],
               trigger=trigger, policy=settings.gate.policy,
               status=f"{record.status}, needs approval" if record.gate.get("needs_approval") else str(record.status),
               production=prod and prod["version"])
    primary = settings.spec.metrics.primary  # auc for readmission, spearman for lead scoring
    return {"version": record.version, "outcome": "registered", "status": record.status, "bump": record.bump,
            "metric": primary, primary: metrics.candidate.get(primary), "production_version": prod and prod["version"],
            f"production_{primary}": prod and prod.get(primary), "gate": record.gate["reason"],
            "needs_approval": bool(record.gate.get("needs_approval")), "evidence": evidence, "trigger": trigger}


class ApprovalInput(RunInput):
    """The form the Prefect UI shows on a paused/suspended manual retrain."""
    approver: str
    approve: bool
    reason: str = ""


@flow(name="retrain-manual", log_prints=True)
def manual_retrain(requested_by: str, reason: str = "", data: str | None = None, home: str | None = None,
                   approval_timeout_s: int = 24 * 3600, model: str | None = None) -> dict[str, Any]:
    """A retrain someone asked for, run only after an approver (settings.approvers) says yes.

    In a deployment run the flow is suspended (no process waits; on resume it re-runs from the top,
    and everything before the approval is side-effect free); in a local run it pauses in process.
    A rejection - or an approval by someone who is not an approver - ends the run Completed with
    outcome "not-approved" (status "rejected", approved False) and leaves the registry untouched;
    an approved run returns the retrain's summary with approved True. No answer within
    approval_timeout_s fails the run (Prefect's pause timeout).
    """
    install_log_filter()
    settings = settings_for(home, model)
    allowed = approvers(settings)
    approval = request_approval(ApprovalInput, settings, requested_by, reason, approval_timeout_s, allowed)
    decision = publish_approval(approval, requested_by, allowed)
    if not decision.approved:
        print(decision.reason)
        return {"version": None, "outcome": "not-approved", "approved": False, "status": "rejected",
                "reason": decision.reason, "requested_by": requested_by, "approver": approval.approver}
    print(decision.reason)
    summary = retrain(data=data, trigger="manual", actor=approval.approver, home=home, model=model, context={
        "requested_by": requested_by, "request_reason": reason, "approved_by": approval.approver,
        "approval_reason": approval.reason})
    return {**summary, "approved": True, "requested_by": requested_by, "approver": approval.approver}
