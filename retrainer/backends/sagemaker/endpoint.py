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

Shadow variants (`set_shadow`, `clear_shadow`, `promote_shadow`; or `set_variants(..., shadow=...)`):
SageMaker's own shadow mode. A new endpoint config carries the candidate in
`ShadowProductionVariants`: SageMaker sends every request to the one production variant, which
answers, and replicates a sample of the requests to the shadow variant, whose answers are never
returned to the caller. SageMaker allows exactly one production variant beside a shadow variant,
so while a shadow runs there is no warm standby (a rollback in that time is a cold change). The
sample is the shadow variant's weight relative to the production variant's (production 1.0,
shadow `sampling_percentage / 100`); the explicit `SamplingPercentage` field exists only in the
InferenceExperiment API (`ShadowModeConfig`). A shadow is added, changed or removed only by a new
endpoint config (UpdateEndpoint): UpdateEndpointWeightsAndCapacities cannot move a variant
between production and shadow. `promote_shadow` makes the shadow's version the production variant
(old production as warm standby); `clear_shadow` removes it. Any `set_variants` call without
`shadow=` asks for an endpoint WITHOUT a shadow, so the steady layout after a promotion or a
rejection also clears it. The check after a change covers the shadow variants too.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import time
from datetime import datetime, timezone
from typing import Any, Callable, Sequence

from ...container_env import SHA256_ENV, SHADOW_ENV, VARIANT_ENV, VERSION_ENV
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

TRANSITIONAL = {"Creating", "Updating", "SystemUpdating", "RollingBack"}
FINAL = {"InService", "Failed", "OutOfService", "UpdateRollbackFailed", "Deleting"}
Variant = tuple[str, str, float]
Shadow = tuple[str, str, float]  # (variant, version, sampling percentage in (0, 100])
SHADOW_VARIANT = "shadow"


class EndpointMismatch(RolloutError):
    """The endpoint does not show what was just requested (e.g. SageMaker rolled back silently)."""


class SageMakerEndpoint:
    native_shadow = True  # the shadow strategy uses SageMaker's shadow variants (`set_shadow`)

    def __init__(self, aws: AWSContext, registry, *, endpoint_name: str, model_name: str,
                 instance_type: str = "ml.m5.large", instance_count: int = 1, image_uri: str | None = None,
                 warm_standby: bool = True, timeout_s: float = 3600.0, initial_delay_s: float = 15.0,
                 max_delay_s: float = 60.0, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic, container_env: dict[str, str] | None = None):
        self.aws = aws
        # the retrainer serving image (`retrainer.serving.container`): the environment every Model
        # gets (model spec, prediction store, pseudonym-key secret); None: the scikit-learn image
        # with the inference.py hooks (scores only, nothing captured)
        self.container_env = container_env
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

    def _variant_versions(self, config_name: str, key: str = "ProductionVariants") -> dict[str, tuple[str, str]]:
        """variant -> (model name, version) from the endpoint config and each model's environment;
        `key` "ShadowProductionVariants" for the shadow variants."""
        sm = self.aws.sm
        cfg = sm.describe_endpoint_config(EndpointConfigName=config_name)
        out = {}
        for pv in cfg.get(key) or []:
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
        out = {"backend": "sagemaker", "endpoint": self.name, "status": desc["EndpointStatus"],
               "config": desc["EndpointConfigName"], "variants": variants,
               **({"failure_reason": one_line(desc["FailureReason"], 300)} if desc.get("FailureReason") else {})}
        shadows = desc.get("ShadowProductionVariants") or []
        if shadows:
            smodels = self._variant_versions(desc["EndpointConfigName"], "ShadowProductionVariants")
            out["shadow"] = [{"variant": pv["VariantName"], "version": smodels.get(pv["VariantName"], ("?", "?"))[1],
                              "model": smodels.get(pv["VariantName"], ("?", "?"))[0],
                              "sampling_percentage": round(100 * self._weight(pv) / total, 4)} for pv in shadows]
        return out

    # ---- writing --------------------------------------------------------------------------------
    def set_variants(self, variants: Sequence[Variant | dict], *, actor: str | None = None,
                     reason: str | None = None, shadow: Shadow | dict | None = None) -> dict[str, Any]:
        """Apply [(variant, version, weight), ...] (or dicts with those keys); returns the new state.
        `shadow`: (variant, version, sampling percentage) to run in SageMaker's shadow mode beside
        the ONE production variant given; None: the endpoint has no shadow variant afterwards.
        `actor` and `reason` are accepted for the Endpoint protocol; on AWS, CloudTrail records who
        changed the endpoint, and the registry's audit log records the status change."""
        self.aws.region  # noqa: B018 - configuration first: region, then bucket (head_bucket)
        self.aws.require_bucket()
        wanted = self._validate(variants)
        shadow_spec = self._validate_shadow(shadow, wanted)
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
            if resolved is not None and self._same_shadow(current, shadow_spec):
                return self._set_weights(current, resolved)
        return self._deploy(wanted, current, shadow_spec)

    # ---- shadow variants -------------------------------------------------------------------------
    def set_shadow(self, version: str, sampling_percentage: float = 100.0, *, variant: str = SHADOW_VARIANT,
                   production_variant: str = "blue", actor: str | None = None,
                   reason: str | None = None) -> dict[str, Any]:
        """Production (the registry's) answers every request; `version` runs as a shadow variant on
        `sampling_percentage` % of them. A new endpoint config + UpdateEndpoint."""
        prod = self.registry.production()
        if prod is None:
            raise RolloutError("there is no production version: a shadow variant needs one to shadow")
        return self.set_variants([(production_variant, prod.version, 1.0)], actor=actor, reason=reason,
                                 shadow=(variant, version, sampling_percentage))

    def clear_shadow(self, *, actor: str | None = None, reason: str | None = None) -> dict[str, Any]:
        """Remove the shadow variant: the current production variant(s) at their weights, no shadow
        (a new endpoint config; the warm standby returns)."""
        desc = self._describe()
        served = self._variant_versions(desc["EndpointConfigName"])
        return self.set_variants([(pv["VariantName"], served[pv["VariantName"]][1], self._weight(pv))
                                  for pv in desc.get("ProductionVariants") or []], actor=actor, reason=reason)

    def promote_shadow(self, *, variant: str = "blue", actor: str | None = None,
                       reason: str | None = None) -> dict[str, Any]:
        """The shadow variant's version becomes the one production variant at 100%, no shadow (the
        previous production rides along as warm standby when `warm_standby`). Promote it in the
        registry first, so the warm standby is the old production."""
        desc = self._describe()
        shadows = self._variant_versions(desc["EndpointConfigName"], "ShadowProductionVariants")
        if not shadows:
            raise RolloutError(f"endpoint {self.name} has no shadow variant to promote")
        (_, version), = shadows.values()
        return self.set_variants([(variant, version, 1.0)], actor=actor, reason=reason)

    def _validate_shadow(self, shadow: Shadow | dict | None, wanted: list[Variant]) -> Shadow | None:
        if shadow is None:
            return None
        if isinstance(shadow, dict):
            shadow = (shadow["variant"], shadow["version"], shadow.get("sampling_percentage", 100.0))
        name, version, pct = str(shadow[0]), str(shadow[1]), shadow[2]
        if not NAME_RE.match(name):
            raise RolloutError(f"bad shadow variant name {name!r} (letters, digits, dashes; max 63)")
        if name in {n for n, _, _ in wanted}:
            raise RolloutError(f"shadow variant {name} has the name of a production variant")
        if isinstance(pct, bool) or not isinstance(pct, (int, float)) or not 0 < pct <= 100:
            raise RolloutError(f"shadow sampling percentage must be in (0, 100], got {pct!r}")
        if len(wanted) != 1:
            raise RolloutError(f"SageMaker allows one production variant beside a shadow variant, got {len(wanted)}")
        self.registry.get(version)  # unknown version -> RegistryError before anything is touched
        return (name, version, float(pct))

    def _same_shadow(self, current: dict[str, Any], shadow: Shadow | None) -> bool:
        """Does the endpoint already run exactly this shadow (or none when None)?"""
        found = self._variant_versions(current["EndpointConfigName"], "ShadowProductionVariants")
        if shadow is None:
            return not found
        name, version, pct = shadow
        weights = {pv["VariantName"]: self._weight(pv) for pv in current.get("ShadowProductionVariants") or []}
        return (set(found) == {name} and found[name][1] == version
                and abs(weights.get(name, -1.0) - pct / 100) < 1e-6)

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

    def _deploy(self, wanted: list[Variant], current: dict[str, Any] | None,
                shadow: Shadow | None = None) -> dict[str, Any]:
        role = self.aws.require_role()
        self.aws.require_bucket()
        image = self._image_uri or default_sklearn_image(self.aws.region)
        full = list(wanted)
        if shadow is not None:  # SageMaker: one production variant beside a shadow, at weight 1
            full = [(n, v, 1.0) for n, v, _ in full]
        elif self.warm_standby:
            prev = next(iter(self.registry.previous()), None)
            if prev is not None and prev.version not in {v for _, v, _ in full}:
                taken = {n for n, _, _ in full}
                name = next(n for n in ("standby", "standby-2", "warm-standby") if n not in taken)
                full.append((name, prev.version, 0.0))
        recs = {v: self.registry.get(v) for _, v, _ in full + ([shadow] if shadow else [])}
        for v, rec in recs.items():
            if not rec.artifact_uri.startswith("s3://"):
                raise RolloutError(f"version {v} has no S3 artifact ({rec.artifact_uri or 'none'}); register it "
                                   "with the SageMaker registry")
        sm = self.aws.sm
        created_models: list[str] = []
        config = resource_name(self.name, datetime.now(timezone.utc).strftime("%Y%m%d%H%M%S"),
                               hashlib.sha256(json.dumps(full if shadow is None else [full, shadow]).encode())
                               .hexdigest()[:6])
        config_made = False
        try:
            submit = self._upload_serving_source()
            models = {}
            for n, v, _ in full + ([shadow] if shadow else []):
                models[n, v] = self._ensure_model(v, recs[v], image, role, submit, created_models,
                                                  variant=n, shadow=shadow is not None and n == shadow[0])
            spec = {"EndpointConfigName": config, "ProductionVariants": [
                {"VariantName": n, "ModelName": models[n, v], "InitialVariantWeight": w,
                 "InitialInstanceCount": self.instance_count, "InstanceType": self.instance_type}
                for n, v, w in full]}
            if shadow is not None:
                n, v, pct = shadow
                spec["ShadowProductionVariants"] = [
                    {"VariantName": n, "ModelName": models[n, v], "InitialVariantWeight": pct / 100,
                     "InitialInstanceCount": self.instance_count, "InstanceType": self.instance_type}]
            sm.create_endpoint_config(**spec)
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
        return self._check(config, {n: w for n, _, w in full},
                           {shadow[0]: shadow[2] / 100} if shadow is not None else {})

    def _upload_serving_source(self) -> str:
        files = source_files()
        body = tar_gz(files)
        digest = hashlib.sha256(body).hexdigest()[:12]
        key = self.aws.key("serving", "source", digest, "sourcedir.tar.gz")
        self.aws.s3.put_object(Bucket=self.aws.bucket, Key=key, Body=body)
        return f"s3://{self.aws.bucket}/{key}"

    def _ensure_model(self, version: str, rec, image: str, role: str, submit: str,
                      created: list[str], *, variant: str, shadow: bool = False) -> str:
        """The SageMaker Model serving `version`: one per version with the scikit-learn image, one
        per (variant, version) with the retrainer image, whose container captures under the
        variant's name (and as shadow scores in a shadow variant)."""
        if self.container_env is None:
            name = resource_name(self.model_name, version)
            env = {"SAGEMAKER_PROGRAM": "inference.py", "SAGEMAKER_SUBMIT_DIRECTORY": submit,
                   "SAGEMAKER_REGION": self.aws.region, VERSION_ENV: version}
        else:
            name = resource_name(self.model_name, version, variant, "shadow" if shadow else "")
            env = {**self.container_env, "SAGEMAKER_REGION": self.aws.region, VERSION_ENV: version,
                   SHA256_ENV: rec.artifact_sha256, VARIANT_ENV: variant, SHADOW_ENV: "1" if shadow else "0"}
        sm = self.aws.sm
        try:
            sm.describe_model(ModelName=name)
            return name
        except Exception as exc:
            if error_code(exc) != "ValidationException":
                raise
        sm.create_model(ModelName=name, ExecutionRoleArn=role, PrimaryContainer={
            "Image": image, "ModelDataUrl": rec.artifact_uri, "Environment": env})
        created.append(name)
        return name

    def _wait(self) -> dict[str, Any]:
        return wait_for(lambda: self._describe(), status_of=lambda d: d["EndpointStatus"], final=FINAL,
                        what=f"endpoint {self.name}", timeout_s=self.timeout_s, sleep=self.sleep, clock=self.clock,
                        initial_delay=self.initial_delay_s, max_delay=self.max_delay_s)

    def _check(self, config: str, weights: dict[str, float],
               shadow: dict[str, float] | None = None) -> dict[str, Any]:
        """Re-describe after a change; raise EndpointMismatch unless it shows exactly what we asked:
        production weights and, when `shadow` is given ({variant: weight}, {} for none), the
        shadow variants."""
        try:
            desc = self._wait()
        except WaitTimeout as exc:
            raise RolloutError(f"{exc}; the change may still complete -- check the endpoint") from None
        found = {pv["VariantName"]: self._weight(pv) for pv in desc.get("ProductionVariants") or []}
        ok = (desc["EndpointStatus"] == "InService" and desc["EndpointConfigName"] == config
              and _same(found, weights))
        shadow_found = {pv["VariantName"]: self._weight(pv) for pv in desc.get("ShadowProductionVariants") or []}
        if shadow is not None:
            ok = ok and _same(shadow_found, shadow)
        if not ok:
            why = f" ({one_line(desc['FailureReason'], 200)})" if desc.get("FailureReason") else ""
            sh = (f" shadow {_fmt(shadow)}" if shadow else " no shadow") if shadow is not None else ""
            sh_found = (f" shadow {_fmt(shadow_found)}" if shadow_found else " no shadow") if shadow is not None else ""
            raise EndpointMismatch(
                f"endpoint {self.name} did not take the change (SageMaker may have rolled it back): expected config "
                f"{config} weights {_fmt(weights)}{sh}, found {desc['EndpointConfigName']} weights {_fmt(found)}"
                f"{sh_found}, status {desc['EndpointStatus']}{why}")
        return self._state(desc)


def _same(found: dict[str, float], wanted: dict[str, float]) -> bool:
    return set(found) == set(wanted) and all(abs(found[n] - w) < 1e-6 for n, w in wanted.items())


def _fmt(weights: dict[str, float]) -> str:
    return "{" + ", ".join(f"{n}={w:g}" for n, w in sorted(weights.items())) + "}"
