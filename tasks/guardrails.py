"""Tasks of the guardrails flow: a thin wrapper over `retrainer.rollout.guardrail_watch`, the
notice of a breach, and waking the rolled-back canary's suspended run so it ends now."""
from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact

from retrainer import clock
from retrainer.backends import Backend
from retrainer.rollout.guardrail_watch import WatchResult, watch
from retrainer.rollout.journal import RolloutJournal
from retrainer.settings import Settings

from .notify import notify
from .runtime import IN_PROCESS, artifact_key
from .waiting import resume


@task(name="guardrail-watch", **IN_PROCESS)
def watch_rollouts(backend: Backend, settings: Settings) -> list[WatchResult]:
    """Every running rollout's guardrails over its window; a breach is rolled back at once."""
    return watch(backend.predictions, backend.registry, backend.endpoint, RolloutJournal(settings.home), settings,
                 clock.utcnow())


@task(name="guardrail-breach-notice", **IN_PROCESS)
def report_breach(result: WatchResult, settings: Settings) -> dict[str, Any]:
    """The `guardrail.breach` notice, a table artifact of the tests, and the canary's suspended run
    (if any) resumed with a rollback so it ends now instead of at its next scheduled check."""
    measured = {g["name"]: g["reason"] for g in result.guardrails if g.get("fired")}
    sent = notify("guardrail.breach", settings, version=result.version, reason=result.reason, measured=measured,
                  action=f"rolled back: all traffic on production ({result.switch_ms} ms to switch)")
    create_table_artifact(table=result.guardrails, key=artifact_key("guardrails", result.version),
                          description=f"{result.version}: {result.reason}")
    woke = False
    if result.flow_run_id:
        try:
            resume(result.flow_run_id, action="rollback", reason=result.reason, actor="guardrails")
            woke = True
        except Exception as exc:  # noqa: BLE001 - RESUME_REFUSED: running, finished or gone
            get_run_logger().info("canary run %s not resumed (%s): it sees the rejection at its next check",
                                  result.flow_run_id, type(exc).__name__)
    return {"notice": sent.get("subject"), "resumed_canary": woke}
