"""One clock for the whole domain: timezone-aware UTC `datetime`s.

Everything that asks "what time is it" for a decision (canary checks, trigger windows, capture
timestamps, registry records) calls `utcnow()`. By default that is the system clock. A test or a
scripted scenario installs another clock with `use(...)`, e.g. a `ManualClock` that moves only
when told to, so the same code runs a 72-hour canary in a second and gives the same result on a
loaded machine.
"""
from __future__ import annotations

import contextlib
import threading
from datetime import datetime, timedelta, timezone
from typing import Iterator, Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...

    def wait_until(self, when: datetime, stop: threading.Event) -> bool:
        """Block until `now() >= when` (True) or until `stop` is set (False)."""
        ...


class SystemClock:
    """Wall-clock UTC time."""

    def now(self) -> datetime:
        return datetime.now(timezone.utc)

    def wait_until(self, when: datetime, stop: threading.Event) -> bool:
        delay = (when - self.now()).total_seconds()
        return not (delay > 0 and stop.wait(delay))


class ManualClock:
    """A clock that moves only through `advance()`/`set()`; waiters wake when it passes their time."""

    def __init__(self, start: datetime):
        if start.tzinfo is None:
            raise ValueError("ManualClock needs a timezone-aware start")
        self._now = start
        self._cond = threading.Condition()

    def now(self) -> datetime:
        with self._cond:
            return self._now

    def set(self, when: datetime) -> None:
        with self._cond:
            if when < self._now:
                raise ValueError("a clock never goes backwards")
            self._now = when
            self._cond.notify_all()

    def advance(self, delta: timedelta) -> datetime:
        self.set(self.now() + delta)
        return self.now()

    def wait_until(self, when: datetime, stop: threading.Event) -> bool:
        with self._cond:
            while self._now < when:
                if stop.is_set():
                    return False
                self._cond.wait(0.05)
            return True


_SYSTEM = SystemClock()
_current: Clock = _SYSTEM


def current() -> Clock:
    """The clock in force in this process."""
    return _current


def utcnow() -> datetime:
    """Now, timezone-aware UTC, from the clock in force."""
    return _current.now()


def utcnow_iso() -> str:
    """`utcnow()` as ISO 8601 with milliseconds (the registry's and audit log's format)."""
    return utcnow().isoformat(timespec="milliseconds")


@contextlib.contextmanager
def use(clock: Clock) -> Iterator[Clock]:
    """Install `clock` for this process until the block ends."""
    global _current
    before, _current = _current, clock
    try:
        yield clock
    finally:
        _current = before
