"""A shadow plan's `sampling_percentage` (SageMaker's shadow variant share of requests)."""
from __future__ import annotations

from pathlib import Path

import pytest

from retrainer.errors import ConfigError
from retrainer.rollout import RolloutPlan

ROOT = Path(__file__).resolve().parents[2]
SHADOW = "strategy: shadow\nshadow: {{duration: 24h, check_interval: 1h{extra}}}\ncutover: blue-green\n"


def test_default_is_every_request_and_round_trips():
    plan = RolloutPlan.from_file(ROOT / "rollout-plans" / "shadow-cutover.yaml")
    assert plan.shadow_sampling == 100
    assert "sampling_percentage" not in plan.to_dict()["stages"][0]
    plan = RolloutPlan.from_yaml(SHADOW.format(extra=", sampling_percentage: 25"))
    assert plan.shadow_sampling == 25
    again = RolloutPlan.from_dict(plan.to_dict())
    assert again == plan and again.shadow_sampling == 25
    assert "25% of requests scored on SageMaker" in plan.summary()
    assert RolloutPlan.from_file(ROOT / "rollout-plans" / "canary.yaml").shadow_sampling is None


@pytest.mark.parametrize("value", ["0", "101", "2.5", "true", "'50'"])
def test_bad_sampling_percentage_is_one_line(value):
    with pytest.raises(ConfigError) as err:
        RolloutPlan.from_yaml(SHADOW.format(extra=f", sampling_percentage: {value}"), source="p.yaml")
    assert str(err.value).startswith("rollout plan p.yaml: sampling_percentage must be a whole number from 1 to 100")
    assert "\n" not in str(err.value)


def test_sampling_percentage_belongs_to_a_shadow_stage():
    text = "strategy: canary\nstages: [{traffic: 0.1, duration: 2h, check_interval: 1h, sampling_percentage: 50}]\n"
    with pytest.raises(ConfigError) as err:
        RolloutPlan.from_yaml(text, source="p.yaml")
    assert str(err.value) == "rollout plan p.yaml: stage 1: sampling_percentage belongs to a shadow stage"


def test_local_endpoint_keeps_the_weight_0_shadow_layout(tmp_path):
    """The local endpoint has no shadow variants: a shadow plan's start loads the candidate at
    weight 0 (scored in shadow by the server), whatever the sampling percentage."""
    import secrets

    from retrainer.backends.local import LocalEndpoint
    from retrainer.rollout import start_canary
    from retrainer.serving import read_routing, routing_path
    from retrainer.settings import Settings
    from tests.helpers import artifact, free_port, make_record, registry_with

    settings = Settings(home=tmp_path, serving={"port": free_port(), "admin_token": secrets.token_urlsafe(32)})
    reg = registry_with(tmp_path, ["1.0.0", "1.1.0"])
    reg.register(make_record("1.2.0"), artifact(tmp_path, "1.2.0"), actor="t")
    res = start_canary(reg, LocalEndpoint(settings), "1.2.0", 0.0, actor="t", reason="shadow plan",
                       shadow_sampling=25)
    assert res["endpoint"]["applied"] == "file"
    assert [(s.variant, s.version, s.weight) for s in read_routing(routing_path(settings))] == \
        [("blue", "1.1.0", 1.0), ("green", "1.2.0", 0.0), ("previous-1", "1.0.0", 0.0)]
