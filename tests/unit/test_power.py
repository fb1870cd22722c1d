"""Power said up front: the rows the paired non-inferiority rule needs, checked against a
simulation of the rule itself, and the day-0 statement of a plan."""
import math
from datetime import datetime, timedelta

import numpy as np
import pytest
from scipy.stats import norm

from retrainer.evidence import compare_paired, paired_delong
from retrainer.evidence.power import PowerStatement, power_statement, required_labels

pytestmark = pytest.mark.unit

MU = 2 * norm.ppf(0.78)  # shared-latent binormal model, production AUC 0.78 at unit model noise


def _draw(rng, n, sigma_c=1.0):
    y = (rng.random(n) < 0.15).astype(int)
    latent = MU * y + rng.normal(size=n)
    return y, latent + rng.normal(size=n), latent + sigma_c * rng.normal(size=n)


def test_required_labels_is_the_formula():
    v = 0.01 ** 2 * 2000
    z = norm.ppf(0.975) + norm.ppf(0.8)
    assert required_labels(0.01, 2000, 0.02) == math.ceil(v * z ** 2 / 0.02 ** 2)
    # half the margin: four times the rows; a better candidate needs fewer
    assert required_labels(0.01, 2000, 0.01) == pytest.approx(4 * required_labels(0.01, 2000, 0.02), rel=1e-3)
    assert required_labels(0.01, 2000, 0.02, true_delta=0.01) < required_labels(0.01, 2000, 0.02)
    assert required_labels(0.01, 2000, 0.02, power=0.9) > required_labels(0.01, 2000, 0.02)


@pytest.mark.parametrize("kw", [dict(se_ref=0.0), dict(n_ref=0), dict(margin=0.0), dict(alpha=0.6),
                                dict(power=1.0), dict(true_delta=-0.03)])
def test_required_labels_rejects_bad_input(kw):
    args = dict(se_ref=0.01, n_ref=1000, margin=0.02) | kw
    with pytest.raises(ValueError):
        required_labels(**args)


def test_power_at_the_computed_n_is_80_percent_by_simulation():
    rng = np.random.default_rng(0)
    n_ref = 20000
    y, sp, sc = _draw(rng, n_ref)  # true ΔAUC = 0
    ref = paired_delong(y, sp, sc)
    n = required_labels(ref.se, n_ref, 0.02)
    reps = 400
    promoted = sum(compare_paired(*_draw(rng, n), tolerance=0.02).verdict == "promote" for _ in range(reps))
    assert 0.73 <= promoted / reps <= 0.87, (n, promoted / reps)
    # and at a third of N the rule is clearly underpowered
    third = sum(compare_paired(*_draw(rng, n // 3), tolerance=0.02).verdict == "promote" for _ in range(200))
    assert third / 200 < 0.55


START = datetime(2026, 12, 1)


def test_statement_when_live_labels_cannot_arrive_in_time():
    st = power_statement(0.0125, 4100, 0.02, start=START, label_delay=timedelta(days=30),
                         max_duration=timedelta(hours=72), predictions_per_day=1000, shadow_coverage=0.8,
                         have_rows=4100)
    assert isinstance(st, PowerStatement)
    assert st.needed_rows == required_labels(0.0125, 4100, 0.02)
    assert st.rows_per_day == 800
    missing = st.needed_rows - 4100
    assert st.ready_at == START + timedelta(days=missing / 800) + timedelta(days=30)
    assert not st.decidable_before_max
    assert f"{st.needed_rows:,} matured labelled rows" in st.text and "4,100" in st.text
    assert "800 rows/day" in st.text and "72 h cannot decide" in st.text and "deferred verdict" in st.text
    assert st.to_dict()["max_duration"] == 72 * 3600


def test_statement_decidable_boundary():
    needed = required_labels(0.01, 2000, 0.02)
    kw = dict(start=START, label_delay=timedelta(hours=1), predictions_per_day=24 * 100, have_rows=needed - 100)
    # 100 missing rows at 100 rows/hour take 1 h, plus 1 h of label delay: ready at +2 h
    at = power_statement(0.01, 2000, 0.02, max_duration=timedelta(hours=2), **kw)
    before = power_statement(0.01, 2000, 0.02, max_duration=timedelta(hours=2) - timedelta(seconds=1), **kw)
    assert at.ready_at == START + timedelta(hours=2)
    assert at.decidable_before_max and not before.decidable_before_max
    assert "within the plan's maximum of 2 h" in at.text


def test_statement_when_enough_rows_exist_already_or_never():
    enough = power_statement(0.01, 2000, 0.02, start=START, label_delay=timedelta(days=30),
                             max_duration=timedelta(hours=72), predictions_per_day=0, have_rows=10**6)
    assert enough.decidable_before_max and enough.ready_at == START and "enough" in enough.text
    never = power_statement(0.01, 2000, 0.02, start=START, label_delay=timedelta(days=30),
                            max_duration=timedelta(hours=72), predictions_per_day=1000, shadow_coverage=0.0)
    assert never.ready_at is None and not never.decidable_before_max and "never" in never.text


def test_statement_counts_the_minimum_positives():
    # a tiny variance needs few rows, but the rule still wants 100 positives: 100 / 0.05 = 2,000 rows
    st = power_statement(0.001, 100, 0.02, start=START, label_delay=timedelta(0), max_duration=timedelta(hours=1),
                         predictions_per_day=100, prevalence=0.05)
    assert st.needed_rows == 2000


@pytest.mark.parametrize("kw", [dict(label_delay=timedelta(days=-1)), dict(max_duration=timedelta(0)),
                                dict(predictions_per_day=-1), dict(shadow_coverage=1.5), dict(prevalence=1.0)])
def test_statement_rejects_bad_settings(kw):
    args = dict(start=START, label_delay=timedelta(days=30), max_duration=timedelta(hours=72),
                predictions_per_day=1000) | kw
    with pytest.raises(ValueError):
        power_statement(0.01, 2000, 0.02, **args)
