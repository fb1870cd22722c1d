"""prefect.yaml rendered from the model specs: the readmission deployments are the ones it had
before specs, lead scoring gets its own set (its model parameter, its resource in every event
trigger, its weekly cron), names are unique, and `render --check` guards the committed file."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from retrainer.deployments import deployment_name, render
from retrainer.spec import available_models, load_spec

REPO = Path(__file__).resolve().parents[2]
REFERENCE = REPO / "tests" / "unit" / "data" / "prefect_readmission_reference.yaml"
KEYS = ("entrypoint", "parameters", "schedules", "triggers", "concurrency_limit", "work_pool", "description")


def _rendered() -> dict:
    return yaml.safe_load(render([load_spec(m) for m in available_models()]))


def _norm(d: dict, key: str):
    return (d.get(key) or {}) if key == "parameters" else d.get(key)


def test_readmission_deployments_are_the_ones_prefect_yaml_had_before_specs():
    ref = {d["name"]: d for d in yaml.safe_load(REFERENCE.read_text())["deployments"]}
    new = {d["name"]: d for d in _rendered()["deployments"]}
    assert set(ref) <= set(new)
    for name, d in ref.items():
        for key in KEYS:
            assert _norm(new[name], key) == _norm(d, key), (name, key)


def test_lead_scoring_has_its_own_set_on_its_own_resource_and_schedule():
    deps = _rendered()["deployments"]
    lead = [d for d in deps if (d.get("parameters") or {}).get("model") == "lead-scoring"]
    names = {d["name"] for d in lead}
    assert names == {f"lead-scoring-{b}" for b in (
        "retrain-scheduled", "retrain-on-drift", "retrain-on-performance", "retrain-on-concept-drift",
        "retrain-on-volume", "retrain-manual", "monitor-hourly", "rollout-on-registered", "guardrails",
        "rollback", "retention", "compact-predictions")}
    scheduled = next(d for d in lead if d["name"] == "lead-scoring-retrain-scheduled")
    assert scheduled["schedules"] == [{"cron": "0 3 * * 1", "timezone": "UTC"}]
    assert scheduled["parameters"] == {"trigger": "scheduled", "actor": "schedule", "model": "lead-scoring"}
    triggers = [t for d in lead for t in d.get("triggers") or []]
    assert len(triggers) == 5
    assert all(t["match"]["prefect.resource.id"] == "retrainer.model.lead-scoring" for t in triggers)
    # and no readmission deployment listens to lead scoring (or the reverse)
    for d in deps:
        model = (d.get("parameters") or {}).get("model", "readmission-30d")
        for t in d.get("triggers") or []:
            assert t["match"]["prefect.resource.id"] == f"retrainer.model.{model}", d["name"]
    assert deployment_name("lead-scoring", "canary") == "lead-scoring-canary"
    assert deployment_name("readmission-30d", "canary") == "canary"


def test_names_are_unique_and_every_entrypoint_exists():
    deps = _rendered()["deployments"]
    names = [d["name"] for d in deps]
    assert len(names) == len(set(names)) == 27
    for d in deps:
        path, _, fn = d["entrypoint"].partition(":")
        assert (REPO / path).is_file() and f"def {fn}(" in (REPO / path).read_text(), d["entrypoint"]
        assert d["work_pool"]["name"] == "retrainer-local"
    shared = [d["name"] for d in deps if d["name"] in ("canary", "canary-tick", "deferred-verdict")]
    assert shared == ["deferred-verdict", "canary", "canary-tick"]  # once, for every model


def test_render_check_guards_the_committed_file(tmp_path):
    exe = Path(sys.executable).parent / "retrainer"
    ok = subprocess.run([str(exe), "deployments", "render", "--check"], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr  # prefect.yaml in the repo is what the specs render
    copy = tmp_path / "prefect.yaml"
    shutil.copy(REPO / "prefect.yaml", copy)
    copy.write_text(copy.read_text().replace('cron: "0 3 * * 1"', 'cron: "0 4 * * 1"'))
    stale = subprocess.run([str(exe), "deployments", "render", "--check", "--out", str(copy)],
                           capture_output=True, text=True, timeout=60)
    assert stale.returncode == 1 and stale.stderr.count("\n") == 1 and "is out of date" in stale.stderr
    fresh = subprocess.run([str(exe), "deployments", "render", "--out", str(copy)], capture_output=True, text=True,
                           timeout=60)
    assert fresh.returncode == 0 and copy.read_text() == (REPO / "prefect.yaml").read_text()
