"""One contract suite for every `Registry` backend: LocalRegistry on tmp_path and
SageMakerRegistry on moto's server (over HTTP). Same calls, same results, same error messages."""
from __future__ import annotations

import json
import re

import pytest

from retrainer.errors import RegistryError
from retrainer.registry import LocalRegistry, ModelRecord

from .conftest import BUCKET, boto, make_settings


def record(version: str, status: str = "candidate", **kw) -> ModelRecord:
    base = dict(version=version, status=status, created_at="", trigger="test", parent=None, bump="minor",
                bump_reason="new data", schema_hash="sch1", data_hash=f"data-{version}", params_hash="par1",
                code_version="git:abc123 src:def456",
                params={"learning_rate": 0.06, "max_iter": 250, "max_leaf_nodes": 31},
                metrics={"auc": 0.781234, "brier": 0.1123, "slices": {"age_band": {"65-79": 0.77, "80+": 0.74}}},
                data={"rows": 12000, "from": "2024-01", "to": "2024-10", "files": ["a.parquet", "b.parquet"]},
                validation={"success": True, "expectations": 11}, gate={"passed": True, "reason": "auc 0.78 >= 0.70"})
    base.update(kw)
    return ModelRecord(**base)


@pytest.fixture
def artifact(tmp_path):
    d = tmp_path / "artifact"
    d.mkdir()
    (d / "model.joblib").write_bytes(b"\x80\x04fake-pipeline")
    (d / "model.json").write_text(json.dumps({"validation_auc": 0.78}))
    return d


@pytest.fixture(params=["local", "sagemaker"])
def registry(request, tmp_path):
    if request.param == "local":
        return LocalRegistry(tmp_path / "registry", "readmission-30d")
    request.getfixturevalue("aws_env")
    from retrainer.backends.sagemaker import build

    boto("s3").create_bucket(Bucket=BUCKET)
    return build(make_settings(tmp_path)).registry


def raises(msg: str):
    return pytest.raises(RegistryError, match=f"^{re.escape(msg)}$")


def chain(reg, artifact):
    """1.0.0 production, then 1.1.0 .. 1.4.0 promoted in turn."""
    reg.register(record("1.0.0", "production"), artifact, actor="ci")
    for v in ("1.1.0", "1.2.0", "1.3.0", "1.4.0"):
        reg.register(record(v), artifact, actor="ci")
        reg.promote(v, actor="lead", reason=f"promote {v}")


def statuses(reg):
    return {r.version: r.status for r in reg.list()}


def test_register_list_get(registry, artifact):
    reg = registry
    assert reg.list() == [] and reg.production() is None and reg.previous() == [] and reg.audit() == []
    reg.register(record("1.0.0", "production"), artifact, actor="ci")
    rec = reg.register(record("1.1.0", parent="1.0.0"), artifact, actor="ci")
    assert rec.artifact_sha256 and rec.artifact_uri
    assert [r.version for r in reg.list()] == ["1.0.0", "1.1.0"]
    got = reg.get("1.1.0")
    assert got.to_dict() == rec.to_dict()
    assert got.metrics["slices"]["age_band"]["80+"] == 0.74 and got.params["max_iter"] == 250
    assert got.parent == "1.0.0" and got.status == "candidate"
    assert reg.production().version == "1.0.0" and reg.previous() == []
    with raises("unknown version 9.9.9 (registered: 1.0.0, 1.1.0)"):
        reg.get("9.9.9")
    with raises("'latest' is not a MAJOR.MINOR.PATCH version"):
        reg.get("latest")
    with raises("version 1.1.0 is already registered"):
        reg.register(record("1.1.0"), artifact, actor="ci")
    with raises("there is already a production version; new versions enter as candidates"):
        reg.register(record("2.0.0", "production"), artifact, actor="ci")
    with raises("a new version enters as candidate, production or rejected, not canary"):
        reg.register(record("2.0.0", "canary"), artifact, actor="ci")
    assert [r.version for r in reg.list()] == ["1.0.0", "1.1.0"]  # refusals left nothing behind
    assert (reg.verify("1.1.0") / "model.joblib").read_bytes() == b"\x80\x04fake-pipeline"


def test_promote_chain_keeps_production_and_two_previous(registry, artifact):
    chain(registry, artifact)
    assert statuses(registry) == {"1.0.0": "archived", "1.1.0": "archived", "1.2.0": "previous",
                                  "1.3.0": "previous", "1.4.0": "production"}
    assert registry.production().version == "1.4.0"
    assert [r.version for r in registry.previous()] == ["1.3.0", "1.2.0"]
    with raises("1.4.0 is already production"):
        registry.promote("1.4.0", actor="lead", reason="again")


def test_rollback_to_previous_and_previous_2(registry, artifact):
    chain(registry, artifact)
    assert registry.rollback(actor="oncall", reason="canary alarm").version == "1.3.0"
    assert statuses(registry)["1.4.0"] == "previous"
    assert [r.version for r in registry.previous()] == ["1.4.0", "1.2.0"]
    assert registry.rollback(to="1.2.0", actor="oncall", reason="older one").version == "1.2.0"
    assert registry.production().version == "1.2.0"
    assert [r.version for r in registry.previous()] == ["1.3.0", "1.4.0"]
    assert statuses(registry) == {"1.0.0": "archived", "1.1.0": "archived", "1.2.0": "production",
                                  "1.3.0": "previous", "1.4.0": "previous"}
    with raises("1.1.0 is not a kept previous version (kept: 1.3.0, 1.4.0)"):
        registry.rollback(to="1.1.0", actor="oncall", reason="too old")
    with raises("1.2.0 is already production"):
        registry.rollback(to="1.2.0", actor="oncall", reason="same")
    with raises("unknown version 7.0.0 (registered: 1.0.0, 1.1.0, 1.2.0, 1.3.0, 1.4.0)"):
        registry.rollback(to="7.0.0", actor="oncall", reason="typo")


def test_rollback_with_nothing_kept(registry, artifact):
    registry.register(record("1.0.0", "production"), artifact, actor="ci")
    with raises("no previous production version is kept; nothing to roll back to"):
        registry.rollback(actor="oncall", reason="x")


def test_illegal_transitions(registry, artifact):
    chain(registry, artifact)
    registry.register(record("1.5.0"), artifact, actor="ci")
    with raises("1.1.0 is archived; it cannot become production"):
        registry.set_status("1.1.0", "production", actor="lead", reason="revive")
    with raises("1.5.0 is candidate; it cannot become previous"):
        registry.set_status("1.5.0", "previous", actor="lead", reason="x")
    with raises("unknown status 'live' (one of candidate, canary, production, previous, archived, rejected)"):
        registry.set_status("1.5.0", "live", actor="lead", reason="x")
    with raises("unknown version 3.0.0 (registered: 1.0.0, 1.1.0, 1.2.0, 1.3.0, 1.4.0, 1.5.0)"):
        registry.set_status("3.0.0", "canary", actor="lead", reason="x")
    assert registry.set_status("1.5.0", "canary", actor="ci", reason="canary start").status == "canary"
    assert registry.set_status("1.5.0", "rejected", actor="ci", reason="canary failed").status == "rejected"
    with raises("1.5.0 is rejected; it cannot become candidate"):
        registry.set_status("1.5.0", "candidate", actor="lead", reason="x")
    with raises("1.5.0 is rejected; it cannot become production"):
        registry.promote("1.5.0", actor="lead", reason="x")
    with raises("1.4.0 is production; it cannot become archived"):
        registry.set_status("1.4.0", "archived", actor="lead", reason="x")
    # set_status(..., "production") is a promotion
    registry.register(record("1.6.0"), artifact, actor="ci")
    assert registry.set_status("1.6.0", "production", actor="lead", reason="approved").status == "production"
    assert [r.version for r in registry.previous()] == ["1.4.0", "1.3.0"]
    assert registry.get("1.2.0").status == "archived"


def test_audit_lines(registry, artifact):
    registry.register(record("1.0.0", "production"), artifact, actor="ci")
    registry.register(record("1.1.0"), artifact, actor="ci")
    registry.promote("1.1.0", actor="lead", reason="better auc")
    registry.rollback(actor="oncall", reason="alarm")
    lines = registry.audit()
    assert [(e["version"], e["from"], e["to"], e["actor"]) for e in lines] == [
        ("1.0.0", None, "production", "ci"), ("1.1.0", None, "candidate", "ci"),
        ("1.0.0", "production", "previous", "lead"), ("1.1.0", "candidate", "production", "lead"),
        ("1.1.0", "production", "previous", "oncall"), ("1.0.0", "previous", "production", "oncall")]
    assert lines[0]["reason"] == "registered (test); auc 0.78 >= 0.70"
    assert lines[2]["reason"] == "replaced by 1.1.0: better auc"
    assert lines[5]["reason"] == "rollback: alarm"
    assert all(set(e) == {"time", "actor", "version", "from", "to", "reason"} for e in lines)


def test_retention_never_touches_production_or_previous(registry, artifact):
    chain(registry, artifact)
    registry.register(record("1.5.0"), artifact, actor="ci")
    registry.set_status("1.5.0", "rejected", actor="ci", reason="gate failed")
    registry.register(record("1.6.0"), artifact, actor="ci")
    assert registry.artifact_dir("1.0.0").is_dir()  # archived artifacts are there until retention
    removed = registry.retention(actor="janitor")
    assert sorted(removed) == ["1.0.0", "1.1.0", "1.5.0"]
    for v in ("1.2.0", "1.3.0", "1.4.0", "1.6.0"):
        assert (registry.verify(v) / "model.json").exists()
    for v in ("1.0.0", "1.5.0"):
        with raises(f"artifacts of {v} are gone (archived and cleaned by retention)"):
            registry.artifact_dir(v)
    assert registry.get("1.0.0").status == "archived"  # records stay
    assert registry.retention(actor="janitor") == []
    tail = registry.audit()[-3:]
    assert {e["version"] for e in tail} == {"1.0.0", "1.1.0", "1.5.0"}
    assert all(e["reason"] == "retention: artifacts removed" for e in tail)
