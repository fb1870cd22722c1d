"""The approval step of a manual retrain. Plain functions, not tasks: a flow can only pause or
suspend itself outside a task."""
from __future__ import annotations

from prefect.artifacts import create_markdown_artifact
from prefect.context import FlowRunContext
from prefect.flow_runs import pause_flow_run, suspend_flow_run

from retrainer import clock, triggers
from retrainer.settings import Settings


def approvers(settings: Settings) -> list[str]:
    """settings.approvers, narrowed by the manual trigger's own list in triggers.yaml if it has one."""
    manual = next(iter(triggers.load_triggers(settings.triggers_file).by_type("manual")), None)
    return triggers.effective_approvers(settings.approvers, manual)


def request_approval(input_cls, settings: Settings, requested_by: str, reason: str, timeout_s: int,
                     allowed: list[str]):
    """Show the request and wait for the approval form. A deployment run is suspended (the process
    exits; Prefect re-runs the flow from the top on resume and this call then returns the input);
    a local run pauses in process."""
    create_markdown_artifact(
        key="retrain-approval-request", description=f"manual retrain requested by {requested_by}",
        markdown=f"# Manual retrain of {settings.model_name}\n\n- requested by: **{requested_by}**\n"
                 f"- reason: {reason or '-'}\n- training data: `{settings.training_data}`\n"
                 f"- approvers: {', '.join(allowed) or 'none configured'}\n\n"
                 "Resume this run with the form: approver, approve (true/false), reason.")
    ctx = FlowRunContext.get()
    if ctx and ctx.flow_run and ctx.flow_run.deployment_id:
        return suspend_flow_run(wait_for_input=input_cls, key="manual-approval", timeout=timeout_s)
    return pause_flow_run(wait_for_input=input_cls, key="manual-approval", timeout=timeout_s, poll_interval=2)


def publish_approval(approval, requested_by: str, allowed: list[str]) -> triggers.ApprovalDecision:
    decision = triggers.approval_decision(approval.approver, approval.approve, approval.reason, allowed)
    create_markdown_artifact(
        key="retrain-approval", description=decision.reason,
        markdown=f"# Manual retrain: {'approved' if decision.approved else 'rejected'}\n\n"
                 f"- requested by: {requested_by}\n- answered by: {approval.approver}\n"
                 f"- decision: {decision.reason}\n- at: {clock.utcnow().isoformat()}")
    return decision
