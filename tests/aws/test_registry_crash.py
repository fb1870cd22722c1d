"""The SageMaker registry's packages and S3 audit log agree after a crash at any point of a
transaction (write-ahead pending.json, completed by the next writer; readers see it meanwhile)."""
from __future__ import annotations

import json

import pytest

from retrainer.backends.sagemaker import AWSContext, SageMakerRegistry, build

from .conftest import BUCKET, boto, make_settings
from .test_registry_contract import record


def crash_at(point):
    def hook(where):
        if where == point:
            raise OSError(f"simulated crash at {where}")
    return hook


def replay(reg) -> None:
    """Replaying the audit log from nothing gives exactly the registry's statuses."""
    state: dict[str, str] = {}
    for e in reg.audit():
        if "to" not in e:
            continue
        assert state.get(e["version"]) == e["from"], (e, state)
        state[e["version"]] = e["to"]
    assert state == {r.version: r.status for r in reg.list()}


def stored_lines(reg) -> list[dict]:
    body = boto("s3").get_object(Bucket=BUCKET, Key=reg.audit_key)["Body"].read().decode()
    return [json.loads(line) for line in body.splitlines()]


def pending_exists(reg) -> bool:
    keys = [o["Key"] for o in boto("s3").list_objects_v2(Bucket=BUCKET).get("Contents", [])]
    return reg.storage.pending_key in keys


@pytest.fixture
def setup(aws_env, tmp_path):
    boto("s3").create_bucket(Bucket=BUCKET)
    settings = make_settings(tmp_path)
    reg = build(settings).registry
    art = tmp_path / "artifact"
    art.mkdir()
    (art / "model.joblib").write_bytes(b"\x80\x04fake-pipeline")
    reg.register(record("1.0.0", "production"), art, actor="ci")
    reg.register(record("1.1.0"), art, actor="ci")

    def crashing(point):
        return SageMakerRegistry(AWSContext(settings.aws), settings.model_name, cache_dir=tmp_path / "c2",
                                 fault_hook=crash_at(point))
    return reg, crashing, art


@pytest.mark.parametrize("point", ["after-pending", "after-packages", "after-audit"])
def test_crash_in_a_transaction_is_completed_by_the_next_writer(setup, point):
    reg, crashing, art = setup
    before = stored_lines(reg)
    with pytest.raises(OSError, match=point):
        crashing(point).promote("1.1.0", actor="lead", reason="go")
    assert pending_exists(reg)
    # Readers see the committed transaction: its records and its audit events, each once.
    assert reg.production().version == "1.1.0"
    assert [(e["version"], e["to"]) for e in reg.audit()[-2:]] == [("1.0.0", "previous"), ("1.1.0", "production")]
    assert len(reg.audit()) == len(before) + 2
    replay(reg)
    if point == "after-audit":
        assert len(stored_lines(reg)) == len(before) + 2
    else:
        assert stored_lines(reg) == before  # the audit line is missing from S3 (reading wrote nothing)
    # The next writer completes it: the promote's lines are stored exactly once, pending.json is gone.
    reg.register(record("1.2.0"), art, actor="ci")
    lines = stored_lines(reg)
    promote = lines[len(before):-1]  # then the registration of 1.2.0
    assert [(e["version"], e["to"]) for e in promote] == [("1.0.0", "previous"), ("1.1.0", "production")]
    assert len({e["txid"] for e in promote}) == 1
    assert len(lines) == len(before) + 3 and len(reg.audit()) == len(lines)
    assert not pending_exists(reg)
    assert reg.production().version == "1.1.0" and reg.get("1.0.0").status == "previous"
    replay(reg)


def test_pending_transaction_with_no_package_written_is_redone(setup):
    reg, crashing, art = setup
    with pytest.raises(OSError, match="after-pending"):
        crashing("after-pending").promote("1.1.0", actor="lead", reason="go")
    packages = reg.storage._load()[0]["versions"]  # the service itself still holds the old statuses
    assert packages["1.0.0"]["status"] == "production" and packages["1.1.0"]["status"] == "candidate"
    reg.register(record("1.2.0"), art, actor="ci")
    packages = reg.storage._load()[0]["versions"]
    assert packages["1.0.0"]["status"] == "previous" and packages["1.1.0"]["status"] == "production"
    assert [(ln["version"], ln["to"]) for ln in stored_lines(reg)[-3:]] == [
        ("1.0.0", "previous"), ("1.1.0", "production"), ("1.2.0", "candidate")]
    assert not pending_exists(reg)
    replay(reg)


def test_a_failed_first_write_leaves_nothing_pending(setup, monkeypatch):
    reg, _, art = setup
    before = stored_lines(reg)

    def refuse(**kw):
        raise RuntimeError("service refused")
    monkeypatch.setattr(reg.storage.aws.sm, "create_model_package", refuse)
    with pytest.raises(Exception, match="service refused"):
        reg.register(record("1.2.0"), art, actor="ci")
    assert not pending_exists(reg) and stored_lines(reg) == before
    assert [r.version for r in reg.list()] == ["1.0.0", "1.1.0"]
