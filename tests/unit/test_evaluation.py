"""Test metrics with their sampling error, and the paired registration gate: both models on the same
test set, eligible iff AUC >= min_auc and lower bound(ΔAUC) > -max_auc_drop, its evidence kept in
the version's lineage and card (never the scores)."""
import json
import math

import numpy as np
import pandas as pd
import pytest

from retrainer import lifecycle
from retrainer import schema as S
from retrainer.evaluation import (
    Comparison,
    classification_metrics,
    compare_on_test,
    gate_comparison,
    promotion_gate,
    slice_counts,
)
from retrainer.evidence import AUCDelta, Counts, Evidence, decide, delong_auc_variance
from retrainer.settings import GateSettings, ModelSettings, Settings
from tests.helpers import make_record

pytestmark = pytest.mark.unit


def _scores(n=3000, prevalence=0.15, seed=0, noise_p=0.6, noise_c=0.6, shift_c=0.0):
    """Binormal scores on a shared latent: both models see the same patients and outcomes."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < prevalence).astype(int)
    latent = rng.normal(size=n) + 1.1 * y
    sp = latent + rng.normal(scale=noise_p, size=n)
    sc = latent + rng.normal(scale=noise_c, size=n) + shift_c
    return y, 1 / (1 + np.exp(-sp)), 1 / (1 + np.exp(-sc))  # probabilities, as a model's scores


def _evidence(low, high, n=3000, pos=450, tolerance=0.02):
    mid = (low + high) / 2
    d = AUCDelta("paired DeLong", mid, low, high, (high - low) / 3.92, 0.95, 0.78 + mid, 0.78, n, pos, n, pos)
    return decide(d, tolerance, source="test month", paired=True)


def _longest_list(obj) -> int:
    if isinstance(obj, dict):
        return max((_longest_list(v) for v in obj.values()), default=0)
    if isinstance(obj, (list, tuple)):
        return max([len(obj), *(_longest_list(v) for v in obj)])
    return 0


# ---- metrics with their sampling error ----------------------------------------------------------

def test_metrics_carry_the_delong_standard_error_and_the_class_counts():
    y, _, s = _scores(n=2000)
    m = classification_metrics(y, s)
    auc, var = delong_auc_variance(y, s)
    assert m["auc_se"] == pytest.approx(math.sqrt(var), abs=1e-6) and m["auc"] == pytest.approx(auc, abs=1e-6)
    assert m["n_pos"] == int(y.sum()) and m["n_neg"] == len(y) - int(y.sum()) and m["n"] == len(y)
    # four times the rows: about half the standard error
    y4, _, s4 = _scores(n=8000, seed=1)
    assert classification_metrics(y4, s4)["auc_se"] == pytest.approx(m["auc_se"] / 2, rel=0.15)


def test_one_class_has_no_auc_and_no_standard_error():
    m = classification_metrics(np.zeros(50, dtype=int), np.linspace(0, 1, 50))
    assert m["auc"] is None and m["auc_se"] is None and m["n_pos"] == 0 and m["n_neg"] == 50


def test_slice_counts_partition_the_test_rows():
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"sex": rng.choice(["F", "M"], 500), "age": rng.integers(18, 100, 500),
                       S.LABEL: (rng.random(500) < 0.2).astype(int)})
    c = slice_counts(df)
    for name in ("sex", "age_band"):
        assert sum(v["n"] for v in c[name].values()) == 500
        assert sum(v["n_pos"] for v in c[name].values()) == int(df[S.LABEL].sum())
    assert c["sex"]["F"]["n_pos"] == int(df.loc[df.sex == "F", S.LABEL].sum())


# ---- the default gate: min_auc and paired non-inferiority ---------------------------------------

@pytest.mark.parametrize("auc,eligible", [(0.70, True), (0.6999, False)])
def test_min_auc_boundary_without_production(auc, eligible):
    d = promotion_gate({"auc": auc}, None, GateSettings())
    assert d.eligible is eligible and d.evidence is None and not d.needs_approval
    assert ("passes" in d.reason) if eligible else ("below the minimum" in d.reason)


@pytest.mark.parametrize("low,eligible", [(-0.0199, True), (-0.0201, False), (-0.02, False)])
def test_non_inferiority_boundary_on_the_lower_bound(low, eligible):
    # the point estimate is the same in all three cases: only the interval's lower bound decides
    ev = _evidence(low, low + 0.03)
    d = promotion_gate({"auc": 0.79}, {"auc": 0.78}, GateSettings(), ev)
    assert d.eligible is eligible
    assert d.evidence["low"] == pytest.approx(low) and d.evidence["n_candidate"] == 3000
    rule = next(r for r in d.rules if r["rule"] == "non-inferiority")
    assert rule["passed"] is eligible


def test_the_old_point_rule_is_gone():
    # candidate 0.001 below production passed the old point rule; with a wide interval it does not
    d = promotion_gate({"auc": 0.779}, {"auc": 0.78}, GateSettings(), _evidence(-0.04, 0.038))
    assert not d.eligible and "lower bound" in d.reason
    # 0.03 below production failed the old rule; a (hypothetical) tight interval above -0.02 passes
    assert promotion_gate({"auc": 0.75}, {"auc": 0.78}, GateSettings(max_auc_drop=0.05),
                          _evidence(-0.04, -0.02, tolerance=0.05)).eligible


def test_too_few_positives_is_not_evidence():
    ev = _evidence(-0.005, 0.01, n=3000, pos=99)
    d = promotion_gate({"auc": 0.79}, {"auc": 0.78}, GateSettings(), ev)
    assert not d.eligible and "too few labels" in d.reason and "99 positives" in d.reason
    ev = _evidence(-0.005, 0.01, n=3000, pos=100)
    assert promotion_gate({"auc": 0.79}, {"auc": 0.78}, GateSettings(), ev).eligible


def test_production_without_a_paired_comparison_is_not_eligible():
    d = promotion_gate({"auc": 0.90}, {"auc": 0.78}, GateSettings())
    assert not d.eligible and "no paired comparison" in d.reason


def test_paired_gate_on_scores_passes_an_equal_model_and_rejects_a_worse_one():
    y, sp, sc = _scores(n=3000, noise_p=0.3, noise_c=0.3)
    frame = pd.DataFrame({S.LABEL: y, S.TIMESTAMP: pd.date_range("2024-06-01", periods=3000, freq="10min")})
    equal = compare_on_test({"auc": 0.8}, {"auc": 0.8}, frame, sc, sp)
    assert equal.evidence.method == "paired DeLong" and "2024-06-01..2024-06-21" in equal.evidence.source
    assert gate_comparison(equal, GateSettings()).eligible
    _, _, worse_scores = _scores(n=3000, noise_p=0.3, noise_c=1.6)
    worse = compare_on_test({"auc": 0.75}, {"auc": 0.8}, frame, worse_scores, sp)
    d = gate_comparison(worse, GateSettings())
    assert worse.evidence.delta < -0.05 and not d.eligible and d.evidence["high"] < 0


def test_comparison_keeps_scores_out_of_its_dict_and_remakes_evidence_under_other_settings():
    y, sp, sc = _scores(n=2000)
    frame = pd.DataFrame({S.LABEL: y})
    cmp = compare_on_test({"auc": 0.8}, {"auc": 0.8, "version": "1.0.0"}, frame, sc, sp)
    assert set(cmp.to_dict()) == {"candidate", "production"}
    assert cmp.evidence.tolerance == 0.02
    other = cmp.paired(GateSettings(max_auc_drop=0.05, level=0.9))
    assert other.tolerance == 0.05 and other.level == 0.9 and other.delta == pytest.approx(cmp.evidence.delta)
    assert (other.high - other.low) < (cmp.evidence.high - cmp.evidence.low)
    assert Comparison({"auc": 0.8}, None).paired(GateSettings()) is None


def test_a_repeated_patient_makes_the_comparison_a_clustered_bootstrap():
    y, sp, sc = _scores(n=1200)
    frame = pd.DataFrame({S.LABEL: y, "patient_id": [f"P{i // 2}" for i in range(1200)]})
    cmp = compare_on_test({"auc": 0.8}, {"auc": 0.8}, frame, sc, sp)
    assert cmp.evidence.method == "clustered bootstrap (paired)"
    frame["patient_id"] = [f"P{i}" for i in range(1200)]
    assert compare_on_test({"auc": 0.8}, {"auc": 0.8}, frame, sc, sp).evidence.method == "paired DeLong"


# ---- lineage: the evidence in the record and the card, never the scores -------------------------

def test_registration_stores_the_paired_evidence_and_not_the_scores(tmp_path, months):
    from retrainer.dataio import load_batch, time_split
    from retrainer.registry import LocalRegistry
    from retrainer.training import train

    frame = load_batch(months)
    split = time_split(frame, Settings().split)
    reg = LocalRegistry(tmp_path / "registry")
    records = []
    for i, lr in enumerate((0.06, 0.1)):
        settings = Settings(model=ModelSettings(max_iter=30, learning_rate=lr))
        model_dir = tmp_path / f"m{i}"
        train(split.train, split.validation, model_dir, settings.model.model_dump())
        cmp = lifecycle.evaluate_against_production(reg, model_dir, split.test, settings.gate)
        records.append(lifecycle.register_candidate(
            reg, model_dir, frame=frame, files=[], split=split, metrics=cmp, validation={"success": True},
            trigger="manual", settings=settings, actor="t", context=None))
    first, second = records
    assert first.status == "production" and lifecycle.registration_evidence(first) is None
    assert first.metrics["candidate"]["auc_se"] > 0 and first.gate["policy"] == "non-inferiority"
    ev = lifecycle.registration_evidence(reg.get(second.version))
    assert isinstance(ev, Evidence) and ev.method == "paired DeLong"
    assert ev.candidate == Counts(len(split.test), int(split.test[S.LABEL].sum()))
    assert ev.auc_candidate == pytest.approx(second.metrics["candidate"]["auc"], abs=1e-6)
    assert ev.auc_production == pytest.approx(second.metrics["production"]["auc"], abs=1e-6)
    assert second.gate["eligible"] is (ev.low > -0.02) and second.status == ("candidate" if ev.low > -0.02
                                                                            else "rejected")
    stored = reg.get(second.version)  # no score vector anywhere in the lineage: nothing as long as the test set
    assert _longest_list([stored.gate, stored.metrics]) < 100
    json.dumps(stored.gate)  # plain JSON
    card = lifecycle.version_card(second)
    assert "gate evidence: registration test month" in card and "paired DeLong" in card and "CI [" in card


def test_versions_registered_before_the_paired_gate_have_no_evidence():
    old = make_record("1.2.0", gate={"eligible": True, "reason": "AUC 0.79 passes the gate"})
    assert lifecycle.registration_evidence(old) is None
    card = lifecycle.version_card(old)
    assert "gate: AUC 0.79 passes the gate" in card and "gate evidence" not in card
