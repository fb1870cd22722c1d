"""Rollouts of a regression model (lead-scoring): the matured-label verdict is Spearman
non-inferiority at the spec's margin, scores outside the business rule are a guardrail breach,
and no label-free estimate is made. Constructed data, real scipy statistics."""
from __future__ import annotations

import numpy as np
import pytest

from retrainer import spec
from retrainer.evidence import count_bad_scores, output_guardrail
from retrainer.evidence.correlation import compare_spearman_unpaired, decide_spearman
from retrainer.rollout.live import label_free
from retrainer.settings import Settings

TOL = 0.02  # models/lead-scoring.yaml metrics.gate.tolerance


def _arm(rng, n, noise):
    y = rng.normal(size=n)
    s = y + rng.normal(scale=noise, size=n)
    return np.clip(np.round(3 + y), 1, 5), s


def _verdict(n, noise_c, noise_p, min_rows=200, seed=0):
    rng = np.random.default_rng(seed)
    yc, sc = _arm(rng, n, noise_c)
    yp, sp = _arm(rng, n, noise_p)
    with spec.using("lead-scoring"):
        tol = spec.active().spec.metrics.gate.tolerance
        return compare_spearman_unpaired(yc, sc, yp, sp, tolerance=tol, source="routed arms", min_rows=min_rows)


def test_spec_margin_is_the_gate_tolerance():
    with spec.using("lead-scoring"):
        assert spec.active().spec.metrics.gate.tolerance == pytest.approx(TOL)


def test_promote_when_candidate_equal_or_better_with_enough_rows():
    e = _verdict(20_000, 0.5, 0.8)  # candidate clearly better
    assert e.verdict == "promote"
    assert e.low > -TOL
    e = _verdict(20_000, 0.6, 0.6, seed=3)  # equal models, enough rows: the interval clears -margin
    assert e.verdict == "promote"


def test_rollback_when_worse_beyond_the_margin():
    e = _verdict(20_000, 1.2, 0.6)
    assert e.verdict == "rollback"
    assert e.high < -TOL


def test_inconclusive_with_too_few_matured_rows_never_promotes():
    e = _verdict(150, 0.2, 1.5, min_rows=200)  # far better candidate, but under the minimum rows
    assert e.verdict == "inconclusive"
    assert not e.decided
    e = decide_spearman(None, TOL, source="matured labels", paired=True, n_candidate=0, n_production=0)
    assert e.verdict == "inconclusive"


def test_lead_scoring_range_is_the_business_rule():
    with spec.using("lead-scoring"):
        n, n_nan, n_out = count_bad_scores([1.0, 3.2, 5.0, 0.7, 6.0, float("nan")])
        assert (n, n_nan, n_out) == (6, 1, 2)  # 0.7 and 6 outside [1, 5]
        assert output_guardrail(*count_bad_scores([6.0])).fired
        assert output_guardrail(*count_bad_scores([float("nan")])).fired
        ok = output_guardrail(*count_bad_scores([1.0, 2.5, 5.0]))
        assert not ok.fired and "[1, 5]" in ok.reason


def test_readmission_range_is_zero_one():
    with spec.using("readmission-30d"):
        assert count_bad_scores([0.7, 0.0, 1.0]) == (3, 0, 0)
        assert output_guardrail(*count_bad_scores([1.2])).fired
        assert output_guardrail(*count_bad_scores([0.7])).fired is False


def test_no_label_free_estimate_for_a_regression_model(tmp_path):
    settings = Settings(home=tmp_path / "home", serving={"admin_token": "x" * 40, "port": 1})
    with spec.using("lead-scoring"):
        est, why = label_free(None, None, None, settings, checks=1)
    assert est is None
    assert "calibrated classifiers only" in why


def test_ab_refuses_auc_for_a_regression_model():
    import pandas as pd

    from retrainer.errors import ConfigError
    from retrainer.rollout import ab

    with spec.using("lead-scoring"), pytest.raises(ConfigError, match="applies to a binary classifier"):
        ab.evaluate(pd.DataFrame({"variant": []}), "auc")


def test_score_shift_reports_ks_psi_and_n():
    from retrainer.rollout.statistics import score_shift

    rng = np.random.default_rng(1)
    same = score_shift(rng.uniform(1, 5, 4000), rng.uniform(1, 5, 4000))
    moved = score_shift(rng.uniform(2, 5, 4000), rng.uniform(1, 5, 4000))
    assert same["n_candidate"] == 4000 and same["n_production"] == 4000
    assert same["psi"] < 0.02 and same["ks"] < 0.05
    assert moved["psi"] > 0.2 and moved["ks"] > 0.2 and moved["ks_p"] < 1e-6
    assert score_shift([float("nan"), 2.0], [1.0, 2.0]) is None


def test_rows_needed_for_the_spearman_margin_matches_the_simulated_half_width():
    from scipy.stats import spearmanr

    from retrainer.rollout.live import spearman_rows_needed

    n = spearman_rows_needed(0.6, TOL)
    assert 9_000 < n < 9_600  # 3 + 2 * 1.96² * 0.64² * 1.18 / 0.02²
    assert spearman_rows_needed(0.6, 2 * TOL) < n / 3.5  # a quarter, up to the +3
    rng = np.random.default_rng(5)
    deltas = []
    for _ in range(60):  # simulated Δ of two independent arms of n rows: its 95% half-width ~ the margin
        rs = []
        for _ in range(2):
            latent = rng.normal(size=n)
            rs.append(spearmanr(latent, latent * 0.75 + rng.normal(size=n))[0])
        deltas.append(rs[0] - rs[1])
    assert 0.6 * TOL < 1.96 * np.std(deltas) < 1.4 * TOL


def test_power_statement_for_a_regression_model_names_rows_and_date(tmp_path):
    from datetime import datetime, timezone

    from retrainer.rollout import power_at_start
    from tests.unit.test_live_evidence import PLAN, world

    settings, backend = world(tmp_path, label_delay="2d")
    with spec.using("lead-scoring"):
        p = power_at_start(backend.predictions, backend.registry, settings, PLAN, "1.1.0",
                           datetime(2026, 6, 1, tzinfo=timezone.utc))
    assert p["needed_rows"] >= 200 and "Spearman" in p["text"] and "margin 0.02" in p["text"]
    assert p["decidable_before_max"] is False and "never (no traffic)" in p["text"]
