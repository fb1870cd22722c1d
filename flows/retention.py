"""Housekeeping: registry retention (artifacts of archived and rejected versions) and prediction
store retention (day partitions and label files past `predictions.retention_days`), never touching
production, the two previous versions, or what a running rollout or a pending deferred verdict
still needs (`retrainer.retention`). Daily (the `retention` deployment); a markdown artifact says
what went and what was kept and why."""
from __future__ import annotations

from typing import Any

from prefect import flow

from retrainer.clock import utcnow
from retrainer.triggers.config import as_utc
from tasks.retention import apply_retention, plan_retention, publish_retention
from tasks.runtime import backend_for, install_log_filter, settings_for


@flow(name="retention", log_prints=True)
def retention(home: str | None = None, dry_run: bool = False, actor: str = "retention",
              reason: str = "scheduled retention", now: str | None = None,
              model: str | None = None) -> dict[str, Any]:
    """`dry_run`: plan and report only. `now` (ISO, UTC if naive) replaces the clock."""
    install_log_filter()
    settings = settings_for(home, model)
    backend = backend_for(settings)
    clock = as_utc(now) if now else utcnow()
    if dry_run:
        result = {**plan_retention(backend, settings, clock).to_dict(), "dry_run": True}
    else:
        result = apply_retention(backend, settings, clock, actor, reason)
    publish_retention(result, dry_run)
    verb = "would delete" if dry_run else "deleted"
    print(f"{verb} {len(result['delete_partitions'])} prediction partition(s) ({result['rows']} rows) and "
          f"{len(result['delete_label_files'])} label file(s); kept {len(result['kept_partitions'])} older "
          f"partition(s) for {len(result['holds'])} hold(s); registry: "
          + (f"deferred ({result['registry_deferred']})" if result["registry_deferred"]
             else f"{verb} artifacts of {', '.join(result['registry_remove']) or 'none'}"))
    return result
