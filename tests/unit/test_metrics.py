"""`GET /metrics` with prometheus-client (retrainer/serving/metrics.py) on a real uvicorn server:
requests, errors by reason and the latency histogram per variant and version, the weights gauge
following /admin/variants, the shadow-vs-routed absolute difference, the old capture and shadow
names still there, and one registry per app."""
from __future__ import annotations

import math

import httpx
import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from retrainer import datagen, training
from retrainer.serving.metrics import DIFF_BUCKETS, LATENCY_BUCKETS
from retrainer.settings import ModelSettings, Settings
from tests.canary_world import AUTH, TOKEN, LiveServer, make_registry, records


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("metrics")
    paths = datagen.generate(tmp / "data", datagen.GenerationSpec(months=2, rows_per_month=1000, seed=4))
    df = pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)
    dirs = {}
    for name, iters in (("a", 10), ("b", 25)):
        params = ModelSettings(max_iter=iters).model_dump()
        training.train(df.iloc[:1200], df.iloc[1200:1600], tmp / f"model-{name}", params)
        dirs[name] = tmp / f"model-{name}"
    return {"dirs": dirs, "traffic": df.iloc[1600:].reset_index(drop=True)}


def scrape(url: str) -> dict[tuple[str, frozenset], float]:
    resp = httpx.get(f"{url}/metrics", timeout=10)
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    out = {}
    for fam in text_string_to_metric_families(resp.text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def val(m, name, **labels) -> float:
    return m.get((name, frozenset(labels.items())), 0.0)


def test_requests_errors_latency_weights_and_shadow_diff(models, tmp_path):
    home = tmp_path / "home"
    make_registry(home, models["dirs"], chain=[("1.0.0", "a")], candidates=[("1.1.0", "b")])
    recs = records(models["traffic"])
    with LiveServer(home) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        for i in range(5):
            assert client.post("/invocations", json={"instances": recs[i * 4:(i + 1) * 4]}).status_code == 200
        bad = dict(recs[0], age=500)  # out of the contract's range: 422, routed as usual
        assert client.post("/invocations", json={"instances": [bad]}).status_code == 422
        assert client.post("/invocations", content=b"{not json", headers={"content-type": "application/json"}
                           ).status_code == 400  # unparseable: not routable

        m = scrape(server.url)
        blue = dict(variant="blue", version="1.0.0")
        assert val(m, "retrainer_requests_total", code="200", **blue) == 5
        assert val(m, "retrainer_requests_total", code="422", **blue) == 1
        assert val(m, "retrainer_requests_total", variant="unrouted", version="none", code="400") == 1
        assert val(m, "retrainer_request_errors_total", reason="invalid", **blue) == 1
        assert val(m, "retrainer_request_errors_total", variant="unrouted", version="none", reason="bad_request") == 1
        assert val(m, "retrainer_predictions_total", **blue) == 20
        # the latency histogram: cumulative buckets at the documented edges, +Inf = count = 6 requests
        buckets = [val(m, "retrainer_request_duration_seconds_bucket", le=str(b), **blue) for b in LATENCY_BUCKETS]
        assert buckets == sorted(buckets) and buckets[-1] <= 6
        assert val(m, "retrainer_request_duration_seconds_bucket", le="+Inf", **blue) == 6
        assert val(m, "retrainer_request_duration_seconds_count", **blue) == 6
        assert 0 < val(m, "retrainer_request_duration_seconds_sum", **blue) < 6 * 2.5
        assert val(m, "retrainer_variant_weight", **blue) == 1.0
        assert ("retrainer_variant_weight", frozenset(dict(variant="green", version="1.1.0").items())) not in m
        # the hand-written capture and shadow series keep their names
        assert val(m, "retrainer_capture_enabled") == 1 and val(m, "retrainer_shadow_enabled") == 1
        assert val(m, "retrainer_failed_requests_total", variant="blue", reason="invalid") == 1
        assert ("retrainer_capture_rows_accepted_total", frozenset()) in m

        # a canary: weights follow /admin/variants, shadow scores are compared with the answers
        canary = [{"variant": "blue", "version": "1.0.0", "weight": 0.5},
                  {"variant": "green", "version": "1.1.0", "weight": 0.5}]
        r = client.post("/admin/variants", headers=AUTH, json=canary)
        assert r.status_code == 200, r.text
        m = scrape(server.url)
        assert val(m, "retrainer_variant_weight", **blue) == 0.5
        assert val(m, "retrainer_variant_weight", variant="green", version="1.1.0") == 0.5
        answered, requests = {"blue": 0, "green": 0}, {"blue": 0, "green": 0}
        for i in range(20):
            preds = client.post("/invocations", json={"instances": recs[100 + i * 5:100 + (i + 1) * 5]}).json()
            for p in preds["predictions"]:
                answered[p["variant"]] += 1
            for v in {p["variant"] for p in preds["predictions"]}:
                requests[v] += 1  # a request whose rows went to both variants counts for each
        assert answered["blue"] and answered["green"]
        server.flush()  # drains the shadow queue into the capture, then writes
        m = scrape(server.url)
        green = dict(variant="green", version="1.1.0")
        assert val(m, "retrainer_predictions_total", **green) == answered["green"]
        assert val(m, "retrainer_shadow_score_abs_diff_count", **green) == answered["blue"]  # green shadows blue
        assert val(m, "retrainer_shadow_score_abs_diff_count", **blue) == answered["green"]
        assert val(m, "retrainer_shadow_unmatched_total") == 0
        pairs = server.store.paired(labelled=False)
        diff = np.abs(pairs["score_production"] - pairs["score_candidate"]).to_numpy()
        total = val(m, "retrainer_shadow_score_abs_diff_sum", **green) + val(m, "retrainer_shadow_score_abs_diff_sum",
                                                                             **blue)
        assert len(diff) == 100 and total == pytest.approx(diff.sum(), rel=1e-9, abs=1e-12)
        for tol in DIFF_BUCKETS:  # beyond a tolerance = count - bucket(le=tol)
            within = sum(val(m, "retrainer_shadow_score_abs_diff_bucket", le=str(tol), **v) for v in (blue, green))
            assert 100 - within == int((diff > tol).sum())

        # back to production only: the green weight series is gone, not left stale
        assert client.post("/admin/variants", headers=AUTH, json=[
            {"variant": "blue", "version": "1.0.0", "weight": 1.0}]).status_code == 200
        m = scrape(server.url)
        assert ("retrainer_variant_weight", frozenset(green.items())) not in m
        assert val(m, "retrainer_requests_total", code="200", **green) == requests["green"]
        assert val(m, "retrainer_requests_total", code="200", **blue) == 5 + requests["blue"]
        assert val(m, "retrainer_request_duration_seconds_count", **green) == requests["green"]
        assert not math.isnan(val(m, "retrainer_request_duration_seconds_sum", **green))


def test_one_registry_per_app(models, tmp_path):
    from retrainer.registry import LocalRegistry
    from retrainer.serving import create_app

    home = tmp_path / "home"
    make_registry(home, models["dirs"], chain=[("1.0.0", "a")])
    settings = Settings(home=home, serving={"admin_token": TOKEN})
    apps = [create_app(settings, LocalRegistry(home / "registry")) for _ in range(2)]  # the global registry would
    recs = records(models["traffic"].iloc[:3])                                          # refuse the second
    with TestClient(apps[0]) as one, TestClient(apps[1]) as two:
        assert one.post("/invocations", json={"instances": recs}).status_code == 200
        first = {f.name: f for f in text_string_to_metric_families(one.get("/metrics").text)}
        second = {f.name: f for f in text_string_to_metric_families(two.get("/metrics").text)}
    assert [s.value for s in first["retrainer_predictions"].samples if s.name.endswith("_total")] == [3]
    assert [s for s in second["retrainer_predictions"].samples] == []
    assert apps[0].state.metrics.registry is not apps[1].state.metrics.registry
