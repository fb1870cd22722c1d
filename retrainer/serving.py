"""The scoring endpoint: SageMaker's inference-container contract, served by uvicorn.

Routes (same shapes as a SageMaker real-time endpoint, so clients do not care which backend runs):

* `GET /ping` - 200 when at least one variant is loaded, else 503.
* `POST /invocations` - body `{"instances": [{column: value, ...}, ...]}` (application/json) or CSV
  with a header row of column names (text/csv). Response
  `{"predictions": [{"score": float, "version": str, "variant": str}, ...]}`; the header
  `X-Amzn-Invoked-Production-Variant` names the variant(s). Header
  `X-Amzn-SageMaker-Target-Variant: <variant>` forces a variant (404 if unknown).
* `GET /admin/variants`, `POST /admin/variants` (body: a list of `{variant, version, weight}`,
  or `{"variants": [...]}`) - need `Authorization: Bearer <serving.admin_token>`.

Variants. "blue" is production, "green" the canary candidate, and up to two previous production
versions stay loaded as warm standbys ("previous-1", "previous-2") at weight 0, so a rollback is a
weight change, not a model load. Every variant's model is in memory as a `scoring.FastScorer`.

Routing is deterministic per entity: the patient's pseudonym (HMAC of `patient_id` with the
pseudonymizer, the same value the prediction store keeps; `admission_id` when there is no patient
id) is mapped to u in [0, 1) and compared with the cumulative weights of the variants with weight
> 0. The same patient sees the same variant while the weights stay fixed, and raising green from
10% to 20% keeps the first 10% of patients on green. Without a pseudonymizer the hash is a plain
SHA-256 (kept in memory only); a record with neither key is routed at random by weight.

The routing table is ONE immutable object (`RoutingTable`: variants, weights and loaded scorers).
A request reads `state.table` once and uses that object to the end, and an admin change builds a
complete new table (loading and sha256-verifying any new version first) and then replaces the
reference in a single assignment: a request in flight never sees half a change and never fails
because of one. The current routing is persisted to `<home>/serving/routing.json` (atomic write)
and read back at start-up; without it the default is production at 1.0 plus the previous versions
at 0. If the persisted routing cannot be loaded (unknown version, artifacts failing their sha256)
the server starts with the default and says so in `GET /admin/variants` (`startup_warning`).

Capture: each prediction is queued (raw records stay in memory only) and a background thread
hands batches to `predstore.BufferedPredictionWriter`, which de-identifies them and writes Parquet
files; so capture costs a deque append on the request path. Capture failures are logged, never
returned to the caller.

Every bad request (unknown, missing or mistyped fields, an empty or oversized batch, a body over
`serving.max_body_bytes`, malformed JSON or CSV, an unsupported content type) gets a 4xx with
`{"error": "<one line>"}`.
"""
from __future__ import annotations

import collections
import csv
import hashlib
import hmac
import io
import json
import logging
import math
import random
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
from starlette.requests import Request  # module level: route annotations are resolved by name

from . import schema as S
from .errors import RegistryError, RolloutError
from .scoring import FastScorer, coerce_csv_records, validate_records

log = logging.getLogger(__name__)

PRODUCTION = "blue"
CANDIDATE = "green"
STANDBY_PREFIX = "previous-"
TARGET_HEADER = "X-Amzn-SageMaker-Target-Variant"
INVOKED_HEADER = "X-Amzn-Invoked-Production-Variant"
ROUTING_FILE = "routing.json"
WEIGHT_TOLERANCE = 1e-6
_VARIANT_RE = re.compile(r"^[A-Za-z0-9](-*[A-Za-z0-9]){0,62}$")  # SageMaker variant names

try:  # orjson is a Prefect dependency; it halves response encoding time
    import orjson as _orjson

    def _dumps(obj) -> bytes:
        return _orjson.dumps(obj)
except ImportError:  # pragma: no cover
    def _dumps(obj) -> bytes:
        return json.dumps(obj, separators=(",", ":")).encode()


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


# ---------------------------------------------------------------------------------------------
# Routing table

@dataclass(frozen=True)
class VariantSpec:
    variant: str
    version: str
    weight: float

    def to_dict(self) -> dict[str, Any]:
        return {"variant": self.variant, "version": self.version, "weight": self.weight}


def parse_variants(items: Any) -> list[VariantSpec]:
    """Validate a routing spec: a list of {variant, version, weight} (dicts or 3-tuples).

    Raises ValueError with one line: names must be SageMaker variant names and unique, weights in
    [0, 1], at least one weight > 0, and the weights > 0 must sum to 1.
    """
    if isinstance(items, Mapping) and "variants" in items:
        items = items["variants"]
    if not isinstance(items, (list, tuple)) or not items:
        raise ValueError("expected a non-empty list of {variant, version, weight}")
    specs: list[VariantSpec] = []
    for i, item in enumerate(items):
        if isinstance(item, VariantSpec):
            specs.append(item)
            continue
        if isinstance(item, (list, tuple)) and len(item) == 3:
            item = dict(zip(("variant", "version", "weight"), item))
        if not isinstance(item, Mapping):
            raise ValueError(f"variant {i}: expected an object with variant, version, weight")
        extra = set(item) - {"variant", "version", "weight"}
        if extra:
            raise ValueError(f"variant {i}: unknown field(s) {', '.join(sorted(map(str, extra)))}")
        name, version, weight = item.get("variant"), item.get("version"), item.get("weight")
        if not isinstance(name, str) or not _VARIANT_RE.match(name):
            raise ValueError(f"variant {i}: name {name!r} must be 1-63 letters, digits or '-'")
        if not isinstance(version, str) or not version:
            raise ValueError(f"variant {name}: version must be a non-empty string")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) \
                or not 0 <= weight <= 1:
            raise ValueError(f"variant {name}: weight must be a number in [0, 1], got {weight!r}")
        specs.append(VariantSpec(name, version, float(weight)))
    names = [s.variant for s in specs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"duplicate variant name(s): {', '.join(dupes)}")
    total = sum(s.weight for s in specs if s.weight > 0)
    if total == 0:
        raise ValueError("at least one variant needs a weight > 0")
    if abs(total - 1.0) > WEIGHT_TOLERANCE:
        raise ValueError(f"weights of the variants with weight > 0 must sum to 1, they sum to {total:g}")
    return specs


@dataclass(frozen=True)
class RoutingTable:
    """Immutable: variants, their scorers, the cumulative weights. Replaced, never mutated."""
    variants: tuple[VariantSpec, ...]
    scorers: Mapping[str, FastScorer]          # variant -> scorer
    bounds: tuple[float, ...]                  # cumulative upper bounds of the weighted variants
    routed: tuple[str, ...]                    # the weighted variants, in order
    generation: int = 0
    updated_at: str = ""
    by_name: Mapping[str, VariantSpec] = field(default_factory=dict)

    @classmethod
    def build(cls, specs: Sequence[VariantSpec], scorers: Mapping[str, FastScorer], generation: int,
              updated_at: str) -> "RoutingTable":
        weighted = [s for s in specs if s.weight > 0]
        total = sum(s.weight for s in weighted)
        bounds, acc = [], 0.0
        for s in weighted:
            acc += s.weight / total
            bounds.append(acc)
        if bounds:
            bounds[-1] = 1.0  # no gap at the top from float rounding
        return cls(tuple(specs), MappingProxyType(dict(scorers)), tuple(bounds),
                   tuple(s.variant for s in weighted), generation, updated_at,
                   MappingProxyType({s.variant: s for s in specs}))

    @classmethod
    def empty(cls) -> "RoutingTable":
        return cls((), MappingProxyType({}), (), (), 0, "", MappingProxyType({}))

    def route(self, u: float) -> str:
        """The variant for a point u in [0, 1)."""
        for bound, name in zip(self.bounds, self.routed):
            if u < bound:
                return name
        return self.routed[-1]

    def to_dict(self) -> dict[str, Any]:
        return {"variants": [s.to_dict() for s in self.variants], "generation": self.generation,
                "updated_at": self.updated_at}


def entity_point(record: Mapping[str, Any], pseudonymizer=None) -> float | None:
    """u in [0, 1) from the record's patient (or admission) id; None without either key."""
    for domain in ("patient_id", S.ADMISSION_ID):
        value = record.get(domain)
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        if pseudonymizer is not None:
            digest = pseudonymizer.pseudonym(value, domain)
        else:
            digest = hashlib.sha256(f"{domain}\0{str(value).strip()}".encode()).hexdigest()
        return int(digest[:13], 16) / float(16 ** 13)
    return None


# ---------------------------------------------------------------------------------------------
# Models

class ModelPool:
    """Loaded scorers by version. `load` verifies the artifacts' sha256 through the registry."""

    def __init__(self, registry):
        self.registry = registry
        self._scorers: dict[str, FastScorer] = {}
        self._lock = threading.Lock()

    def get(self, version: str) -> FastScorer:
        with self._lock:
            cached = self._scorers.get(version)
        if cached is not None:
            return cached
        from .training import load_model

        path = self.registry.verify(version)  # RegistryError: unknown version or sha256 mismatch
        scorer = FastScorer.from_model(load_model(path))
        with self._lock:
            return self._scorers.setdefault(version, scorer)

    def keep_only(self, versions: Iterable[str]) -> None:
        keep = set(versions)
        with self._lock:
            for v in [v for v in self._scorers if v not in keep]:
                del self._scorers[v]

    @property
    def versions(self) -> list[str]:
        with self._lock:
            return sorted(self._scorers)


def default_variants(registry) -> list[VariantSpec]:
    """Production at 1.0 ("blue") and up to two previous versions at 0 ("previous-1", "-2")."""
    prod = registry.production()
    if prod is None:
        return []
    specs = [VariantSpec(PRODUCTION, prod.version, 1.0)]
    for i, rec in enumerate(registry.previous()[:2], start=1):
        specs.append(VariantSpec(f"{STANDBY_PREFIX}{i}", rec.version, 0.0))
    return specs


def routing_path(settings) -> Path:
    return Path(settings.home) / "serving" / ROUTING_FILE


def write_routing(path: Path, table_dict: dict[str, Any]) -> None:
    from .registry import atomic_write_text

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(table_dict, indent=2, sort_keys=True))


def read_routing(path: Path) -> list[VariantSpec] | None:
    if not path.is_file():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    return parse_variants(data)


# ---------------------------------------------------------------------------------------------
# Capture

def _conform_features(frame):
    """Cast request columns to the contract's kinds so the store's Parquet schema accepts them
    (integer features are rounded: a float age 70.4 is stored as 70)."""
    import pandas as pd

    for col in frame.columns:
        kind = S.COLUMN_TYPES.get(col)
        if kind in ("int", "float"):
            num = pd.to_numeric(frame[col], errors="coerce")
            frame[col] = num.round().astype("Int64") if kind == "int" else num.astype("float64")
        elif kind == "bool":
            frame[col] = frame[col].astype("boolean")
        elif kind == "string":
            frame[col] = frame[col].astype("string")
        elif kind == "datetime":
            frame[col] = pd.to_datetime(frame[col], errors="coerce", utc=True)
    return frame


class CaptureQueue:
    """Request threads `put` (a deque append); a daemon thread drains every `interval` seconds
    and hands batches, grouped by (variant, version), to a BufferedPredictionWriter."""

    def __init__(self, writer, *, interval: float = 0.25, max_pending: int = 200_000):
        self.writer = writer
        self.interval = interval
        self.max_pending = max_pending
        self._q: collections.deque = collections.deque()
        self._stop = threading.Event()
        self._drain_lock = threading.Lock()
        self.dropped = 0
        self.captured = 0
        self._thread = threading.Thread(target=self._run, name="capture-drain", daemon=True)
        self._thread.start()

    def put(self, variant: str, version: str, records: list, scores, latency_ms: float, ts: datetime) -> None:
        if len(self._q) >= self.max_pending:  # the writer cannot keep up: shed, never block serving
            self.dropped += len(records)
            return
        self._q.append((variant, version, records, scores, latency_ms, ts))

    def drain(self) -> int:
        import pandas as pd

        with self._drain_lock:
            items = []
            while True:
                try:
                    items.append(self._q.popleft())
                except IndexError:
                    break
            if not items:
                return 0
            groups: dict[tuple[str, str], list] = collections.defaultdict(list)
            for item in items:
                groups[(item[0], item[1])].append(item)
            n = 0
            for (variant, version), batch in groups.items():
                recs, scores, lat, ts = [], [], [], []
                for _, _, records, sc, latency, t in batch:
                    recs.extend(records)
                    scores.extend(float(s) for s in sc)
                    lat.extend([latency] * len(records))
                    ts.extend([t] * len(records))
                try:
                    frame = _conform_features(pd.DataFrame.from_records(recs))
                    n += self.writer.add(frame, np.asarray(scores), version=version, variant=variant,
                                         latency_ms=np.asarray(lat), ts=ts)
                except Exception as exc:  # a capture problem must never reach the caller
                    self.dropped += len(recs)
                    log.error("prediction capture dropped %d rows: %s: %s", len(recs),
                              type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
            self.captured += n
            return n

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.drain()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.drain()
        self.writer.close()


# ---------------------------------------------------------------------------------------------
# The app

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
            from .predstore import BufferedPredictionWriter

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
        if self.capture is not None:
            self.capture.close()
            self.capture = None


class BadRequest(Exception):
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
    from contextlib import asynccontextmanager

    from fastapi import FastAPI
    from fastapi.responses import Response
    from starlette.concurrency import run_in_threadpool

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
        except RegistryError as exc:
            msg = str(exc)
            status = 409 if "sha256" in msg or "gone" in msg else 422
            return error(status, f"refused: {msg}")
        except OSError as exc:
            return error(503, f"could not persist the routing ({type(exc).__name__}); nothing changed")
        return Response(_dumps(state.state()), media_type="application/json")

    return app


# ---------------------------------------------------------------------------------------------
# Running it, and talking to it

def build_app_from_settings(settings, *, capture: bool = True):
    """The app for `settings`: local registry, local prediction store, pseudonymizer from the
    environment variable `settings.pseudonym_key_env` (required when `capture`)."""
    from .deid import pseudonymizer_from_env
    from .predstore import PredictionStore
    from .registry import LocalRegistry

    registry = LocalRegistry(settings.registry_dir, settings.model_name)
    pseudonymizer = store = None
    if capture:
        pseudonymizer = pseudonymizer_from_env(settings.pseudonym_key_env)  # ConfigError if missing
        store = PredictionStore(settings.home)
    return create_app(settings, registry, store, pseudonymizer)


def serve(settings, *, host: str | None = None, port: int | None = None, capture: bool = True,
          log_level: str = "warning") -> None:
    """Run the endpoint with uvicorn, one worker: the routing table and the models live in the
    process, and a second worker would hold a second copy whose admin changes the first never
    sees (for more throughput run several servers behind a balancer, each reading routing.json)."""
    import uvicorn

    app = build_app_from_settings(settings, capture=capture)
    uvicorn.run(app, host=host or settings.serving.host, port=port or settings.serving.port, workers=1,
                log_level=log_level, access_log=False)


class BackgroundServer:
    """An ASGI app under uvicorn in a daemon thread on loopback, as a context manager (the demo and
    the tests run the real endpoint this way; `serve()` is the foreground equivalent)."""

    def __init__(self, app, port: int, host: str = "127.0.0.1", name: str = "retrainer-endpoint"):
        import uvicorn

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
        self._headers = {"Authorization": f"Bearer {settings.serving.admin_token.get_secret_value()}"}

    def _client(self):
        import httpx

        return httpx.Client(base_url=self.base_url, timeout=self.timeout, headers=self._headers)

    @staticmethod
    def _error(resp) -> RolloutError:
        try:
            msg = resp.json().get("error", resp.text)
        except ValueError:
            msg = resp.text
        return RolloutError(f"endpoint refused ({resp.status_code}): {msg}")

    def set_variants(self, variants: Iterable) -> dict[str, Any]:
        """Apply [(variant, version, weight), ...] (or dicts); returns the new state."""
        import httpx

        specs = parse_variants(list(variants))
        body = [s.to_dict() for s in specs]
        try:
            with self._client() as client:
                resp = client.post("/admin/variants", json=body)
        except httpx.ConnectError:
            return self._write_offline(specs)
        if resp.status_code != 200:
            raise self._error(resp)
        return {**resp.json(), "applied": "server"}

    def _write_offline(self, specs: list[VariantSpec]) -> dict[str, Any]:
        from .registry import LocalRegistry

        registry = LocalRegistry(self.settings.registry_dir, self.settings.model_name)
        for s in specs:
            try:
                registry.verify(s.version)
            except RegistryError as exc:
                raise RolloutError(f"refused: {exc}") from None
        path = routing_path(self.settings)
        data = {"variants": [s.to_dict() for s in specs], "generation": None,
                "updated_at": utcnow().isoformat(timespec="milliseconds")}
        write_routing(path, data)
        return {**data, "applied": "file", "routing_file": str(path)}

    def state(self) -> dict[str, Any]:
        import httpx

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
                from .registry import LocalRegistry

                specs = default_variants(LocalRegistry(self.settings.registry_dir, self.settings.model_name))
            return {"variants": [s.to_dict() for s in specs], "running": False, "routing_file": str(path)}
        if resp.status_code != 200:
            raise self._error(resp)
        return {**resp.json(), "running": True}

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Block until GET /ping answers 200; RolloutError after `timeout` seconds."""
        import httpx

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
        import httpx

        headers = {TARGET_HEADER: target_variant} if target_variant else {}
        resp = httpx.post(f"{self.base_url}/invocations", json={"instances": instances}, headers=headers,
                          timeout=self.timeout)
        if resp.status_code != 200:
            raise self._error(resp)
        return resp.json()
