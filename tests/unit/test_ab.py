"""The A/B test's statistics (`retrainer.rollout.ab`) at their boundaries: a difference just
inside and just outside the interval, Bonferroni over looks, too few rows or positives, the
metric's direction, paired against unpaired DeLong, and the results file."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from retrainer import datagen, deid
from retrainer import schema as S
from retrainer.errors import ConfigError, DataError
from retrainer.evidence import paired_delong, unpaired_delong
from retrainer.predstore import PredictionStore
from retrainer.rollout.ab import (
    METRICS,
    RESULTS_FILE,
    evaluate,
    evaluate_store,
    two_proportions,
    write_results,
)

pytestmark = pytest.mark.unit

T0 = datetime(2025, 6, 1, 8, tzinfo=timezone.utc)
KEY = b"ab-test-pseudonym-key-0123456789abc"


def arms_frame(candidate: dict, production: dict, **extra) -> pd.DataFrame:
    """A window of routed rows: `candidate` and `production` map column -> values of that arm."""
    parts = []
    for variant, version, cols in (("green", "1.1.0", candidate), ("blue", "1.0.0", production)):
        n = len(next(iter(cols.values())))
        part = pd.DataFrame({"error": np.zeros(n, dtype=bool), "ts": pd.Timestamp(T0), **cols})
        part["variant"], part["version"] = variant, version
        parts.append(part)
    out = pd.concat(parts, ignore_index=True)
    for k, v in extra.items():
        out[k] = v
    return out


def latencies(seed: int, n: int) -> np.ndarray:
    return np.random.default_rng(seed).gamma(4.0, 5.0, n)


def welch_ci(c, p, level):
    return stats.ttest_ind(c, p, equal_var=False).confidence_interval(level)


# -- Welch t: the boundary of the interval ----------------------------------------------------------

@pytest.mark.parametrize("looks", [1, 4])
def test_latency_difference_just_outside_the_interval_decides_just_inside_does_not(looks):
    p, c0 = latencies(1, 400), latencies(2, 400)
    level = 1 - 0.05 / looks
    ci = welch_ci(c0, p, level)  # scipy's own Welch interval: the reference
    half = (ci.high - ci.low) / 2
    d0 = c0.mean() - p.mean()
    for factor, decided in ((1.001, True), (0.999, False)):
        c = c0 - d0 - factor * half  # difference = -factor * half; shifting moves the interval with it
        r = evaluate(arms_frame({"latency_ms": c}, {"latency_ms": p}), "latency_ms", looks=looks)
        assert r.method == "Welch t" and r.alpha_per_look == pytest.approx(0.05 / looks)
        assert r.difference == pytest.approx(-factor * half)
        assert r.low == pytest.approx(-factor * half - half) and r.high == pytest.approx(half * (1 - factor))
        assert r.p_value == pytest.approx(stats.ttest_ind(c, p, equal_var=False).pvalue)
        assert r.decided is decided and (r.p_value < 0.05 / looks) is decided
        assert r.winner == ("candidate" if decided else None)  # lower latency wins


def test_bonferroni_a_difference_decided_at_one_look_is_not_at_five():
    p, c0 = latencies(3, 500), latencies(4, 500)
    half1 = (lambda ci: (ci.high - ci.low) / 2)(welch_ci(c0, p, 0.95))
    c = c0 - (c0.mean() - p.mean()) + 1.2 * half1  # candidate slower, just outside the one-look interval
    w = arms_frame({"latency_ms": c}, {"latency_ms": p})
    one, five = evaluate(w, "latency_ms", looks=1), evaluate(w, "latency_ms", looks=5)
    assert one.decided and one.winner == "production" and one.level == pytest.approx(0.95)
    assert not five.decided and five.winner is None and five.level == pytest.approx(0.99)
    assert five.p_value == pytest.approx(one.p_value) and 0.01 < five.p_value < 0.05
    assert "0.05/5 looks = 0.01 per look, Bonferroni" in five.reason and "interval contains 0" in five.reason


def test_shadow_and_targeted_rows_are_not_traffic():
    p, c = latencies(5, 300), latencies(6, 300)
    base = arms_frame({"latency_ms": c}, {"latency_ms": p}, shadow=False, targeted=False)
    noise = arms_frame({"latency_ms": np.full(300, 900.0)}, {"latency_ms": np.full(300, 1.0)})
    noise["shadow"] = [True] * 300 + [False] * 300
    noise["targeted"] = [False] * 300 + [True] * 300
    r0 = evaluate(base, "latency_ms")
    r1 = evaluate(pd.concat([base, noise], ignore_index=True), "latency_ms")
    assert (r1.n_candidate, r1.n_production) == (300, 300)
    assert r1.difference == pytest.approx(r0.difference) and r1.p_value == pytest.approx(r0.p_value)


# -- error rate: two proportions -------------------------------------------------------------------

def test_newcombe_interval_matches_the_published_examples():
    # Newcombe (1998), Stat Med 17:873, Table II, method 10
    for (a, m, b, n), (low, high) in (((56, 70, 48, 80), (0.0524, 0.3339)), ((9, 10, 3, 10), (0.1705, 0.8090)),
                                      ((5, 56, 0, 29), (-0.0381, 0.1926))):
        t = two_proportions(a, m, b, n, 0.95)
        assert (round(t["low"], 4), round(t["high"], 4)) == (low, high)


def errors_frame(k_c: int, n_c: int, k_p: int, n_p: int) -> pd.DataFrame:
    return arms_frame({"error": np.arange(n_c) < k_c}, {"error": np.arange(n_p) < k_p})


def test_error_rate_boundary_and_direction_lower_wins():
    n, k_p = 2000, 60
    # the largest candidate error count whose interval still lies below 0 (candidate better)
    k_star = max(k for k in range(k_p) if two_proportions(k, n, k_p, n, 0.95)["high"] < 0)
    assert two_proportions(k_star + 1, n, k_p, n, 0.95)["high"] >= 0
    inside, outside = evaluate(errors_frame(k_star + 1, n, k_p, n), "error_rate"), \
        evaluate(errors_frame(k_star, n, k_p, n), "error_rate")
    assert outside.decided and outside.winner == "candidate" and outside.high < 0 and outside.higher_is_better is False
    assert outside.positives_candidate == k_star and outside.estimate_candidate == pytest.approx(k_star / n)
    assert not inside.decided and inside.winner is None
    # swapped: the candidate has more errors, production wins
    worse = evaluate(errors_frame(k_p, n, k_star, n), "error_rate")
    assert worse.decided and worse.winner == "production" and worse.low > 0
    assert "two-proportion z" in worse.method and f"{k_p:,} errors" in worse.reason


def test_no_errors_in_either_arm_is_no_winner():
    r = evaluate(errors_frame(0, 500, 0, 500), "error_rate")
    assert not r.decided and r.p_value == 1.0 and r.difference == 0.0


# -- too few rows / positives ----------------------------------------------------------------------

def test_below_min_per_arm_no_decision_however_large_the_difference():
    few = arms_frame({"latency_ms": latencies(7, 99) + 500}, {"latency_ms": latencies(8, 400)})
    r = evaluate(few, "latency_ms")
    assert not r.decided and r.winner is None and r.p_value is None
    assert "candidate has 99 rows" in r.reason and "need 100 rows per arm" in r.reason
    enough = arms_frame({"latency_ms": latencies(7, 100) + 500}, {"latency_ms": latencies(8, 400)})
    assert evaluate(enough, "latency_ms").winner == "production"


def auc_arm(seed: int, n_pos: int, n_neg: int, shift: float) -> dict:
    rng = np.random.default_rng(seed)
    y = np.r_[np.ones(n_pos, int), np.zeros(n_neg, int)]
    z = shift * y + rng.standard_normal(len(y))
    return {"score": 1 / (1 + np.exp(-(z - 2))), S.LABEL: y}


def test_auc_needs_min_positives_and_negatives_per_arm():
    strong, weak = auc_arm(10, 99, 900, 2.0), auc_arm(11, 300, 900, 0.2)
    r = evaluate(arms_frame(strong, weak), "auc")
    assert not r.decided and r.method == "unpaired DeLong"
    assert "candidate has 99 positives and 900 negatives" in r.reason and "100 positives" in r.reason
    assert (r.positives_candidate, r.positives_production) == (99, 300)
    r = evaluate(arms_frame(auc_arm(10, 100, 900, 2.0), weak), "auc")
    assert r.decided and r.winner == "candidate" and r.estimate_candidate > r.estimate_production
    neg = evaluate(arms_frame(auc_arm(10, 300, 99, 2.0), weak), "auc")
    assert not neg.decided and "300 positives and 99 negatives" in neg.reason


def test_auc_unpaired_matches_delong_and_higher_wins():
    c, p = auc_arm(12, 200, 1000, 0.6), auc_arm(13, 200, 1000, 1.4)
    r = evaluate(arms_frame(c, p), "auc", looks=3)
    ref = unpaired_delong(c[S.LABEL], c["score"], p[S.LABEL], p["score"], 1 - 0.05 / 3)
    assert (r.difference, r.low, r.high) == pytest.approx((ref.delta, ref.low, ref.high))
    assert r.high < 0 and r.decided and r.winner == "production"


def test_auc_uses_only_matured_labelled_unerrored_rows():
    c, p = auc_arm(14, 150, 600, 1.0), auc_arm(15, 150, 600, 1.0)
    w = arms_frame(c, p)
    w["ts"] = pd.Timestamp(T0)
    late = arms_frame(auc_arm(16, 500, 500, 3.0), auc_arm(17, 500, 500, 0.0))
    late["ts"] = pd.Timestamp(T0 + timedelta(days=3))  # labelled early, but not matured: must not count
    errs = arms_frame(auc_arm(18, 50, 50, 3.0), auc_arm(19, 50, 50, 3.0), error=True)
    r = evaluate(pd.concat([w, late, errs], ignore_index=True), "auc", matured_before=T0 + timedelta(days=1))
    assert (r.n_candidate, r.positives_candidate, r.n_production) == (750, 150, 750)
    with pytest.raises(DataError, match="no readmitted_30d column and no labels"):
        evaluate(w.drop(columns=[S.LABEL]), "auc")


# -- paired vs unpaired ----------------------------------------------------------------------------

def pairs_frame(seed: int, n_pos: int, n_neg: int, shift_c: float, shift_p: float) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    y = np.r_[np.ones(n_pos, int), np.zeros(n_neg, int)]
    shared = rng.standard_normal(len(y))
    sp = shift_p * y + shared + 0.5 * rng.standard_normal(len(y))
    sc = shift_c * y + shared + 0.5 * rng.standard_normal(len(y))
    return pd.DataFrame({"ts": pd.Timestamp(T0), "score_production": sp, "score_candidate": sc, S.LABEL: y})


def test_paired_delong_when_enough_pairs_unpaired_otherwise():
    w = arms_frame(auc_arm(20, 120, 500, 1.0), auc_arm(21, 120, 500, 1.0))
    pairs = pairs_frame(22, 100, 100, 1.3, 1.0)
    r = evaluate(w, "auc", pairs=pairs)
    ref = paired_delong(pairs[S.LABEL], pairs["score_production"], pairs["score_candidate"], 0.95)
    assert r.method == "paired DeLong" and r.paired and (r.n_candidate, r.positives_candidate) == (200, 100)
    assert (r.difference, r.low, r.high) == pytest.approx((ref.delta, ref.low, ref.high))
    assert "rows both versions scored" in r.reason
    few = evaluate(w, "auc", pairs=pairs_frame(22, 99, 500, 1.3, 1.0))
    assert few.method == "unpaired DeLong" and not few.paired and few.n_candidate == 620
    assert "paired DeLong not used: 599 shadow-scored pairs with 99+/500-" in few.reason


def test_paired_detects_what_unpaired_cannot_on_as_many_rows():
    pairs = pairs_frame(23, 150, 850, 1.15, 1.0)
    y, sp, sc = pairs[S.LABEL].to_numpy(), pairs["score_production"].to_numpy(), pairs["score_candidate"].to_numpy()
    half = len(y) // 2  # the same rows split between the arms instead
    w = arms_frame({"score": sc[::2], S.LABEL: y[::2]}, {"score": sp[1::2], S.LABEL: y[1::2]})
    paired, unpaired = evaluate(w, "auc", pairs=pairs, min_positives=50), evaluate(w, "auc", min_positives=50)
    assert paired.method == "paired DeLong" and paired.decided and paired.winner == "candidate"
    assert unpaired.method == "unpaired DeLong" and not unpaired.decided and unpaired.n_candidate == half
    assert (paired.high - paired.low) < 0.5 * (unpaired.high - unpaired.low)


# -- outcome and score -----------------------------------------------------------------------------

def test_outcome_lower_readmission_wins_and_score_has_no_direction():
    n = 1000
    c = {S.LABEL: (np.arange(n) < 100).astype(int), "score": np.linspace(0.05, 0.25, n)}
    p = {S.LABEL: (np.arange(n) < 160).astype(int), "score": np.linspace(0.10, 0.30, n)}
    w = arms_frame(c, p)
    out = evaluate(w, "outcome")
    assert out.decided and out.winner == "candidate" and out.difference == pytest.approx(-0.06)
    assert (out.positives_candidate, out.positives_production) == (100, 160)
    sc = evaluate(w, "score")
    assert sc.high < 0 and not sc.decided and sc.winner is None and sc.higher_is_better is None
    assert "no better direction" in sc.reason
    assert evaluate(w, "score", higher_is_better=False).winner == "candidate"


def test_metrics_and_arguments_are_validated():
    assert set(METRICS) == {"auc", "error_rate", "latency_ms", "outcome", "score"}
    assert METRICS["auc"].higher_is_better and METRICS["error_rate"].higher_is_better is False
    w = arms_frame({"latency_ms": latencies(1, 200)}, {"latency_ms": latencies(2, 200)})
    for kw, msg in ((dict(metric="p95"), "unknown A/B metric 'p95'"), (dict(looks=0), "looks"),
                    (dict(alpha=1.5), "alpha")):
        with pytest.raises(ConfigError, match=msg):
            evaluate(w, **{"metric": "latency_ms", **kw})


# -- the results file ------------------------------------------------------------------------------

def test_results_file_is_written_atomically_with_the_decision(tmp_path):
    p, c = latencies(30, 400), latencies(31, 400) - 3
    r = evaluate(arms_frame({"latency_ms": c}, {"latency_ms": p}), "latency_ms", looks=6)
    assert r.decided
    path = write_results(r, tmp_path, versions={"candidate": "1.1.0", "production": "1.0.0"},
                         split={"green": 0.5, "blue": 0.5}, started_at=T0, decided_at="2025-06-03T08:00:00+00:00")
    assert path == tmp_path / RESULTS_FILE
    assert [f.name for f in tmp_path.iterdir()] == [RESULTS_FILE]  # no temporary file left behind
    doc = json.loads(path.read_text())
    assert doc["winner"] == "candidate" and doc["winner_version"] == "1.1.0" and doc["decided"] is True
    assert doc["metric"] == "latency_ms" and doc["method"] == "Welch t" and doc["split"] == {"green": 0.5, "blue": 0.5}
    assert doc["started_at"] == T0.isoformat() and doc["decided_at"] == "2025-06-03T08:00:00+00:00"
    res = doc["result"]
    assert res["looks"] == 6 and res["alpha_per_look"] == pytest.approx(0.05 / 6) and res["reason"] == r.reason
    assert res["version_candidate"] == "1.1.0" and res["high"] < 0 and res["df"] > 0
    # an undecided result: no winner, None instead of NaN (valid JSON)
    u = evaluate(errors_frame(0, 50, 0, 50), "error_rate")
    doc = json.loads(write_results(u, path, versions={}, split={}, started_at="a", decided_at="b").read_text())
    assert doc["winner"] is None and doc["winner_version"] is None and doc["result"]["difference"] is None


# -- on a real prediction store --------------------------------------------------------------------

@pytest.fixture(scope="module")
def admissions(tmp_path_factory):
    paths = datagen.generate(tmp_path_factory.mktemp("data"),
                             datagen.GenerationSpec(months=1, rows_per_month=3000, seed=21))
    return pd.read_parquet(paths[0]).reset_index(drop=True)


def test_evaluate_store_pairs_shadow_scores_and_waits_for_labels_to_mature(tmp_path, admissions):
    store = PredictionStore(tmp_path / "store")
    pz = deid.Pseudonymizer(KEY)
    y = admissions[S.LABEL].to_numpy()
    rng = np.random.default_rng(3)
    shared = rng.standard_normal(len(y))
    s_blue = 1 / (1 + np.exp(-(1.0 * y + shared + 0.6 * rng.standard_normal(len(y)) - 2)))
    s_green = 1 / (1 + np.exp(-(1.6 * y + shared + 0.6 * rng.standard_normal(len(y)) - 2)))
    green = np.arange(len(y)) % 2 == 0
    ids = np.array([f"r{i:05d}" for i in range(len(y))])
    for variant, version, s, mine in (("blue", "1.0.0", s_blue, ~green), ("green", "1.1.0", s_green, green)):
        for shadow, rows in ((False, mine), (True, ~mine)):  # each arm answers its half and shadows the other
            store.append(admissions[rows], s[rows], version=version, variant=variant, latency_ms=3.0,
                         ts=T0 + timedelta(hours=1), pseudonymizer=pz, request_id=ids[rows],
                         row=np.zeros(int(rows.sum())), shadow=shadow)
    labels = tmp_path / "labels.csv"
    admissions[[S.ADMISSION_ID, "patient_id", S.LABEL]].to_csv(labels, index=False)
    store.ingest_labels(labels, pz)
    early = evaluate_store(store, T0, T0 + timedelta(hours=24), "auc", label_delay=timedelta(hours=48))
    assert not early.decided and early.n_candidate == 0 and early.method == "unpaired DeLong"
    r = evaluate_store(store, T0, T0 + timedelta(hours=72), "auc", label_delay=timedelta(hours=48), looks=3)
    assert r.method == "paired DeLong" and r.n_candidate == len(y) and r.positives_candidate == int(y.sum())
    ref = paired_delong(y, s_blue, s_green, 1 - 0.05 / 3)
    assert r.difference == pytest.approx(ref.delta) and r.low == pytest.approx(ref.low)
    assert r.decided and r.winner == "candidate" and r.version_candidate == "1.1.0"
    lat = evaluate_store(store, T0, T0 + timedelta(hours=72), "latency_ms")
    assert (lat.n_candidate, lat.n_production) == (int(green.sum()), int((~green).sum()))  # shadow rows left out
    assert not lat.decided and "neither arm varies" in lat.reason
