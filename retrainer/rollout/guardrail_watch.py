"""The guardrail watch: every few minutes, the cheap operational checks on each running rollout,
and a rollback at once on a breach. Run by the `guardrails` deployment (flows/guardrails.py) on an
interval schedule (settings.rollout.guardrail_interval_s, 300 s), so a broken candidate is taken
off traffic within minutes, not at the canary's next 6-hourly check, and no worker is held between
looks (each look is a short run).

For every rollout the journal lists as `running` whose version the registry still has on canary:

* one read of the prediction store over [rollout start, now] (routing columns, scores, latency,
  errors; no labels, no AUC);
* the candidate's ("green") guardrail tests of `live.guardrails`: the error rate's Clopper-Pearson
  lower bound, the p95 latency's lower bound (from `canary.min_requests` requests), any NaN or
  out-of-range score (routed or shadow); limits from `settings.canary`, or from the current plan
  stage's `criteria` (error_rate, p95_latency_ms, min_requests) when the plan has them. The
  bounds are Bonferroni-corrected over the looks the watch makes in the rollout's longest life
  (max(plan, canary.max_duration_hours) / interval), so frequent looks do not make false alarms
  more likely;
* on a breach: `operations.reject_canary` (endpoint to production at 100% first, then the registry
  status rejected), then the journal (status rolled_back, reason "guardrail: ...").

Plain Python: the store, registry, endpoint, journal, settings and `now` come in; no Prefect.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Literal

import pandas as pd

from ..predstore import ERROR, LATENCY, REQUEST_ID, ROW, SCORE, SHADOW, TARGETED, TS, VARIANT, VERSION, routed
from ..registry.model import Status
from ..serving import CANDIDATE
from .journal import RolloutJournal, RolloutRecord
from .live import guardrails
from .operations import reject_canary

READ_COLUMNS = [TS, VARIANT, VERSION, SCORE, LATENCY, ERROR, TARGETED, SHADOW, REQUEST_ID, ROW]
ACTOR = "guardrails"


@dataclass(frozen=True)
class WatchResult:
    """One rollout's look. `action`: "ok" (nothing fired), "rolled_back" (a guardrail fired and the
    candidate was taken off traffic), "skipped" (not on canary any more, or waiting for approval).
    `check_ms`: the read and the tests; `switch_ms`: from the decision to the endpoint answering
    with production at 100%; `total_ms`: the decision to the registry and journal written."""

    version: str
    action: Literal["ok", "rolled_back", "skipped"]
    reason: str
    n_requests: int = 0
    looks: int = 1
    guardrails: list[dict[str, Any]] = field(default_factory=list)
    check_ms: float = 0.0
    switch_ms: float | None = None
    total_ms: float | None = None
    started_at: str | None = None
    flow_run_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def plan_seconds(plan: dict[str, Any] | None) -> float:
    """A plan dict's total duration in seconds (0 when it has no stages)."""
    return sum(float(s.get("duration_s", 0)) for s in (plan or {}).get("stages") or ())


def looks(record: RolloutRecord, settings) -> int:
    """How many looks the watch makes over the rollout's longest possible life: the plan's duration
    or `canary.max_duration_hours`, whichever is longer, over `rollout.guardrail_interval_s`."""
    life = max(plan_seconds(record.plan), settings.canary.max_duration_hours * 3600.0)
    return max(1, math.ceil(life / settings.rollout.guardrail_interval_s))


CRITERIA = {"error_rate": "max_error_rate", "p95_latency_ms": "max_p95_latency_ms", "min_requests": "min_requests"}


def stage_settings(record: RolloutRecord, settings):
    """`settings` with the limits of the rollout's current stage: a plan stage's `criteria`
    (error_rate, p95_latency_ms, min_requests, as in rollout-plans/*.yaml) override the canary's."""
    stages = (record.plan or {}).get("stages") or []
    if not stages:
        return settings
    crit = (stages[min(max(record.stage, 0), len(stages) - 1)] or {}).get("criteria") or {}
    over = {field: (int(crit[k]) if field == "min_requests" else float(crit[k]))
            for k, field in CRITERIA.items() if k in crit}
    if not over:
        return settings
    return settings.model_copy(update={"canary": settings.canary.model_copy(update=over)})


def window_stats(window: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Per routed variant: n_predictions, n_errors, error_rate, p95 latency, version (the cheap half
    of `PredictionStore.variant_stats`: no labels read)."""
    traffic = routed(window)
    out: dict[str, dict[str, Any]] = {}
    for variant, rows in traffic.groupby(VARIANT, sort=True):
        lat = rows[LATENCY].dropna().to_numpy(dtype=float)
        n = int(len(rows))
        out[str(variant)] = {"n_predictions": n, "n_errors": int(rows[ERROR].astype(bool).sum()),
                             "error_rate": float(rows[ERROR].astype(bool).mean()) if n else 0.0,
                             "p95_latency_ms": float(pd.Series(lat).quantile(0.95)) if len(lat) else None,
                             "version": str(rows[VERSION].iloc[-1]) if n else None}
    return out


def check(store, settings, record: RolloutRecord, now: datetime, candidate: str = CANDIDATE):
    """(guardrail results, candidate's routed requests, looks) over [record.started_at, now]. Only the
    candidate's own rows count on its variant (another version it served before is left out)."""
    start = datetime.fromisoformat(record.started_at)
    window = store.read(start, now, columns=READ_COLUMNS)
    if len(window):
        window = window[(window[VARIANT] != candidate) | (window[VERSION].astype(str) == record.version)]
    stats = window_stats(window)
    k = looks(record, settings)
    settings = stage_settings(record, settings)
    n = int((stats.get(candidate) or {}).get("n_predictions", 0))
    return guardrails(window, settings, stats, k, candidate), n, k


class _TimedEndpoint:
    """The endpoint, noting when its last weight change returned (the switch is done)."""

    def __init__(self, endpoint):
        self._endpoint = endpoint
        self.switched_at: float | None = None

    def set_variants(self, *args, **kwargs):
        out = self._endpoint.set_variants(*args, **kwargs)
        self.switched_at = time.perf_counter()
        return out

    def __getattr__(self, name):
        return getattr(self._endpoint, name)


def watch_one(store, registry, endpoint, journal: RolloutJournal, settings, record: RolloutRecord, now: datetime,
              actor: str = ACTOR) -> WatchResult:
    """One rollout's look, and its rollback on a breach (see the module doc)."""
    base = dict(started_at=record.started_at, flow_run_id=record.flow_run_id)
    if record.status != "running":
        return WatchResult(record.version, "skipped", f"{record.version} is {record.status}: nothing on traffic",
                           **base)
    status = registry.get(record.version).status
    if status != Status.CANARY:
        return WatchResult(record.version, "skipped", f"{record.version} is {status} in the registry, not on canary",
                           **base)
    t0 = time.perf_counter()
    results, n, k = check(store, settings, record, now)
    t_decided = time.perf_counter()
    rows = [g.to_dict() for g in results]
    fired = [g for g in results if g.fired]
    common = dict(n_requests=n, looks=k, guardrails=rows, check_ms=round((t_decided - t0) * 1000, 2), **base)
    if not fired:
        return WatchResult(record.version, "ok", f"{record.version}: no guardrail fired on {n:,} requests "
                           f"({k} looks)", **common)
    reason = "guardrail: " + "; ".join(g.reason for g in fired)
    timed = _TimedEndpoint(endpoint)
    reject_canary(registry, timed, record.version, actor=actor, reason=reason)
    journal.update(record.version, "guardrail-breach", status="rolled_back", decision="rollback", reason=reason,
                   decided_at=now.isoformat(), traffic=0.0, details={"guardrails": rows, "looks": k})
    t_done = time.perf_counter()
    switch = None if timed.switched_at is None else round((timed.switched_at - t_decided) * 1000, 2)
    return WatchResult(record.version, "rolled_back", reason, switch_ms=switch,
                       total_ms=round((t_done - t_decided) * 1000, 2), **common)


def watch(store, registry, endpoint, journal: RolloutJournal, settings, now: datetime,
          actor: str = ACTOR) -> list[WatchResult]:
    """Every active rollout's look (`watch_one`), in the journal's order."""
    return [watch_one(store, registry, endpoint, journal, settings, rec, now, actor) for rec in journal.active()]
