"""The evidence core: paired/unpaired DeLong, the clustered bootstrap and the non-inferiority rule,
tested at its boundaries on constructed data."""
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from retrainer.evidence import (
    AUCDelta,
    Counts,
    Evidence,
    compare_paired,
    compare_unpaired,
    decide,
    paired_delong,
    pool,
    unpaired_delong,
)

pytestmark = pytest.mark.unit


def _scores(n=4000, prevalence=0.15, seed=0, noise_p=0.5, noise_c=0.5):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < prevalence).astype(int)
    latent = rng.normal(size=n) + 1.1 * y
    sp = latent + rng.normal(scale=noise_p, size=n)
    sc = latent + rng.normal(scale=noise_c, size=n)
    return y, sp, sc


def _delta(low, high, n=2000, pos=300):
    mid = (low + high) / 2
    return AUCDelta("paired DeLong", mid, low, high, (high - low) / 3.92, 0.95, 0.78 + mid, 0.78, n, pos, n, pos)


def test_paired_delong_point_estimate_is_the_auc_difference():
    y, sp, sc = _scores()
    d = paired_delong(y, sp, sc)
    assert d.delta == pytest.approx(roc_auc_score(y, sc) - roc_auc_score(y, sp), abs=1e-12)
    assert d.n_candidate == len(y) and d.pos_candidate == int(y.sum())


def test_pairing_shrinks_the_interval_against_unpaired_on_the_same_rows():
    y, sp, sc = _scores()
    paired = paired_delong(y, sp, sc)
    unpaired = unpaired_delong(y, sc, y, sp)
    assert paired.se < 0.7 * unpaired.se


def test_paired_delong_matches_the_spread_of_repeated_samples():
    # the DeLong SE of the paired difference agrees with the SD over independent samples (to 20%)
    deltas, ses = [], []
    for seed in range(60):
        y, sp, sc = _scores(n=1500, seed=seed, noise_c=0.7)
        d = paired_delong(y, sp, sc)
        deltas.append(d.delta)
        ses.append(d.se)
    assert np.std(deltas, ddof=1) == pytest.approx(np.mean(ses), rel=0.2)


def test_identical_models_have_zero_difference_and_promote():
    y, sp, _ = _scores()
    e = compare_paired(y, sp, sp, tolerance=0.02)
    assert e.delta == 0 and e.se == 0 and e.verdict == "promote"


@pytest.mark.parametrize("low,high,verdict", [
    (-0.0199, 0.01, "promote"),        # lower bound just above -δ
    (-0.0201, 0.01, "inconclusive"),   # lower bound just below -δ, upper above it
    (-0.05, -0.0201, "rollback"),      # upper bound just below -δ
    (-0.05, -0.0199, "inconclusive"),  # upper bound just above -δ
])
def test_non_inferiority_boundaries(low, high, verdict):
    e = decide(_delta(low, high), 0.02, source="test", paired=True)
    assert e.verdict == verdict
    assert f"[{low:+.4f}, {high:+.4f}]" in e.reason


@pytest.mark.parametrize("pos,neg,verdict", [(100, 100, "promote"), (99, 500, "inconclusive"),
                                             (500, 99, "inconclusive")])
def test_too_few_positives_or_negatives_is_inconclusive(pos, neg, verdict):
    e = decide(_delta(-0.01, 0.01, n=pos + neg, pos=pos), 0.02, source="s", paired=True)
    assert e.verdict == verdict
    if verdict == "inconclusive":
        assert "too few labels" in e.reason


def test_unpaired_minimum_applies_to_each_arm():
    d = AUCDelta("unpaired DeLong", 0.0, -0.01, 0.01, 0.005, 0.95, 0.78, 0.78, 5000, 700, 500, 80)
    e = decide(d, 0.02, source="arms", paired=False)
    assert e.verdict == "inconclusive" and "production has 80 positives" in e.reason


def test_a_worse_candidate_on_enough_rows_is_rolled_back():
    y, sp, sc = _scores(n=20000, noise_c=1.6)
    e = compare_paired(y, sp, sc, tolerance=0.02)
    assert e.delta < -0.05 and e.verdict == "rollback"


def test_repeated_pseudonyms_switch_to_the_clustered_bootstrap():
    y, sp, sc = _scores(n=3000)
    unique = np.array([f"p{i}" for i in range(3000)])
    assert compare_paired(y, sp, sc, tolerance=0.02, clusters=unique).method == "paired DeLong"
    repeated = np.array([f"p{i // 3}" for i in range(3000)])
    e = compare_paired(y, sp, sc, tolerance=0.02, clusters=repeated, n_boot=300)
    assert e.method == "clustered bootstrap (paired)"
    assert e.low < e.delta < e.high


def test_clustering_widens_the_interval_when_a_patient_repeats_their_rows():
    # every patient contributes 5 copies of the same row: the unclustered interval is too narrow
    y, sp, sc = _scores(n=800, noise_c=0.7)
    y5, sp5, sc5 = (np.repeat(a, 5) for a in (y, sp, sc))
    naive = paired_delong(y5, sp5, sc5)
    clustered = compare_paired(y5, sp5, sc5, tolerance=0.02, clusters=np.repeat(np.arange(800), 5).astype(str),
                               n_boot=400)
    assert (clustered.high - clustered.low) > 1.7 * (naive.high - naive.low)


def test_unpaired_compare_and_one_class():
    y, sp, sc = _scores(n=4000)
    e = compare_unpaired(y[:2000], sc[:2000], y[2000:], sp[2000:], tolerance=0.02)
    assert e.method == "unpaired DeLong" and not e.paired
    one_class = compare_unpaired(np.ones(300), sc[:300], y, sp, tolerance=0.02)
    assert one_class.verdict == "inconclusive"


def test_pool_weights_by_inverse_variance_and_round_trips():
    a = decide(_delta(-0.03, 0.01), 0.02, source="a", paired=True)
    b = decide(_delta(-0.01, 0.01), 0.02, source="b", paired=True)
    p = pool([a, b], 0.02)
    wa, wb = 1 / a.se ** 2, 1 / b.se ** 2
    assert p.delta == pytest.approx((wa * a.delta + wb * b.delta) / (wa + wb))
    assert p.se < min(a.se, b.se)
    assert p.candidate == Counts(4000, 600)
    assert Evidence.from_dict(p.to_dict()) == p
    assert pool([], 0.02).verdict == "inconclusive"
