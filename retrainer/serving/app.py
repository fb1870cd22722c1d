"""The scoring app: SageMaker's inference-container contract on FastAPI.

Routes (same shapes as a SageMaker real-time endpoint, so clients do not care which backend runs):

* `GET /ping` - 200 when at least one variant is loaded, else 503.
* `GET /metrics` - Prometheus text (prometheus-client, a registry per app; see `metrics`): requests,
  errors by reason and a latency histogram per variant and version, rows answered, the shadow
  scores' absolute difference from the routed answer (histogram), current weights per variant and
  version; then the prediction capture counters (rows written, lost by reason, backlog, durability
  window; see `capture`), shadow scores and shadow failures per variant, and failed or invalid
  requests per variant (`unrouted` when the request could not be routed).
* `GET /status` - no token, read-only (`retrainer.status`): production, candidates, this endpoint's
  routing, running rollouts and pending deferred verdicts (the rollout journal), the last monitor
  run; never a secret, an identifier or a path.
* `POST /invocations` - body `{"instances": [{column: value, ...}, ...]}` (application/json) or CSV
  with a header row of column names (text/csv). Response
  `{"predictions": [{"score": float, "version": str, "variant": str}, ...]}`; the header
  `X-Amzn-Invoked-Production-Variant` names the variant(s). Header
  `X-Amzn-SageMaker-Target-Variant: <variant>` forces a variant (404 if unknown): any caller may
  target a variant with weight > 0, a weight-0 standby needs the admin token (403 otherwise), and
  targeted predictions are captured with `targeted = true`, which the canary's statistics leave out.
  Every answer carries `X-Retrainer-Request-Id`; each row is captured with that id and its index
  (`request_id`, `row`), and, per `serving.shadow`, also scored off the response path by the other
  variant(s) and captured with `shadow = true` (see `shadow`): only the routed answer is returned.

  Failed and invalid requests are captured too, so the error rate is measured: a request refused by
  validation (4xx) is routed as it would have been and each parsed instance is stored as an `error`
  row (NaN score) keeping only its valid routing keys, de-identified (no feature value); a request
  whose scoring raises is answered 500 and its failing variant's rows are stored as `error` rows.
  A request that cannot be routed (unparseable body, unknown target, no model) is only counted.
* `GET /admin/variants`, `POST /admin/variants` (body: a list of `{variant, version, weight}`,
  or `{"variants": [...], "reason": "...", "force": false}`) - need
  `Authorization: Bearer <serving.admin_token>`. A change is appended to the registry's audit log
  (actor from the `X-Retrainer-Actor` header, default "admin-api"); versions the registry calls
  rejected or archived are refused (422) unless `"force": true`.

Limits (see `contract` and `parsing.validate_records`): the app refuses to start without an admin
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
import hmac
import json
import logging
import random
import re
import time
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Callable

import numpy as np
from fastapi import FastAPI
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request  # module level: annotations are resolved by name

from .. import schema as S
from ..clock import utcnow
from ..container_env import REQUEST_ID_ATTRIBUTE
from ..errors import ArtifactIntegrityError, RegistryError, RolloutError
from ..spec import set_process_model
from ..status import endpoint_section, gather
from .capture import metrics_text
from .contract import TARGETED, admin_token, check_serving_settings
from .metrics import ServingMetrics, install_shadow_tap
from .parsing import ACTOR_HEADER, ACTOR_RE, MAX_STRING_CHARS, BadRequest, admin_request, loads, parse_body
from .routing import (
    INVOKED_HEADER,
    TARGET_HEADER,
    RoutingTable,
    VariantSpec,
    entity_point,
    parse_variants,
)
from .shadow import REQUEST_ID_HEADER, UNROUTED, serving_metrics_text
from .state import DEFAULT_ACTOR, AuditFailed, ServingState

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


_CALLER_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def caller_request_id(request: Request) -> str | None:
    """The request id a caller put in SageMaker's custom attributes (`retrainer-request-id=<id>`,
    forwarded to production and shadow variants alike), if well formed."""
    attrs = request.headers.get("x-amzn-sagemaker-custom-attributes", "")
    for part in attrs.split(","):
        key, _, value = part.strip().partition("=")
        if key.strip() == REQUEST_ID_ATTRIBUTE and _CALLER_ID.match(value.strip()):
            return value.strip()
    return None


def refusal_status(exc: Exception) -> int:
    """The HTTP status for an admin change refused with `exc` (see ADMIN_REFUSAL_STATUS)."""
    for cls in type(exc).__mro__:
        if cls in ADMIN_REFUSAL_STATUS:
            return ADMIN_REFUSAL_STATUS[cls]
    return 422


def create_app(settings, registry, store=None, pseudonymizer=None, clock: Callable[[], datetime] = utcnow, *,
               container: VariantSpec | None = None, capture_as_shadow: bool = False, **state_options):
    """The FastAPI app. `store`: a PredictionStore (None: no capture); `pseudonymizer`: the
    deid.Pseudonymizer used for routing and capture. `state_options`: flush_rows, flush_seconds,
    capture_interval, capture_backlog_rows, capture_process (see ServingState).

    `container`: the SageMaker container (`serving.container`): this one variant only, no routing
    file, no admin routes and no admin token (SageMaker owns the weights), no /status; a
    request's id may come from the custom attribute `retrainer-request-id`; `capture_as_shadow`:
    every row is captured as a shadow score (a model in ShadowProductionVariants)."""
    if container is None:
        check_serving_settings(settings.serving)  # ConfigError: no, empty, default or short admin token
    # One model per serving process: request, capture and shadow threads answer for its contract.
    set_process_model(settings.model_name)
    state = ServingState(settings, registry, store, pseudonymizer, clock, fixed=container, **state_options)
    token = b"" if container is not None else (admin_token(settings.serving) or "").encode()
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
    metrics = ServingMetrics(lambda: state.table)  # a registry per app: several apps never collide
    app.state.metrics = metrics
    install_shadow_tap(state.shadow, metrics)  # shadow scores compared with the routed answers
    from ..rollout.journal import RolloutJournal  # noqa: PLC0415 - cycle: retrainer.rollout imports this package

    journal = RolloutJournal(settings.home)

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
    async def get_metrics():
        text = (metrics.exposition() + metrics_text(state.capture).encode()
                + serving_metrics_text(state.shadow, state.failures).encode())
        return Response(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    def public_status() -> bytes:
        t = state.table
        ep = endpoint_section(t.variants, running=True, source="endpoint", generation=t.generation,
                              updated_at=t.updated_at)
        return _dumps(gather(settings, registry, journal, endpoint=ep, now=state.clock()))

    async def get_status():  # no token: read-only, and nothing in it is secret (see retrainer.status)
        return Response(await run_in_threadpool(public_status), media_type="application/json")

    if container is None:  # the container has no registry or journal to report from
        app.get("/status")(get_status)

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
        """(names, scores, groups, latency_ms, failed): `failed` names the variants whose scoring
        raised (their rows' scores are NaN)."""
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
        failed: list[str] = []
        for name, idx in groups.items():
            part = records if len(groups) == 1 else [records[i] for i in idx]
            try:
                scores[idx] = table.scorers[name].predict(part)
            except Exception:
                log.exception("scoring by %s (%s) failed", name, table.by_name[name].version)
                scores[idx] = np.nan
                failed.append(name)
        latency_ms = (time.perf_counter() - t0) * 1000.0
        return names, scores, groups, latency_ms, failed

    def safe_keys(rec) -> dict:
        """The routing keys of an invalid instance that pass the request contract (strings of at
        most 256 characters, integers within int64); nothing else of it is kept."""
        if not isinstance(rec, dict):
            return {}
        out = {}
        for k in S.KEYS:
            v = rec.get(k)
            if (isinstance(v, str) and 0 < len(v) <= MAX_STRING_CHARS) or \
                    (isinstance(v, int) and not isinstance(v, bool) and -(2 ** 63) <= v < 2 ** 63):
                out[k] = v
        return out

    def refused(table: RoutingTable, target: str | None, exc: BadRequest, request_id: str, t0: float) -> None:
        """Count a refused request per variant and capture it as error rows: each parsed instance
        (one row when there are more than max_instances) routed as it would have been, keeping
        only its valid routing keys (de-identified by the capture). A request that cannot be
        routed (no parsed instances, unknown target, no model) is counted as `unrouted` only."""
        records = exc.records
        routable = target is None or (target in table.by_name and exc.status != 403)
        seconds = time.perf_counter() - t0
        if not records or not table.variants or not routable:
            state.failures[(UNROUTED, "invalid")] += 1
            metrics.refused(UNROUTED, None, exc.status, seconds)
            return
        rows = [safe_keys(r) for r in (records if len(records) <= max_instances else records[:1])]
        if target is not None:
            names = [target] * len(rows)
        else:
            names = []
            for rec in rows:
                u = entity_point(rec, pseudonymizer) if rec else None
                names.append(table.route(random.random() if u is None else u))
        groups: dict[str, list[int]] = {}
        for i, n in enumerate(names):
            groups.setdefault(n, []).append(i)
        for name in groups:
            state.failures[(name, "invalid")] += 1
            metrics.refused(name, table.by_name[name].version, exc.status, seconds)
        capture = state.capture
        if capture is None:
            return
        if target is not None:
            state.targeted += len(rows)
            for rec in rows:
                rec[TARGETED] = True
        latency_ms = (time.perf_counter() - t0) * 1000.0
        now = state.clock()
        for name, idx in groups.items():
            capture.put(name, table.by_name[name].version, [rows[i] for i in idx], [float("nan")] * len(idx),
                        latency_ms, now, request_id=request_id, rows=idx, error=True, shadow=capture_as_shadow)

    @app.post("/invocations")
    async def invocations(request: Request):
        table = state.table  # one read: this request uses this table to the end
        t0 = time.perf_counter()
        request_id = (container is not None and caller_request_id(request)) or state.request_ids()
        target = None
        try:
            # in the container SageMaker has routed already (TargetVariant or weights): no header here
            target = None if container is not None else request.headers.get(TARGET_HEADER)
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
            records = parse_body(body, request.headers.get("content-type", ""), max_instances)
        except BadRequest as exc:
            refused(table, target, exc, request_id, t0)
            return error(exc.status, exc.message, {REQUEST_ID_HEADER: request_id})
        if len(records) > 16:
            names, scores, groups, latency_ms, failed = await run_in_threadpool(score, table, records, target)
        else:
            names, scores, groups, latency_ms, failed = score(table, records, target)
        now = state.clock()
        capture = state.capture
        versions = {n: table.by_name[n].version for n in groups}
        single = len(groups) == 1
        if capture is not None:
            state.conformer.conform(records)  # only known category values reach the store
            if target is not None:
                state.targeted += len(records)
                for rec in records:
                    rec[TARGETED] = True
            for name, idx in groups.items():
                part = records if single else [records[i] for i in idx]
                capture.put(name, versions[name], part, scores[idx], latency_ms, now, request_id=request_id,
                            rows=None if single else idx, error=name in failed, shadow=capture_as_shadow)
        if failed:  # a failed request: its failing variants' rows were captured as error rows
            for name in failed:
                state.failures[(name, "failed")] += 1
                metrics.refused(name, versions[name], 500, time.perf_counter() - t0)
            return error(500, f"internal error: scoring by variant {failed[0]} failed",
                         {REQUEST_ID_HEADER: request_id})
        shadow = state.shadow
        if shadow is not None and target is None:
            plan = shadow.plan(table)
            for name, idx in groups.items():
                jobs = plan.get(name)
                if jobs:
                    metrics.routed(request_id, name, scores[idx], None if single else idx)
                    shadow.submit(jobs, records if single else [records[i] for i in idx], request_id,
                                  None if single else idx, now)
        preds = [{"score": float(s), "version": versions[n], "variant": n} for s, n in zip(scores, names)]
        seconds = time.perf_counter() - t0
        for name, idx in groups.items():
            metrics.answered(name, versions[name], len(idx), seconds)
        return Response(_dumps({"predictions": preds}), media_type="application/json",
                        headers={INVOKED_HEADER: ",".join(groups), REQUEST_ID_HEADER: request_id})

    def authorized(request: Request) -> bool:
        if not token:  # an empty token never authorises (create_app refuses it anyway)
            return False
        got = request.headers.get("authorization", "")
        scheme, _, value = got.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token)

    def unauthorized():
        return error(401, "admin routes need 'Authorization: Bearer <serving.admin_token>'",
                     {"WWW-Authenticate": "Bearer"})

    if container is not None:  # no admin routes: SageMaker owns the weights
        return app

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
            data = loads(body)
        except BadRequest as exc:
            return error(exc.status, exc.message)
        actor = request.headers.get(ACTOR_HEADER, DEFAULT_ACTOR).strip()
        if not ACTOR_RE.match(actor):
            return error(422, f"{ACTOR_HEADER} must be 1-64 letters, digits or . _ @ -")
        try:
            items, reason, force = admin_request(data)
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

