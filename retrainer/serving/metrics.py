"""`GET /metrics` with prometheus-client: one `CollectorRegistry` per app (never the global one,
so several apps in one process, as in the tests, do not collide).

Series (all with `variant` and `version` labels; `variant="unrouted", version="none"` for requests
that could not be routed):

* `retrainer_requests_total{variant,version,code}` - `/invocations` requests answered, by the HTTP
  status (a request whose rows went to two variants counts once for each);
* `retrainer_request_errors_total{variant,version,reason}` - the 4xx/5xx among them, by reason:
  `bad_request` (400), `forbidden` (403), `unknown_variant` (404), `timeout` (408), `too_large`
  (413), `invalid` (422), `scoring_failed` (500), `unavailable` (503), else `http_<code>`;
* `retrainer_request_duration_seconds{variant,version}` - histogram of the handler's time per
  request (parse, route, score, queue for capture and shadow), buckets 0.5 ms .. 2.5 s;
* `retrainer_predictions_total{variant,version}` - rows answered;
* `retrainer_shadow_score_abs_diff{variant,version}` - histogram of |shadow score - routed score|
  for every row scored in shadow (`variant`/`version`: the shadow scorer), buckets 0.001 .. 1.
  A disagreement beyond a tolerance t is `_count - _bucket{le="t"}` (t one of the bucket edges:
  0.01, 0.02, 0.05, 0.1, ...). Computed from what the capture receives: the handler records the
  routed scores of requests that have shadow work (`routed`), the shadow scorer's puts go through
  `ShadowTap`, which matches them by request id and row. At most `max_pending` requests are
  remembered; a shadow score whose routed answer was forgotten is counted in
  `retrainer_shadow_unmatched_total`, not guessed;
* `retrainer_variant_weight{variant,version}` - the current routing weight of every loaded
  variant (read from the routing table at scrape time, so a changed routing leaves no stale series).

The hand-written capture and shadow series (`capture.metrics_text`, `shadow.serving_metrics_text`:
`retrainer_capture_*`, `retrainer_shadow_*`, `retrainer_failed_requests_total`) are appended
unchanged, so their names keep working.

Cost: the per-request work is one dict lookup of cached children and three increments/observes
(~3-4 us; see README Benchmarks for the measured figures).
"""
from __future__ import annotations

import collections
import threading
from typing import Any, Callable

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
DIFF_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
ERROR_REASONS = {400: "bad_request", 403: "forbidden", 404: "unknown_variant", 408: "timeout", 413: "too_large",
                 422: "invalid", 500: "scoring_failed", 503: "unavailable"}
NO_VERSION = "none"


def error_reason(status: int) -> str:
    """The `reason` label of an answered error status."""
    return ERROR_REASONS.get(status, f"http_{status}")


class _WeightCollector:
    """`retrainer_variant_weight` from the current routing table at scrape time."""

    def __init__(self, table: Callable[[], Any]):
        self._table = table

    def collect(self):
        g = GaugeMetricFamily("retrainer_variant_weight", "Current routing weight of each loaded variant.",
                              labels=["variant", "version"])
        for s in self._table().variants:
            g.add_metric([s.variant, s.version], float(s.weight))
        yield g

    def describe(self):
        return []


class ServingMetrics:
    """The app's Prometheus registry and the handler's hooks (see the module doc)."""

    def __init__(self, table: Callable[[], Any], *, max_pending: int = 20_000):
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self.requests = Counter("retrainer_requests", "Requests answered by /invocations, by variant, version and "
                                "HTTP status.", ["variant", "version", "code"], registry=r)
        self.errors = Counter("retrainer_request_errors", "Requests answered 4xx or 5xx, by reason.",
                              ["variant", "version", "reason"], registry=r)
        self.duration = Histogram("retrainer_request_duration_seconds", "Time /invocations took per request.",
                                  ["variant", "version"], buckets=LATENCY_BUCKETS, registry=r)
        self.predictions = Counter("retrainer_predictions", "Rows answered, by variant and version.",
                                   ["variant", "version"], registry=r)
        self.diff = Histogram("retrainer_shadow_score_abs_diff", "|shadow score - routed score| per row scored in "
                              "shadow, by the shadow variant and version.", ["variant", "version"],
                              buckets=DIFF_BUCKETS, registry=r)
        self.unmatched = Counter("retrainer_shadow_unmatched", "Shadow-scored rows whose routed answer was no longer "
                                 "remembered (not compared).", registry=r)
        r.register(_WeightCollector(table))
        self._ok: dict[tuple[str, str], tuple[Any, Any, Any]] = {}  # (variant, version) -> children of a 200
        self._pending: collections.OrderedDict[str, dict[str, tuple[np.ndarray, Any]]] = collections.OrderedDict()
        self._lock = threading.Lock()
        self.max_pending = max_pending

    # -- the request path -------------------------------------------------------------------------
    def answered(self, variant: str, version: str, rows: int, seconds: float) -> None:
        """A 200 answer's rows from `variant`."""
        kids = self._ok.get((variant, version))
        if kids is None:
            kids = (self.requests.labels(variant, version, "200"), self.duration.labels(variant, version),
                    self.predictions.labels(variant, version))
            self._ok[(variant, version)] = kids
        kids[0].inc()
        kids[1].observe(seconds)
        kids[2].inc(rows)

    def refused(self, variant: str, version: str | None, status: int, seconds: float) -> None:
        """A 4xx/5xx answer (`variant` "unrouted" when it could not be routed)."""
        version = version or NO_VERSION
        self.requests.labels(variant, version, str(status)).inc()
        self.errors.labels(variant, version, error_reason(status)).inc()
        self.duration.labels(variant, version).observe(seconds)

    def routed(self, request_id: str, variant: str, scores: np.ndarray, rows: list[int] | None) -> None:
        """Remember a request's routed scores (only requests with shadow work) for the shadow diff."""
        with self._lock:
            entry = self._pending.get(request_id)
            if entry is None:
                entry = self._pending[request_id] = {}
                while len(self._pending) > self.max_pending:
                    self._pending.popitem(last=False)
            entry[variant] = (np.asarray(scores, dtype=float), rows)

    def shadow_scored(self, variant: str, version: str, request_id: str | None, rows: list[int] | None,
                      scores, error: bool) -> None:
        """Compare shadow scores with the routed answer of the same request rows."""
        if error or request_id is None:
            return
        with self._lock:
            entry = self._pending.get(request_id)
            routed = dict(entry) if entry else None
        shadow = np.asarray(scores, dtype=float).reshape(-1)
        if not routed:
            self.unmatched.inc(len(shadow))
            return
        by_row: dict[int, float] = {}
        for vals, idx in routed.values():
            for i, v in zip(range(len(vals)) if idx is None else idx, vals):
                by_row[int(i)] = float(v)
        child = self.diff.labels(variant, version)
        missing = 0
        for i, s in zip(range(len(shadow)) if rows is None else rows, shadow):
            v = by_row.get(int(i))
            if v is None or not np.isfinite(v) or not np.isfinite(s):
                missing += 1
                continue
            child.observe(abs(s - v))
        if missing:
            self.unmatched.inc(missing)

    def exposition(self) -> bytes:
        """The registry in Prometheus text format 0.0.4."""
        return generate_latest(self.registry)


class ShadowTap:
    """Stands in for the capture queue the shadow scorer puts its scores on: forwards every call to
    the real queue and shows each shadow batch to `ServingMetrics.shadow_scored` first."""

    def __init__(self, capture, metrics: ServingMetrics):
        self._capture = capture
        self._metrics = metrics

    def put(self, variant: str, version: str, records: list, scores, latency_ms: float, ts, **kw) -> None:
        """`CaptureQueue.put`; keyword arguments are passed on as they are (whatever the queue takes)."""
        if kw.get("shadow"):
            try:
                self._metrics.shadow_scored(variant, version, kw.get("request_id"), kw.get("rows"), scores,
                                            bool(kw.get("error")))
            except Exception:  # noqa: BLE001 - metrics never stop a capture
                pass
        self._capture.put(variant, version, records, scores, latency_ms, ts, **kw)

    def __getattr__(self, name: str):
        return getattr(self._capture, name)


def install_shadow_tap(shadow, metrics: ServingMetrics) -> bool:
    """Route `shadow`'s capture puts through a `ShadowTap`; False when there is no shadow scorer."""
    if shadow is None or not hasattr(shadow, "capture"):
        return False
    if not isinstance(shadow.capture, ShadowTap):
        shadow.capture = ShadowTap(shadow.capture, metrics)
    return True


__all__ = ["DIFF_BUCKETS", "LATENCY_BUCKETS", "ServingMetrics", "ShadowTap", "error_reason", "install_shadow_tap"]
