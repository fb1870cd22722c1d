"""The canary's live evidence and the deferred verdict on a real prediction store (Parquet) and a
real local registry: what has matured, what is pooled with the registration comparison, what the
guardrails see, and a deferred verdict that rolls a promotion back."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from retrainer import datagen, deid
from retrainer import schema as S
from retrainer.backends import get_backend
from retrainer.evidence import compare_paired
from retrainer.predstore import PredictionStore
from retrainer.rollout import RolloutPlan, Stage, check, gather, power_at_start
from retrainer.rollout import verdict as deferred
from retrainer.settings import Settings
from tests.helpers import artifact, make_record

pytestmark = pytest.mark.unit

KEY = b"live-evidence-test-key-0123456789"
T0 = datetime(2025, 5, 1, 8, tzinfo=timezone.utc)
PLAN = RolloutPlan((Stage(0.5, timedelta(hours=72), timedelta(hours=24)),))


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    paths = datagen.generate(tmp_path_factory.mktemp("data"), datagen.GenerationSpec(months=1, rows_per_month=3000,
                                                                                   seed=11))
    return pd.read_parquet(paths[0]).reset_index(drop=True)


def scores(y: np.ndarray, strength: float, seed: int, shared: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(seed)
    z = strength * y + 0.8 * shared + 0.6 * rng.standard_normal(len(y))
    return 1 / (1 + np.exp(-(z - 2.0)))


def registration_gate(version_against: str, delta_sign: float = 0.0) -> dict:
    """A gate dict with a real paired comparison on a simulated registration month."""
    rng = np.random.default_rng(5)
    y = (rng.random(4000) < 0.15).astype(int)
    shared = rng.standard_normal(4000)
    sp = scores(y, 1.2, 1, shared)
    sc = scores(y, 1.2 + delta_sign, 2, shared)
    ev = compare_paired(y, sp, sc, tolerance=0.02, source="registration test month")
    return {"eligible": True, "reason": "test", "evidence": ev.to_dict()}


def world(tmp_path, gate_delta=0.0, label_delay="48h"):
    settings = Settings(home=tmp_path / "home", label_delay=label_delay,
                        serving={"admin_token": "x" * 40, "port": 1})
    backend = get_backend(settings)
    reg = backend.registry
    reg.register(make_record("1.0.0", "production"), artifact(tmp_path, "a"), actor="t")
    reg.register(make_record("1.1.0", "candidate", gate=registration_gate("1.0.0", gate_delta),
                             metrics={"candidate": {"auc": 0.8}, "production": {"auc": 0.8, "version": "1.0.0"}}),
                 artifact(tmp_path, "b"), actor="t")
    reg.set_status("1.1.0", "canary", actor="t", reason="test")
    return settings, backend


def send(store: PredictionStore, rows: pd.DataFrame, ts: datetime, cand_strength: float, *, shadow=True,
         latency=2.0, errors=0):
    """Half the rows routed to each arm; with shadow, the other arm scores them too."""
    y = rows[S.LABEL].to_numpy()
    shared = np.random.default_rng(9).standard_normal(len(rows))
    s_blue, s_green = scores(y, 1.2, 3, shared), scores(y, cand_strength, 4, shared)
    pz = deid.Pseudonymizer(KEY)
    green = np.arange(len(rows)) % 2 == 0
    ids = np.array([f"req{i:05d}" for i in range(len(rows))])
    err = np.zeros(len(rows), dtype=bool)
    err[np.flatnonzero(green)[:errors]] = True
    for variant, version, s, routed in (("blue", "1.0.0", s_blue, ~green), ("green", "1.1.0", s_green, green)):
        store.append(rows[routed], np.where(err[routed], np.nan, s[routed]), version=version, variant=variant,
                     latency_ms=latency, ts=ts, pseudonymizer=pz, request_id=ids[routed],
                     row=np.zeros(int(routed.sum())), error=err[routed])
        if shadow:
            other = ~routed & ~err
            store.append(rows[other], s[other], version=version, variant=variant, latency_ms=latency, ts=ts,
                         pseudonymizer=pz, request_id=ids[other], row=np.zeros(int(other.sum())), shadow=True)


def ingest(store: PredictionStore, rows: pd.DataFrame, tmp_path) -> None:
    path = tmp_path / f"labels-{len(list(tmp_path.glob('labels-*')))}.csv"
    rows[[S.ADMISSION_ID, "patient_id", S.LABEL]].to_csv(path, index=False)
    store.ingest_labels(path, deid.Pseudonymizer(KEY))


def test_before_labels_mature_only_the_registration_month_decides(tmp_path, rows):
    settings, backend = world(tmp_path)
    send(backend.predictions, rows, T0 + timedelta(hours=1), cand_strength=0.2)  # the candidate is bad...
    ingest(backend.predictions, rows, tmp_path)  # ...and its early labels are in, but not matured
    live = gather(backend.predictions, backend.registry, settings, candidate_version="1.1.0", start=T0,
                  now=T0 + timedelta(hours=24), checks=5)
    assert live.verdict.source == "registration month"
    assert any("no live prediction has matured yet" in n for n in live.notes)
    assert live.candidate.n_predictions == 1500 and live.production.n_predictions == 1500  # routed only


def test_matured_shadow_rows_are_pooled_with_the_registration_month(tmp_path, rows):
    settings, backend = world(tmp_path)
    send(backend.predictions, rows, T0 + timedelta(hours=1), cand_strength=0.2)
    ingest(backend.predictions, rows, tmp_path)
    now = T0 + timedelta(hours=72)  # 71 h after the traffic: matured (label delay 48 h)
    live = gather(backend.predictions, backend.registry, settings, candidate_version="1.1.0", start=T0, now=now,
                  checks=5)
    v = live.verdict
    assert v.source == "registration month + matured shadow rows" and len(v.parts) == 2
    shadow = v.parts[1]
    assert shadow.paired and shadow.candidate.n == len(rows)  # every row scored by both models
    assert shadow.candidate.positives == int(rows[S.LABEL].sum())
    assert shadow.delta < -0.05 and v.verdict == "rollback"
    d = check(PLAN, T0, now, live, settings)
    assert d.action == "rollback" and d.reason.startswith("inferior: ")


def test_without_shadow_the_routed_arms_are_compared_unpaired(tmp_path, rows):
    settings, backend = world(tmp_path)
    send(backend.predictions, rows, T0 + timedelta(hours=1), cand_strength=1.2, shadow=False)
    ingest(backend.predictions, rows, tmp_path)
    live = gather(backend.predictions, backend.registry, settings, candidate_version="1.1.0", start=T0,
                  now=T0 + timedelta(hours=72), checks=5)
    arms = live.verdict.parts[1]
    assert arms.source == "matured routed arms" and not arms.paired
    assert arms.candidate.n == 1500 and arms.production.n == 1500


def test_a_registration_comparison_against_another_production_is_left_out(tmp_path, rows):
    settings, backend = world(tmp_path)
    backend.registry.register(make_record("1.2.0", "candidate", gate=registration_gate("0.9.0"),
                                          metrics={"candidate": {"auc": 0.8},
                                                   "production": {"auc": 0.8, "version": "0.9.0"}}),
                              artifact(tmp_path, "c"), actor="t")
    live = gather(backend.predictions, backend.registry, settings, candidate_version="1.2.0", start=T0,
                  now=T0 + timedelta(hours=1), checks=5)
    assert live.verdict.verdict == "inconclusive" and not live.verdict.parts
    assert any("compared at registration with 0.9.0, not with production 1.0.0" in n for n in live.notes)


def test_failed_requests_fire_the_error_guardrail(tmp_path, rows):
    settings, backend = world(tmp_path)
    send(backend.predictions, rows, T0 + timedelta(hours=1), cand_strength=1.2, errors=60)  # 4% of 1500
    live = gather(backend.predictions, backend.registry, settings, candidate_version="1.1.0", start=T0,
                  now=T0 + timedelta(hours=2), checks=13)
    err = next(g for g in live.guardrails if g.name.startswith("error"))
    assert err.fired and err.n == 1500
    assert check(PLAN, T0, T0 + timedelta(hours=2), live, settings).action == "rollback"
    ok = gather(backend.predictions, backend.registry, settings, candidate_version="1.1.0", start=T0,
                now=T0 + timedelta(hours=2), checks=13)
    assert [g.fired for g in ok.guardrails] == [g.fired for g in live.guardrails]  # deterministic


def test_power_statement_at_the_start(tmp_path, rows):
    settings, backend = world(tmp_path)
    send(backend.predictions, rows, T0 - timedelta(days=1), cand_strength=1.2)
    p = power_at_start(backend.predictions, backend.registry, settings, PLAN, "1.1.0", T0)
    assert p["needed_rows"] > 0 and p["have_rows"] == 4000 and "matured" in p["text"]
    assert p["rows_per_day"] == pytest.approx(3000 / 7)


def test_deferred_verdict_rolls_a_failed_promotion_back(tmp_path, rows):
    from retrainer.rollout import promote_canary

    settings, backend = world(tmp_path)
    reg = backend.registry
    start, end = T0, T0 + timedelta(hours=72)
    send(backend.predictions, rows, start + timedelta(hours=1), cand_strength=0.2)
    ingest(backend.predictions, rows, tmp_path)
    promote_canary(reg, backend.endpoint, "1.1.0", actor="canary-policy", reason="registration month looked fine")
    assert reg.production().version == "1.1.0"
    early = deferred.run(backend.predictions, reg, backend.endpoint, settings, version="1.1.0", previous="1.0.0",
                         window_start=start, window_end=end, now=end + timedelta(hours=1))
    assert early["outcome"] == "not_due" and reg.production().version == "1.1.0"
    out = deferred.run(backend.predictions, reg, backend.endpoint, settings, version="1.1.0", previous="1.0.0",
                       window_start=start, window_end=end, now=end + timedelta(hours=49))
    assert out["outcome"] == "rolled_back" and out["evidence"]["verdict"] == "rollback"
    assert out["evidence"]["n_candidate"] == len(rows) and out["evidence"]["paired"]
    assert reg.production().version == "1.0.0"
    last = reg.audit()[-1]
    assert last["actor"] == "deferred-verdict" and "deferred verdict" in last["reason"]


def test_deferred_verdict_confirms_a_good_promotion_and_defers_to_a_human_when_production_moved(tmp_path, rows):
    from retrainer.rollout import promote_canary

    settings, backend = world(tmp_path)
    reg = backend.registry
    start, end = T0, T0 + timedelta(hours=72)
    send(backend.predictions, rows, start + timedelta(hours=1), cand_strength=1.6)
    ingest(backend.predictions, rows, tmp_path)
    promote_canary(reg, backend.endpoint, "1.1.0", actor="canary-policy", reason="ok")
    out = deferred.run(backend.predictions, reg, backend.endpoint, settings, version="1.1.0", previous="1.0.0",
                       window_start=start, window_end=end, now=end + timedelta(days=3))
    assert out["outcome"] == "confirmed" and reg.production().version == "1.1.0"
    # a worse one, but production has moved on since: a person decides
    settings2, backend2 = world(tmp_path / "b")
    send(backend2.predictions, rows, start + timedelta(hours=1), cand_strength=0.2)
    ingest(backend2.predictions, rows, tmp_path)
    promote_canary(backend2.registry, backend2.endpoint, "1.1.0", actor="t", reason="ok")
    backend2.registry.register(make_record("1.2.0", "candidate"), artifact(tmp_path, "z"), actor="t")
    backend2.registry.set_status("1.2.0", "canary", actor="t", reason="x")
    promote_canary(backend2.registry, backend2.endpoint, "1.2.0", actor="t", reason="ok")
    out = deferred.run(backend2.predictions, backend2.registry, backend2.endpoint, settings2, version="1.1.0",
                       previous="1.0.0", window_start=start, window_end=end, now=end + timedelta(days=3))
    assert out["outcome"] == "needs_human" and "production is now 1.2.0" in out["reason"]
    assert backend2.registry.production().version == "1.2.0"
