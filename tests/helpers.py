"""Small builders shared by tests (real files, real models, a real Prefect server; no fakes)."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
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
