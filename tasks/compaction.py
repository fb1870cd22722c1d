"""Task of the compaction flow: a thin wrapper over `PredictionStore.compact`."""
from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from prefect import task

from retrainer.backends import Backend

from .runtime import IN_PROCESS


@task(name="compact-predictions", **IN_PROCESS)
def compact_days(backend: Backend, today: date, days_back: int, max_rows: int) -> dict[str, Any]:
    """Merge the small capture files of the last `days_back` days (and today) into compact files."""
    days = [d for d in backend.predictions.days() if today - timedelta(days=days_back) <= d <= today]
    return backend.predictions.compact(days, max_rows=max_rows)
