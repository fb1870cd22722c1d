"""Prefect-side plumbing shared by tasks and flows: settings/backend per run, log hygiene.

Importing it sets the process umask to 0o077, so a flow process (and an ephemeral server it starts)
creates Prefect's database, logs and results under PREFECT_HOME readable by its owner only.
"""
from __future__ import annotations

import logging
import os

from retrainer.perms import restrict_umask

restrict_umask()
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from prefect.cache_policies import NO_CACHE  # noqa: E402
from prefect.context import FlowRunContext  # noqa: E402

from retrainer.backends import Backend, get_backend  # noqa: E402
from retrainer.errors import RetrainerError  # noqa: E402
from retrainer.settings import Settings, load_settings  # noqa: E402
from retrainer.spec import add_resolver  # noqa: E402

# Task options, named once.
# IN_PROCESS: runs every time it is called; its result stays in memory (data frames, models).
IN_PROCESS = dict(cache_policy=NO_CACHE, persist_result=False)
def transient_failure(task, task_run, state) -> bool:
    """Retry a failed step unless it was refused (a `RetrainerError`: bad input, a missing
    approval, a wrong status): a refusal gives the same answer every time."""
    exc = state.data if isinstance(getattr(state, "data", None), BaseException) else None
    return not isinstance(exc, RetrainerError)


# ONCE_PER_RUN: with `cache_key_fn=per_run(...)`, a step with a side effect runs once per flow run
# however often the run is resumed (a resumed run re-executes its flow from the top); a transient
# failure is retried twice, a refusal is not.
ONCE_PER_RUN = dict(persist_result=True, retries=2, retry_delay_seconds=2, retry_condition_fn=transient_failure)


def per_run(step: str, *index_params: str):
    """A `cache_key_fn`: one key per flow run and step (plus the named parameters, e.g. a check
    index), so the step's persisted result is reused when the flow run re-runs from the top."""
    def key(context, parameters) -> str:
        run_id = context.task_run.flow_run_id
        extra = "-".join(str(parameters[p]) for p in index_params)
        return f"retrainer-{step}-{run_id}" + (f"-{extra}" if extra else "")
    return key


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


def settings_for(home: str | None = None, model: str | None = None) -> Settings:
    """The run's settings for `model` (None: RETRAINER_MODEL_NAME, else the default model); an
    unknown model is one ConfigError line here, before the run does anything."""
    overrides = {**({"home": home} if home else {}), **({"model_name": model} if model else {})}
    return load_settings(**overrides)


def model_of_current_run() -> str | None:
    """The `model` parameter of the running flow (a task sees its flow's), or None. Registered as
    a `retrainer.spec` resolver, so `retrainer.schema` answers for the run's model inside the run
    and its tasks, and for nobody once the run is over."""
    ctx = FlowRunContext.get()
    if ctx is None:
        return None
    return (ctx.parameters or {}).get("model")


add_resolver(model_of_current_run)


def backend_for(settings: Settings) -> Backend:
    return get_backend(settings)


def artifact_key(*parts: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only."""
    raw = "-".join(parts).lower()
    return "".join(c if c.isalnum() else "-" for c in raw).strip("-")
