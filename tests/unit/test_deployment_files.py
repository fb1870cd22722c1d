"""prefect.yaml and its AWS twin: every deployment exists in both, with the same flow, parameters,
schedules and triggers; no secrets in either."""
from __future__ import annotations

import json
import re

import yaml

from tests.helpers import REPO

LOCAL = yaml.safe_load((REPO / "prefect.yaml").read_text())
AWS = yaml.safe_load((REPO / "deployments" / "prefect-aws.yaml").read_text())


def test_every_documented_deployment_is_in_prefect_yaml():
    names = {d["name"] for d in LOCAL["deployments"]}
    assert {"retrain-monthly", "retrain-on-drift", "retrain-on-performance", "retrain-on-concept-drift",
            "retrain-on-volume", "retrain-manual", "monitor-hourly", "canary", "canary-tick",
            "rollback"} <= names
    monthly = next(d for d in LOCAL["deployments"] if d["name"] == "retrain-monthly")
    assert monthly["schedules"] == [{"cron": "0 2 1 * *", "timezone": "UTC"}]
    drift = next(d for d in LOCAL["deployments"] if d["name"] == "retrain-on-drift")
    assert drift["triggers"][0]["expect"] == ["retrainer.drift.detected"]
    assert all(d["work_pool"]["name"] == "retrainer-local" for d in LOCAL["deployments"])


def test_aws_variants_mirror_the_local_deployments():
    """Every local deployment, of every model, has an AWS twin that starts AWS twins."""
    aws = {d["name"]: d for d in AWS["deployments"]}
    default = LOCAL["deployments"]
    assert any("model" in (d.get("parameters") or {}) for d in default)  # lead-scoring's are there too
    for d in default:
        twin = aws[d["name"] + "-aws"]
        for key in ("entrypoint", "parameters", "schedules", "triggers", "concurrency_limit"):
            if key == "parameters":
                assert (twin.get(key) or {}) == (d.get(key) or {}), (d["name"], key)
            else:
                assert twin.get(key) == d.get(key), (d["name"], key)
        assert twin["work_pool"]["name"] == "retrainer-ecs"
        env = twin["work_pool"]["job_variables"]["env"]
        assert env["RETRAINER_BACKEND"] == "sagemaker"
        started = [env["RETRAINER_ROLLOUT__CANARY_DEPLOYMENT"], env["RETRAINER_VERDICT_DEPLOYMENT"],
                   env["RETRAINER_CANARY_TICK_DEPLOYMENT"]]
        assert all(name.split("/")[1] in aws for name in started), started
    assert len(aws) == len(default)
    template = json.loads((REPO / "deployments" / "ecs-work-pool.json").read_text())
    assert "job_configuration" in template and "variables" in template


def test_no_secrets_in_deployment_files():
    # Values, not field names (the ECS template carries the credentials block's schema).
    secret = re.compile(r"(AKIA[0-9A-Z]{16}|secret_access_key\"?\s*[:=]\s*\"?[A-Za-z0-9/+]{30,}"
                        r"|PSEUDONYM_KEY\"?\s*[:=]\s*\S|admin_token\"?\s*[:=]\s*\S)", re.I)
    for path in [REPO / "prefect.yaml", *sorted((REPO / "deployments").glob("*"))]:
        if path.is_file():
            assert not secret.search(path.read_text()), path
