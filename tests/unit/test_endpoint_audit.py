"""Routing changes made by rollout operations are audited with their actor and reason, also when
no server is running and the local endpoint writes routing.json itself."""
import secrets

from retrainer.backends.local import LocalEndpoint
from retrainer.rollout import rollback_production
from retrainer.serving import read_routing, routing_path
from retrainer.settings import Settings
from tests.helpers import free_port, registry_with


def test_offline_rollback_writes_routing_and_audits_actor_and_reason(tmp_path):
    settings = Settings(home=tmp_path, serving={"port": free_port(), "admin_token": secrets.token_urlsafe(32)})
    reg = registry_with(tmp_path, ["1.0.0", "1.1.0"])  # tmp_path/registry is settings.registry_dir
    endpoint = LocalEndpoint(settings)
    res = rollback_production(reg, endpoint, None, actor="on call\nbob", reason="bad   scores\tafter deploy")
    assert res["version"] == "1.0.0" and res["endpoint"]["applied"] == "file"
    assert [(s.variant, s.version, s.weight) for s in read_routing(routing_path(settings))][0] == ("blue", "1.0.0", 1.0)
    routing = [e for e in reg.audit() if e.get("kind") == "routing"]
    assert len(routing) == 1
    event = routing[0]
    assert event["actor"] == "on-call-bob"  # made safe for the admin route's actor header
    assert event["reason"] == "rollback to 1.0.0: bad scores after deploy"  # one line
    assert event["to"].startswith("blue=1.0.0:1 ")
    last = [e for e in reg.audit() if e.get("kind") != "routing"][-1]
    assert (last["version"], last["to"], last["actor"]) == ("1.0.0", "production", "on call\nbob")
