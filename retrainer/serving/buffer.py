"""`BufferedPredictionWriter`: batches the capture writer's small appends into fewer prediction
store files, with a bounded backlog and a back-off while writes fail (see the class). The capture
writer (`serving.capture`) is its one user; the store and the de-identification are
`retrainer.predstore`'s.
"""
from __future__ import annotations

import logging
import threading
import time

import pandas as pd

from .. import deid
from ..predstore import PredictionStoreProtocol, build_records, check_records, one_line

log = logging.getLogger(__name__)



class BufferedPredictionWriter:
    """Batches small appends (e.g. one row per request) into fewer files.

    `add(...)` de-identifies at once (raw identifiers are not kept in memory), buffers the records
    and writes when `flush_rows` rows are buffered; a background thread also flushes every
    `flush_seconds`. `flush()` writes what is buffered; `close()` (or leaving a `with` block)
    stops the thread and flushes. Thread safe.

    A failed write puts its rows back in the buffer and is retried with a back-off (1 s doubling to
    30 s, by the timer thread or the next `add` after the back-off), so while the disk is full
    `add` does not retry the write each time. The backlog is bounded: when more than
    `max_backlog_rows` rows wait, the **oldest** are dropped (monitoring wants the current traffic)
    and counted in `dropped`. Counters: `written` (rows in complete files), `dropped`,
    `write_failures`; `pending` is the backlog.
    """

    RETRY_MIN_S = 1.0
    RETRY_MAX_S = 30.0

    def __init__(self, store: PredictionStoreProtocol, *, pseudonymizer: deid.Pseudonymizer,
                 flush_rows: int = 500, flush_seconds: float | None = 30.0,
                 max_backlog_rows: int | None = 100_000):
        if flush_rows < 1:
            raise ValueError("flush_rows must be at least 1")
        if max_backlog_rows is not None and max_backlog_rows < 1:
            raise ValueError("max_backlog_rows must be at least 1 (or None for no bound)")
        self.store = store
        self.pseudonymizer = pseudonymizer
        self.flush_rows = flush_rows
        self.flush_seconds = flush_seconds
        self.max_backlog_rows = max_backlog_rows
        self._lock = threading.Lock()  # guards the buffer and the counters
        self._flush_lock = threading.Lock()  # one flush at a time
        self._buffer: list[pd.DataFrame] = []
        self._buffered = 0  # rows in the buffer
        self._inflight = 0  # rows being written
        self._oldest: float | None = None  # monotonic time the oldest buffered row was added
        self.written = 0
        self.dropped = 0
        self.write_failures = 0
        self.last_error: str | None = None
        self.retry_at = 0.0  # monotonic; after a failed write, automatic flushes wait until then
        self._failures_in_a_row = 0
        self._closed = False
        self._stop = threading.Event()
        self._thread = None
        if flush_seconds:
            self._thread = threading.Thread(target=self._run, name="prediction-writer", daemon=True)
            self._thread.start()

    def __enter__(self) -> BufferedPredictionWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def pending(self) -> int:
        """Rows added but not yet written (buffered or being written)."""
        with self._lock:
            return self._buffered + self._inflight

    @property
    def oldest_age(self) -> float | None:
        """Seconds since the oldest buffered row was added (None when nothing is buffered)."""
        with self._lock:
            return None if self._oldest is None else time.monotonic() - self._oldest

    def add(self, features: pd.DataFrame, scores, *, version: str, variant: str, latency_ms,
            ts=None, error=None, shadow=None, request_id=None, row=None) -> int:
        """Buffer predictions; returns the number of rows added. Bad rows raise here (nothing of
        the call is buffered); a failed write does not (the rows stay buffered, see the class).
        `error`, `shadow`, `request_id`, `row`: see `predstore.build_records`."""
        records = build_records(features, scores, version=version, variant=variant,
                                latency_ms=latency_ms, ts=ts, pseudonymizer=self.pseudonymizer,
                                error=error, shadow=shadow, request_id=request_id, row=row)
        check_records(records)  # bad rows fail here, not at flush
        with self._lock:
            if self._closed:
                raise RuntimeError("BufferedPredictionWriter is closed")
            if self._oldest is None:
                self._oldest = time.monotonic()
            self._buffer.append(records)
            self._buffered += len(records)
            self._trim()
            full = self._buffered >= self.flush_rows and time.monotonic() >= self.retry_at
        if full:
            try:
                self.flush()
            except Exception as exc:  # the rows stay buffered; flush() logged it
                log.debug("flush from add() failed: %s", one_line(exc))
        return len(records)

    def _trim(self) -> None:
        """Drop the oldest buffered rows beyond `max_backlog_rows` (caller holds `_lock`)."""
        if self.max_backlog_rows is None:
            return
        excess = self._buffered + self._inflight - self.max_backlog_rows
        dropped = 0
        while excess > 0 and self._buffer:
            first = self._buffer[0]
            if len(first) <= excess:
                self._buffer.pop(0)
                n = len(first)
            else:
                self._buffer[0] = first.iloc[excess:]
                n = excess
            excess -= n
            dropped += n
        if dropped:
            self._buffered -= dropped
            self.dropped += dropped
            log.error("prediction backlog over %d rows (writes failing: %s): dropped the %d oldest",
                      self.max_backlog_rows, self.last_error or "too slow", dropped)

    def flush(self) -> int:
        """Write everything buffered; returns the number of rows written. Flushes are serialised,
        so when it returns, every row added before the call is on disk (or back in the buffer, and
        the error raised)."""
        with self._flush_lock:
            with self._lock:
                batch, self._buffer = self._buffer, []
                self._inflight, self._buffered = self._buffered, 0
                oldest, self._oldest = self._oldest, None
            if not batch:
                return 0
            try:
                frame = pd.concat(batch, ignore_index=True)
                written = self.store.write_records(frame)
            except BaseException as exc:
                with self._lock:
                    self._buffer[:0] = batch
                    self._buffered += self._inflight
                    self._inflight = 0
                    if oldest is not None:
                        self._oldest = min(oldest, self._oldest or oldest)
                    self.write_failures += 1
                    self._failures_in_a_row += 1
                    self.last_error = one_line(exc)
                    delay = min(self.RETRY_MAX_S, self.RETRY_MIN_S * 2 ** (self._failures_in_a_row - 1))
                    self.retry_at = time.monotonic() + delay
                    self._trim()
                    backlog = self._buffered
                log.error("prediction write failed (%s); %d rows kept, retry in %.0f s",
                          self.last_error, backlog, delay)
                raise
            with self._lock:
                self._inflight = 0
                self.written += written
                self._failures_in_a_row = 0
                self.retry_at = 0.0
            return written

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        self.flush()

    def _run(self) -> None:
        while not self._stop.wait(self.flush_seconds):
            if time.monotonic() < self.retry_at:
                continue
            try:
                self.flush()
            except Exception:  # keep serving; the rows stay buffered for the next try (logged)
                pass
