"""Compaction of the prediction store: the endpoint's capture writes one small file per flush
(every few seconds), which on S3 is thousands of objects a day; this merges each recent day's files
into a few compact files (`PredictionStore.compact`: written before the small files are deleted,
so no reader ever counts a row twice). Hourly (the `compact-predictions` deployment, concurrency 1:
one compaction at a time per store)."""
from __future__ import annotations

from typing import Any

from prefect import flow

from retrainer.clock import utcnow
from retrainer.triggers.config import as_utc
from tasks.compaction import compact_days
from tasks.runtime import backend_for, install_log_filter, settings_for


@flow(name="compact-predictions", log_prints=True)
def compact_predictions(home: str | None = None, days_back: int = 2, max_rows: int = 1_000_000,
                        now: str | None = None, model: str | None = None) -> dict[str, Any]:
    """`days_back`: also the days before today (late rows land in yesterday's partition); `now`
    (ISO, UTC if naive) replaces the clock."""
    install_log_filter()
    settings = settings_for(home, model)
    backend = backend_for(settings)
    today = (as_utc(now) if now else utcnow()).date()
    result = compact_days(backend, today, days_back, max_rows)
    print(f"compacted {result['files_in']} file(s) of {len(result['days'])} day(s) into {result['files_out']} "
          f"({result['rows']} rows); {result['leftovers_deleted']} leftover(s) of an interrupted run deleted")
    return result
