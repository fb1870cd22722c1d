"""`SageMakerEndpoint`: the serving endpoint behind the same two methods as the local endpoint:
`set_variants([(variant, version, weight), ...]) -> state` and `state() -> dict`.

- A request whose every (variant, version) is already served -- by that variant name, else by any
  variant serving that version (a warm standby) -- is a weight-only change:
  UpdateEndpointWeightsAndCapacities; variants not named get weight 0 and stay warm.
  This covers the canary shift (blue 0.9 / green 0.1 -> ...) and the warm rollback.
- Anything else (a version not yet deployed: a cold version) is a new variant set:
  CreateModel (per version, reused) + CreateEndpointConfig + CreateEndpoint (first time) or
  UpdateEndpoint. With `warm_standby` (default on) the most recent previous version rides along at
  weight 0 so a rollback to it is a weight-only change.
- After every change the endpoint is re-described and CHECKED: status InService, the expected
  EndpointConfigName, the expected variant set and weights. SageMaker can roll an update back on
  its own and still report InService -- that is detected and raised, never reported as success.
- Every wait has a timeout; sleep and clock are injectable.
- Bad configuration gives one line and creates nothing: region, role ARN, bucket (head_bucket) and
  the registry versions are checked before the first Create call; if a Create/Update call fails,
  the endpoint config and models made by this call are deleted again.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import time
from datetime import datetime, timezone
from typing import Any, Callable, Sequence

from ...errors import ConfigError, RegistryError, RolloutError
from ._aws import (
    NAME_RE,
    AWSContext,
    WaitTimeout,
    default_sklearn_image,
    error_code,
    error_message,
    one_line,
    resource_name,
    tar_gz,
    wait_for,
)
from .trainer import source_files

VERSION_ENV = "RETRAINER_MODEL_VERSION"
TRANSITIONAL = {"Creating", "Updating", "SystemUpdating", "RollingBack"}
FINAL = {"InService", "Failed", "OutOfService", "UpdateRollbackFailed", "Deleting"}
Variant = tuple[str, str, float]


class EndpointMismatch(RolloutError):
    """The endpoint does not show what was just requested (e.g. SageMaker rolled back silently)."""


class SageMakerEndpoint:
    def __init__(self, aws: AWSContext, registry, *, endpoint_name: str, model_name: str,
                 instance_type: str = "ml.m5.large", instance_count: int = 1, image_uri: str | None = None,
                 warm_standby: bool = True, timeout_s: float = 3600.0, initial_delay_s: float = 15.0,
                 max_delay_s: float = 60.0, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic):
        self.aws = aws
        self.registry = registry
        self.name = endpoint_name
        self.model_name = model_name
        self.instance_type = instance_type
        self.instance_count = instance_count
        self._image_uri = image_uri
        self.warm_standby = warm_standby
        self.timeout_s = timeout_s
        self.initial_delay_s = initial_delay_s
        self.max_delay_s = max_delay_s
        self.sleep = sleep
        self.clock = clock

    # ---- reading --------------------------------------------------------------------------------
    def _describe(self, *, missing_ok: bool = False) -> dict[str, Any] | None:
        try:
            return self.aws.sm.describe_endpoint(EndpointName=self.name)
        except Exception as exc:
            if error_code(exc) == "ValidationException" and "could not find" in error_message(exc).lower():
                if missing_ok:
                    return None
                raise RolloutError(f"SageMaker endpoint {self.name} does not exist in {self.aws.region}") from None
            raise RolloutError(f"cannot describe endpoint {self.name}: {error_code(exc)}: "
                               f"{error_message(exc)}") from exc

    def _variant_versions(self, config_name: str) -> dict[str, tuple[str, str]]:
        """variant -> (model name, version) from the endpoint config and each model's environment."""
        sm = self.aws.sm
        cfg = sm.describe_endpoint_config(EndpointConfigName=config_name)
        out = {}
        for pv in cfg["ProductionVariants"]:
            model = sm.describe_model(ModelName=pv["ModelName"])
            env = (model.get("PrimaryContainer") or {}).get("Environment") or {}
            out[pv["VariantName"]] = (pv["ModelName"], env.get(VERSION_ENV, "?"))
        return out

    @staticmethod
    def _weight(pv: dict[str, Any]) -> float:
        # Real SageMaker always reports CurrentWeight; moto omits it for a weight-0 variant.
        return float(pv.get("CurrentWeight", pv.get("DesiredWeight", 0.0)) or 0.0)

    def state(self) -> dict[str, Any]:
        desc = self._describe()
        return self._state(desc)

    def _state(self, desc: dict[str, Any]) -> dict[str, Any]:
        models = self._variant_versions(desc["EndpointConfigName"])
        pvs = desc.get("ProductionVariants") or []
        total = sum(self._weight(pv) for pv in pvs) or 1.0
        variants = [{"variant": pv["VariantName"], "version": models.get(pv["VariantName"], ("?", "?"))[1],
                     "model": models.get(pv["VariantName"], ("?", "?"))[0], "weight": self._weight(pv),
                     "traffic": round(self._weight(pv) / total, 6)} for pv in pvs]
        return {"backend": "sagemaker", "endpoint": self.name, "status": desc["EndpointStatus"],
                "config": desc["EndpointConfigName"], "variants": variants,
                **({"failure_reason": one_line(desc["FailureReason"], 300)} if desc.get("FailureReason") else {})}

    # ---- writing --------------------------------------------------------------------------------
    def set_variants(self, variants: Sequence[Variant | dict], *, actor: str | None = None,
                     reason: str | None = None) -> dict[str, Any]:
        """Apply [(variant, version, weight), ...] (or dicts with those keys); returns the new state.
        `actor` and `reason` are accepted for the Endpoint protocol; on AWS, CloudTrail records who
        changed the endpoint, and the registry's audit log records the status change."""
        self.aws.region  # noqa: B018 - configuration first: region, then bucket (head_bucket)
        self.aws.require_bucket()
        wanted = self._validate(variants)
        current = self._describe(missing_ok=True)
        if current is not None and current["EndpointStatus"] in TRANSITIONAL:
            current = self._wait()
        if current is not None:
            if current["EndpointStatus"] != "InService":
                why = f" ({one_line(current['FailureReason'], 200)})" if current.get("FailureReason") else ""
                raise RolloutError(f"endpoint {self.name} is {current['EndpointStatus']}; fix it before changing "
                                   f"variants{why}")
            served = self._variant_versions(current["EndpointConfigName"])
            resolved = self._resolve(wanted, served)
            if resolved is not None:
                return self._set_weights(current, resolved)
        return self._deploy(wanted, current)

    def _validate(self, variants: Sequence[Variant | dict]) -> list[Variant]:
        items = [(x["variant"], x["version"], x["weight"]) if isinstance(x, dict) else tuple(x) for x in variants]
        wanted = [(str(n), str(v), float(w)) for n, v, w in items]
        if not wanted:
            raise RolloutError("no variants given")
        names = [n for n, _, _ in wanted]
        if len(set(names)) != len(names):
            raise RolloutError(f"variant names must be unique: {', '.join(names)}")
        for n, _, w in wanted:
            if not NAME_RE.match(n):
                raise RolloutError(f"bad variant name {n!r} (letters, digits, dashes; max 63)")
            if w < 0:
                raise RolloutError(f"variant {n} has a negative weight {w}")
        if sum(w for _, _, w in wanted) <= 0:
            raise RolloutError("at least one variant needs a positive weight")
        for _, v, _ in wanted:
            self.registry.get(v)  # unknown version -> RegistryError before anything is touched
        return wanted

    @staticmethod
    def _resolve(wanted: list[Variant], served: dict[str, tuple[str, str]]) -> dict[str, float] | None:
        """Map each wanted (variant, version) to a served variant, or None if any is not served."""
        weights = {name: 0.0 for name in served}
        claimed: set[str] = set()
        for name, version, w in wanted:
            if served.get(name, (None, None))[1] == version and name not in claimed:
                target = name
            else:
                target = next((n for n, (_, v) in served.items() if v == version and n not in claimed
                               and n not in {x for x, _, _ in wanted}), None)
                if target is None:
                    return None
            claimed.add(target)
            weights[target] = w
        return weights

    def _set_weights(self, current: dict[str, Any], weights: dict[str, float]) -> dict[str, Any]:
        try:
            self.aws.sm.update_endpoint_weights_and_capacities(
                EndpointName=self.name,
                DesiredWeightsAndCapacities=[{"VariantName": n, "DesiredWeight": w} for n, w in weights.items()])
        except Exception as exc:
            raise RolloutError(f"cannot change weights of endpoint {self.name}: {error_code(exc)}: "
                               f"{error_message(exc)}") from exc
        return self._check(current["EndpointConfigName"], weights)

    def _deploy(self, wanted: list[Variant], current: dict[str, Any] | None) -> dict[str, Any]:
        role = self.aws.require_role()
        self.aws.require_bucket()
        image = self._image_uri or default_sklearn_image(self.aws.region)
        full = list(wanted)
        if self.warm_standby:
            prev = next(iter(self.registry.previous()), None)
            if prev is not None and prev.version not in {v for _, v, _ in full}:
                taken = {n for n, _, _ in full}
                name = next(n for n in ("standby", "standby-2", "warm-standby") if n not in taken)
                full.append((name, prev.version, 0.0))
        recs = {v: self.registry.get(v) for _, v, _ in full}
        for v, rec in recs.items():
            if not rec.artifact_uri.startswith("s3://"):
                raise RolloutError(f"version {v} has no S3 artifact ({rec.artifact_uri or 'none'}); register it "
                                   "with the SageMaker registry")
        sm = self.aws.sm
        created_models: list[str] = []
        config = resource_name(self.name, datetime.now(timezone.utc).strftime("%Y%m%d%H%M%S"),
                               hashlib.sha256(json.dumps(full).encode()).hexdigest()[:6])
        config_made = False
        try:
            submit = self._upload_serving_source()
            models = {}
            for v, rec in recs.items():
                models[v] = self._ensure_model(v, rec.artifact_uri, image, role, submit, created_models)
            sm.create_endpoint_config(EndpointConfigName=config, ProductionVariants=[
                {"VariantName": n, "ModelName": models[v], "InitialVariantWeight": w,
                 "InitialInstanceCount": self.instance_count, "InstanceType": self.instance_type}
                for n, v, w in full])
            config_made = True
            if current is None:
                sm.create_endpoint(EndpointName=self.name, EndpointConfigName=config,
                                   Tags=[{"Key": "retrainer:model", "Value": self.model_name}])
            else:
                sm.update_endpoint(EndpointName=self.name, EndpointConfigName=config)
        except Exception as exc:
            # Nothing half-created: remove this call's endpoint config and models.
            with contextlib.suppress(Exception):
                if config_made:
                    sm.delete_endpoint_config(EndpointConfigName=config)
            for m in created_models:
                with contextlib.suppress(Exception):
                    sm.delete_model(ModelName=m)
            if isinstance(exc, (RolloutError, ConfigError, RegistryError)):
                raise
            op = "CreateEndpoint" if current is None else "UpdateEndpoint"
            raise RolloutError(f"endpoint {self.name}: {op} with config {config} failed: "
                               f"{error_code(exc) or type(exc).__name__}: {error_message(exc)}") from exc
        return self._check(config, {n: w for n, _, w in full})

    def _upload_serving_source(self) -> str:
        files = source_files()
        body = tar_gz(files)
        digest = hashlib.sha256(body).hexdigest()[:12]
        key = self.aws.key("serving", "source", digest, "sourcedir.tar.gz")
        self.aws.s3.put_object(Bucket=self.aws.bucket, Key=key, Body=body)
        return f"s3://{self.aws.bucket}/{key}"

    def _ensure_model(self, version: str, data_url: str, image: str, role: str, submit: str,
                      created: list[str]) -> str:
        name = resource_name(self.model_name, version)
        sm = self.aws.sm
        try:
            sm.describe_model(ModelName=name)
            return name
        except Exception as exc:
            if error_code(exc) != "ValidationException":
                raise
        sm.create_model(ModelName=name, ExecutionRoleArn=role, PrimaryContainer={
            "Image": image, "ModelDataUrl": data_url,
            "Environment": {"SAGEMAKER_PROGRAM": "inference.py", "SAGEMAKER_SUBMIT_DIRECTORY": submit,
                            "SAGEMAKER_REGION": self.aws.region, VERSION_ENV: version}})
        created.append(name)
        return name

    def _wait(self) -> dict[str, Any]:
        return wait_for(lambda: self._describe(), status_of=lambda d: d["EndpointStatus"], final=FINAL,
                        what=f"endpoint {self.name}", timeout_s=self.timeout_s, sleep=self.sleep, clock=self.clock,
                        initial_delay=self.initial_delay_s, max_delay=self.max_delay_s)

    def _check(self, config: str, weights: dict[str, float]) -> dict[str, Any]:
        """Re-describe after a change; raise EndpointMismatch unless it shows exactly what we asked."""
        try:
            desc = self._wait()
        except WaitTimeout as exc:
            raise RolloutError(f"{exc}; the change may still complete -- check the endpoint") from None
        found = {pv["VariantName"]: self._weight(pv) for pv in desc.get("ProductionVariants") or []}
        ok = (desc["EndpointStatus"] == "InService" and desc["EndpointConfigName"] == config
              and set(found) == set(weights) and all(abs(found[n] - w) < 1e-6 for n, w in weights.items()))
        if not ok:
            why = f" ({one_line(desc['FailureReason'], 200)})" if desc.get("FailureReason") else ""
            raise EndpointMismatch(
                f"endpoint {self.name} did not take the change (SageMaker may have rolled it back): expected config "
                f"{config} weights {_fmt(weights)}, found {desc['EndpointConfigName']} weights {_fmt(found)}, "
                f"status {desc['EndpointStatus']}{why}")
        return self._state(desc)


def _fmt(weights: dict[str, float]) -> str:
    return "{" + ", ".join(f"{n}={w:g}" for n, w in sorted(weights.items())) + "}"
