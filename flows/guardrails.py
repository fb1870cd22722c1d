"""The guardrail watch: every `rollout.guardrail_interval_s` (300 s, the `guardrails` deployment's
interval schedule; concurrency 1, CANCEL_NEW), the cheap operational checks on every running
rollout in the journal (error rate, p95 latency, NaN/out-of-range scores on the candidate's rows
since the rollout started) and, on a breach, the rollback at once: endpoint to production, then
the registry, the journal, a `guardrail.breach` notice, and the suspended canary run resumed so it
ends with the rollback. Each look is a short run: no worker is held between looks."""
from __future__ import annotations

from typing import Any

from prefect import flow

from tasks.guardrails import report_breach, watch_rollouts
from tasks.runtime import backend_for, install_log_filter, settings_for


@flow(name="guardrails", log_prints=True, persist_result=True)
def guardrails(home: str | None = None, model: str | None = None) -> dict[str, Any]:
    install_log_filter()
    settings = settings_for(home, model)
    backend = backend_for(settings)

    results = watch_rollouts(backend, settings)
    breaches = [r for r in results if r.action == "rolled_back"]
    notices = [report_breach(r, settings) for r in breaches]

    for r in results:
        print(f"{r.version}: {r.action.upper()} - {r.reason}")
    if not results:
        print("no running rollout")
    return {"looked_at": len(results), "rolled_back": [r.version for r in breaches],
            "results": [r.to_dict() for r in results], "notices": notices}
