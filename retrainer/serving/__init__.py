"""The scoring endpoint: SageMaker's inference-container contract, served by uvicorn.

Production ("blue"), the canary candidate ("green") and up to two warm standbys ("previous-1",
"previous-2") are loaded side by side and share traffic by weight, routed deterministically per
patient; an admin route changes the weights with one atomic switch of an immutable routing table,
and every prediction is captured, de-identified, to the prediction store off the request path,
with the scores the other variants gave the same rows in shadow (`serving.shadow`) and the
failed or invalid requests as error rows.

Modules: `routing` (variants, the routing table, routing.json), `pool` (verified models in
memory), `capture` (the capture queue and its writer process), `buffer` (the writer's batching and
bounded backlog), `shadow` (scoring by the other variants off the response path, request ids),
`contract` (start-up refusals, the category allow-list), `parsing` (request
bodies with limits), `state` (what the routes share; the one way routing changes, audited), `app`
(the FastAPI routes), `server` (uvicorn in the foreground or a thread). The client for a running
endpoint, `LocalEndpoint`, is the local backend's (`retrainer.backends.local`); it is re-exported
here, imported on first use because that module imports this package.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .app import BadRequest, ServingState, create_app
from .capture import CaptureQueue
from .pool import ModelPool
from .routing import (
    CANDIDATE,
    INVOKED_HEADER,
    PRODUCTION,
    ROUTING_FILE,
    STANDBY_PREFIX,
    TARGET_HEADER,
    WEIGHT_TOLERANCE,
    RoutingTable,
    VariantSpec,
    default_variants,
    entity_point,
    parse_variants,
    read_routing,
    routing_path,
    write_routing,
)
from .server import BackgroundServer, build_app_from_settings, serve

if TYPE_CHECKING:
    from ..backends.local import LocalEndpoint

__all__ = [
    "CANDIDATE", "INVOKED_HEADER", "PRODUCTION", "ROUTING_FILE", "STANDBY_PREFIX", "TARGET_HEADER",
    "WEIGHT_TOLERANCE", "BackgroundServer", "BadRequest", "CaptureQueue", "LocalEndpoint", "ModelPool",
    "RoutingTable", "ServingState", "VariantSpec", "build_app_from_settings", "create_app",
    "default_variants", "entity_point", "parse_variants", "read_routing", "routing_path", "serve",
    "write_routing",
]


def __getattr__(name: str) -> Any:
    """`LocalEndpoint`, from `retrainer.backends.local` on first use (no import cycle)."""
    if name == "LocalEndpoint":
        from ..backends.local import LocalEndpoint  # noqa: PLC0415 - that module imports this package

        globals()["LocalEndpoint"] = LocalEndpoint
        return LocalEndpoint
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
