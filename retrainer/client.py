"""`EndpointClient`: call a SageMaker endpoint so that one patient always reaches the same variant.

SageMaker routes each InvokeEndpoint at random by the variants' weights, so one patient's
requests are spread over production and the candidate, and a canary comparison on such traffic is
unpaired. This client routes per patient instead, exactly as the local endpoint does: each
record's entity id (the active model's `columns.entity`, e.g. `patient_id`; the row id when it has
none) is pseudonymised with the same keyed HMAC as the prediction store (`deid.Pseudonymizer`,
key from `RETRAINER_PSEUDONYM_KEY`), mapped to a point in [0, 1) and compared with the cumulative
weights of the endpoint's variants (`retrainer.entity_routing`, the very functions the local
routing table uses). The call then names the variant with `TargetVariant`.

- Weights come from DescribeEndpoint (`CurrentWeight`, in the endpoint's variant order), cached
  for `weights_ttl_s` seconds (default 30); an error drops the cache so the next call re-reads.
- The records of one `invoke` that map to different variants are sent as one InvokeEndpoint per
  variant (in the endpoint's variant order, one after the other) and the answers are put back in
  the order of the records.
- Every InvokeEndpoint carries its own `InferenceId` (a uuid4), repeated in the custom attribute
  `retrainer-request-id` (SageMaker forwards custom attributes to the container, to production
  and shadow variants alike, but not the InferenceId): the serving container captures it as the
  request id, so a shadow variant's scores of the same request join production's by (request id, row).
- Body `{"instances": [...]}` (application/json); the answer must be `{"predictions": [...]}`
  with one prediction per record sent, else a "bad response" error.
- A record with neither an entity id nor a row id is routed at random by weight (as locally).
- Errors are one line (`EndpointClientError`, a `RetrainerError`): endpoint missing, throttled,
  model error, bad response, unreachable.

The caller needs `sagemaker:DescribeEndpoint` besides `sagemaker:InvokeEndpoint`. This module
imports neither FastAPI nor Prefect; boto3 is imported when the client is built.
"""
from __future__ import annotations

import json
import random
import time
import uuid
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from .aws_errors import error_code, error_message, one_line
from .container_env import REQUEST_ID_ATTRIBUTE
from .deid import Pseudonymizer, pseudonymizer_from_env
from .entity_routing import choose, cumulative_bounds, entity_point
from .errors import RetrainerError

DEFAULT_KEY_ENV = "RETRAINER_PSEUDONYM_KEY"
MAX_BODY_BYTES = 6 * 1024 * 1024  # InvokeEndpoint's payload limit (6 MB)
THROTTLING = {"ThrottlingException", "Throttling", "TooManyRequestsException", "RequestLimitExceeded",
              "SlowDown"}


class EndpointClientError(RetrainerError):
    """A call to the endpoint failed; the message is one line."""


@dataclass(frozen=True)
class Call:
    """One InvokeEndpoint of an `invoke`: the variant targeted, its InferenceId, the positions of
    the records it carried, and the variant SageMaker says answered."""
    variant: str
    inference_id: str
    rows: tuple[int, ...]
    invoked_variant: str | None = None


def _status(exc: BaseException) -> int | None:
    return getattr(exc, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode")


class EndpointClient:
    """Invoke SageMaker endpoint `endpoint_name` with per-patient routing (see the module doc).

    `pseudonym_key` (bytes/str, >= 16 bytes) or the environment variable `key_env`: the key the
    serving side pseudonymises with. `session`: a boto3 Session (default: the AWS chain, `region`);
    or pass ready clients as `runtime_client` (sagemaker-runtime) and `sagemaker_client`. `model`:
    the model whose entity column is used (default: the active model). `clock`: for the TTL.
    """

    def __init__(self, endpoint_name: str, *, pseudonym_key: bytes | str | None = None,
                 key_env: str = DEFAULT_KEY_ENV, session: Any = None, runtime_client: Any = None,
                 sagemaker_client: Any = None, region: str | None = None, model: str | None = None,
                 weights_ttl_s: float = 30.0, clock: Callable[[], float] = time.monotonic):
        if not isinstance(endpoint_name, str) or not endpoint_name:
            raise EndpointClientError("endpoint_name must be a non-empty string")
        if not weights_ttl_s >= 0:
            raise EndpointClientError(f"weights_ttl_s must be >= 0, got {weights_ttl_s!r}")
        self.endpoint_name = endpoint_name
        self.pseudonymizer = (Pseudonymizer(pseudonym_key) if pseudonym_key is not None
                              else pseudonymizer_from_env(key_env))
        if model is not None:
            from . import spec  # noqa: PLC0415 - only to check the name early

            spec.load_spec(model)
        self.model = model
        self.weights_ttl_s = float(weights_ttl_s)
        self.clock = clock
        if runtime_client is None or sagemaker_client is None:
            if session is None:
                import boto3  # noqa: PLC0415 - heavy: only when the client is built

                session = boto3.session.Session(region_name=region)
            runtime_client = runtime_client or session.client("sagemaker-runtime", region_name=region)
            sagemaker_client = sagemaker_client or session.client("sagemaker", region_name=region)
        self.runtime = runtime_client
        self.sagemaker = sagemaker_client
        self._cache: tuple[float, tuple[float, ...], tuple[str, ...]] | None = None
        self.last_calls: tuple[Call, ...] = ()

    # ---- weights --------------------------------------------------------------------------------
    def weights(self) -> list[tuple[str, float]]:
        """[(variant, weight), ...] in the endpoint's order, from DescribeEndpoint (not cached)."""
        try:
            desc = self.sagemaker.describe_endpoint(EndpointName=self.endpoint_name)
        except Exception as exc:
            raise self._error("DescribeEndpoint", exc) from None
        out = []
        for pv in desc.get("ProductionVariants") or []:
            # CurrentWeight on SageMaker; moto omits it for a weight-0 variant.
            w = pv.get("CurrentWeight", pv.get("DesiredWeight", 0.0))
            out.append((str(pv["VariantName"]), float(w or 0.0)))
        if not any(w > 0 for _, w in out):
            raise EndpointClientError(f"endpoint {self.endpoint_name} has no variant with a weight > 0 "
                                      f"(status {desc.get('EndpointStatus', '?')})")
        return out

    def _table(self) -> tuple[tuple[float, ...], tuple[str, ...]]:
        now = self.clock()
        if self._cache is None or now >= self._cache[0]:
            bounds, routed = cumulative_bounds(self.weights())
            self._cache = (now + self.weights_ttl_s, bounds, routed)
        return self._cache[1], self._cache[2]

    def invalidate(self) -> None:
        """Forget the cached weights (the next call re-reads them)."""
        self._cache = None

    # ---- routing --------------------------------------------------------------------------------
    def route(self, records: Sequence[Mapping[str, Any]]) -> list[str]:
        """The variant of each record (the cached weights; see the module doc)."""
        records = self._check_records(records)
        return self._route(records, *self._table())

    def _route(self, records: list[Mapping[str, Any]], bounds: tuple[float, ...],
               routed: tuple[str, ...]) -> list[str]:
        with self._using():
            points = [entity_point(r, self.pseudonymizer) for r in records]
        return [choose(bounds, routed, random.random() if u is None else u) for u in points]

    def _using(self):
        if self.model is None:
            return nullcontext()
        from . import spec  # noqa: PLC0415

        return spec.using(self.model)

    @staticmethod
    def _check_records(records: Any) -> list[Mapping[str, Any]]:
        if isinstance(records, Mapping) or not isinstance(records, Sequence) or isinstance(records, (str, bytes)):
            raise EndpointClientError("records must be a list of objects ({column: value, ...})")
        bad = [i for i, r in enumerate(records) if not isinstance(r, Mapping)]
        if bad:
            raise EndpointClientError(f"record {bad[0]} is not an object ({{column: value, ...}})")
        return list(records)

    # ---- invoking -------------------------------------------------------------------------------
    def invoke(self, records: Sequence[Mapping[str, Any]]) -> list[Any]:
        """The predictions for `records`, in their order (one InvokeEndpoint per variant they map
        to; `last_calls` describes those calls)."""
        records = self._check_records(records)
        if not records:
            self.last_calls = ()
            return []
        bounds, routed = self._table()
        variants = self._route(records, bounds, routed)
        groups: dict[str, list[int]] = {}
        for i, v in enumerate(variants):
            groups.setdefault(v, []).append(i)
        out: list[Any] = [None] * len(records)
        calls: list[Call] = []
        try:
            for variant in sorted(groups, key=routed.index):
                rows = groups[variant]
                call, preds = self._invoke_one(variant, [records[i] for i in rows], rows)
                calls.append(call)
                for i, p in zip(rows, preds):
                    out[i] = p
        except EndpointClientError:
            self.invalidate()  # weights may have changed under us: re-read on the next call
            raise
        finally:
            self.last_calls = tuple(calls)
        return out

    def _invoke_one(self, variant: str, part: list[Mapping[str, Any]], rows: list[int]) -> tuple[Call, list]:
        try:
            body = json.dumps({"instances": part}, allow_nan=False).encode()
        except (TypeError, ValueError) as exc:
            raise EndpointClientError(f"records cannot be sent as JSON: {one_line(exc, 200)}") from None
        if len(body) > MAX_BODY_BYTES:
            raise EndpointClientError(f"{len(part)} records for variant {variant} make {len(body)} bytes, over "
                                      f"InvokeEndpoint's {MAX_BODY_BYTES} byte limit; send fewer per call")
        inference_id = str(uuid.uuid4())
        try:
            resp = self.runtime.invoke_endpoint(EndpointName=self.endpoint_name, Body=body,
                                                ContentType="application/json", Accept="application/json",
                                                TargetVariant=variant, InferenceId=inference_id,
                                                CustomAttributes=f"{REQUEST_ID_ATTRIBUTE}={inference_id}")
            raw = resp["Body"].read()
        except Exception as exc:
            raise self._error("InvokeEndpoint", exc, variant) from None
        where = f"endpoint {self.endpoint_name} variant {variant}"
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise EndpointClientError(f"{where} returned a bad response: not JSON ({one_line(raw[:80], 100)!s})") \
                from None
        preds = data.get("predictions") if isinstance(data, dict) else None
        if not isinstance(preds, list):
            raise EndpointClientError(f'{where} returned a bad response: expected {{"predictions": [...]}}')
        if len(preds) != len(part):
            raise EndpointClientError(f"{where} returned a bad response: {len(preds)} predictions for "
                                      f"{len(part)} records")
        return Call(variant, inference_id, tuple(rows), resp.get("InvokedProductionVariant")), preds

    def _error(self, op: str, exc: BaseException, variant: str | None = None) -> EndpointClientError:
        code, msg, status = error_code(exc), error_message(exc), _status(exc)
        at = f" variant {variant}" if variant else ""
        if code in ("ValidationException", "ValidationError") and "could not find endpoint" in msg.lower():
            region = getattr(getattr(self.sagemaker, "meta", None), "region_name", None) or "?"
            return EndpointClientError(f"SageMaker endpoint {self.endpoint_name} does not exist in {region}")
        if code in THROTTLING or status == 429:
            return EndpointClientError(f"endpoint {self.endpoint_name}{at}: {op} throttled ({code or status}: {msg}); "
                                       "retry later or lower the request rate")
        if code == "ModelError":
            return EndpointClientError(f"endpoint {self.endpoint_name}{at}: the model failed ({msg})")
        if code:
            return EndpointClientError(f"endpoint {self.endpoint_name}{at}: {op} failed ({code}: {msg})")
        return EndpointClientError(f"endpoint {self.endpoint_name}{at}: {op} failed ({type(exc).__name__}: "
                                   f"{one_line(exc, 200)})")
