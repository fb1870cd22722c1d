"""Shadow scoring: every routed request row is also scored by the other model(s), off the response
path, so production and candidate have **paired** scores on identical live rows.

Modes (`serving.shadow`): `"off"`; `"candidate"` (default): when production ("blue") and the
candidate ("green") are both loaded and at least one of them has weight > 0, a row answered by one
of them (or by any other weighted variant) is also scored by the other(s) of the two. So a
candidate loaded at weight 0 (the shadow strategy: it answers nothing) scores every request in
shadow, and so does production at weight 0 while a candidate takes 100% (the last stage of a
linear rollout); `"all"`: by every loaded variant,
weight-0 standbys included. Only the routed variant's answer is returned. Requests that chose their
variant by header (`targeted`) are not scored in shadow, and nothing is when capture is off (the
scores would go nowhere).

Where the work happens: the request handler only appends (records, the variants to run, request
key, time) to a bounded in-memory queue; a `ShadowScorer` thread takes everything queued every
`interval` (50 ms) and scores it per variant in **one batch** (one `FastScorer.predict` call per
variant and hand-off instead of one per request, which amortises the per-call overhead), then puts
the scores on the capture queue flagged `shadow`. The response never waits for it; the thread
shares the GIL with the handlers, which is the cost `benchmarks/bench_serving.py` measures. A
shadow row's `latency_ms` is the time its batch took to score. A batch that raises is retried
request by request; a request whose shadow scoring raises is stored as an `error` row
(NaN score, `shadow`) and counted in `failed`. Beyond `max_backlog_rows` queued rows the oldest
requests are dropped and counted (`dropped`): shadow work never blocks serving.

Each request gets an id (`RequestIds`: random letters a-p, never digits, so it cannot collide with
an identifier); stored with the row's index, it joins a row's routed and shadow scores
(`PredictionStore.paired`).
"""
from __future__ import annotations

import collections
import itertools
import logging
import secrets
import threading
import time
from datetime import datetime
from typing import Any, Sequence

import numpy as np

from .routing import CANDIDATE, PRODUCTION, RoutingTable

log = logging.getLogger(__name__)

SHADOW_MODES = ("off", "candidate", "all")
UNROUTED = "unrouted"  # the /metrics label of requests that could not be routed (unparseable body)
REQUEST_ID_HEADER = "X-Retrainer-Request-Id"
_LETTERS = str.maketrans("0123456789abcdef", "abcdefghijklmnop")


class RequestIds:
    """Unique request ids, cheap to make: a random 12-letter prefix per process and a counter,
    written with the letters a-p only (`abcdefghijkl-b`, `...-c`, ...)."""

    def __init__(self):
        self.prefix = secrets.token_hex(6).translate(_LETTERS)
        self._next = itertools.count(1).__next__

    def __call__(self) -> str:
        return f"{self.prefix}-{format(self._next(), 'x').translate(_LETTERS)}"


Job = tuple[str, str, Any]  # (variant, version, scorer)


def shadow_plan(table: RoutingTable, mode: str) -> dict[str, tuple[Job, ...]]:
    """For each routable variant of `table`, the (variant, version, scorer) that score its rows in
    shadow under `mode` (see the module doc); variants without shadow work are left out."""
    if mode not in SHADOW_MODES:
        raise ValueError(f"shadow mode must be one of {', '.join(SHADOW_MODES)}, got {mode!r}")
    if mode == "off" or not table.variants:
        return {}
    if mode == "all":
        others = list(table.variants)
    else:
        pair = [table.by_name.get(PRODUCTION), table.by_name.get(CANDIDATE)]
        if any(s is None for s in pair) or all(s.weight <= 0 for s in pair):
            return {}
        others = pair
    plan = {}
    for name in table.routed:
        jobs = tuple((s.variant, s.version, table.scorers[s.variant]) for s in others if s.variant != name)
        if jobs:
            plan[name] = jobs
    return plan


class ShadowScorer:
    """The shadow queue and its scoring thread (see the module doc). `capture`: the CaptureQueue
    the scores go to; its `flush()` and `close()` first hand over what is queued here (`drain`)."""

    def __init__(self, capture, mode: str, *, interval: float = 0.05, max_backlog_rows: int = 100_000,
                 chunk_rows: int = 2000):
        if mode not in SHADOW_MODES:
            raise ValueError(f"shadow mode must be one of {', '.join(SHADOW_MODES)}, got {mode!r}")
        self.capture = capture
        self.mode = mode
        self.interval = interval
        self.max_backlog_rows = max_backlog_rows
        self.chunk_rows = chunk_rows
        self._q: collections.deque = collections.deque()
        self._queued = 0
        self._lock = threading.Lock()  # the queue and the counters
        self._work = threading.Lock()  # one scorer of the queue at a time (thread, drain)
        self._plan_table: RoutingTable | None = None
        self._plan: dict[str, tuple[Job, ...]] = {}
        self.scored: collections.Counter = collections.Counter()  # shadow rows scored, by variant
        self.failed: collections.Counter = collections.Counter()  # shadow rows whose scoring raised
        self.dropped = 0  # rows dropped unscored (queue over max_backlog_rows)
        self._stop = threading.Event()
        capture.before_flush.append(self.drain)
        self._thread = threading.Thread(target=self._run, name="shadow-scorer", daemon=True)
        self._thread.start()

    def plan(self, table: RoutingTable) -> dict[str, tuple[Job, ...]]:
        """`shadow_plan(table, mode)`, cached for the current (immutable) table."""
        if table is not self._plan_table:
            self._plan, self._plan_table = shadow_plan(table, self.mode), table
        return self._plan

    def submit(self, jobs: Sequence[Job], records: list, request_id: str, rows: list[int] | None,
               ts: datetime) -> None:
        """Queue `records` (one request's rows routed to one variant; `rows`: their indices in the
        request, None for 0, 1, ...) for scoring by `jobs` (the request path: an append)."""
        n = len(records)
        with self._lock:
            self._q.append((jobs, records, request_id, rows, ts))
            self._queued += n
            while self._queued > self.max_backlog_rows and len(self._q) > 1:
                old = self._q.popleft()
                self._queued -= len(old[1])
                self.dropped += len(old[1]) * len(old[0])

    @property
    def backlog(self) -> int:
        """Rows queued, not scored yet."""
        with self._lock:
            return self._queued

    def drain(self) -> None:
        """Score everything queued now and put it on the capture queue (the thread does the same
        every `interval`)."""
        with self._work:
            with self._lock:
                items = list(self._q)
                self._q.clear()
                self._queued = 0
            if items:
                self._score(items)

    def _predict(self, scorer, records: list) -> np.ndarray:
        parts = [scorer.predict(records[i:i + self.chunk_rows]) for i in range(0, len(records), self.chunk_rows)]
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    def _score(self, items: list) -> None:
        by_job: dict[tuple[str, str], tuple[Any, list[int]]] = {}
        for i, (jobs, *_rest) in enumerate(items):
            for variant, version, scorer in jobs:
                by_job.setdefault((variant, version), (scorer, []))[1].append(i)
        for (variant, version), (scorer, idx) in by_job.items():
            batch = [rec for i in idx for rec in items[i][1]]
            t0 = time.perf_counter()
            try:
                scores: np.ndarray | None = self._predict(scorer, batch)
            except Exception:
                scores = None
            ms = (time.perf_counter() - t0) * 1000.0
            if scores is not None:
                off = 0
                for i in idx:
                    _, recs, rid, rows, ts = items[i]
                    self.capture.put(variant, version, recs, scores[off:off + len(recs)], ms, ts, shadow=True,
                                     request_id=rid, rows=rows)
                    off += len(recs)
                with self._lock:
                    self.scored[variant] += len(batch)
                continue
            failed = 0
            for i in idx:  # isolate the request(s) that fail
                _, recs, rid, rows, ts = items[i]
                t1 = time.perf_counter()
                try:
                    part, error = self._predict(scorer, recs), False
                except Exception as exc:
                    part, error = np.full(len(recs), np.nan), True
                    failed += len(recs)
                    log.error("shadow scoring by %s (%s) raised %s", variant, version, type(exc).__name__)
                self.capture.put(variant, version, recs, part, (time.perf_counter() - t1) * 1000.0, ts,
                                 shadow=True, request_id=rid, rows=rows, error=error)
            with self._lock:
                self.scored[variant] += len(batch) - failed
                self.failed[variant] += failed

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.drain()
            except Exception:  # never let the thread die; the next round goes on
                log.exception("shadow scoring failed")

    def stats(self) -> dict[str, Any]:
        """mode, scored and failed (rows, by variant), dropped, backlog."""
        with self._lock:
            return {"mode": self.mode, "scored": dict(self.scored), "failed": dict(self.failed),
                    "dropped": self.dropped, "backlog": self._queued}

    def close(self) -> None:
        """Stop the thread and score what is left."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(10)
        self.drain()


def serving_metrics_text(shadow: ShadowScorer | None, failures: collections.Counter) -> str:
    """Prometheus text for shadow scoring (scores and failures per variant) and the failed or
    invalid requests per variant (`unrouted`: not routable)."""
    lines: list[str] = []

    def metric(name: str, kind: str, help_: str, samples: list[tuple[str, float]]) -> None:
        lines.extend([f"# HELP {name} {help_}", f"# TYPE {name} {kind}"])
        lines.extend(f"{name}{labels} {value}" for labels, value in samples)

    st = shadow.stats() if shadow is not None else {"mode": "off", "scored": {}, "failed": {}, "dropped": 0,
                                                      "backlog": 0}
    metric("retrainer_shadow_enabled", "gauge", "1 when requests are also scored in shadow.",
           [("", 0 if shadow is None else 1)])
    metric("retrainer_shadow_scores_total", "counter", "Rows scored in shadow, by variant.",
           [(f'{{variant="{v}"}}', n) for v, n in sorted(st["scored"].items())])
    metric("retrainer_shadow_failures_total", "counter", "Rows whose shadow scoring raised, by variant.",
           [(f'{{variant="{v}"}}', n) for v, n in sorted(st["failed"].items())])
    metric("retrainer_shadow_dropped_total", "counter", "Rows dropped unscored (shadow queue full).",
           [("", st["dropped"])])
    metric("retrainer_shadow_backlog_rows", "gauge", "Rows waiting for shadow scoring.", [("", st["backlog"])])
    metric("retrainer_failed_requests_total", "counter",
           "Requests answered 4xx (invalid) or 5xx (failed), by the variant they were routed to "
           f"({UNROUTED}: not routable).",
           [(f'{{variant="{v}",reason="{r}"}}', n) for (v, r), n in sorted(failures.items())])
    return "\n".join(lines) + "\n"


__all__ = ["REQUEST_ID_HEADER", "SHADOW_MODES", "UNROUTED", "RequestIds", "ShadowScorer", "serving_metrics_text",
           "shadow_plan"]
