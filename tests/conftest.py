"""Shared fixtures: a real Prefect server for the session (started once, on demand), generated
data, isolated state directories."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parent.parent


os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrefectServer:
    def __init__(self, home: Path):
        self.home = home
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/api"
        self.env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_API_URL": self.url,
                    "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_LOGGING_LEVEL": "INFO",
                    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90"}
        self.log = open(home / "server.log", "w")
        self.proc = subprocess.Popen(
            [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(self.port),
             "--no-ui"], env={k: v for k, v in self.env.items() if k != "PREFECT_API_URL"},
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

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
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
        self.log.close()


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

    from flows.cli import main

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
