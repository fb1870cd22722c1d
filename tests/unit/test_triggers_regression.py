"""The performance and concept-drift triggers of a regression model, on Spearman: boundaries on
constructed windows, too-small windows, and the metric checked against the model's task."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from retrainer import spec as specs
from retrainer.errors import ConfigError
from retrainer.evidence.correlation import fisher_se
from retrainer.triggers.config import load_triggers
from retrainer.triggers.evaluate import (
    Z_ONE_SIDED,
    WindowAUC,
    concept_z,
    evaluate_concept_drift,
    evaluate_performance,
    spearman_window,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def config():
    with specs.using("lead-scoring"):
        return load_triggers(REPO / "triggers-lead-scoring.yaml")


def _w(r: float, n: int) -> WindowAUC:
    return WindowAUC("a", "b", n, n, n, r, (1 - r * r) * fisher_se(r, n))


def _r_with_upper_bound(ub: float, n: int) -> float:
    """The Spearman whose one-sided upper bound is `ub` on n rows (solved numerically)."""
    lo, hi = -0.99, 0.99
    for _ in range(100):
        mid = (lo + hi) / 2
        w = _w(mid, n)
        lo, hi = (mid, hi) if w.upper_bound < ub else (lo, mid)
    return (lo + hi) / 2


def test_spearman_window_measures_rank_correlation_and_its_error():
    rng = np.random.default_rng(0)
    y = rng.integers(1, 6, 2000).astype(float)
    s = y + rng.normal(0, 1.5, 2000)
    w = spearman_window(y, s, "2024-03-01", "2024-03-03")
    from scipy.stats import spearmanr

    assert w.auc == pytest.approx(spearmanr(y, s).statistic, abs=1e-9) and w.n == 2000
    assert w.se == pytest.approx((1 - w.auc ** 2) * math.sqrt((1 + w.auc ** 2 / 2) / 1997))
    assert w.upper_bound == pytest.approx(w.auc + Z_ONE_SIDED * w.se)


def test_performance_fires_only_when_every_window_is_surely_below_the_threshold(config):
    trig = config.by_type("performance_degradation")[0]
    assert trig.metric == "spearman" and trig.threshold == 0.5
    just_below = _w(_r_with_upper_bound(0.5 - 1e-4, 800), 800)
    just_above = _w(_r_with_upper_bound(0.5 + 1e-4, 800), 800)
    fired = evaluate_performance(trig, [just_below] * 3)
    assert fired.fired and "Spearman upper bound below 0.5 in 3 consecutive" in fired.reason
    assert not evaluate_performance(trig, [just_above, just_below, just_below]).fired
    assert not evaluate_performance(trig, [just_below, just_below, just_above]).fired
    small = evaluate_performance(trig, [just_below, just_below, _w(0.1, 299)])
    assert not small.fired and small.too_small and "too small to tell" in small.reason


def test_concept_drift_fires_beyond_the_noise_bound_and_not_within_it(config):
    trig = config.by_type("concept_drift")[0]
    ref_r, n = 0.70, 1500
    ref_se = (1 - ref_r ** 2) * fisher_se(ref_r, 3000)
    z = concept_z(trig)
    cur_se = (1 - 0.6 ** 2) * fisher_se(0.6, n)
    bound = z * math.sqrt(ref_se ** 2 + cur_se ** 2)
    assert bound < trig.min_drop  # here min_drop decides; both are checked
    beyond = evaluate_concept_drift(trig, _w(ref_r - trig.min_drop - 0.005, n), ref_r, "1.0.0", ref_se)
    assert beyond.fired and "Spearman" in beyond.reason
    within = evaluate_concept_drift(trig, _w(ref_r - trig.min_drop + 0.005, n), ref_r, "1.0.0", ref_se)
    assert not within.fired
    few = evaluate_concept_drift(trig, _w(0.2, 499), ref_r, "1.0.0", ref_se)
    assert not few.fired and few.too_small


def test_a_metric_that_does_not_fit_the_model_is_one_line(tmp_path):
    text = (REPO / "triggers-lead-scoring.yaml").read_text()
    with pytest.raises(ConfigError, match="metric 'spearman' does not fit readmission-30d"):
        load_triggers(REPO / "triggers-lead-scoring.yaml")  # the default model is a classifier
    bad = tmp_path / "t.yaml"
    bad.write_text(text.replace("metric: spearman", "metric: auc"))
    with specs.using("lead-scoring"), pytest.raises(ConfigError, match="metric 'auc' does not fit lead-scoring"):
        load_triggers(bad)
