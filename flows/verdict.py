"""The deferred verdict: re-check a promoted canary on its own rows once their labels matured.

The canary flow schedules ONE run of the `deferred-verdict` deployment at the end of its period
plus `label_delay` (30 days for the readmission model); a scheduled run holds no worker until it
is due. The run computes the paired non-inferiority comparison of the promoted version against
the version it replaced on the canary period's matured rows, and rolls production back when the
promotion fails it and the previous version is still kept (`retrainer.rollout.verdict`).
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

from prefect import flow

from tasks.notify import notify, result_of, settings_of_run
from tasks.rollout import deferred_verdict as verdict_task
from tasks.runtime import backend_for, install_log_filter, settings_for

VERDICT_FLOW = "deferred-verdict"


def _on_completion(flow, flow_run, state) -> None:
    out = result_of(state)
    params = getattr(flow_run, "parameters", None) or {}
    if not (isinstance(out, dict) and "outcome" in out):
        out = {"version": params.get("version"), "outcome": "completed", "reason": "the run's result is unreadable"}
    ev = out.get("evidence") or {}
    interval = (ev["low"], ev["high"]) if ev.get("low") is not None and ev.get("high") is not None else None
    notify("verdict", settings_of_run(flow_run), version=out.get("version") or "?", outcome=out["outcome"],
           reason=out.get("reason"), n=ev.get("n_candidate"), positives=ev.get("pos_candidate"),
           delta=ev.get("delta"), interval=interval, level=ev.get("level"), flow_run=flow_run.name,
           action=f"production rolled back to {out.get('previous')}" if out["outcome"] == "rolled_back" else None)


def _on_failure(flow, flow_run, state) -> None:
    params = getattr(flow_run, "parameters", None) or {}
    notify("verdict", settings_of_run(flow_run), version=params.get("version") or "?", outcome="failed",
           reason=f"flow run {flow_run.name} FAILED: {state.message}",
           action="re-run it with `retrainer canary verdict ...`")


@flow(name=VERDICT_FLOW, log_prints=True, persist_result=True, on_completion=[_on_completion],
      on_failure=[_on_failure])
def deferred_verdict(version: str, previous: str | None, window_start: str, window_end: str,
                     home: str | None = None, model: str | None = None) -> dict[str, Any]:
    """The realised paired comparison of `version` against `previous` on predictions made in
    [window_start, window_end), and the action it calls for."""
    install_log_filter()
    settings = settings_for(home, model)
    backend = backend_for(settings)
    out = verdict_task(backend, settings, version, previous, datetime.fromisoformat(window_start),
                       datetime.fromisoformat(window_end))
    print(f"deferred verdict on {version}: {out['outcome']} - {out['reason']}")
    return out


if __name__ == "__main__":
    deferred_verdict()
