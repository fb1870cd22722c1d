"""Fixtures every test folder shares: a real Prefect server for the session (started once, on
demand), generated data, isolated state directories. Plain helpers live in `tests/helpers.py`;
each folder's own conftest adds its fixtures and marker (unit, flow, e2e, aws)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import PrefectServer, db_variant, pg_bindir

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def pytest_configure(config):
    """RETRAINER_TEST_DB=postgres runs the session's Prefect server on a PostgreSQL of its own
    (sqlite, the default, on a file in its PREFECT_HOME). A wrong value or missing PostgreSQL
    binaries stop the run at once with one line, before any test starts."""
    try:
        if db_variant() == "postgres":
            pg_bindir()
    except (ValueError, RuntimeError) as e:
        raise pytest.UsageError(str(e)) from None


def pytest_report_header(config):
    return f"prefect test server database: {db_variant()} (RETRAINER_TEST_DB)"


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory):
    home = tmp_path_factory.mktemp("prefect-home")
    server = PrefectServer(home)
    try:
        server.wait()
        yield server
    finally:
        server.stop()


@pytest.fixture
def prefect_api(prefect_server, monkeypatch):
    """Point in-process Prefect clients at the session server."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    monkeypatch.setenv("PREFECT_API_URL", prefect_server.url)
    with temporary_settings(updates={PREFECT_API_URL: prefect_server.url}):
        yield prefect_server


@pytest.fixture(scope="session")
def monthly_data(tmp_path_factory) -> Path:
    """Six clean months, 2500 admissions each."""
    from retrainer.datagen import GenerationSpec, generate

    out = tmp_path_factory.mktemp("months")
    generate(out, GenerationSpec(months=6, rows_per_month=2500, seed=11))
    return out


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """An isolated RETRAINER_HOME for one test."""
    h = tmp_path / "home"
    monkeypatch.setenv("RETRAINER_HOME", str(h))
    monkeypatch.delenv("RETRAINER_CONFIG", raising=False)
    return h
