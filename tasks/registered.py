"""Tasks of the rollout-on-registered flow (flows/rollout.py): read the version, choose its rollout
(`retrainer.rollout.selection`), wait for an approver when the gate asked for one, and start the
canary deployment run. Steps with a side effect run once per flow run (a suspended run re-runs
from the top when it is resumed)."""
from __future__ import annotations

from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound
from prefect.flow_runs import pause_flow_run, suspend_flow_run
from prefect.input import RunInput
from prefect.runtime import flow_run

from retrainer import clock
from retrainer.backends import Backend
from retrainer.errors import RolloutError
from retrainer.registry import ModelRecord
from retrainer.registry.model import Status
from retrainer.rollout.journal import RolloutJournal
from retrainer.rollout.selection import Selection, choose
from retrainer.settings import Settings

from .notify import notify
from .runtime import IN_PROCESS, ONCE_PER_RUN, per_run
from .waiting import in_deployment

ACTOR = "rollout-on-registered"


class RolloutApproval(RunInput):
    """The form a rollout waiting for a person shows (same fields as `retrainer approve RUN_ID`)."""
    approver: str
    approve: bool
    reason: str = ""


@task(name="read-version", **IN_PROCESS)
def read_version(backend: Backend, version: str) -> ModelRecord:
    return backend.registry.get(version)


@task(name="choose-rollout", **IN_PROCESS)
def choose_rollout(record: ModelRecord, settings: Settings) -> Selection:
    return choose(record, settings)


@task(name="rollout-busy", **IN_PROCESS)
def busy_with(backend: Backend, version: str) -> str | None:
    """Why `version` cannot start now (another version is on canary), or None."""
    other = [r.version for r in backend.registry.list() if r.status == Status.CANARY and r.version != version]
    if other:
        return (f"{other[-1]} is on canary: one rollout at a time; start {version} after it ends with "
                f"`retrainer canary start --candidate {version}`")
    return None


def _strategy(sel: Selection) -> str:
    return str((sel.plan or {}).get("strategy") or "canary")


def _first_traffic(sel: Selection, settings: Settings) -> float:
    stages = (sel.plan or {}).get("stages") or []
    return float(stages[0].get("traffic", settings.canary.traffic)) if stages else settings.canary.traffic


@task(name="ask-for-approval", cache_key_fn=per_run("ask-approval"), **ONCE_PER_RUN)
def ask_for_approval(record: ModelRecord, sel: Selection, settings: Settings) -> dict[str, Any]:
    """Journal status waiting-approval, a `rollout.needs_approval` notice and an artifact, once."""
    run_id = str(flow_run.id) if flow_run.id else None
    prod = ((record.metrics or {}).get("production") or {}).get("version")
    RolloutJournal(settings.home).start(record.version, prod, _strategy(sel), sel.plan or {}, clock.utcnow(),
                                        traffic=0.0, status="waiting-approval", flow_run_id=run_id)
    command = f"retrainer approve {run_id} --approver NAME [--reject] --reason WHY" if run_id else None
    gate = record.gate or {}
    sent = notify("rollout.needs_approval", settings, version=record.version, reason=gate.get("reason") or sel.reason,
                  approvers=", ".join(settings.approvers), command=command, evidence=gate.get("evidence"))
    create_markdown_artifact(
        key=f"rollout-approval-{record.version.replace('.', '-')}", description=f"{record.version} waits for approval",
        markdown=f"# Rollout of {record.version} waits for an approver\n\n- gate: {gate.get('reason', '-')}\n"
                 f"- plan: {sel.plan_source}\n- approvers: {', '.join(settings.approvers) or 'none'}\n\n"
                 "Resume this run with the form (approver, approve, reason) or `" + (command or "") + "`.")
    return {"notice": sent.get("subject"), "command": command}


def wait_for_approval(version: str, timeout_s: int) -> RolloutApproval:
    """Suspend (deployment run: no process, no worker slot) or pause (local run) until the form is
    answered. A plain function: a flow can only suspend itself outside a task."""
    key = "rollout-approval-" + version.replace(".", "-")  # run input keys: letters, digits, dashes
    if in_deployment():
        return suspend_flow_run(wait_for_input=RolloutApproval, key=key, timeout=timeout_s)
    return pause_flow_run(wait_for_input=RolloutApproval, key=key, timeout=timeout_s, poll_interval=2)


@task(name="record-refusal", cache_key_fn=per_run("refusal"), **ONCE_PER_RUN)
def record_refusal(backend: Backend, settings: Settings, version: str, approver: str, said_no: bool,
                   reason: str) -> dict[str, Any]:
    """An approver's no: registry status rejected (actor the approver); any other refusal (not an
    approver) leaves the registry alone. The journal record ends either way."""
    if said_no and backend.registry.get(version).status == Status.CANDIDATE:
        backend.registry.set_status(version, Status.REJECTED, actor=approver, reason=f"rollout not approved: {reason}")
    journal = RolloutJournal(settings.home)
    if journal.get(version) is not None:
        journal.update(version, "not-approved", status="rolled_back", decision="not-approved", reason=reason,
                       decided_at=clock.utcnow().isoformat())
    return {"registry": "rejected" if said_no else "unchanged"}


@task(name="start-canary-run", cache_key_fn=per_run("start-canary-run"), **ONCE_PER_RUN)
def start_canary_run(record: ModelRecord, sel: Selection, settings: Settings, approved_by: str | None,
                     home: str | None) -> dict[str, Any]:
    """Journal status running, then ONE run of the canary deployment for this version (idempotency
    key per model, version and registration time), not waited for."""
    name = settings.rollout.canary_deployment
    params: dict[str, Any] = {"candidate": record.version, "actor": ACTOR}
    if sel.plan is not None:
        params["plan"] = sel.plan
    if approved_by:
        params["approved_by"] = approved_by
    if home:
        params["home"] = home
    params["model"] = settings.model_name
    journal = RolloutJournal(settings.home)
    prod = ((record.metrics or {}).get("production") or {}).get("version")
    journal.start(record.version, prod, _strategy(sel), sel.plan or {}, clock.utcnow(),
                  traffic=_first_traffic(sel, settings), status="running")
    try:
        with get_client(sync_client=True) as client:
            dep = client.read_deployment_by_name(name)
            run = client.create_flow_run_from_deployment(
                dep.id, parameters=params, tags=["retrainer-rollout"],
                idempotency_key=f"rollout-{settings.model_name}-{record.version}-{record.created_at}")
    except ObjectNotFound:
        journal.update(record.version, "failed", status="failed", reason=f"no {name} deployment")
        raise RolloutError(f"no {name} deployment to roll {record.version} out with (prefect deploy --name canary)")
    journal.update(record.version, "canary-run-created", flow_run_id=str(run.id))
    return {"flow_run_id": str(run.id), "flow_run_name": run.name, "deployment": name, "parameters": params}
