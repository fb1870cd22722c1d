"""Shadow scoring and captured failures: paired scores on live rows, keyed by request and row; shadow
rows never counted as traffic; failed and invalid requests counted per variant; old store files
still read; no raw identifier on disk from shadow or error rows."""
# ruff: noqa: F811 - `world` (test_serving's module fixture) is imported and used as a fixture argument
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from retrainer import deid, predstore
from retrainer import schema as S
from retrainer.predstore import PredictionStore
from retrainer.serving import create_app, entity_point
from retrainer.serving.shadow import RequestIds, shadow_plan
from tests.store_contract import identifier_values, local_objects, scan_for_identifiers
from tests.unit.test_serving import KEY, TOKEN, make_settings, to_records, world  # noqa: F401 - a fixture

AUTH = {"Authorization": f"Bearer {TOKEN}"}
T0 = datetime(2025, 3, 1, 12, tzinfo=timezone.utc)


class Clock:
    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def make_app(world, tmp_path, clock=None, **serving):
    settings = make_settings(tmp_path / "home", max_body_bytes=200_000, max_instances=50, **serving)
    store = PredictionStore(tmp_path / "predictions")
    app = create_app(settings, world["registry"], store, deid.Pseudonymizer(KEY), clock=clock or Clock(T0),
                     flush_rows=100_000, flush_seconds=None, capture_interval=0.05)
    return app, store


def set_routing(client, *triples):
    r = client.post("/admin/variants", headers=AUTH,
                    json=[{"variant": n, "version": v, "weight": w} for n, v, w in triples])
    assert r.status_code == 200, r.text


def flush(app) -> None:
    app.state.serving.capture.flush()  # hands over the shadow queue first


def labels_file(tmp_path, frame) -> str:
    path = tmp_path / f"labels-{len(frame)}.csv"
    frame[[S.ADMISSION_ID, "patient_id", S.LABEL]].to_csv(path, index=False)
    return path


# ------------------------------------------------------------------------------------------------
# The endpoint

def test_shadow_rows_are_keyed_and_only_the_routed_answer_is_returned(world, tmp_path):
    clock = Clock(T0)
    app, store = make_app(world, tmp_path, clock)
    frame = world["val"].iloc[:60]
    recs = to_records(frame)
    ps = deid.Pseudonymizer(KEY)
    answers = {}
    with TestClient(app) as client:
        set_routing(client, ("blue", "1.1.0", 0.5), ("green", "1.2.0", 0.5), ("previous-1", "1.0.0", 0.0))
        table = app.state.serving.table
        for k in range(0, 60, 4):
            if k == 32:
                clock.now = T0 + timedelta(days=40)  # the second half is made 40 days later
            r = client.post("/invocations", json={"instances": recs[k:k + 4]})
            assert r.status_code == 200
            rid = r.headers["X-Retrainer-Request-Id"]
            preds = r.json()["predictions"]
            assert len(preds) == 4  # one answer per row: the routed variant's only
            for j, p in enumerate(preds):
                expected = table.route(entity_point(recs[k + j], ps))
                assert p["variant"] == expected and p["variant"] in ("blue", "green")
                answers[(rid, j)] = p
        flush(app)
        state = client.get("/admin/variants", headers=AUTH).json()
        metrics = client.get("/metrics").text
    assert state["shadow"]["mode"] == "candidate" and state["shadow"]["active"] is True
    stored = store.read()
    routed, shadow = stored[~stored["shadow"].eq(True)], stored[stored["shadow"].eq(True)]
    assert len(routed) == 60 and len(shadow) == 60  # the standby (weight 0) scores nothing in "candidate"
    assert set(stored["variant"]) == {"blue", "green"}
    # every request row: one routed score (the answer) and one shadow score by the other variant
    for (rid, row), group in stored.groupby(["request_id", "row"]):
        assert sorted(group["variant"]) == ["blue", "green"]
        answer = answers[(rid, row)]
        mine = group[~group["shadow"].eq(True)].iloc[0]
        assert mine["variant"] == answer["variant"] and mine["score"] == pytest.approx(answer["score"])
        assert group["admission_pseudonym"].nunique() == 1 and group["ts"].nunique() == 1
    # the shadow score is that model's own score of the row
    scorers = {"blue": app.state.serving.pool.get("1.1.0"), "green": app.state.serving.pool.get("1.2.0")}
    by_adm = dict(zip(ps.pseudonymize(frame[S.ADMISSION_ID], S.ADMISSION_ID), recs))
    for _, row in shadow.iterrows():
        want = scorers[row["variant"]].predict([by_adm[row["admission_pseudonym"]]])[0]
        assert row["score"] == pytest.approx(want, rel=1e-9)
    assert 'retrainer_shadow_scores_total{variant="blue"}' in metrics
    n_shadow = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                   if line.startswith("retrainer_shadow_scores_total{"))
    assert n_shadow == 60

    # shadow rows are not traffic
    stats = store.variant_stats()
    assert sum(s["n_predictions"] for s in stats.values()) == 60
    n_green = sum(p["variant"] == "green" for p in answers.values())
    assert stats["green"]["n_predictions"] == n_green and stats["blue"]["n_predictions"] == 60 - n_green

    # paired: every row, both scores; matured_before keeps the first 32 only; labels join
    pairs = store.paired(labelled=False)
    assert list(pairs.columns) == list(predstore.PAIRED_COLUMNS) and len(pairs) == 60
    assert set(pairs["version_production"]) == {"1.1.0"} and set(pairs["version_candidate"]) == {"1.2.0"}
    for _, p in pairs.iterrows():
        a = answers[(p["request_id"], p["row"])]
        assert (p["score_production"] if a["variant"] == "blue" else p["score_candidate"]) == \
            pytest.approx(a["score"])
    matured = store.paired(matured_before=T0 + timedelta(days=30), labelled=False)
    assert len(matured) == 32 and (matured["ts"] < T0 + timedelta(days=30)).all()
    assert store.paired(T0 + timedelta(days=1), labelled=False)["ts"].min() >= T0 + timedelta(days=40)
    assert store.paired(labelled=True).empty  # no label yet
    store.ingest_labels(labels_file(tmp_path, frame.iloc[:50]), ps)
    lab = store.paired(matured_before=T0 + timedelta(days=30))
    assert len(lab) == 32 and set(lab[S.LABEL]) <= {0, 1}
    assert set(lab["admission_pseudonym"]) == set(ps.pseudonymize(frame[S.ADMISSION_ID].iloc[:32], S.ADMISSION_ID))
    assert len(store.labelled()) == 50 and not store.labelled()["shadow"].eq(True).any()
    assert len(store.labelled(include_shadow=True)) == 100

    # the shadow strategy's sanity checks
    sh = store.shadow_stats()
    assert sh["blue"]["n_scored"] == 60 and sh["green"]["n_scored"] == 60
    assert sh["green"]["n_shadow"] == 60 - n_green and sh["green"]["n_nan"] == 0
    assert sh["green"]["n_out_of_range"] == 0 and sh["green"]["shadow_p95_latency_ms"] >= 0
    d = sh["green"]["disagreement"]
    diff = np.abs(pairs["score_production"] - pairs["score_candidate"])
    assert d["n_pairs"] == 60 and d["mean_abs_diff"] == pytest.approx(diff.mean())
    cross = ((pairs["score_production"] >= 0.5) != (pairs["score_candidate"] >= 0.5)).mean()
    assert d["cross_rate"] == pytest.approx(cross)
    assert "disagreement" not in sh["blue"]


@pytest.mark.parametrize("mode, routing, expected", [
    ("off", [("blue", "1.1.0", 0.5), ("green", "1.2.0", 0.5)], {"blue", "green"}),
    ("candidate", [("blue", "1.1.0", 1.0), ("green", "1.2.0", 0.0)], {"blue", "green"}),
    ("all", [("blue", "1.1.0", 1.0), ("previous-1", "1.0.0", 0.0)], {"blue", "previous-1"}),
], ids=["off", "candidate-green-at-0", "all-includes-standby"])
def test_shadow_modes(world, tmp_path, mode, routing, expected):
    app, store = make_app(world, tmp_path, shadow=mode)
    recs = to_records(world["val"].iloc[:10])
    with TestClient(app) as client:
        set_routing(client, *routing)
        r = client.post("/invocations", json={"instances": recs})
        assert {p["variant"] for p in r.json()["predictions"]} <= {"blue", "green"}
        flush(app)
        assert client.get("/admin/variants", headers=AUTH).json()["shadow"]["mode"] == mode
    stored = store.read()
    assert set(stored["variant"]) == expected
    n_shadow = int(stored["shadow"].eq(True).sum())
    # "candidate": a loaded green at weight 0 (the shadow strategy) is scored in shadow on every row
    assert n_shadow == (0 if mode == "off" else 10)
    if mode == "candidate":
        assert set(stored.loc[stored["shadow"].eq(True), "variant"]) == {"green"}
    if mode == "all":
        assert set(stored.loc[stored["shadow"].eq(True), "variant"]) == {"previous-1"}
        assert store.variant_stats().keys() == {"blue"}
        assert len(store.paired(production="blue", candidate="previous-1", labelled=False)) == 10


def test_shadow_plan_and_request_ids(world, tmp_path):
    app, _ = make_app(world, tmp_path)
    with TestClient(app) as client:
        set_routing(client, ("blue", "1.1.0", 0.8), ("green", "1.2.0", 0.2), ("previous-1", "1.0.0", 0.0))
        table = app.state.serving.table
    plan = {k: [j[0] for j in v] for k, v in shadow_plan(table, "candidate").items()}
    assert plan == {"blue": ["green"], "green": ["blue"]}
    plan = {k: [j[0] for j in v] for k, v in shadow_plan(table, "all").items()}
    assert plan == {"blue": ["green", "previous-1"], "green": ["blue", "previous-1"]}
    assert shadow_plan(table, "off") == {}
    with pytest.raises(ValueError, match="shadow mode"):
        shadow_plan(table, "sometimes")
    ids = RequestIds()
    made = [ids() for _ in range(2000)]
    assert len(set(made)) == 2000 and all(set(i) <= set("abcdefghijklmnop-") for i in made)


def test_failed_and_invalid_requests_are_error_rows_of_their_variant(world, tmp_path, monkeypatch):
    app, store = make_app(world, tmp_path)
    frame = world["val"].iloc[:40]
    recs = to_records(frame)
    ps = deid.Pseudonymizer(KEY)
    with TestClient(app) as client:
        set_routing(client, ("blue", "1.1.0", 0.5), ("green", "1.2.0", 0.5))
        table = app.state.serving.table
        route = {i: table.route(entity_point(recs[i], ps)) for i in range(40)}
        blue_i = [i for i in range(40) if route[i] == "blue"]
        green_i = [i for i in range(40) if route[i] == "green"]
        for i in range(10):  # 10 good single-row requests
            assert client.post("/invocations", json={"instances": [recs[i]]}).status_code == 200
        # invalid: a bad age next to identifiers; attributed to the variant the row routes to
        bad = dict(recs[blue_i[-1]], age="old", email="someone@example.org")
        r = client.post("/invocations", json={"instances": [bad]})
        assert r.status_code == 422
        # unparseable: not routable, counted under "unrouted" only
        assert client.post("/invocations", content=b"{nope", headers={"Content-Type": "application/json"}
                           ).status_code == 400
        # scoring raises for green: its requests fail (500) and blue's shadow scoring by green fails
        app.state.serving.shadow.drain()  # what was queued so far is scored by the working model
        monkeypatch.setattr(table.scorers["green"], "predict", lambda records: 1 / 0)
        r = client.post("/invocations", json={"instances": [recs[green_i[-1]]]})
        assert r.status_code == 500 and "green" in r.json()["error"]
        assert client.post("/invocations", json={"instances": [recs[blue_i[-2]]]}).status_code == 200
        flush(app)
        metrics = client.get("/metrics").text
        state = client.get("/admin/variants", headers=AUTH).json()
    assert 'retrainer_failed_requests_total{variant="unrouted",reason="invalid"} 1' in metrics
    assert 'retrainer_failed_requests_total{variant="blue",reason="invalid"} 1' in metrics
    assert 'retrainer_failed_requests_total{variant="green",reason="failed"} 1' in metrics
    assert 'retrainer_shadow_failures_total{variant="green"} 1' in metrics
    assert {"variant": "unrouted", "reason": "invalid", "requests": 1} in state["failed_requests"]
    stored = store.read()
    routed = stored[~stored["shadow"].eq(True)]
    errors = routed[routed["error"]]
    assert len(errors) == 2 and errors["score"].isna().all()
    invalid = errors[errors["variant"] == "blue"].iloc[0]
    assert invalid["version"] == "1.1.0" and pd.isna(invalid["age"]) and pd.isna(invalid["sex"])
    assert invalid["patient_pseudonym"] == ps.pseudonym(bad["patient_id"], "patient_id")
    failed = errors[errors["variant"] == "green"].iloc[0]
    assert failed["version"] == "1.2.0" and failed["latency_ms"] >= 0
    stats = store.variant_stats()
    n_blue = int((routed["variant"] == "blue").sum())
    n_green = int((routed["variant"] == "green").sum())
    assert stats["blue"]["error_rate"] == pytest.approx(1 / n_blue)
    assert stats["green"]["error_rate"] == pytest.approx(1 / n_green)
    assert stats["blue"]["n_predictions"] + stats["green"]["n_predictions"] == 13  # 10 + invalid + failed + 1
    sh = store.shadow_stats()
    assert sh["green"]["n_failed"] == 1 and sh["green"]["n_routed_errors"] == 1
    assert sh["blue"]["n_routed_errors"] == 1 and sh["blue"]["n_failed"] == 0
    # error rows never pair
    pairs = store.paired(labelled=False)
    assert len(pairs) == 10 and np.isfinite(pairs[["score_production", "score_candidate"]].to_numpy()).all()


def test_no_raw_identifier_from_shadow_or_error_rows(world, tmp_path):
    app, store = make_app(world, tmp_path, shadow="all")
    frame = world["val"].iloc[:60]
    recs = to_records(frame)
    for r in recs:  # every identifier the schema knows travels with the request
        r["email"] = f"p{r['patient_id']}@example.org"
        r["phone"] = "555-123-4567"
    with TestClient(app) as client:
        set_routing(client, ("blue", "1.1.0", 0.5), ("green", "1.2.0", 0.5), ("previous-1", "1.0.0", 0.0))
        for k in range(0, 40, 5):
            assert client.post("/invocations", json={"instances": recs[k:k + 5]}).status_code == 200
        for k in range(40, 60, 2):  # invalid: one bad field in each request, identifiers in every row
            rows = [dict(recs[k]), dict(recs[k + 1], n_procedures=-5)]
            assert client.post("/invocations", json={"instances": rows}).status_code == 422
        flush(app)
    stored = store.read()
    assert int(stored["shadow"].eq(True).sum()) == 80 and int(stored["error"].sum()) == 20
    secrets = identifier_values(frame) | {f"p{p}@example.org" for p in frame["patient_id"]} | {"555-123-4567"}
    assert scan_for_identifiers(local_objects(store.root), secrets, extra_bytes=(KEY, KEY.hex().encode())) == []


# ------------------------------------------------------------------------------------------------
# The store

def test_old_files_without_the_new_columns_still_read(tmp_path, world):
    ps = deid.Pseudonymizer(KEY)
    store = PredictionStore(tmp_path / "store")
    frame = world["val"].iloc[:20].drop(columns=[S.LABEL])
    records = predstore.build_records(frame, np.linspace(0.1, 0.9, 20), version="1.0.0", variant="blue",
                                      latency_ms=3.0, ts=T0, pseudonymizer=ps)
    old_schema = pa.schema([f for f in predstore.PREDICTION_SCHEMA
                            if f.name not in (predstore.SHADOW, predstore.REQUEST_ID, predstore.ROW)])
    table = predstore._to_table(records, old_schema)
    day = store.predictions_dir / "date=2025-03-01"
    day.mkdir(parents=True)
    pq.write_table(table, day / "part-old.parquet")
    # a new file next to it: a request scored by blue (routed) and green (shadow)
    new = world["val"].iloc[20:22].drop(columns=[S.LABEL])
    store.append(new, [0.2, 0.7], version="1.0.0", variant="blue", latency_ms=2.0, ts=T0, pseudonymizer=ps,
                 request_id="abc-b", row=[0, 1], shadow=False)
    store.append(new, [0.3, 0.6], version="1.1.0", variant="green", latency_ms=2.0, ts=T0, pseudonymizer=ps,
                 request_id="abc-b", row=[0, 1], shadow=True)
    got = store.read()
    assert len(got) == 24 and got["shadow"].isna().sum() == 20 and got["request_id"].isna().sum() == 20
    assert store.variant_stats()["blue"]["n_predictions"] == 22  # null shadow = routed
    assert "green" not in store.variant_stats()
    pairs = store.paired(labelled=False)
    assert len(pairs) == 2 and list(pairs["score_candidate"]) == [0.3, 0.6]
    world["val"].iloc[:22].to_csv(tmp_path / "l.csv", index=False)
    store.ingest_labels(tmp_path / "l.csv", ps)
    assert len(store.labelled()) == 22 and len(store.paired()) == 2


def test_paired_rejects_one_variant_twice_and_shadow_stats_flags_bad_scores(tmp_path, world):
    ps = deid.Pseudonymizer(KEY)
    store = PredictionStore(tmp_path / "store")
    frame = world["val"].iloc[:4].drop(columns=[S.LABEL])
    store.append(frame, [0.2, 0.4, 0.6, 0.8], version="1", variant="blue", latency_ms=1.0, ts=T0,
                 pseudonymizer=ps, request_id="req-b", row=[0, 1, 2, 3])
    store.append(frame, [0.7, np.nan, 1.5, 0.9], version="2", variant="green", latency_ms=[4.0, 5.0, 6.0, 7.0],
                 ts=T0, pseudonymizer=ps, request_id="req-b", row=[0, 1, 2, 3], shadow=True)
    with pytest.raises(ValueError, match="different variants"):
        store.paired(production="blue", candidate="blue")
    sh = store.shadow_stats()["green"]
    assert sh["n_scored"] == 4 and sh["n_nan"] == 1 and sh["n_out_of_range"] == 1
    assert sh["shadow_p95_latency_ms"] == pytest.approx(np.percentile([4.0, 5.0, 6.0, 7.0], 95))
    d = sh["disagreement"]  # finite pairs only: (0.2, 0.7), (0.6, 1.5), (0.8, 0.9)
    assert d["n_pairs"] == 3 and d["mean_abs_diff"] == pytest.approx((0.5 + 0.9 + 0.1) / 3)
    assert d["cross_rate"] == pytest.approx(1 / 3)
    assert len(store.paired(labelled=False)) == 3
