"""SageMaker shadow variants (`SageMakerEndpoint.set_shadow` / `promote_shadow` / `clear_shadow`, and
the shadow strategy's start) against moto's server over HTTP.

What moto 5.2.5 lacks here (read in moto/sagemaker/responses.py and models.py):
- CreateEndpointConfig: `ShadowProductionVariants` is accepted but DROPPED (responses.py passes
  only EndpointConfigName, ProductionVariants, DataCaptureConfig, AsyncInferenceConfig, Tags and
  KmsKeyId to the backend), so DescribeEndpointConfig and DescribeEndpoint never return it.
- UpdateEndpoint is not implemented (HTTP 500), and a shadow is always added or removed on an
  existing endpoint by UpdateEndpoint with a new endpoint config.
So the code calls the real API, and the tests assert the requests it sends (botocore
`before-send`: the real request, still sent to moto) and the exact error moto's gap produces.
One test puts back what moto dropped (`ShadowEcho`, stated there) to drive the steps that read
the shadow from Describe*.
"""
from __future__ import annotations

import json
import re

import pytest
from botocore.exceptions import ClientError

from retrainer.errors import RolloutError
from retrainer.registry.model import Status
from retrainer.rollout import RolloutPlan
from retrainer.rollout import operations as ops

from .conftest import backend_with_versions, boto, snapshot
from .test_sagemaker import model_record


@pytest.fixture
def backend(aws_env, tmp_path):
    """1.0.0 previous, 1.1.0 production, 1.2.0 candidate; tiny artifacts (nothing is served)."""
    return backend_with_versions(tmp_path, model_record)


class Sent:
    """Requests of `operations` sent by a boto3 client, in order (botocore `before-send`)."""

    def __init__(self, client, *operations: str):
        self.requests: list[tuple[str, dict]] = []
        for op in operations:
            client.meta.events.register(f"before-send.sagemaker.{op}", self._hook(op))

    def _hook(self, op):
        def hook(request, **_):
            self.requests.append((op, json.loads(request.body)))
            return None  # send it for real
        return hook

    def bodies(self, op: str) -> list[dict]:
        return [b for o, b in self.requests if o == op]


def one_line(exc: BaseException) -> str:
    msg = str(exc)
    assert msg and "\n" not in msg, msg
    return msg


def test_set_shadow_sends_a_shadow_variant_config_and_update_endpoint(backend):
    """moto gaps: UpdateEndpoint (HTTP 500); ShadowProductionVariants dropped by CreateEndpointConfig."""
    ep = backend.endpoint
    ep.set_variants([("blue", "1.1.0", 1.0)])  # the endpoint as it serves production (+ warm standby 1.0.0)
    before = snapshot()
    sent = Sent(ep.aws.sm, "CreateEndpointConfig", "UpdateEndpoint", "DeleteEndpointConfig")
    with pytest.raises(RolloutError) as err:
        ep.set_shadow("1.2.0", 25, variant="green")
    assert re.fullmatch(r"endpoint readmission-30d: UpdateEndpoint with config readmission-30d-\d{14}-[0-9a-f]{6} "
                        r"failed: 500: .*", one_line(err.value))
    cause = err.value.__cause__
    assert isinstance(cause, ClientError) and cause.operation_name == "UpdateEndpoint"
    (cfg,) = sent.bodies("CreateEndpointConfig")
    # SageMaker: exactly one production variant beside the shadow; no warm standby in a shadow config
    assert [(v["VariantName"], v["ModelName"], v["InitialVariantWeight"]) for v in cfg["ProductionVariants"]] == \
        [("blue", "readmission-30d-1-1-0", 1.0)]
    assert [(v["VariantName"], v["ModelName"], v["InitialVariantWeight"], v["InstanceType"])
            for v in cfg["ShadowProductionVariants"]] == [("green", "readmission-30d-1-2-0", 0.25, "ml.m5.large")]
    (upd,) = sent.bodies("UpdateEndpoint")
    assert upd == {"EndpointName": "readmission-30d", "EndpointConfigName": cfg["EndpointConfigName"]}
    assert sent.bodies("DeleteEndpointConfig") == [{"EndpointConfigName": cfg["EndpointConfigName"]}]
    after = snapshot()  # nothing half-made: the config and the candidate's new model are gone again
    assert {k: after[k] for k in ("models", "endpoint_configs", "endpoints")} == \
        {k: before[k] for k in ("models", "endpoint_configs", "endpoints")}


def test_moto_drops_the_shadow_and_the_check_refuses_to_report_success(backend):
    """moto gap: CreateEndpointConfig accepts ShadowProductionVariants and drops it, so the endpoint
    moto creates has no shadow. The check after the change reads DescribeEndpoint and says so, as
    it would if SageMaker itself dropped or rolled back the shadow."""
    from retrainer.backends.sagemaker import EndpointMismatch

    ep = backend.endpoint
    sent = Sent(ep.aws.sm, "CreateEndpointConfig", "CreateEndpoint")
    with pytest.raises(EndpointMismatch) as err:
        ep.set_variants([("blue", "1.1.0", 1.0)], shadow=("green", "1.2.0", 10))
    (cfg,) = sent.bodies("CreateEndpointConfig")
    assert cfg["ShadowProductionVariants"][0]["InitialVariantWeight"] == pytest.approx(0.1)
    assert re.fullmatch(rf"endpoint readmission-30d did not take the change \(SageMaker may have rolled it back\): "
                        rf"expected config {cfg['EndpointConfigName']} weights \{{blue=1\}} shadow \{{green=0\.1\}}, "
                        rf"found {cfg['EndpointConfigName']} weights \{{blue=1\}} no shadow, status InService",
                        one_line(err.value))
    # the gap itself, as moto 5.2.5 answers (tighten the shadow tests when this fails)
    assert "ShadowProductionVariants" not in boto("sagemaker").describe_endpoint_config(
        EndpointConfigName=cfg["EndpointConfigName"])
    assert "ShadowProductionVariants" not in boto("sagemaker").describe_endpoint(EndpointName="readmission-30d")


class ShadowEcho:
    """The real moto client, except that Describe* return the ShadowProductionVariants the code
    sent in CreateEndpointConfig (moto 5.2.5 drops them; CurrentWeight = the weight sent, as
    SageMaker reports it). Everything else is moto's answer, unchanged."""

    def __init__(self, client):
        self._c = client
        self._shadow: dict[str, list[dict]] = {}

    def __getattr__(self, name):
        return getattr(self._c, name)

    def create_endpoint_config(self, **kw):
        out = self._c.create_endpoint_config(**kw)
        if kw.get("ShadowProductionVariants"):
            self._shadow[kw["EndpointConfigName"]] = kw["ShadowProductionVariants"]
        return out

    def describe_endpoint_config(self, **kw):
        d = self._c.describe_endpoint_config(**kw)
        if kw["EndpointConfigName"] in self._shadow:
            d["ShadowProductionVariants"] = self._shadow[kw["EndpointConfigName"]]
        return d

    def describe_endpoint(self, **kw):
        d = self._c.describe_endpoint(**kw)
        shadow = self._shadow.get(d["EndpointConfigName"])
        if shadow:
            d["ShadowProductionVariants"] = [
                {"VariantName": v["VariantName"], "CurrentWeight": v["InitialVariantWeight"],
                 "DesiredWeight": v["InitialVariantWeight"]} for v in shadow]
        return d


def test_shadow_state_idempotence_promote_and_clear(backend):
    """moto gaps: Describe* lack ShadowProductionVariants (put back by ShadowEcho), UpdateEndpoint
    (HTTP 500) for the promotion and the clearing, whose requests are asserted."""
    ep, reg = backend.endpoint, backend.registry
    sent = Sent(ep.aws.sm, "CreateEndpointConfig", "UpdateEndpoint", "UpdateEndpointWeightsAndCapacities")
    ep.aws._clients["sagemaker"] = ShadowEcho(ep.aws.sm)
    state = ep.set_shadow("1.2.0", 25, variant="green")  # a new endpoint: CreateEndpoint with the shadow config
    assert [(v["variant"], v["version"], v["weight"]) for v in state["variants"]] == [("blue", "1.1.0", 1.0)]
    assert [(v["variant"], v["version"], v["sampling_percentage"]) for v in state["shadow"]] == \
        [("green", "1.2.0", 25.0)]
    assert ep.state() == state
    # the same shadow again (a resumed flow): a weight-only call, no new config
    ep.set_shadow("1.2.0", 25, variant="green")
    assert len(sent.bodies("CreateEndpointConfig")) == 1
    assert len(sent.bodies("UpdateEndpointWeightsAndCapacities")) == 1
    # another sampling percentage is another config
    with pytest.raises(RolloutError, match="UpdateEndpoint with config"):
        ep.set_shadow("1.2.0", 50, variant="green")
    assert sent.bodies("CreateEndpointConfig")[-1]["ShadowProductionVariants"][0]["InitialVariantWeight"] == 0.5
    # clear: production as it is, no shadow, the warm standby (the previous production) back
    with pytest.raises(RolloutError, match="UpdateEndpoint with config"):
        ep.clear_shadow()
    cfg = sent.bodies("CreateEndpointConfig")[-1]
    assert "ShadowProductionVariants" not in cfg
    assert [(v["VariantName"], v["ModelName"], v["InitialVariantWeight"]) for v in cfg["ProductionVariants"]] == \
        [("blue", "readmission-30d-1-1-0", 1.0), ("standby", "readmission-30d-1-0-0", 0.0)]
    # promotion: the steady layout (no shadow=) is a new config without the shadow, even though
    # every version in it is "served" -- a weight-only call would leave the shadow running
    reg.set_status("1.2.0", Status.CANARY, actor="ci", reason="shadow")
    with pytest.raises(RolloutError, match="UpdateEndpoint with config"):
        ops.promote_canary(reg, ep, "1.2.0", actor="ci", reason="passed")
    cfg = sent.bodies("CreateEndpointConfig")[-1]
    assert "ShadowProductionVariants" not in cfg
    assert [(v["VariantName"], v["ModelName"], v["InitialVariantWeight"]) for v in cfg["ProductionVariants"]] == \
        [("blue", "readmission-30d-1-2-0", 1.0), ("previous-1", "readmission-30d-1-1-0", 0.0),
         ("previous-2", "readmission-30d-1-0-0", 0.0)]
    assert sent.bodies("UpdateEndpoint")[-1]["EndpointConfigName"] == cfg["EndpointConfigName"]
    # promote_shadow: the shadow's version as the one production variant, old production warm
    with pytest.raises(RolloutError, match="UpdateEndpoint with config"):
        ep.promote_shadow()
    cfg = sent.bodies("CreateEndpointConfig")[-1]
    assert "ShadowProductionVariants" not in cfg
    assert [(v["VariantName"], v["ModelName"], v["InitialVariantWeight"]) for v in cfg["ProductionVariants"]] == \
        [("blue", "readmission-30d-1-2-0", 1.0), ("standby", "readmission-30d-1-1-0", 0.0)]


def test_shadow_strategy_on_sagemaker_starts_a_shadow_variant(backend, tmp_path):
    """The shadow plan's start (rollout.start_canary with the plan's sampling percentage) on the
    SageMaker backend asks for a shadow variant, not the local weight-0 layout. moto gap:
    UpdateEndpoint (HTTP 500), so the request is asserted."""
    ep, reg = backend.endpoint, backend.registry
    ep.set_variants([("blue", "1.1.0", 1.0)])
    plan = RolloutPlan.from_yaml("strategy: shadow\nshadow: {duration: 24h, check_interval: 1h, "
                                 "sampling_percentage: 40}\ncutover: blue-green\n")
    assert plan.shadow_sampling == 40
    sent = Sent(ep.aws.sm, "CreateEndpointConfig", "UpdateEndpoint")
    with pytest.raises(RolloutError, match="UpdateEndpoint with config"):
        ops.start_canary(reg, ep, "1.2.0", plan.stages[0].traffic, actor="ci", reason="shadow plan",
                         shadow_sampling=plan.shadow_sampling)
    (cfg,) = sent.bodies("CreateEndpointConfig")
    assert [(v["VariantName"], v["InitialVariantWeight"]) for v in cfg["ProductionVariants"]] == [("blue", 1.0)]
    assert [(v["VariantName"], v["ModelName"], v["InitialVariantWeight"])
            for v in cfg["ShadowProductionVariants"]] == [("green", "readmission-30d-1-2-0", 0.4)]
    assert reg.get("1.2.0").status == Status.CANARY  # registry first when traffic goes ON the candidate


@pytest.mark.parametrize("kwargs, message", [
    (dict(variants=[("blue", "1.1.0", 1.0)], shadow=("green", "1.2.0", 0)),
     "shadow sampling percentage must be in (0, 100], got 0"),
    (dict(variants=[("blue", "1.1.0", 1.0)], shadow=("green", "1.2.0", 101)),
     "shadow sampling percentage must be in (0, 100], got 101"),
    (dict(variants=[("blue", "1.1.0", 0.9), ("green", "1.2.0", 0.1)], shadow=("grey", "1.0.0", 10)),
     "SageMaker allows one production variant beside a shadow variant, got 2"),
    (dict(variants=[("blue", "1.1.0", 1.0)], shadow=("blue", "1.2.0", 10)),
     "shadow variant blue has the name of a production variant"),
    (dict(variants=[("blue", "1.1.0", 1.0)], shadow=("green_1", "1.2.0", 10)),
     "bad shadow variant name 'green_1' (letters, digits, dashes; max 63)"),
])
def test_bad_shadow_requests_are_one_line_and_create_nothing(backend, kwargs, message):
    before = snapshot()
    with pytest.raises(RolloutError) as err:
        backend.endpoint.set_variants(**kwargs)
    assert one_line(err.value) == message
    assert snapshot() == before


def test_promote_shadow_without_one_is_refused(backend):
    ep = backend.endpoint
    ep.set_variants([("blue", "1.1.0", 1.0)])
    with pytest.raises(RolloutError) as err:
        ep.promote_shadow()
    assert one_line(err.value) == "endpoint readmission-30d has no shadow variant to promote"
