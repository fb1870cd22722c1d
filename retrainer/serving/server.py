"""Running the endpoint: the app built from settings, under uvicorn in the foreground (`serve`)
or in a daemon thread (`BackgroundServer`, for the demo and the tests)."""
from __future__ import annotations

import logging
import threading
import time

import uvicorn

from ..deid import pseudonymizer_from_env
from ..predstore import open_store
from ..registry import LocalRegistry
from .app import create_app
from .contract import check_serving_settings, exposure_warning

log = logging.getLogger(__name__)


def build_app_from_settings(settings, *, capture: bool = True):
    """The app for `settings`: local registry, the prediction store (`predictions.store`), pseudonymizer from the
    environment variable `settings.pseudonym_key_env` (required when `capture`)."""
    registry = LocalRegistry(settings.registry_dir, settings.model_name)
    pseudonymizer = store = None
    if capture:
        pseudonymizer = pseudonymizer_from_env(settings.pseudonym_key_env)  # ConfigError if missing
        store = open_store(settings)
        store.check()  # a store that cannot be written: one line now, not lost rows later
    return create_app(settings, registry, store, pseudonymizer)


def serve(settings, *, host: str | None = None, port: int | None = None, capture: bool = True,
          log_level: str = "warning") -> None:
    """Run the endpoint with uvicorn, one worker: the routing table and the models live in the
    process, and a second worker would hold a second copy whose admin changes the first never
    sees (for more throughput run several servers behind a balancer, each reading routing.json).

    Refuses (ConfigError, one line) without a strong admin token (see `contract`); the host is
    `settings.serving.host` (loopback by default) unless `host` is given, and a non-loopback host
    is warned about."""
    host = host or settings.serving.host
    port = port or settings.serving.port
    check_serving_settings(settings.serving, host)
    app = build_app_from_settings(settings, capture=capture)
    warning = exposure_warning(host, port)
    if warning:
        log.warning(warning)
    uvicorn.run(app, host=host, port=port, workers=1, log_level=log_level, access_log=False)


class BackgroundServer:
    """An ASGI app under uvicorn in a daemon thread on loopback, as a context manager (the demo and
    the tests run the real endpoint this way; `serve()` is the foreground equivalent)."""

    def __init__(self, app, port: int, host: str = "127.0.0.1", name: str = "retrainer-endpoint"):
        self.app, self.port = app, port
        self.url = f"http://{host}:{port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning",
                                                    access_log=False, lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True, name=name)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError(f"the endpoint did not start on {self.url}")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(20)
