"""The session Prefect server really stores its runs where RETRAINER_TEST_DB says: a flow run on the
session server is read back from the database itself (psql against PostgreSQL, sqlite3 against
the SQLite file), not through Prefect's API. CI runs this module in both variants."""
from __future__ import annotations

import copy
import socket
import uuid

import pytest

from tests.helpers import PostgresServer, db_variant


def _run_a_flow() -> str:
    from prefect import flow
    from prefect.context import get_run_context

    @flow(name="db-variant-probe")
    def probe() -> str:
        return str(get_run_context().flow_run.id)

    return probe()


def test_a_flow_run_is_stored_in_the_database_the_variant_names(prefect_api):
    server = prefect_api
    run_id = _run_a_flow()
    sql = "SELECT name, state_type FROM flow_run WHERE id = '{}'"
    if db_variant() == "postgres":
        assert server.database_url.startswith("postgresql+asyncpg://postgres:")
        assert "@127.0.0.1:" in server.database_url and server.database_url.endswith("/prefect")
        assert not (server.home / "prefect.db").exists()     # nothing fell back to the default SQLite file
        [[name, state]] = server.postgres.psql(sql.format(run_id))
        # the server holds its own connections to that database
        [[conns]] = server.postgres.psql("SELECT count(*) FROM pg_stat_activity WHERE datname = 'prefect' "
                                         "AND pid <> pg_backend_pid()")
        assert int(conns) >= 1
        assert "PREFECT_SERVER_DATABASE_CONNECTION_URL" not in server.env  # clients get the API, not the DB
    else:
        assert server.database_url == f"sqlite+aiosqlite:///{server.home / 'prefect.db'}"
        assert (server.home / "prefect.db").stat().st_size > 0
        [[name, state]] = server.query(sql.format(run_id))
    assert name and state == "COMPLETED"
    assert server.query(sql.format(uuid.uuid4())) == []            # the lookup can come back empty
    assert any(r.startswith("flow_run: ") and run_id in r for r in server.dump_database())


def test_a_postgres_server_listens_on_loopback_with_a_password_and_leaves_nothing_behind():
    pg = PostgresServer()
    base = pg.base
    try:
        assert pg.psql("SELECT current_database(), 1 + 1") == [["prefect", "2"]]
        assert pg.psql("SHOW listen_addresses") == [["127.0.0.1"]]
        wrong = copy.copy(pg)
        wrong.password = "not-the-password"
        with pytest.raises(RuntimeError, match="password authentication failed"):
            wrong.psql("SELECT 1")
        assert (base / "data").stat().st_mode & 0o077 == 0            # initdb's owner-only data dir
    finally:
        pg.stop()
    assert not base.exists()
    with socket.socket() as s:                                      # nothing listens on its port any more
        assert s.connect_ex(("127.0.0.1", pg.port)) != 0
