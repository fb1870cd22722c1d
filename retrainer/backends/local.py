"""The embedded default: on-disk registry, in-process scikit-learn training, and the endpoint of
`retrainer.serving` (a uvicorn server on this machine) driven over HTTP or through its routing file."""
from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any, Iterable

import httpx
import pandas as pd

from ..clock import utcnow
from ..errors import RegistryError, RolloutError
from ..predstore import open_store
from ..registry import LocalRegistry
from ..serving.parsing import ACTOR_HEADER
from ..serving.routing import (
    TARGET_HEADER,
    VariantSpec,
    default_variants,
    parse_variants,
    read_routing,
    routing_path,
    write_routing,
)
from ..serving.state import DEFAULT_ACTOR, DEFAULT_REASON, MAX_REASON_CHARS
from ..settings import Settings
from ..training import train
from . import Backend


class LocalTrainer:
    """Trains with `retrainer.training.train` in this process."""

    def fit(self, train_df: pd.DataFrame, validation: pd.DataFrame, params: dict[str, Any],
            workdir: Path) -> Path:
        """Train into `<workdir>/model` and return that directory."""
        model_dir = Path(workdir) / "model"
        train(train_df, validation, model_dir, params)
        return model_dir



def _audit_actor(actor: str | None) -> str:
    """`actor` as the admin route accepts it (letters, digits and . _ @ -, at most 64)."""
    cleaned = re.sub(r"[^A-Za-z0-9._@-]", "-", (actor or "").strip())[:64].strip("-._@")
    return cleaned or DEFAULT_ACTOR


def _audit_reason(reason: str | None) -> str:
    """`reason` as one line of at most MAX_REASON_CHARS printable characters."""
    line = "".join(ch for ch in " ".join(str(reason or "").split()) if ch.isprintable())
    return line[:MAX_REASON_CHARS] or DEFAULT_REASON


class LocalEndpoint:
    """The local backend's endpoint handle (a SageMaker endpoint class has the same methods).

    Talks to a running server's admin routes over HTTP with the admin token. When no server
    answers (connection refused), `set_variants` validates the versions against the registry
    (sha256 included) and writes `routing.json` directly: the server applies it when it starts.
    `state()` likewise falls back to the file (or the default routing).
    """

    def __init__(self, settings, *, base_url: str | None = None, timeout: float = 30.0):
        self.settings = settings
        host = settings.serving.host
        host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        self.base_url = base_url or f"http://{host}:{settings.serving.port}"
        self.timeout = timeout
        token = settings.serving.admin_token
        self._headers = {"Authorization": f"Bearer {token.get_secret_value()}"} if token is not None else {}

    def _client(self):
        return httpx.Client(base_url=self.base_url, timeout=self.timeout, headers=self._headers)

    @staticmethod
    def _error(resp) -> RolloutError:
        try:
            msg = resp.json().get("error", resp.text)
        except ValueError:
            msg = resp.text
        return RolloutError(f"endpoint refused ({resp.status_code}): {msg}")

    def set_variants(self, variants: Iterable, *, actor: str | None = None,
                     reason: str | None = None) -> dict[str, Any]:
        """Apply [(variant, version, weight), ...] (or dicts); returns the new state. The server
        appends the change to the registry's audit log with `actor` and `reason`."""
        specs = parse_variants(list(variants))
        actor, reason = _audit_actor(actor), _audit_reason(reason)
        body = {"variants": [s.to_dict() for s in specs], "reason": reason}
        try:
            with self._client() as client:
                resp = client.post("/admin/variants", json=body, headers={ACTOR_HEADER: actor})
        except httpx.ConnectError:
            return self._write_offline(specs, actor, reason)
        if resp.status_code != 200:
            raise self._error(resp)
        return {**resp.json(), "applied": "server"}

    def _write_offline(self, specs: list[VariantSpec], actor: str, reason: str) -> dict[str, Any]:
        """No server answers: verify the versions, write routing.json (the server applies it when
        it starts) and audit the change, as the admin route would."""
        registry = LocalRegistry(self.settings.registry_dir, self.settings.model_name)
        for s in specs:
            try:
                registry.verify(s.version)
            except RegistryError as exc:
                raise RolloutError(f"refused: {exc}") from None
        path = routing_path(self.settings)
        now = utcnow().isoformat(timespec="milliseconds")
        data = {"variants": [s.to_dict() for s in specs], "generation": None, "updated_at": now}
        write_routing(path, data)
        summary = " ".join(f"{s.variant}={s.version}:{s.weight:g}" for s in specs)
        registry.storage.append_audit([{"time": now, "actor": actor, "version": "routing", "kind": "routing",
                                        "via": "routing-file", "from": None, "to": summary, "reason": reason}])
        return {**data, "applied": "file", "routing_file": str(path)}

    def state(self) -> dict[str, Any]:
        """The server's routing (`running: True`), else the routing file's or the default one."""
        try:
            with self._client() as client:
                resp = client.get("/admin/variants")
        except httpx.ConnectError:
            path = routing_path(self.settings)
            try:
                specs = read_routing(path)
            except (ValueError, OSError) as exc:
                raise RolloutError(f"{path} is unreadable: {exc}") from None
            if specs is None:
                specs = default_variants(LocalRegistry(self.settings.registry_dir, self.settings.model_name))
            return {"variants": [s.to_dict() for s in specs], "running": False, "routing_file": str(path)}
        if resp.status_code != 200:
            raise self._error(resp)
        return {**resp.json(), "running": True}

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Block until GET /ping answers 200; RolloutError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        while True:
            try:
                resp = httpx.get(f"{self.base_url}/ping", timeout=2.0)
                if resp.status_code == 200:
                    return
                last = f"HTTP {resp.status_code}"
            except httpx.HTTPError as exc:
                last = type(exc).__name__
            if time.monotonic() > deadline:
                raise RolloutError(f"endpoint {self.base_url} not healthy after {timeout:.0f} s ({last})")
            time.sleep(0.1)

    def invoke(self, instances: list[dict], target_variant: str | None = None) -> dict[str, Any]:
        """POST /invocations (handy for smoke tests)."""
        headers = {TARGET_HEADER: target_variant} if target_variant else {}
        resp = httpx.post(f"{self.base_url}/invocations", json={"instances": instances}, headers=headers,
                          timeout=self.timeout)
        if resp.status_code != 200:
            raise self._error(resp)
        return resp.json()


def build(settings: Settings) -> Backend:
    """The local backend for `settings`."""
    return Backend(name="local", registry=LocalRegistry(settings.registry_dir, settings.model_name),
                   trainer=LocalTrainer(), settings=settings, endpoint=LocalEndpoint(settings),
                   predictions=open_store(settings))
