"""Prefect-side plumbing shared by tasks and flows: settings/backend per run, log hygiene."""
from __future__ import annotations

import logging
import os

os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from retrainer.backends import Backend, get_backend  # noqa: E402
from retrainer.errors import RetrainerError  # noqa: E402
from retrainer.settings import Settings, load_settings  # noqa: E402


class ExpectedErrorFilter(logging.Filter):
    """Expected failures (bad data, bad config, unknown versions) are logged as one line: the
    traceback is dropped for RetrainerError so users never see one; real bugs keep theirs."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, RetrainerError):
            record.exc_info = None
            record.exc_text = None
        return True


_FILTER = ExpectedErrorFilter()


def install_log_filter() -> None:
    loggers = [logging.getLogger()] + [logging.getLogger(n) for n in list(logging.root.manager.loggerDict)
                                       if n.startswith("prefect")]
    for lg in loggers:
        for h in lg.handlers:
            if _FILTER not in h.filters:
                h.addFilter(_FILTER)


def settings_for(home: str | None = None) -> Settings:
    return load_settings(**({"home": home} if home else {}))


def backend_for(settings: Settings) -> Backend:
    return get_backend(settings)


def artifact_key(*parts: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only."""
    raw = "-".join(parts).lower()
    return "".join(c if c.isalnum() else "-" for c in raw).strip("-")
