"""Capture: each prediction is queued (raw records stay in memory only) and a background thread
hands batches to `predstore.BufferedPredictionWriter`, which de-identifies them and writes Parquet
files; so capture costs a deque append on the request path. Capture failures are logged, never
returned to the caller.
"""
from __future__ import annotations

import collections
import logging
import threading
from datetime import datetime

import numpy as np
import pandas as pd

from .. import schema as S

log = logging.getLogger(__name__)


def _conform_features(frame):
    """Cast request columns to the contract's kinds so the store's Parquet schema accepts them
    (integer features are rounded: a float age 70.4 is stored as 70)."""
    for col in frame.columns:
        kind = S.COLUMN_TYPES.get(col)
        if kind in ("int", "float"):
            num = pd.to_numeric(frame[col], errors="coerce")
            frame[col] = num.round().astype("Int64") if kind == "int" else num.astype("float64")
        elif kind == "bool":
            frame[col] = frame[col].astype("boolean")
        elif kind == "string":
            frame[col] = frame[col].astype("string")
        elif kind == "datetime":
            frame[col] = pd.to_datetime(frame[col], errors="coerce", utc=True)
    return frame


class CaptureQueue:
    """Request threads `put` (a deque append); a daemon thread drains every `interval` seconds
    and hands batches, grouped by (variant, version), to a BufferedPredictionWriter."""

    def __init__(self, writer, *, interval: float = 0.25, max_pending: int = 200_000):
        self.writer = writer
        self.interval = interval
        self.max_pending = max_pending
        self._q: collections.deque = collections.deque()
        self._stop = threading.Event()
        self._drain_lock = threading.Lock()
        self.dropped = 0
        self.captured = 0
        self._thread = threading.Thread(target=self._run, name="capture-drain", daemon=True)
        self._thread.start()

    def put(self, variant: str, version: str, records: list, scores, latency_ms: float, ts: datetime) -> None:
        """Queue one scored batch; when `max_pending` batches wait already, count it dropped."""
        if len(self._q) >= self.max_pending:  # the writer cannot keep up: shed, never block serving
            self.dropped += len(records)
            return
        self._q.append((variant, version, records, scores, latency_ms, ts))

    def drain(self) -> int:
        """Hand everything queued to the writer now; returns the number of rows it accepted."""
        with self._drain_lock:
            items = []
            while True:
                try:
                    items.append(self._q.popleft())
                except IndexError:
                    break
            if not items:
                return 0
            groups: dict[tuple[str, str], list] = collections.defaultdict(list)
            for item in items:
                groups[(item[0], item[1])].append(item)
            n = 0
            for (variant, version), batch in groups.items():
                recs, scores, lat, ts = [], [], [], []
                for _, _, records, sc, latency, t in batch:
                    recs.extend(records)
                    scores.extend(float(s) for s in sc)
                    lat.extend([latency] * len(records))
                    ts.extend([t] * len(records))
                try:
                    frame = _conform_features(pd.DataFrame.from_records(recs))
                    n += self.writer.add(frame, np.asarray(scores), version=version, variant=variant,
                                         latency_ms=np.asarray(lat), ts=ts)
                except Exception as exc:  # a capture problem must never reach the caller
                    self.dropped += len(recs)
                    log.error("prediction capture dropped %d rows: %s: %s", len(recs),
                              type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
            self.captured += n
            return n

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.drain()

    def close(self) -> None:
        """Stop the drain thread, drain what is left and close the writer."""
        self._stop.set()
        self._thread.join(timeout=10)
        self.drain()
        self.writer.close()
