"""Capture: every answered prediction goes, de-identified, to the prediction store, off the request
path and out of the serving process's GIL.

Path of a row: the request handler `put`s the scored records on an in-memory deque (an append);
a sender thread hands everything queued, every `handoff` seconds, as one pickled message of plain
records to the **capture writer**; the writer conforms and de-identifies them
(`buffer.BufferedPredictionWriter`) and writes Parquet files. The writer is a separate process
(multiprocessing, spawn context) when the pseudonym key can be read there from its environment
variable (how `retrainer serve` and the demo run; the key itself never crosses the pipe and the
`Pseudonymizer` refuses to be pickled), else a thread of the serving process (e.g. a test that
passes a key object directly). Raw records only ever live in memory and in the pipe.

**Durability window** (N = `flush_rows`, T = `flush_seconds`; settings `serving.capture_flush_rows`
1000 and `serving.capture_flush_seconds` 2 s): the writer writes a file as soon as N/2 rows wait,
or when the oldest waiting row has waited T/2, and the handoff is at most T/4, so while the
writer keeps up with the traffic, a crash of the serving process *and* the writer (kill -9 of
both, power loss) loses at most the rows answered in the last T seconds, and at most about N of
them. A crash of the serving process alone (kill -9, OOM) loses only what was not yet handed
off (the last `handoff` seconds, 0.1 s by default): the writer sees the pipe close, writes what it
received and exits.

**Backlog bound**: when writes fail (disk full, say) the writer keeps at most `max_backlog_rows`
rows and then drops the *oldest* (monitoring needs current traffic; when the disk is back the store
resumes with the newest rows), retrying the write with a back-off. The serving side's queue has the
same bound (it only grows if the writer stops reading). Every row is, in the end, written, or
counted once as a real loss with its reason: `invalid` (a row that cannot be stored, e.g. a number
out of range; each queued request, down to each row, is conformed on its own, so one bad row never
costs another), `backlog_full`, `queue_full` (serving-side bound), `writer_lost` (the writer
process died holding rows; it is restarted). `stats()` and `metrics_text()` (Prometheus text for
`GET /metrics`) report them, with the rows written and the backlog.
"""
from __future__ import annotations

import collections
import logging
import multiprocessing
import pickle
import signal
import threading
import time
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from .. import schema as S
from ..deid import pseudonymizer_from_env
from ..errors import ConfigError, DataError
from .buffer import BufferedPredictionWriter

log = logging.getLogger(__name__)

DROP_REASONS = ("invalid", "backlog_full", "queue_full", "writer_lost")

# slots of the cumulative counters the writer shares with the serving process (only writers write
# them). A row handed to a writer is settled once it is written or dropped (invalid, backlog_full,
# lost at exit); the serving side counts whatever a dead writer left unsettled as writer_lost.
_RECEIVED, _WRITTEN, _INVALID, _BACKLOG_DROPPED, _EXIT_LOST, _WRITE_FAILURES = range(6)
_N_COUNTERS = 6


class RowError(ValueError):
    """A captured row that cannot be stored; the message names the column, never the value."""


def _conform_features(frame: pd.DataFrame) -> pd.DataFrame:
    """Cast request columns to the contract's kinds so the store's Parquet schema accepts them
    (integer features are rounded: a float age 70.4 is stored as 70). RowError names the column
    that cannot be cast (e.g. an integer beyond int64)."""
    for col in frame.columns:
        kind = S.COLUMN_TYPES.get(col)
        try:
            if kind in ("int", "float"):
                num = pd.to_numeric(frame[col], errors="coerce")
                with np.errstate(invalid="ignore", over="ignore"):  # an out-of-range value raises below
                    frame[col] = num.round().astype("Int64") if kind == "int" else num.astype("float64")
            elif kind == "bool":
                frame[col] = frame[col].astype("boolean")
            elif kind == "string":
                frame[col] = frame[col].astype("string")
            elif kind == "datetime":
                frame[col] = pd.to_datetime(frame[col], errors="coerce", utc=True)
        except (ValueError, TypeError, OverflowError) as exc:
            raise RowError(f"column {col!r} cannot be stored as {kind} ({type(exc).__name__})") from None
    return frame


def _reason(exc: BaseException) -> str:
    """A loggable reason: RowError/DataError messages name columns; others only their type (an
    arbitrary message might quote a raw value)."""
    if isinstance(exc, (RowError, DataError)):
        return str(exc).splitlines()[0][:200]
    if isinstance(exc, OSError) and exc.strerror:  # e.g. "OSError: No space left on device"
        return f"{type(exc).__name__}: {exc.strerror}"
    return type(exc).__name__


# --------------------------------------------------------------------------------------------------
# The writer side (a spawned process, or a thread)

class _WriterCore:
    """Receives batches of queued requests and keeps their raw rows (memory only) until a write is
    due (N/2 rows or T/2 seconds): then conforms and de-identifies them in one batch (bisecting
    down to the bad rows when the batch fails), buffers them in a BufferedPredictionWriter (the
    bounded backlog) and writes. Publishes its counters in `counters`. Conforming hundreds of rows
    at once costs little more than a few (pandas' cost is per column), hence the raw buffer."""

    def __init__(self, store, pseudonymizer, counters, *, flush_rows: int, flush_seconds: float | None,
                 max_backlog_rows: int):
        self.counters = counters
        self.flush_after = flush_seconds / 2 if flush_seconds else None
        self.writer = BufferedPredictionWriter(store, pseudonymizer=pseudonymizer,
                                               flush_rows=max(1, flush_rows // 2), flush_seconds=None,
                                               max_backlog_rows=max_backlog_rows)
        # cumulative counters survive a restarted writer: add this writer's own to the old totals
        self._base = {i: counters[i] for i in (_WRITTEN, _BACKLOG_DROPPED, _WRITE_FAILURES)}
        self._final = False
        self.batch_rows = max(1, flush_rows // 2)
        self._raw: dict[tuple[str, str], list] = collections.defaultdict(list)
        self._raw_rows = 0
        self._raw_since: float | None = None  # monotonic arrival of the oldest raw row

    def publish(self) -> None:
        w = self.writer
        self.counters[_WRITTEN] = self._base[_WRITTEN] + w.written
        self.counters[_BACKLOG_DROPPED] = self._base[_BACKLOG_DROPPED] + w.dropped
        self.counters[_WRITE_FAILURES] = self._base[_WRITE_FAILURES] + w.write_failures

    def add_items(self, items: list) -> None:
        n = 0
        for variant, version, records, scores, latency_ms, ts, *meta in items:
            shadow, request_id, row_ids, error = meta if meta else (False, None, None, False)
            rows = self._raw[(variant, version)]
            if row_ids is None:
                row_ids = range(len(records))
            for rec, score, k in zip(records, scores, row_ids):
                rows.append((rec, score, latency_ms, ts, shadow, request_id, k, error))
            n += len(records)
        self.counters[_RECEIVED] += n
        if n and self._raw_since is None:
            self._raw_since = time.monotonic()
        self._raw_rows += n
        if self._raw_rows >= self.batch_rows:
            self._process()  # the writer writes at once (its flush_rows is the same), unless backing off
        self.publish()

    def _process(self) -> None:
        """Conform and de-identify the raw rows into the writer's (bounded) buffer."""
        raw, self._raw = self._raw, collections.defaultdict(list)
        self._raw_rows, self._raw_since = 0, None
        for (variant, version), rows in raw.items():
            self._add_rows(variant, version, rows)

    def _add_rows(self, variant: str, version: str, rows: list) -> None:
        """Add `rows` at once; if that fails, split in halves until the failing rows are alone."""
        reasons: collections.Counter = collections.Counter()
        stack = [(0, len(rows))]
        while stack:
            lo, hi = stack.pop()
            part = rows[lo:hi]
            try:
                frame = _conform_features(pd.DataFrame.from_records([r[0] for r in part]))
                self.writer.add(frame, np.array([r[1] for r in part], dtype=float), version=version,
                                variant=variant, latency_ms=np.array([r[2] for r in part], dtype=float),
                                ts=[r[3] for r in part], shadow=[bool(r[4]) for r in part],
                                request_id=[r[5] for r in part], row=[r[6] for r in part],
                                error=[bool(r[7]) for r in part])
            except Exception as exc:  # a capture problem never reaches the caller; bad rows are counted
                if hi - lo == 1:
                    reasons[_reason(exc)] += 1
                else:
                    mid = (lo + hi) // 2
                    stack.append((mid, hi))
                    stack.append((lo, mid))
        if reasons:
            self.counters[_INVALID] += sum(reasons.values())
            log.error("prediction capture dropped %d invalid row(s) of %d (%s/%s): %s", sum(reasons.values()),
                      len(rows), variant, version, "; ".join(f"{r} x{c}" for r, c in reasons.most_common(5)))

    def seconds_to_due(self) -> float | None:
        """Seconds until the next scheduled write (None: nothing waits)."""
        if self.flush_after is None:
            return None  # without T, only the N/2-rows rule writes (in add_items)
        now, waits = time.monotonic(), []
        if self._raw_since is not None:
            waits.append(self.flush_after - (now - self._raw_since))
        if self.writer.pending:
            waits.append(max(self.writer.retry_at - now, self.flush_after - (self.writer.oldest_age or 0.0)))
        return max(0.0, min(waits)) if waits else None

    def flush_if_due(self) -> None:
        due = self.seconds_to_due()
        if due is not None and due <= 0:
            self._process()
            if time.monotonic() >= self.writer.retry_at:  # a failing disk is retried with a back-off
                self.flush(raise_errors=False)
            else:
                self.publish()

    def flush(self, raise_errors: bool = True) -> int:
        self._process()
        try:
            return self.writer.flush()
        except Exception:
            if raise_errors:
                raise
            return 0
        finally:
            self.publish()

    def final_flush(self) -> None:
        """At exit (once): write what is left; what cannot be written is a real loss (writer_lost)."""
        if self._final:
            return
        self._final = True
        try:
            self._process()
            self.writer.flush()
        except Exception as exc:
            lost = self.writer.pending
            self.counters[_EXIT_LOST] += lost
            log.error("capture writer exiting: %d rows could not be written (%s)", lost, _reason(exc))
        self.publish()


def _serve_writer(conn, core: _WriterCore, stopping: threading.Event | None = None) -> None:
    """The writer's loop: messages ("batch", items), ("flush", seq), ("close", seq). Ends on
    "close", or when the pipe closes (the serving process is gone), or on `stopping` (SIGTERM),
    after writing everything received."""
    try:
        while stopping is None or not stopping.is_set():
            due = core.seconds_to_due()
            timeout = 0.2 if due is None else min(0.2, due)
            if conn.poll(timeout):
                msg = conn.recv()
                kind = msg[0]
                if kind == "batch":
                    core.add_items(msg[1])
                    core.flush_if_due()
                elif kind in ("flush", "close"):
                    try:
                        written, error = core.flush(), None
                    except Exception as exc:
                        written, error = 0, _reason(exc)
                    if kind == "close":
                        core.final_flush()
                        conn.send(("closed", msg[1], written, error))
                        return
                    conn.send(("flushed", msg[1], written, error))
            else:
                core.flush_if_due()
        while conn.poll(0):  # SIGTERM: take what already arrived
            msg = conn.recv()
            if msg[0] == "batch":
                core.add_items(msg[1])
    except (EOFError, OSError):  # the serving process is gone (kill -9, crash): keep what arrived
        pass
    finally:
        core.final_flush()


def _writer_process_main(conn, counters, store, key_env: str, fingerprint: str, flush_rows: int,
                         flush_seconds: float | None, max_backlog_rows: int, model: str | None = None) -> None:
    """Entry point of the spawned writer process (`model`: the serving process's model, whose
    contract the rows are stored by)."""
    from ..spec import set_process_model  # noqa: PLC0415 - cycle: spec -> settings

    set_process_model(model)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s capture-writer %(levelname)s %(message)s")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C: the serving process closes us in order
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    pseudonymizer = pseudonymizer_from_env(key_env)
    if pseudonymizer.fingerprint != fingerprint:  # never write with another key
        log.error("the key in %s is not the serving process's key; capture writer exits", key_env)
        raise SystemExit(3)
    core = _WriterCore(store, pseudonymizer, counters, flush_rows=flush_rows, flush_seconds=flush_seconds,
                       max_backlog_rows=max_backlog_rows)
    _serve_writer(conn, core, stopping)


# --------------------------------------------------------------------------------------------------
# The serving side

class CaptureQueue:
    """The serving process's end of capture (see the module docstring).

    `put` is called on the request path (a deque append). `flush()` hands everything queued to the
    writer and returns when it is on disk (the demo and the tests use it to read their rows back);
    `close()` does the same and stops the writer. `process`: True (writer process; needs `key_env`,
    the environment variable holding `pseudonymizer`'s key), False (writer thread), None (a process
    when `key_env` holds the same key, else a thread).
    """

    def __init__(self, store, pseudonymizer, *, flush_rows: int = 1000, flush_seconds: float | None = 2.0,
                 max_backlog_rows: int = 100_000, interval: float = 0.1, key_env: str | None = None,
                 process: bool | None = None):
        if flush_rows < 2:
            raise ValueError("flush_rows must be at least 2")
        self.store = store
        self.pseudonymizer = pseudonymizer
        self.flush_rows = flush_rows
        self.flush_seconds = flush_seconds
        self.max_backlog_rows = max_backlog_rows
        self.handoff = min(interval, flush_seconds / 4) if flush_seconds else interval
        self.key_env = key_env
        self.process = self._use_process(process)
        self._ctx = multiprocessing.get_context("spawn")
        self.counters = self._ctx.RawArray("q", _N_COUNTERS)
        self._q: collections.deque = collections.deque()
        self._lock = threading.Lock()  # guards _q, _queued and the serving-side counters
        self._send_lock = threading.Lock()  # one sender on the pipe; flush/close wait their reply
        self._queued = 0
        self._accepted = 0
        self._sent = 0  # rows handed to writers so far
        self._unsettled_lost = 0  # of those, rows dead writers never settled (counted in writer_lost)
        self._queue_dropped = 0
        self._writer_lost = 0
        self._seq = 0
        self._closed = False
        self._last_start = 0.0
        self._stop = threading.Event()
        # run first by flush() and close(): producers that feed this queue off the request path
        # (the shadow scorer) hand over what they hold, so a flush covers every answered request
        self.before_flush: list = []
        self._start_writer()
        self._thread = threading.Thread(target=self._run, name="capture-sender", daemon=True)
        self._thread.start()

    # -- writer lifecycle --------------------------------------------------------------------------
    def _use_process(self, process: bool | None) -> bool:
        if process is False:
            return False
        reason = None
        if not self.key_env:
            reason = "no key environment variable was named"
        else:
            try:
                if pseudonymizer_from_env(self.key_env).fingerprint != self.pseudonymizer.fingerprint:
                    reason = f"{self.key_env} does not hold the serving key"
            except ConfigError:
                reason = f"{self.key_env} is not set"
        if reason is None:
            try:
                pickle.dumps(self.store)
            except Exception:
                reason = f"{type(self.store).__name__} cannot be sent to another process"
        if reason is not None:
            if process:
                raise ValueError(f"capture writer process impossible: {reason}")
            log.info("prediction capture writes from a thread of the serving process: %s", reason)
            return False
        return True

    def _start_writer(self) -> None:
        self._last_start = time.monotonic()
        parent, child = self._ctx.Pipe(duplex=True)
        if self.process:
            self._worker = self._ctx.Process(
                target=_writer_process_main, name="retrainer-capture-writer", daemon=True,
                args=(child, self.counters, self.store, self.key_env, self.pseudonymizer.fingerprint,
                      self.flush_rows, self.flush_seconds, self.max_backlog_rows, S.MODEL))
            self._worker.start()
            child.close()  # the writer holds its end; it sees EOF when this process dies
        else:
            core = _WriterCore(self.store, self.pseudonymizer, self.counters, flush_rows=self.flush_rows,
                               flush_seconds=self.flush_seconds, max_backlog_rows=self.max_backlog_rows)
            self._worker = threading.Thread(target=_serve_writer, args=(child, core), name="capture-writer",
                                            daemon=True)
            self._worker.start()
        self._conn = parent

    @property
    def writer_pid(self) -> int | None:
        """The writer process's pid (None for a writer thread)."""
        return self._worker.pid if self.process else None

    def _writer_died(self) -> None:
        """Account for what the dead writer held (caller holds `_send_lock`) and start another."""
        lost = self._outstanding()
        self._unsettled_lost += lost
        with self._lock:
            self._writer_lost += lost
        code = getattr(self._worker, "exitcode", None)
        log.error("prediction capture writer died (exit code %s) holding %d rows; restarting it", code, lost)
        try:
            self._conn.close()
        except OSError:
            pass
        self._start_writer()

    def _outstanding(self) -> int:
        """Rows handed to the writer and not settled yet (in the pipe, buffered, being written)."""
        c = self.counters
        settled = c[_WRITTEN] + c[_INVALID] + c[_BACKLOG_DROPPED] + c[_EXIT_LOST]
        return max(0, self._sent - settled - self._unsettled_lost)

    def _writer_alive(self) -> bool:
        return self._worker.is_alive()

    # -- serving side ------------------------------------------------------------------------------
    def put(self, variant: str, version: str, records: list, scores, latency_ms: float, ts: datetime, *,
            shadow: bool = False, request_id: str | None = None, rows: list[int] | None = None,
            error: bool = False) -> None:
        """Queue one scored batch (the request path: an append). Beyond `max_backlog_rows` queued
        rows the oldest are dropped and counted (`queue_full`). `shadow`: scored off the response
        path by a variant that did not answer; `request_id` and `rows` (each record's index in its
        request; default 0, 1, ...) key a request row's scores across variants; `error`: the
        request failed or was invalid (scores NaN)."""
        n = len(records)
        with self._lock:
            if self._closed:
                self._writer_lost += n
                return
            # plain floats: a numpy array per item would make the hand-off's pickling 3x slower
            scores = scores.tolist() if hasattr(scores, "tolist") else list(scores)
            self._q.append((variant, version, records, scores, latency_ms, ts, shadow, request_id, rows, error))
            self._queued += n
            self._accepted += n
            while self._queued > self.max_backlog_rows and len(self._q) > 1:
                old = self._q.popleft()
                self._queued -= len(old[2])
                self._queue_dropped += len(old[2])

    def _take(self) -> list:
        with self._lock:
            items = list(self._q)
            self._q.clear()
            self._queued = 0
        return items

    def _requeue(self, items: list) -> None:
        with self._lock:
            self._q.extendleft(reversed(items))
            self._queued += sum(len(i[2]) for i in items)

    def _send_pending(self) -> None:
        """Hand everything queued to the writer (caller holds `_send_lock`)."""
        if not self._writer_alive():
            if self._closed or time.monotonic() - self._last_start < 1.0:
                return  # restart at most once a second; rows wait in the bounded queue
            self._writer_died()
        items = self._take()
        if not items:
            return
        try:
            self._conn.send(("batch", items))
        except (OSError, ValueError):  # broken pipe: the writer died; the batch was not delivered
            self._requeue(items)
            if not self._writer_alive():
                self._writer_died()
            return
        self._sent += sum(len(i[2]) for i in items)

    def _run(self) -> None:
        while not self._stop.wait(self.handoff):
            try:
                with self._send_lock:
                    self._send_pending()
            except Exception:  # never let the sender die; the rows stay queued
                log.exception("prediction capture hand-off failed")

    def _call(self, kind: str, timeout: float) -> tuple[int, str | None]:
        with self._send_lock:
            self._send_pending()
            self._seq += 1
            seq = self._seq
            self._conn.send((kind, seq))
            deadline = time.monotonic() + timeout
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._conn.poll(remaining):
                    raise TimeoutError(f"the capture writer did not answer {kind!r} within {timeout:g} s")
                msg = self._conn.recv()
                if msg[1] == seq:
                    return msg[2], msg[3]

    def flush(self, timeout: float = 60.0) -> int:
        """Hand everything queued to the writer and write it now; returns the rows written by this
        call. Raises RuntimeError when the write failed (the rows stay in the backlog)."""
        self._run_before_flush()
        written, error = self._call("flush", timeout)
        if error:
            raise RuntimeError(f"prediction capture could not write: {error}")
        return written

    def _run_before_flush(self) -> None:
        for fn in list(self.before_flush):
            try:
                fn()
            except Exception:  # a producer's problem never stops the flush of what is queued
                log.exception("prediction capture: a pre-flush hand-over failed")

    # compatibility with the former API (`capture.drain(); capture.writer.flush()`)
    drain = flush

    @property
    def writer(self) -> CaptureQueue:
        """Deprecated: `capture.writer.flush()` is `capture.flush()`."""
        return self

    def close(self, timeout: float = 60.0) -> None:
        """Hand off what is queued, have the writer write everything and stop (idempotent)."""
        with self._lock:
            if self._closed:
                return
        self._run_before_flush()
        self._stop.set()
        self._thread.join(timeout=10)
        try:
            if self._writer_alive():
                self._call("close", timeout)
        except (OSError, EOFError, TimeoutError) as exc:
            log.error("prediction capture writer did not close cleanly: %s", exc)
        finally:
            with self._lock:
                self._closed = True
            self._worker.join(timeout)
            if self.process and self._worker.is_alive():
                self._worker.terminate()
            self._conn.close()
        leftover = self._take()
        if leftover:
            with self._lock:
                self._writer_lost += sum(len(i[2]) for i in leftover)

    # -- counters ----------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """accepted (rows put), written, dropped (by reason; real losses only), backlog (rows
        accepted but neither written nor dropped yet), write_failures, writer ("process"/"thread")."""
        c = self.counters
        with self._lock:
            queued, accepted = self._queued, self._accepted
            dropped = {"invalid": c[_INVALID], "backlog_full": c[_BACKLOG_DROPPED],
                       "queue_full": self._queue_dropped, "writer_lost": self._writer_lost + c[_EXIT_LOST]}
        return {"accepted": accepted, "written": c[_WRITTEN], "dropped": dropped,
                "backlog": queued + self._outstanding(), "write_failures": c[_WRITE_FAILURES],
                "writer": "process" if self.process else "thread",
                "window_rows": self.flush_rows, "window_seconds": self.flush_seconds}

    @property
    def captured(self) -> int:
        """Rows written to the store."""
        return int(self.counters[_WRITTEN])

    @property
    def dropped(self) -> int:
        """Rows lost for good (all reasons)."""
        return int(sum(self.stats()["dropped"].values()))


def metrics_text(capture: CaptureQueue | None) -> str:
    """Prometheus text exposition (format 0.0.4) of the capture counters; `capture_enabled 0`
    when the endpoint does not capture."""
    lines = ["# HELP retrainer_capture_enabled 1 when predictions are captured to the prediction store.",
             "# TYPE retrainer_capture_enabled gauge",
             f"retrainer_capture_enabled {0 if capture is None else 1}"]
    if capture is None:
        return "\n".join(lines) + "\n"
    st = capture.stats()

    def metric(name: str, kind: str, help_: str, samples: list[tuple[str, float]]) -> None:
        lines.extend([f"# HELP {name} {help_}", f"# TYPE {name} {kind}"])
        lines.extend(f"{name}{labels} {value:g}" if isinstance(value, float) else f"{name}{labels} {value}"
                     for labels, value in samples)

    metric("retrainer_capture_rows_accepted_total", "counter",
           "Answered predictions queued for capture.", [("", st["accepted"])])
    metric("retrainer_capture_rows_written_total", "counter",
           "Captured predictions written to the prediction store.", [("", st["written"])])
    metric("retrainer_capture_rows_dropped_total", "counter",
           "Captured predictions lost for good, by reason.",
           [(f'{{reason="{r}"}}', st["dropped"][r]) for r in DROP_REASONS])
    metric("retrainer_capture_backlog_rows", "gauge",
           "Captured predictions not yet written (queued, in the pipe, buffered or failing to write).",
           [("", st["backlog"])])
    metric("retrainer_capture_write_failures_total", "counter", "Failed prediction-store writes.",
           [("", st["write_failures"])])
    metric("retrainer_capture_backlog_limit_rows", "gauge",
           "Backlog bound; beyond it the oldest rows are dropped.", [("", capture.max_backlog_rows)])
    metric("retrainer_capture_window_rows", "gauge",
           "Durability window: at most this many answered rows can be lost on a crash.",
           [("", capture.flush_rows)])
    if capture.flush_seconds:
        metric("retrainer_capture_window_seconds", "gauge",
               "Durability window: only rows answered this recently can be lost on a crash.",
               [("", float(capture.flush_seconds))])
    metric("retrainer_capture_writer_process", "gauge", "1 when a separate process writes, 0 for a thread.",
           [("", 1 if capture.process else 0)])
    return "\n".join(lines) + "\n"


__all__ = ["DROP_REASONS", "CaptureQueue", "RowError", "metrics_text"]
