"""Small builders shared by tests (real files, real models, a real Prefect server; no fakes)."""
from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from retrainer.clock import utcnow_iso
from retrainer.registry import LocalRegistry, ModelRecord

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


TEST_DBS = ("sqlite", "postgres")
DATABASE_URL_VARS = ("PREFECT_API_DATABASE_CONNECTION_URL", "PREFECT_SERVER_DATABASE_CONNECTION_URL")
PG_PACKAGE_HINT = "install Debian's postgresql package (apt-get install postgresql)"


def db_variant() -> str:
    """Which database the test Prefect server uses: RETRAINER_TEST_DB=sqlite (default) or postgres."""
    kind = os.environ.get("RETRAINER_TEST_DB", "").strip().lower() or "sqlite"
    if kind not in TEST_DBS:
        raise ValueError(f"RETRAINER_TEST_DB must be sqlite or postgres, not {os.environ['RETRAINER_TEST_DB']!r}")
    return kind


def pg_bindir(lib: Path = Path("/usr/lib/postgresql"), path: str | None = None) -> Path:
    """The folder holding initdb, pg_ctl and psql: Debian's newest /usr/lib/postgresql/N/bin, else
    wherever pg_ctl is on PATH. One clear error naming the package when there is none."""
    need = ("initdb", "pg_ctl", "psql")
    found = sorted(lib.glob("*/bin"), key=lambda d: int(d.parent.name) if d.parent.name.isdigit() else 0,
                   reverse=True)
    on_path = shutil.which("pg_ctl", path=path)
    if on_path:
        found.append(Path(on_path).resolve().parent)
    for d in found:
        if all((d / n).is_file() for n in need):
            return d
    raise RuntimeError(f"PostgreSQL binaries (initdb, pg_ctl, psql) not found: {PG_PACKAGE_HINT}")


class PostgresServer:
    """A throwaway PostgreSQL cluster for one test session: initdb in a temp dir, password
    (scram-sha-256) auth on 127.0.0.1 only, a `prefect` database; `stop()` stops it
    (`pg_ctl -m fast stop`) and removes the data dir. PostgreSQL refuses to run as root: as root,
    its binaries run as the `postgres` user. Durability is off (fsync, synchronous_commit): a
    test database dies with the session."""

    user = "postgres"
    database = "prefect"

    def __init__(self, bindir: Path | None = None):
        self.bindir = bindir or pg_bindir()
        self.as_root = os.geteuid() == 0
        if self.as_root:
            import pwd

            try:
                owner = pwd.getpwnam("postgres")
            except KeyError:
                raise RuntimeError(f"running as root and there is no postgres user: {PG_PACKAGE_HINT}") from None
        self.base = Path(tempfile.mkdtemp(prefix="retrainer-pg-"))  # 0700; pytest's tmp is root-only
        if self.as_root:
            os.chown(self.base, owner.pw_uid, owner.pw_gid)
        self.data = self.base / "data"
        self.password = secrets.token_urlsafe(24)
        self.port = free_port()
        self.started = False
        try:
            pwfile = self.base / "pwfile"
            pwfile.touch(mode=0o600)
            pwfile.write_text(self.password + "\n")
            if self.as_root:
                os.chown(pwfile, owner.pw_uid, owner.pw_gid)
            self._run("initdb", "-D", str(self.data), "-U", self.user, "-A", "scram-sha-256",
                      f"--pwfile={pwfile}", "-E", "UTF8", "--no-sync", as_owner=True)
            pwfile.unlink()
            opts = (f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -c fsync=off "
                    "-c synchronous_commit=off -c full_page_writes=off")
            self._run("pg_ctl", "-D", str(self.data), "-l", str(self.base / "postgres.log"), "-o", opts,
                      "-w", "-t", "60", "start", as_owner=True)
            self.started = True
            self.psql("CREATE DATABASE prefect", database="postgres")
        except BaseException:
            self.stop()
            raise

    @property
    def url(self) -> str:
        """The SQLAlchemy URL Prefect's server uses (PREFECT_API_DATABASE_CONNECTION_URL)."""
        return f"postgresql+asyncpg://{self.user}:{self.password}@127.0.0.1:{self.port}/{self.database}"

    def _run(self, tool: str, *args: str, as_owner: bool = False, env=None, timeout: float = 120) -> str:
        cmd = [str(self.bindir / tool), *args]
        if as_owner and self.as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        proc = subprocess.run(cmd, cwd=self.base if as_owner else None, env=env, capture_output=True, text=True,
                              timeout=timeout)
        if proc.returncode:
            log = self.base / "postgres.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{tool} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}\n{tail}")
        return proc.stdout

    def psql(self, sql: str, database: str | None = None) -> list[list[str]]:
        """Run `sql` with the real psql client; rows of text fields (NULL as None). Fields and
        rows are split on ASCII unit/record separators, so values may hold newlines and bars."""
        env = {**os.environ, "PGPASSWORD": self.password, "PGCONNECT_TIMEOUT": "10"}
        out = self._run("psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", str(self.port),
                        "-U", self.user, "-d", database or self.database, "-A", "-t", "-F", "\x1f", "-R", "\x1e",
                        "-P", "null=\x1dNULL", "-c", sql, env=env)
        text = out[:-1] if out.endswith("\n") else out  # psql ends its output with one newline
        if not text:
            return []
        return [[None if f == "\x1dNULL" else f for f in r.split("\x1f")] for r in text.split("\x1e")]

    def stop(self) -> None:
        if self.started and self.data.exists():
            try:
                self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "30", "stop", as_owner=True)
            except (RuntimeError, subprocess.TimeoutExpired):
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "stop", as_owner=True)
            self.started = False
        shutil.rmtree(self.base, ignore_errors=True)


class PrefectServer:
    """`prefect server start` on a free port with its own PREFECT_HOME. Its database is SQLite
    (home/prefect.db) or, with RETRAINER_TEST_DB=postgres, a PostgresServer of its own. `env` is
    what clients (tests, workers, `prefect deploy`) get: the API URL, never the database URL."""

    def __init__(self, home: Path):
        self.home = home
        self.db = db_variant()
        self.postgres = PostgresServer() if self.db == "postgres" else None
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/api"
        outer = {k: v for k, v in os.environ.items() if k not in DATABASE_URL_VARS}
        self.env = {**outer, "PREFECT_HOME": str(home), "PREFECT_API_URL": self.url,
                    "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_LOGGING_LEVEL": "INFO",
                    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90"}
        self.database_url = self.postgres.url if self.postgres else f"sqlite+aiosqlite:///{home / 'prefect.db'}"
        server_env = {k: v for k, v in self.env.items() if k != "PREFECT_API_URL"}
        server_env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = self.database_url
        self.log = open(home / "server.log", "w")
        try:
            self.proc = subprocess.Popen(
                [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(self.port), "--no-ui"],
                env=server_env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        except BaseException:
            self.log.close()
            if self.postgres:
                self.postgres.stop()
            raise

    def wait(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prefect server exited: {(self.home / 'server.log').read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError("prefect server did not become healthy in time")

    def stop(self) -> None:
        try:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, 15)
                try:
                    self.proc.wait(20)
                except subprocess.TimeoutExpired:
                    os.killpg(self.proc.pid, 9)
                    self.proc.wait(10)
            self.log.close()
        finally:
            if self.postgres:
                self.postgres.stop()

    def log_files(self) -> list[Path]:
        """The server's log and, on PostgreSQL, the database's own log."""
        return [self.home / "server.log", *([self.postgres.base / "postgres.log"] if self.postgres else [])]

    def query(self, sql: str) -> list[list]:
        """Rows of `sql` read from the server's own database (psql for PostgreSQL, sqlite3 read-only
        for SQLite), bypassing the API."""
        if self.postgres:
            return self.postgres.psql(sql)
        import sqlite3

        con = sqlite3.connect(f"file:{self.home / 'prefect.db'}?mode=ro", uri=True)
        try:
            return [list(r) for r in con.execute(sql)]
        finally:
            con.close()

    def dump_database(self) -> list[str]:
        """Every value of every table of the server's database as text, one string per row:
        "table: v1 | v2 | ..." (bytes decoded leniently; NULL as None)."""
        if self.postgres:
            tables = [r[0] for r in self.postgres.psql(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename")]
            if not tables:
                return []
            # json_each_text gives each column's own text (not JSON-escaped), like sqlite3's values
            sql = " UNION ALL ".join(
                f"SELECT '{t}: ' || coalesce((SELECT string_agg(coalesce(j.value, 'None'), ' | ') "
                f"FROM json_each_text(row_to_json(x)) j), '') FROM \"{t}\" x" for t in tables)
            return [r[0] for r in self.postgres.psql(sql)]
        tables = [r[0] for r in self.query("SELECT name FROM sqlite_master WHERE type='table'")]
        return [f"{t}: " + " | ".join(v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in row)
                for t in tables for row in self.query(f'SELECT * FROM "{t}"')]


def snapshot(root: Path) -> dict:
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != ".lock"}


def run_cli(*args) -> tuple[int, str]:
    """Run the CLI in process; returns (exit code, what it printed itself). Prefect's own console
    logs go to pytest's session capture (use a subprocess to assert on them)."""
    import contextlib
    import io

    from cli.main import main

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        code = main(list(args))
    return code, buf.getvalue()


def copy_months(src: Path, dst: Path, names: list[str] | None = None) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for f in sorted(src.glob("*.parquet")):
        if names is None or f.name in names:
            shutil.copy(f, dst / f.name)
    return dst


def make_record(version: str, status: str = "candidate", **kw) -> ModelRecord:
    base = dict(version=version, status=status, created_at=utcnow_iso(), trigger="manual", parent=None,
                bump="minor", bump_reason="test", schema_hash="s", data_hash=f"d{version}",
                params_hash="p", code_version="test", params={}, metrics={"candidate": {"auc": 0.8}},
                data={}, validation={"success": True}, gate={"eligible": True, "reason": "test"})
    base.update(kw)
    return ModelRecord(**base)


def artifact(tmp: Path, name: str) -> Path:
    d = tmp / f"artifact-{name}"
    d.mkdir(parents=True, exist_ok=True)
    (d / "model.joblib").write_bytes(name.encode() * 100)
    (d / "model.json").write_text("{}")
    return d


def registry_with(tmp: Path, versions: list[str]) -> LocalRegistry:
    """A registry where versions[0] entered production and each later one was promoted."""
    reg = LocalRegistry(tmp / "registry")
    for i, v in enumerate(versions):
        reg.register(make_record(v, "production" if i == 0 else "candidate"), artifact(tmp, v), actor="t")
        if i:
            reg.promote(v, actor="t", reason="test")
    return reg


def mark_folder(items, conftest_file: str, marker: str, xdist_group: str | None = None) -> None:
    """Add `marker` to every collected test under the folder of `conftest_file` (each test
    folder's conftest calls this, so `-m unit`, `-m flow`, `-m e2e` and `-m aws` select folders).
    With `xdist_group`, pytest-xdist (`--dist loadgroup`) runs the folder's tests on one worker."""
    import pytest

    folder = Path(conftest_file).resolve().parent
    for item in items:
        if folder in Path(item.path).resolve().parents:
            item.add_marker(getattr(pytest.mark, marker))
            if xdist_group:
                item.add_marker(pytest.mark.xdist_group(xdist_group))


class PoolWorker:
    """`prefect worker start --pool POOL` in its own process group, output appended to `log`.
    `kill(sig)` sends `sig` to the group and, if the worker has not exited within 30 s (a worker
    busy with a run, or one that ignores SIGTERM), SIGKILLs it: no worker outlives its test module
    to pick up another module's runs with the wrong environment."""

    def __init__(self, env, log: Path, pool: str):
        self.log = open(log, "a")
        self.proc = subprocess.Popen([str(BIN / "prefect"), "worker", "start", "--pool", pool], cwd=REPO, env=env,
                                     stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    def kill(self, sig: int = 9) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait(30)
            except ProcessLookupError:
                pass
        self.log.close()

    stop = kill


def wait_for(predicate, timeout: float, what: str, log=None, tail: int = 4000):
    """Poll `predicate` every second until it returns something truthy (returned), or fail after
    `timeout` s naming `what`, with the tail of the worker's `log` file when given."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(1)
    detail = f"; worker log tail:\n{Path(log).read_text()[-tail:]}" if log is not None else ""
    raise AssertionError(f"timed out waiting for {what}{detail}")
