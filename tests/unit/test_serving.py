"""Serving: FastScorer parity with the pipeline, request validation, the SageMaker-style app
(routing, admin, atomic weight switch, integrity refusal, bad requests, de-identified capture)."""
from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from retrainer import datagen, training
from retrainer import schema as S
from retrainer.registry import LocalRegistry
from retrainer.scoring import FastScorer
from retrainer.serving.parsing import validate_records
from retrainer.settings import ModelSettings, Settings
from tests.helpers import make_record

TOKEN = "test-admin-token-0123456789abcdef-xyz"  # >= 32 bytes
KEY = b"serving-test-key-0123456789abcdef"
FEATURE_COLUMNS = list(S.FEATURES)


def to_records(frame: pd.DataFrame, with_ids: bool = True) -> list[dict]:
    cols = FEATURE_COLUMNS + (["patient_id", S.ADMISSION_ID, "patient_name", "mrn"] if with_ids else [])
    sub = frame[cols].astype(object)
    sub = sub.where(sub.notna(), None)
    recs = sub.to_dict("records")
    for r in recs:  # JSON-like python types
        for k, v in r.items():
            if isinstance(v, (np.integer,)):
                r[k] = int(v)
            elif isinstance(v, (np.floating,)):
                r[k] = float(v)
            elif isinstance(v, np.bool_):
                r[k] = bool(v)
    return recs


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serving")
    paths = datagen.generate(tmp / "data", datagen.GenerationSpec(months=3, rows_per_month=1500, seed=3))
    df = pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)
    train, val = df.iloc[:3000], df.iloc[3000:]
    reg = LocalRegistry(tmp / "home" / "registry")
    dirs = {}
    for i, (version, iters) in enumerate((("1.0.0", 15), ("1.1.0", 20), ("1.2.0", 25))):
        params = ModelSettings(max_iter=iters).model_dump()
        d = tmp / f"model-{version}"
        training.train(train, val, d, params)
        dirs[version] = d
        reg.register(make_record(version, "production" if i == 0 else "candidate"), d, actor="test")
    reg.promote("1.1.0", actor="test", reason="test")  # 1.1.0 production, 1.0.0 previous
    return {"tmp": tmp, "df": df, "val": val.reset_index(drop=True), "registry": reg, "dirs": dirs}


def make_settings(home: Path, **serving) -> Settings:
    return Settings(home=home, serving={"admin_token": TOKEN, **serving})


@pytest.fixture
def app_env(world, tmp_path):
    """A fresh home (own routing.json, own prediction store) over the shared registry."""
    from retrainer.deid import Pseudonymizer
    from retrainer.predstore import PredictionStore
    from retrainer.serving import create_app

    settings = make_settings(tmp_path / "home", max_body_bytes=200_000, max_instances=50)
    store = PredictionStore(tmp_path / "predictions")
    app = create_app(settings, world["registry"], store, Pseudonymizer(KEY), flush_rows=100_000,
                     flush_seconds=None, capture_interval=0.05)
    with TestClient(app) as client:
        yield {"client": client, "app": app, "store": store, "settings": settings}


AUTH = {"Authorization": f"Bearer {TOKEN}"}


# ------------------------------------------------------------------------------------------------
# FastScorer

def test_fast_scorer_matches_pipeline(world):
    model = training.load_model(world["dirs"]["1.1.0"])
    scorer = FastScorer.from_model(model)
    assert scorer.mode == "compiled"
    frame = world["val"].iloc[:300].copy()
    frame.loc[frame.index[:25], "admission_type"] = "Martian"      # unseen category
    frame.loc[frame.index[25:50], "sex"] = None                     # missing categorical
    frame.loc[frame.index[50:80], ["age", "creatinine_mg_dl"]] = np.nan
    recs = to_records(frame)
    expected = model.predict(frame)
    batch = scorer.predict(recs)                                     # large batch: sklearn path
    single = np.array([scorer.predict([r])[0] for r in recs])        # compiled path, one row
    small = np.concatenate([scorer.predict(recs[i:i + 10]) for i in range(0, len(recs), 10)])
    assert np.allclose(batch, expected, rtol=1e-9, atol=1e-12)
    assert np.allclose(single, expected, rtol=1e-9, atol=1e-12)
    assert np.allclose(small, expected, rtol=1e-9, atol=1e-12)
    assert scorer.columns[:5] == S.CATEGORICAL_FEATURES  # the pipeline's column order


def test_validate_records_messages():
    rec = {c: float(lo) for c, (lo, _) in S.NUMERIC_RANGES.items()} | {c: "x" for c in S.CATEGORICAL_FEATURES} \
        | {c: True for c in S.BOOLEAN_FEATURES}
    assert validate_records([rec, dict(rec, patient_id="P1", admission_id="A1")], 10) is None
    assert "no instances" in validate_records([], 10)
    assert "too many instances" in validate_records([rec] * 11, 10)
    assert "unknown field(s): shoe_size" in validate_records([dict(rec, shoe_size=44)], 10)
    missing = dict(rec)
    del missing["age"]
    assert "missing required field(s): age" in validate_records([missing], 10)
    assert "'age' must be a number" in validate_records([dict(rec, age="old")], 10)
    assert "'chf' must be true or false" in validate_records([dict(rec, chf="maybe")], 10)
    assert "'sex' must be a string" in validate_records([dict(rec, sex=1)], 10)
    assert "must be a list" in validate_records({"a": 1}, 10)


# ------------------------------------------------------------------------------------------------
# The app

def test_ping_json_and_csv(app_env, world):
    client = app_env["client"]
    assert client.get("/ping").status_code == 200
    recs = to_records(world["val"].iloc[:3])
    r = client.post("/invocations", json={"instances": recs})
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    assert len(preds) == 3 and all(0 <= p["score"] <= 1 for p in preds)
    assert all(p["variant"] == "blue" and p["version"] == "1.1.0" for p in preds)
    expected = training.load_model(world["dirs"]["1.1.0"]).predict(world["val"].iloc[:3])
    assert np.allclose([p["score"] for p in preds], expected)
    csv_text = world["val"].iloc[:4][FEATURE_COLUMNS + ["patient_id"]].to_csv(index=False)
    r = client.post("/invocations", content=csv_text, headers={"Content-Type": "text/csv"})
    assert r.status_code == 200, r.text
    assert np.allclose([p["score"] for p in r.json()["predictions"]],
                       training.load_model(world["dirs"]["1.1.0"]).predict(world["val"].iloc[:4]))
    state = client.get("/admin/variants", headers=AUTH).json()
    assert [(v["variant"], v["version"], v["weight"]) for v in state["variants"]] == [
        ("blue", "1.1.0", 1.0), ("previous-1", "1.0.0", 0.0)]


def test_deterministic_routing_and_target_header(app_env, world):
    client = app_env["client"]
    r = client.post("/admin/variants", headers=AUTH, json=[
        {"variant": "blue", "version": "1.1.0", "weight": 0.9},
        {"variant": "green", "version": "1.2.0", "weight": 0.1},
        {"variant": "previous-1", "version": "1.0.0", "weight": 0.0}])
    assert r.status_code == 200, r.text
    base = to_records(world["val"].iloc[:1])[0]
    seen = {}
    for i in range(1000):
        rec = dict(base, patient_id=f"P{i:07d}", admission_id=f"A{i}")
        seen[i] = rec
    # send in batches (each instance is routed on its own patient)
    variants = {}
    ids = list(seen)
    for k in range(0, len(ids), 50):
        chunk = [seen[i] for i in ids[k:k + 50]]
        out = client.post("/invocations", json={"instances": chunk}).json()["predictions"]
        for i, p in zip(ids[k:k + 50], out):
            variants[i] = p["variant"]
            assert p["version"] == {"blue": "1.1.0", "green": "1.2.0"}[p["variant"]]
    share = sum(v == "green" for v in variants.values()) / len(variants)
    assert 0.07 < share < 0.13, share
    # same patient -> same variant, every time (also with a different admission)
    for i in ids[:40]:
        again = client.post("/invocations", json={"instances": [dict(seen[i], admission_id="other")]})
        assert again.json()["predictions"][0]["variant"] == variants[i]
    # target header overrides routing, including a weight-0 standby (that one with the admin token)
    r = client.post("/invocations", json={"instances": [seen[0]]},
                    headers={"X-Amzn-SageMaker-Target-Variant": "previous-1", **AUTH})
    assert r.json()["predictions"][0] == {**r.json()["predictions"][0], "variant": "previous-1",
                                          "version": "1.0.0"}
    r = client.post("/invocations", json={"instances": [seen[0]]},
                    headers={"X-Amzn-SageMaker-Target-Variant": "purple"})
    assert r.status_code == 404 and "unknown target variant" in r.json()["error"]


def test_admin_requires_token(app_env):
    client = app_env["client"]
    assert client.get("/admin/variants").status_code == 401
    assert client.get("/admin/variants", headers={"Authorization": "Bearer wrong"}).status_code == 401
    r = client.post("/admin/variants", json=[{"variant": "blue", "version": "1.0.0", "weight": 1}])
    assert r.status_code == 401 and "Bearer" in r.json()["error"]


def test_admin_validation_and_persistence(app_env, world):
    client, settings = app_env["client"], app_env["settings"]
    bad = [
        ([{"variant": "blue", "version": "1.1.0", "weight": 0.5}], "sum to 1"),
        ([{"variant": "blue", "version": "9.9.9", "weight": 1.0}], "unknown version"),
        ([{"variant": "b lue", "version": "1.1.0", "weight": 1.0}], "letters, digits"),
        ([{"variant": "blue", "version": "1.1.0", "weight": 1.0}] * 2, "duplicate"),
        ([{"variant": "blue", "version": "1.1.0", "weight": 0}], "weight > 0"),
    ]
    for body, msg in bad:
        r = client.post("/admin/variants", headers=AUTH, json=body)
        assert r.status_code in (409, 422), (body, r.status_code)
        assert msg in r.json()["error"], r.json()
    r = client.post("/admin/variants", headers=AUTH, json=[
        {"variant": "blue", "version": "1.0.0", "weight": 1.0},
        {"variant": "previous-1", "version": "1.1.0", "weight": 0.0}])
    assert r.status_code == 200
    saved = json.loads((settings.home / "serving" / "routing.json").read_text())
    assert [v["version"] for v in saved["variants"]] == ["1.0.0", "1.1.0"]
    # a new app over the same home starts from the persisted routing
    from retrainer.serving import create_app

    with TestClient(create_app(settings, world["registry"])) as other:
        state = other.get("/admin/variants", headers=AUTH).json()
        assert state["variants"][0] == {"variant": "blue", "version": "1.0.0", "weight": 1.0}


def test_weight_flips_are_atomic_under_load(app_env, world):
    client = app_env["client"]
    recs = to_records(world["val"].iloc[:20])
    tables = [
        [{"variant": "blue", "version": "1.1.0", "weight": 1.0},
         {"variant": "green", "version": "1.2.0", "weight": 0.0}],
        [{"variant": "blue", "version": "1.1.0", "weight": 0.0},
         {"variant": "green", "version": "1.2.0", "weight": 1.0}],
    ]
    assert client.post("/admin/variants", headers=AUTH, json=tables[0]).status_code == 200
    failures, served = [], []
    stop = threading.Event()
    allowed = {("blue", "1.1.0"), ("green", "1.2.0")}

    def hammer(k):
        while not stop.is_set():
            r = client.post("/invocations", json={"instances": [recs[k % len(recs)]]})
            if r.status_code != 200:
                failures.append(r.text)
                continue
            p = r.json()["predictions"][0]
            if (p["variant"], p["version"]) not in allowed:
                failures.append(p)
            served.append(p["variant"])
            k += 1

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    flips = 0
    for i in range(30):
        r = client.post("/admin/variants", headers=AUTH, json=tables[(i + 1) % 2])
        assert r.status_code == 200, r.text
        flips += 1
    # after the last flip (green at 1.0), everything is green
    stop.set()
    for t in threads:
        t.join()
    assert failures == []
    assert len(served) > 30 and {"blue", "green"} <= set(served)
    r = client.post("/invocations", json={"instances": recs[:5]})
    assert {p["variant"] for p in r.json()["predictions"]} == {"blue"}  # 30 flips end on tables[0]


def test_tampered_artifact_refused(world, tmp_path):
    import shutil

    from retrainer.serving import create_app

    reg = LocalRegistry(tmp_path / "reg")
    reg.register(make_record("1.0.0", "production"), world["dirs"]["1.0.0"], actor="t")
    reg.register(make_record("1.1.0", "candidate"), world["dirs"]["1.1.0"], actor="t")
    target = reg.artifact_dir("1.1.0") / "model.json"
    target.write_text(target.read_text() + " ")  # one byte changed on disk
    settings = make_settings(tmp_path / "home")
    with TestClient(create_app(settings, reg)) as client:
        r = client.post("/admin/variants", headers=AUTH, json=[
            {"variant": "blue", "version": "1.0.0", "weight": 0.9},
            {"variant": "green", "version": "1.1.0", "weight": 0.1}])
        assert r.status_code == 409 and "sha256" in r.json()["error"]
        state = client.get("/admin/variants", headers=AUTH).json()
        assert [v["variant"] for v in state["variants"]] == ["blue"]  # unchanged
        assert client.post("/invocations", json={"instances": to_records(world["val"].iloc[:1])}).status_code == 200
    shutil.rmtree(tmp_path / "reg")


def test_bad_requests_are_4xx(app_env, world):
    client = app_env["client"]
    good = to_records(world["val"].iloc[:1])[0]
    no_age = {k: v for k, v in good.items() if k != "age"}
    cases = [
        ({"json": {"instances": [dict(good, shoe_size=44)]}}, "unknown field"),
        ({"json": {"instances": [no_age]}}, "missing required field"),
        ({"json": {"instances": [dict(good, age="old")]}}, "must be a number"),
        ({"json": {"instances": []}}, "no instances"),
        ({"json": {"instances": [good] * 51}}, "too many instances"),
        ({"json": {"rows": [good]}}, "unknown top-level"),
        ({"json": [good]}, "must be an object"),
        ({"content": b'{"instances": [', "headers": {"Content-Type": "application/json"}}, "not valid JSON"),
        ({"content": b'{"instances": [{"age": NaN}]}', "headers": {"Content-Type": "application/json"}},
         "not valid JSON"),
        ({"content": b"", "headers": {"Content-Type": "application/json"}}, "empty body"),
        ({"content": b"age,sex\n70", "headers": {"Content-Type": "text/csv"}}, "cells"),
        ({"content": ("age,sex\n" + "x,F\n").encode(), "headers": {"Content-Type": "text/csv"}}, "age"),
        ({"content": b"\xff\xfe", "headers": {"Content-Type": "text/csv"}}, "UTF-8"),
        ({"content": b"<x/>", "headers": {"Content-Type": "application/xml"}}, "unsupported content type"),
        ({"content": b"x" * 200_001, "headers": {"Content-Type": "application/json"}}, "exceeds the limit"),
    ]
    for kwargs, msg in cases:
        r = client.post("/invocations", **kwargs)
        assert 400 <= r.status_code < 500, (msg, r.status_code, r.text)
        assert msg in r.json()["error"], (msg, r.json())
    assert client.get("/invocations").status_code == 405
    assert client.get("/nope").status_code == 404


def test_capture_is_deidentified(app_env, world):
    client, store, app = app_env["client"], app_env["store"], app_env["app"]
    frame = world["val"].iloc[:30]
    recs = to_records(frame)
    for r in recs:
        r["age"] = 95  # over 89: must be coarsened in the store
    for k in range(0, 30, 3):
        assert client.post("/invocations", json={"instances": recs[k:k + 3]}).status_code == 200
    state = app.state.serving
    state.capture.drain()
    state.capture.writer.flush()
    stored = store.read()
    assert len(stored) == 30
    assert set(stored["variant"]) == {"blue"} and set(stored["version"]) == {"1.1.0"}
    assert stored["age"].max() == 90
    raw_values = set(frame["patient_id"]) | set(frame[S.ADMISSION_ID]) | set(frame["patient_name"]) \
        | set(frame["mrn"])
    for col in stored.columns:
        assert not (set(stored[col].astype(str)) & raw_values), col
    blob = b"".join(p.read_bytes() for p in Path(store.root).rglob("*.parquet"))
    for value in list(raw_values)[:50]:
        assert value.encode() not in blob
    from retrainer.deid import Pseudonymizer

    assert set(stored["patient_pseudonym"]) == set(
        Pseudonymizer(KEY).pseudonymize(frame["patient_id"], "patient_id"))
    assert (stored["latency_ms"] >= 0).all()


def test_local_endpoint_offline_writes_routing(world, tmp_path):
    from retrainer.errors import RolloutError
    from retrainer.serving import LocalEndpoint

    settings = Settings(home=tmp_path / "home", serving={"admin_token": TOKEN, "port": 9},
                        )
    # point the settings' registry at the shared one
    reg_dir = settings.registry_dir
    reg_dir.parent.mkdir(parents=True)
    reg_dir.symlink_to(world["registry"].root)
    ep = LocalEndpoint(settings, timeout=2)
    state = ep.state()
    assert state["running"] is False and state["variants"][0]["version"] == "1.1.0"
    out = ep.set_variants([("blue", "1.1.0", 0.9), ("green", "1.2.0", 0.1)])
    assert out["applied"] == "file"
    assert [v["weight"] for v in ep.state()["variants"]] == [0.9, 0.1]
    with pytest.raises(RolloutError, match="unknown version"):
        ep.set_variants([("blue", "7.0.0", 1.0)])
    with pytest.raises(RolloutError, match="not healthy"):
        ep.wait_healthy(timeout=0.3)
