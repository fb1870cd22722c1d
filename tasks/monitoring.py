"""Tasks of the monitor flow (triggers). Each is a thin wrapper over retrainer.triggers; the
Prefect specifics (artifacts, events) live here."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event

from retrainer.backends import Backend
from retrainer.settings import Settings
from retrainer.triggers.config import TriggersConfig, load_triggers, resource_id
from retrainer.triggers.evaluate import TriggerEvaluation
from retrainer.triggers.inputs import MonitorInputs, collect_inputs, evaluate_all
from retrainer.triggers.policy import emit_decision
from retrainer.triggers.state import last_emitted, load_state, save_state

from .runtime import artifact_key

opts = dict(cache_policy=NO_CACHE, persist_result=False)


@task(name="load-triggers", **opts)
def load_trigger_config(settings: Settings) -> TriggersConfig:
    """The validated triggers.yaml of `settings`."""
    return load_triggers(settings.triggers_file)


@task(name="read-monitoring-window", **opts)
def gather_inputs(config: TriggersConfig, backend: Backend, settings: Settings, now: datetime) -> MonitorInputs:
    """Recent de-identified predictions of production, PSI against its stored reference profile,
    labelled AUC windows and new-label counts."""
    return collect_inputs(config, backend.registry, backend.predictions, settings, now)


@task(name="evaluate-triggers", **opts)
def evaluate_triggers(config: TriggersConfig, inputs: MonitorInputs) -> list[TriggerEvaluation]:
    """Every configured trigger's evaluation on `inputs`, in file order."""
    return evaluate_all(config, inputs)


@task(name="publish-evaluations", **opts)
def publish_evaluations(evaluations: list[TriggerEvaluation], inputs: MonitorInputs,
                        chosen: TriggerEvaluation | None) -> None:
    """One table artifact per trigger (its numbers and noise floor), the drift table, a summary."""
    for e in evaluations:
        create_table_artifact(table=e.table(), key=artifact_key("trigger", e.name),
                              description=f"{e.name} ({e.type}, priority {e.priority}): "
                                          f"{'FIRED' if e.fired else 'not fired'} - {e.reason}")
    if inputs.drift_report is not None:
        create_markdown_artifact(markdown=inputs.drift_report.to_markdown(k=15), key="monitor-drift",
                                 description=f"PSI of the window vs {inputs.production_version}'s reference profile")
    lines = [f"# Monitor {inputs.now:%Y-%m-%d %H:%M} UTC", "",
             f"- production: {inputs.production_version or '-'}",
             f"- reported trigger: **{chosen.name if chosen else 'none'}**", "",
             "| trigger | type | priority | fired | noise floor | reason |", "|---|---|---:|---|---:|---|"]
    for e in evaluations:
        nf = "-" if e.noise_floor is None else f"{e.noise_floor:.4f}"
        lines.append(f"| {e.name} | {e.type} | {e.priority} | {'**yes**' if e.fired else 'no'} | {nf} | "
                     f"{e.reason.replace('|', '/')} |")
    create_markdown_artifact(markdown="\n".join(lines), key="monitor-summary", description="all triggers")


@task(name="emit-trigger-event", **opts)
def emit_chosen(chosen: TriggerEvaluation | None, evaluations: list[TriggerEvaluation], settings: Settings,
                config: TriggersConfig, now: datetime, emit: bool = True) -> dict[str, Any]:
    """Emit the reported trigger's event (resource retrainer.model.<model_name>) unless it was
    emitted within the cooldown; remember when in settings.home/monitor/state.json."""
    state = load_state(settings.home)
    last = last_emitted(state, chosen.name) if chosen else None
    decision = emit_decision(chosen, last, now, config.policy.event_cooldown)
    out: dict[str, Any] = {"emitted": False, "event": None, "reason": decision.reason}
    if decision.emit and emit:
        payload = {**chosen.payload, "model_name": settings.model_name,
                   "also_fired": [e.name for e in evaluations if e.fired and e is not chosen]}
        event = emit_event(event=chosen.event,
                           resource={"prefect.resource.id": resource_id(settings.model_name),
                                     "prefect.resource.name": settings.model_name},
                           payload=payload)
        out.update(emitted=True, event=chosen.event, event_id=str(event.id) if event else None, payload=payload)
        state.setdefault("last_emitted", {})[chosen.name] = now.isoformat()
    state.setdefault("runs", []).append({"at": now.isoformat(), "fired": [e.name for e in evaluations if e.fired],
                                         "reported": chosen.name if chosen else None,
                                         "emitted": out["event"], "reason": decision.reason})
    save_state(settings.home, state)
    return out
