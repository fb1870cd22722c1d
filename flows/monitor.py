"""Monitoring: every configured retraining trigger evaluated on the recent window of de-identified
predictions, published as artifacts; the highest-priority trigger that fired is emitted as a
Prefect event, which an automation (prefect.yaml `triggers:`) turns into a retrain."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from prefect import flow

from retrainer.clock import utcnow
from retrainer.notify import trigger_fields
from retrainer.report.package import save_drift_report
from retrainer.status import save_monitor_summary
from retrainer.triggers.config import as_utc
from retrainer.triggers.evaluate import choose
from tasks.monitoring import emit_chosen, evaluate_triggers, gather_inputs, load_trigger_config, publish_evaluations
from tasks.notify import notify
from tasks.runtime import backend_for, install_log_filter, settings_for


@flow(name="monitor", log_prints=True)
def monitor(home: str | None = None, now: str | None = None, emit: bool = True,
            model: str | None = None) -> dict[str, Any]:
    """`now` (ISO time, UTC if naive) replaces the clock, for back-testing; `emit=False` evaluates
    and publishes without emitting events."""
    install_log_filter()
    settings = settings_for(home, model)
    backend = backend_for(settings)
    clock = _parse_now(now)

    config = load_trigger_config(settings)
    inputs = gather_inputs(config, backend, settings, clock)
    evaluations = evaluate_triggers(config, inputs)
    chosen = choose(evaluations)
    publish_evaluations(evaluations, inputs, chosen)
    if inputs.drift_report is not None:  # the latest PSI per feature, for the evidence package's plot
        save_drift_report(settings.home, inputs.drift_report, production_version=inputs.production_version,
                          at=clock.isoformat())
    emitted = emit_chosen(chosen, evaluations, settings, config, clock, emit)
    if emitted["emitted"]:  # one notice per emitted event: the event's cooldown also spaces the notices
        also = [e.name for e in evaluations if e.fired and e is not chosen]
        notify("trigger.fired", settings, **trigger_fields(chosen.name, chosen.numbers, chosen.reason),
               action=f"retrain requested (event {emitted['event']})" + (f"; also fired: {', '.join(also)}"
                                                                          if also else ""))

    for e in evaluations:
        print(f"{e.name:<24} {'FIRED' if e.fired else 'ok':<6} {e.reason}")
    print(f"reported: {chosen.name if chosen else 'none'}; {emitted['reason']}"
          + (f"; emitted {emitted['event']}" if emitted["emitted"] else ""))
    result = {"now": clock.isoformat(), "production_version": inputs.production_version,
              "fired": [e.name for e in evaluations if e.fired], "reported": chosen.name if chosen else None,
              **emitted, "evaluations": [e.to_dict() for e in evaluations]}
    save_monitor_summary(settings.home, result)  # the last result, for `retrainer status` and GET /status
    return result


def _parse_now(now: str | None) -> datetime:
    """`now` as UTC (naive means UTC), or the domain clock's time when it is not given."""
    return as_utc(now) if now else utcnow()
