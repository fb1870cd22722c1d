"""The scoring app: SageMaker's inference-container contract on FastAPI.

Routes (same shapes as a SageMaker real-time endpoint, so clients do not care which backend runs):

* `GET /ping` - 200 when at least one variant is loaded, else 503.
* `GET /metrics` - Prometheus text: prediction capture counters (rows written, lost by reason,
  backlog, durability window; see `capture`).
* `POST /invocations` - body `{"instances": [{column: value, ...}, ...]}` (application/json) or CSV
  with a header row of column names (text/csv). Response
  `{"predictions": [{"score": float, "version": str, "variant": str}, ...]}`; the header
  `X-Amzn-Invoked-Production-Variant` names the variant(s). Header
  `X-Amzn-SageMaker-Target-Variant: <variant>` forces a variant (404 if unknown): any caller may
  target a variant with weight > 0, a weight-0 standby needs the admin token (403 otherwise), and
  targeted predictions are captured with `targeted = true`, which the canary's statistics leave out.
* `GET /admin/variants`, `POST /admin/variants` (body: a list of `{variant, version, weight}`,
  or `{"variants": [...], "reason": "...", "force": false}`) - need
  `Authorization: Bearer <serving.admin_token>`. A change is appended to the registry's audit log
  (actor from the `X-Retrainer-Actor` header, default "admin-api"); versions the registry calls
  rejected or archived are refused (422) unless `"force": true`.

Limits (see `contract` and `scoring.validate_records`): the app refuses to start without an admin
token of >= 32 bytes; strings are at most 256 characters and numbers lie in the contract's ranges
(422 naming the field); JSON nested too deeply is a 400 with one log line; a body not received
within `serving.body_timeout_s` is a 408 and closes the connection; a client that disconnects
mid-body is logged in one line. Only known category values reach the prediction store (others are
stored as null and counted in `GET /admin/variants` under `contract`).

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

import asyncio
import csv
import hmac
import io
import json
import logging
import random
import re
import threading
import time
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, Callable, Sequence

import numpy as np
from fastapi import FastAPI
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request  # module level: annotations are resolved by name

from ..clock import utcnow, utcnow_iso
from ..errors import ArtifactIntegrityError, RegistryError, RolloutError
from ..registry import atomic_write_text
from ..scoring import coerce_csv_records, validate_records
from .capture import CaptureQueue, metrics_text
from .contract import TARGETED, CategoryConformer, admin_token, check_serving_settings
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


ACTOR_HEADER = "X-Retrainer-Actor"
DEFAULT_ACTOR = "admin-api"
DEFAULT_REASON = "routing change through POST /admin/variants"
REFUSED_STATUSES = ("rejected", "archived")  # routed to only with "force": true
MAX_REASON_CHARS = 500
_ACTOR_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


class AuditFailed(Exception):
    """The routing change could not be written to the registry's audit log (nothing changed)."""


def refusal_status(exc: Exception) -> int:
    """The HTTP status for an admin change refused with `exc` (see ADMIN_REFUSAL_STATUS)."""
    for cls in type(exc).__mro__:
        if cls in ADMIN_REFUSAL_STATUS:
            return ADMIN_REFUSAL_STATUS[cls]
    return 422


_FROM_SETTINGS: Any = object()


class ServingState:
    """Everything the routes share. `table` is the one reference swapped by admin changes.

    Capture options (see `capture.CaptureQueue`; by default from `settings.serving`): `flush_rows`
    (N) and `flush_seconds` (T, None: no time rule) bound what a crash can lose,
    `capture_backlog_rows` bounds the rows held while writes fail, `capture_interval` is the
    hand-off period, `capture_process` chooses the writer (None: a process when possible)."""

    def __init__(self, settings, registry, store=None, pseudonymizer=None, clock: Callable[[], datetime] = utcnow,
                 *, flush_rows: int | None = None, flush_seconds: float | None = _FROM_SETTINGS,
                 capture_interval: float = 0.1, capture_backlog_rows: int | None = None,
                 capture_process: bool | None = None):
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
        self.conformer = CategoryConformer()
        self.targeted = 0  # predictions whose variant a header chose (left out of canary statistics)
        if store is not None and pseudonymizer is not None:
            sv = settings.serving
            self.capture = CaptureQueue(
                store, pseudonymizer, flush_rows=flush_rows or sv.capture_flush_rows,
                flush_seconds=sv.capture_flush_seconds if flush_seconds is _FROM_SETTINGS else flush_seconds,
                max_backlog_rows=capture_backlog_rows or sv.capture_backlog_rows, interval=capture_interval,
                key_env=settings.pseudonym_key_env, process=capture_process)
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

    def set_variants(self, items: Any, *, actor: str = DEFAULT_ACTOR, reason: str = DEFAULT_REASON,
                     force: bool = False) -> RoutingTable:
        """Validate, refuse rejected/archived versions (unless `force`), load (verified), persist,
        append the change to the registry's audit log, then swap the table in one assignment.
        RolloutError when refused; AuditFailed (routing.json restored) when the audit cannot be
        written; in both cases nothing changed."""
        specs = parse_variants(items)
        with self.admin_lock:
            statuses = {s.version: str(self.registry.get(s.version).status) for s in specs}  # UnknownVersion
            refused = {v: st for v, st in statuses.items() if st in REFUSED_STATUSES}
            if refused and not force:
                v, st = next(iter(refused.items()))
                raise RolloutError(f"version {v} is {st} in the registry; send \"force\": true to route to it anyway")
            old = self.table
            new = self._build(specs, generation=old.generation + 1)
            previous_file = self.path.read_bytes() if self.path.is_file() else None
            write_routing(self.path, new.to_dict())
            event = {"time": utcnow_iso(), "actor": actor, "version": "routing", "kind": "routing",
                     "via": DEFAULT_ACTOR, "from": _summary(old), "to": _summary(new), "reason": reason,
                     "generation": new.generation, "force": bool(force), "forced": refused}
            try:
                self.registry.storage.append_audit([event])
            except Exception as exc:
                self._restore_routing(previous_file)
                raise AuditFailed(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
            self.table = new  # the atomic switch
            self.pool.keep_only(s.version for s in specs)
            return new

    def _restore_routing(self, previous: bytes | None) -> None:
        try:
            if previous is None:
                self.path.unlink(missing_ok=True)
            else:
                atomic_write_text(self.path, previous.decode("utf-8"))
        except OSError as exc:
            log.error("could not restore %s after a failed audit write: %s", self.path, type(exc).__name__)

    def state(self) -> dict[str, Any]:
        """What `GET /admin/variants` answers: the routing, loaded versions, capture counters."""
        t = self.table
        out = t.to_dict()
        out["loaded_versions"] = self.pool.versions
        out["routing_file"] = str(self.path)
        out["capture"] = ({"captured": self.capture.captured, "dropped": self.capture.dropped}
                          if self.capture else None)
        out["contract"] = {**self.conformer.stats(), "targeted_predictions": self.targeted}
        if self.startup_warning:
            out["startup_warning"] = self.startup_warning
        return out

    def close(self) -> None:
        """Flush and stop the capture (the app's shutdown)."""
        if self.capture is not None:
            self.capture.close()
            self.capture = None


def _summary(table: RoutingTable) -> str | None:
    """One line for the audit log: "blue=1.1.0:0.9 green=1.2.0:0.1" (None for an empty table)."""
    return " ".join(f"{s.variant}={s.version}:{s.weight:g}" for s in table.variants) or None


class BadRequest(Exception):
    """A request the app refuses: the HTTP status and a one-line message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def _loads(body: bytes) -> Any:
    """JSON from a request body; BadRequest 400 (one line, one log line for nesting) otherwise."""
    try:
        return json.loads(body, parse_constant=_reject_constant)
    except RecursionError:
        log.warning("refused a %d-byte JSON body nested too deeply", len(body))
        raise BadRequest(400, "body is not acceptable JSON: nested too deeply") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadRequest(400, f"body is not valid JSON: {str(exc).splitlines()[0]}") from None


def _parse_body(body: bytes, content_type: str, max_instances: int) -> list[dict]:
    ctype = content_type.split(";")[0].strip().lower()
    if ctype in ("", "application/json", "application/jsonlines+json"):
        data = _loads(body)
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


def _admin_request(data: Any) -> tuple[Any, str, bool]:
    """(variants, reason, force) from an admin body: a list, or {"variants", "reason", "force"}.
    ValueError (one line) when malformed."""
    if not isinstance(data, dict):
        return data, DEFAULT_REASON, False
    extra = sorted(str(k)[:40] for k in data if k not in ("variants", "reason", "force"))
    if extra:
        raise ValueError(f"unknown field(s) {', '.join(extra[:5])}; expected variants, reason, force")
    if "variants" not in data:
        raise ValueError('expected {"variants": [{variant, version, weight}, ...]}')
    force = data.get("force", False)
    if not isinstance(force, bool):
        raise ValueError("force must be true or false")
    reason = data.get("reason", DEFAULT_REASON)
    if not isinstance(reason, str) or not reason.strip() or len(reason) > MAX_REASON_CHARS \
            or not reason.isprintable():
        raise ValueError(f"reason must be one non-empty line of at most {MAX_REASON_CHARS} characters")
    return data["variants"], reason.strip(), force


def create_app(settings, registry, store=None, pseudonymizer=None, clock: Callable[[], datetime] = utcnow,
               **state_options):
    """The FastAPI app. `store`: a PredictionStore (None: no capture); `pseudonymizer`: the
    deid.Pseudonymizer used for routing and capture. `state_options`: flush_rows, flush_seconds,
    capture_interval, capture_backlog_rows, capture_process (see ServingState)."""
    check_serving_settings(settings.serving)  # ConfigError: no, empty, default or short admin token
    state = ServingState(settings, registry, store, pseudonymizer, clock, **state_options)
    token = (admin_token(settings.serving) or "").encode()
    max_body = settings.serving.max_body_bytes
    max_instances = settings.serving.max_instances
    body_timeout = settings.serving.body_timeout_s

    @asynccontextmanager
    async def lifespan(app):
        yield
        await run_in_threadpool(state.close)

    app = FastAPI(title="retrainer scoring endpoint", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.serving = state

    def error(status: int, message: str, headers: dict | None = None):
        if status in (408, 413):  # the rest of the body may still be on the wire: do not reuse
            headers = {**(headers or {}), "Connection": "close"}
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

    @app.get("/metrics")
    async def metrics():
        return Response(metrics_text(state.capture), media_type="text/plain; version=0.0.4; charset=utf-8")

    async def read_body(request: Request) -> bytes:
        length = request.headers.get("content-length")
        if length is not None:
            try:
                if int(length) > max_body:
                    raise BadRequest(413, f"body of {int(length)} bytes exceeds the limit of {max_body} bytes")
            except ValueError:
                raise BadRequest(400, "bad Content-Length header") from None
        chunks, size = [], 0
        try:
            async with asyncio.timeout(body_timeout):
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > max_body:
                        raise BadRequest(413, f"body exceeds the limit of {max_body} bytes")
                    chunks.append(chunk)
        except TimeoutError:
            log.warning("%s: body not received within %g s (%d bytes read); answered 408",
                        request.url.path, body_timeout, size)
            raise BadRequest(408, f"request body not received within {body_timeout:g} s") from None
        except ClientDisconnect:
            log.info("%s: client disconnected after %d body bytes", request.url.path, size)
            raise BadRequest(400, "client disconnected before sending the whole body") from None
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
            if target is not None:
                spec = table.by_name.get(target)
                if spec is None:
                    known = ", ".join(s.variant for s in table.variants if s.weight > 0) or "none"
                    raise BadRequest(404, f"unknown target variant {target[:64]!r} (variants: {known})")
                if spec.weight <= 0 and not authorized(request):
                    raise BadRequest(403, f"target variant {target!r} has weight 0: targeting it needs "
                                          "'Authorization: Bearer <serving.admin_token>'")
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
            state.conformer.conform(records)  # only known category values reach the store
            if target is not None:
                state.targeted += len(records)
                for rec in records:
                    rec[TARGETED] = True
            for name, idx in groups.items():
                part = records if len(groups) == 1 else [records[i] for i in idx]
                capture.put(name, versions[name], part, scores[idx], latency_ms, now)
        preds = [{"score": float(s), "version": versions[n], "variant": n} for s, n in zip(scores, names)]
        return Response(_dumps({"predictions": preds}), media_type="application/json",
                        headers={INVOKED_HEADER: ",".join(groups)})

    def authorized(request: Request) -> bool:
        if not token:  # an empty token never authorises (create_app refuses it anyway)
            return False
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
            data = _loads(body)
        except BadRequest as exc:
            return error(exc.status, exc.message)
        actor = request.headers.get(ACTOR_HEADER, DEFAULT_ACTOR).strip()
        if not _ACTOR_RE.match(actor):
            return error(422, f"{ACTOR_HEADER} must be 1-64 letters, digits or . _ @ -")
        try:
            items, reason, force = _admin_request(data)
            specs = parse_variants(items)
        except ValueError as exc:
            return error(422, str(exc))
        try:
            await run_in_threadpool(lambda: state.set_variants(specs, actor=actor, reason=reason, force=force))
        except (RegistryError, RolloutError) as exc:
            return error(refusal_status(exc), f"refused: {exc}")
        except AuditFailed as exc:
            log.error("routing change refused: the audit log could not be written (%s)", exc)
            return error(503, f"could not write the registry's audit log ({exc}); nothing changed")
        except OSError as exc:
            return error(503, f"could not persist the routing ({type(exc).__name__}); nothing changed")
        return Response(_dumps(state.state()), media_type="application/json")

    return app

