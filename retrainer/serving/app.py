"""The scoring app: SageMaker's inference-container contract on FastAPI.

Routes (same shapes as a SageMaker real-time endpoint, so clients do not care which backend runs):

* `GET /ping` - 200 when at least one variant is loaded, else 503.
* `POST /invocations` - body `{"instances": [{column: value, ...}, ...]}` (application/json) or CSV
  with a header row of column names (text/csv). Response
  `{"predictions": [{"score": float, "version": str, "variant": str}, ...]}`; the header
  `X-Amzn-Invoked-Production-Variant` names the variant(s). Header
  `X-Amzn-SageMaker-Target-Variant: <variant>` forces a variant (404 if unknown).
* `GET /admin/variants`, `POST /admin/variants` (body: a list of `{variant, version, weight}`,
  or `{"variants": [...]}`) - need `Authorization: Bearer <serving.admin_token>`.

A request reads `state.table` once and uses that object to the end, and an admin change builds a
complete new table (loading and sha256-verifying any new version first) and then replaces the
reference in a single assignment: a request in flight never sees half a change and never fails
because of one. If the persisted routing cannot be loaded at start-up (unknown version, artifacts
failing their sha256) the server starts with the default and says so in `GET /admin/variants`
(`startup_warning`).

Every bad request (unknown, missing or mistyped fields, an empty or oversized batch, a body over
`serving.max_body_bytes`, malformed JSON or CSV, an unsupported content type) gets a 4xx with
`{"error": "<one line>"}`. A refused admin change gets the status of its error's type
(`ADMIN_REFUSAL_STATUS`).
"""
from __future__ import annotations

import csv
import hmac
import io
import json
import logging
import random
import threading
import time
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, Callable, Sequence

import numpy as np
from fastapi import FastAPI
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request  # module level: route annotations are resolved by name

from ..clock import utcnow
from ..errors import ArtifactIntegrityError, RegistryError, RolloutError
from ..predstore import BufferedPredictionWriter
from ..scoring import coerce_csv_records, validate_records
from .capture import CaptureQueue
from .pool import ModelPool
from .routing import (
    INVOKED_HEADER,
    TARGET_HEADER,
    RoutingTable,
    VariantSpec,
    default_variants,
    entity_point,
    parse_variants,
    read_routing,
    routing_path,
    write_routing,
)

log = logging.getLogger(__name__)

try:  # orjson is a Prefect dependency; it halves response encoding time
    import orjson as _orjson

    def _dumps(obj) -> bytes:
        return _orjson.dumps(obj)
except ImportError:  # pragma: no cover
    def _dumps(obj) -> bytes:
        return json.dumps(obj, separators=(",", ":")).encode()


# HTTP status of a refused `POST /admin/variants`, by the error's type (the most specific type wins):
# artifacts gone or failing their sha256 conflict with the registry's record; anything else the
# registry or the rollout rules refuse (an unknown version, say) is an unprocessable request.
ADMIN_REFUSAL_STATUS: dict[type[Exception], int] = {
    ArtifactIntegrityError: 409,
    RegistryError: 422,
    RolloutError: 422,
}


def refusal_status(exc: Exception) -> int:
    """The HTTP status for an admin change refused with `exc` (see ADMIN_REFUSAL_STATUS)."""
    for cls in type(exc).__mro__:
        if cls in ADMIN_REFUSAL_STATUS:
            return ADMIN_REFUSAL_STATUS[cls]
    return 422


class ServingState:
    """Everything the routes share. `table` is the one reference swapped by admin changes."""

    def __init__(self, settings, registry, store=None, pseudonymizer=None, clock: Callable[[], datetime] = utcnow,
                 *, flush_rows: int = 500, flush_seconds: float = 5.0, capture_interval: float = 0.25):
        self.settings = settings
        self.registry = registry
        self.pseudonymizer = pseudonymizer
        self.clock = clock
        self.pool = ModelPool(registry)
        self.admin_lock = threading.Lock()
        self.path = routing_path(settings)
        self.startup_warning: str | None = None
        self.table: RoutingTable = RoutingTable.empty()
        self.capture: CaptureQueue | None = None
        if store is not None and pseudonymizer is not None:
            writer = BufferedPredictionWriter(store, pseudonymizer=pseudonymizer, flush_rows=flush_rows,
                                              flush_seconds=flush_seconds)
            self.capture = CaptureQueue(writer, interval=capture_interval)
        elif store is not None:
            log.warning("prediction capture is off: no pseudonymizer (key) was given")
        self._load_initial()

    def _load_initial(self) -> None:
        try:
            specs = read_routing(self.path)
        except (ValueError, OSError) as exc:
            specs = None
            self.startup_warning = f"{self.path} is unreadable ({exc}); using the default routing"
        if specs is not None:
            try:
                self.table = self._build(specs, generation=1)
                return
            except (RegistryError, ValueError) as exc:
                self.startup_warning = f"persisted routing refused ({exc}); using the default routing"
                log.error(self.startup_warning)
        try:
            specs = default_variants(self.registry)
            if specs:
                self.table = self._build(specs, generation=1)
        except (RegistryError, ValueError) as exc:
            msg = f"default routing refused ({exc}); serving nothing until an admin sets variants"
            self.startup_warning = f"{self.startup_warning}; {msg}" if self.startup_warning else msg
            log.error(msg)

    def _build(self, specs: Sequence[VariantSpec], generation: int) -> RoutingTable:
        scorers = {s.variant: self.pool.get(s.version) for s in specs}  # loads + verifies new versions
        return RoutingTable.build(specs, scorers, generation, self.clock().isoformat(timespec="milliseconds"))

    def set_variants(self, items: Any) -> RoutingTable:
        """Validate, load (verified), persist, then swap the table in one assignment."""
        specs = parse_variants(items)
        with self.admin_lock:
            new = self._build(specs, generation=self.table.generation + 1)
            write_routing(self.path, new.to_dict())
            self.table = new  # the atomic switch
            self.pool.keep_only(s.version for s in specs)
            return new

    def state(self) -> dict[str, Any]:
        """What `GET /admin/variants` answers: the routing, loaded versions, capture counters."""
        t = self.table
        out = t.to_dict()
        out["loaded_versions"] = self.pool.versions
        out["routing_file"] = str(self.path)
        out["capture"] = ({"captured": self.capture.captured, "dropped": self.capture.dropped}
                          if self.capture else None)
        if self.startup_warning:
            out["startup_warning"] = self.startup_warning
        return out

    def close(self) -> None:
        """Flush and stop the capture (the app's shutdown)."""
        if self.capture is not None:
            self.capture.close()
            self.capture = None


class BadRequest(Exception):
    """A request the app refuses: the HTTP status and a one-line message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def _parse_body(body: bytes, content_type: str, max_instances: int) -> list[dict]:
    ctype = content_type.split(";")[0].strip().lower()
    if ctype in ("", "application/json", "application/jsonlines+json"):
        try:
            data = json.loads(body, parse_constant=_reject_constant)
        except (UnicodeDecodeError, ValueError) as exc:
            raise BadRequest(400, f"body is not valid JSON: {str(exc).splitlines()[0]}") from None
        if not isinstance(data, dict):
            raise BadRequest(400, 'JSON body must be an object: {"instances": [{column: value, ...}]}')
        extra = [k for k in data if k != "instances"]
        if extra:
            raise BadRequest(400, f"unknown top-level field(s): {', '.join(map(str, extra[:5]))}; "
                                  'expected {"instances": [...]}')
        if "instances" not in data:
            raise BadRequest(400, 'JSON body needs "instances": [{column: value, ...}]')
        records = data["instances"]
    elif ctype in ("text/csv", "application/csv"):
        try:
            text = body.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise BadRequest(400, "CSV body is not UTF-8") from None
        try:
            rows = list(csv.reader(io.StringIO(text), strict=True))
        except csv.Error as exc:
            raise BadRequest(400, f"malformed CSV: {exc}") from None
        if not rows or not any(c.strip() for c in rows[0]):
            raise BadRequest(400, "CSV body needs a header row of column names")
        records, err = coerce_csv_records(rows[0], rows[1:])
        if err:
            raise BadRequest(400, err)
    else:
        raise BadRequest(415, f"unsupported content type {ctype!r}: use application/json or text/csv")
    err = validate_records(records, max_instances)
    if err:
        raise BadRequest(413 if err.startswith("too many instances") else 422 if "instance " in err else 400, err)
    return records


def _reject_constant(name: str):
    raise ValueError(f"{name} is not a valid JSON number")


def create_app(settings, registry, store=None, pseudonymizer=None, clock: Callable[[], datetime] = utcnow,
               **state_options):
    """The FastAPI app. `store`: a PredictionStore (None: no capture); `pseudonymizer`: the
    deid.Pseudonymizer used for routing and capture. `state_options`: flush_rows, flush_seconds,
    capture_interval (see ServingState)."""
    state = ServingState(settings, registry, store, pseudonymizer, clock, **state_options)
    token = settings.serving.admin_token.get_secret_value().encode()
    max_body = settings.serving.max_body_bytes
    max_instances = settings.serving.max_instances

    @asynccontextmanager
    async def lifespan(app):
        yield
        await run_in_threadpool(state.close)

    app = FastAPI(title="retrainer scoring endpoint", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.serving = state

    def error(status: int, message: str, headers: dict | None = None):
        return Response(_dumps({"error": message}), status_code=status, media_type="application/json",
                        headers=headers)

    @app.exception_handler(Exception)
    async def _unexpected(request, exc):  # last resort; bad input never gets here
        log.exception("unexpected error serving %s", request.url.path)
        return error(500, f"internal error: {type(exc).__name__}")

    @app.exception_handler(404)
    async def _not_found(request, exc):
        return error(404, f"no route {request.method} {request.url.path}")

    @app.exception_handler(405)
    async def _bad_method(request, exc):
        return error(405, f"method {request.method} not allowed on {request.url.path}")

    @app.get("/ping")
    async def ping():
        table = state.table
        if not table.variants:
            return error(503, "no model loaded")
        return Response(b'{"status":"ok"}', media_type="application/json")

    async def read_body(request: Request) -> bytes:
        length = request.headers.get("content-length")
        if length is not None:
            try:
                if int(length) > max_body:
                    raise BadRequest(413, f"body of {int(length)} bytes exceeds the limit of {max_body} bytes")
            except ValueError:
                raise BadRequest(400, "bad Content-Length header") from None
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_body:
                raise BadRequest(413, f"body exceeds the limit of {max_body} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def score(table: RoutingTable, records: list[dict], target: str | None):
        t0 = time.perf_counter()
        if target is not None:
            names = [target] * len(records)
        else:
            names = []
            for rec in records:
                u = entity_point(rec, pseudonymizer)
                names.append(table.route(random.random() if u is None else u))
        scores = np.empty(len(records))
        groups: dict[str, list[int]] = {}
        for i, n in enumerate(names):
            groups.setdefault(n, []).append(i)
        for name, idx in groups.items():
            part = records if len(groups) == 1 else [records[i] for i in idx]
            scores[idx] = table.scorers[name].predict(part)
        latency_ms = (time.perf_counter() - t0) * 1000.0
        return names, scores, groups, latency_ms

    @app.post("/invocations")
    async def invocations(request: Request):
        table = state.table  # one read: this request uses this table to the end
        try:
            target = request.headers.get(TARGET_HEADER)
            if target is not None and target not in table.by_name:
                known = ", ".join(s.variant for s in table.variants) or "none"
                raise BadRequest(404, f"unknown target variant {target!r} (variants: {known})")
            if not table.variants:
                raise BadRequest(503, "no model loaded")
            body = await read_body(request)
            if not body.strip():
                raise BadRequest(400, "empty body: send {\"instances\": [...]} or CSV with a header row")
            records = _parse_body(body, request.headers.get("content-type", ""), max_instances)
        except BadRequest as exc:
            return error(exc.status, exc.message)
        if len(records) > 16:
            names, scores, groups, latency_ms = await run_in_threadpool(score, table, records, target)
        else:
            names, scores, groups, latency_ms = score(table, records, target)
        now = state.clock()
        capture = state.capture
        versions = {n: table.by_name[n].version for n in groups}
        if capture is not None:
            for name, idx in groups.items():
                part = records if len(groups) == 1 else [records[i] for i in idx]
                capture.put(name, versions[name], part, scores[idx], latency_ms, now)
        preds = [{"score": float(s), "version": versions[n], "variant": n} for s, n in zip(scores, names)]
        return Response(_dumps({"predictions": preds}), media_type="application/json",
                        headers={INVOKED_HEADER: ",".join(groups)})

    def authorized(request: Request) -> bool:
        got = request.headers.get("authorization", "")
        scheme, _, value = got.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token)

    def unauthorized():
        return error(401, "admin routes need 'Authorization: Bearer <serving.admin_token>'",
                     {"WWW-Authenticate": "Bearer"})

    @app.get("/admin/variants")
    async def get_variants(request: Request):
        if not authorized(request):
            return unauthorized()
        return Response(_dumps(state.state()), media_type="application/json")

    @app.post("/admin/variants")
    async def post_variants(request: Request):
        if not authorized(request):
            return unauthorized()
        try:
            body = await read_body(request)
            items = json.loads(body, parse_constant=_reject_constant)
        except BadRequest as exc:
            return error(exc.status, exc.message)
        except (UnicodeDecodeError, ValueError) as exc:
            return error(400, f"body is not valid JSON: {str(exc).splitlines()[0]}")
        try:
            parse_variants(items)
        except ValueError as exc:
            return error(422, str(exc))
        try:
            await run_in_threadpool(state.set_variants, items)
        except (RegistryError, RolloutError) as exc:
            return error(refusal_status(exc), f"refused: {exc}")
        except OSError as exc:
            return error(503, f"could not persist the routing ({type(exc).__name__}); nothing changed")
        return Response(_dumps(state.state()), media_type="application/json")

    return app

