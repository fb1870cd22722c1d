"""The gate's policies (`GateSettings.policy`) and the fairness floor, each at its boundary: just
passing and just failing, on constructed metrics and evidence."""
import math

import numpy as np
import pytest
from scipy.stats import norm

from retrainer.errors import ConfigError
from retrainer.evaluation import one_sided_p, promotion_gate
from retrainer.evidence import AUCDelta, compare_paired, decide
from retrainer.settings import GateSettings, load_settings

pytestmark = pytest.mark.unit


def _evidence(delta, se, n=12000, pos=1800, tolerance=0.02):
    z = 1.959963984540054
    d = AUCDelta("paired DeLong", delta, delta - z * se, delta + z * se, se, 0.95, 0.80 + delta, 0.80, n, pos, n, pos)
    return decide(d, tolerance, source="test month", paired=True)


def _rule(decision, name):
    return next(r for r in decision.rules if r["rule"] == name)


# ---- task12: automatic at a relative improvement of 5%, a human review below ----------------------

@pytest.mark.parametrize("cand,needs_approval", [(0.84, False), (0.8399, True)])
def test_task12_relative_improvement_boundary(cand, needs_approval):
    gate = GateSettings(policy="task12")
    d = promotion_gate({"auc": cand}, {"auc": 0.80}, gate, _evidence(cand - 0.80, 0.004))
    assert d.eligible is True and d.needs_approval is needs_approval and d.policy == "task12"
    rule = _rule(d, "relative-improvement")
    assert rule["passed"] is (not needs_approval) and rule["relative"] == pytest.approx(cand / 0.80 - 1, abs=1e-6)
    assert ("needs approval" in d.reason) is needs_approval
    assert d.to_dict()["needs_approval"] is needs_approval and d.to_dict()["evidence"]["delta"] == pytest.approx(
        cand - 0.80)


def test_task12_setting_moves_the_boundary_and_min_auc_still_rejects():
    gate = GateSettings(policy="task12", min_relative_improvement=0.10)
    assert promotion_gate({"auc": 0.77}, {"auc": 0.70}, gate).needs_approval is False  # +10.0%
    assert promotion_gate({"auc": 0.7699}, {"auc": 0.70}, gate).needs_approval is True
    low = promotion_gate({"auc": 0.69}, {"auc": 0.60}, gate)  # +15%, but below min_auc 0.70
    assert low.eligible is False and low.needs_approval is False and "below the minimum" in low.reason
    first = promotion_gate({"auc": 0.75}, None, gate)  # nothing to improve on: no review
    assert first.eligible and not first.needs_approval


# ---- protocol24: Δ > 0.01 and one-sided p < 0.05 --------------------------------------------------

@pytest.mark.parametrize("delta,eligible", [(0.0101, True), (0.0100, False)])
def test_protocol24_improvement_boundary(delta, eligible):
    d = promotion_gate({"auc": 0.80 + delta}, {"auc": 0.80}, GateSettings(policy="protocol24"),
                       _evidence(delta, 0.001))  # p tiny: only the size of Δ decides
    assert d.eligible is eligible and d.p_value < 1e-6
    assert ("not above 0.01" in d.reason) is (not eligible)


@pytest.mark.parametrize("z,eligible", [(1.6450, True), (1.6448, False)])
def test_protocol24_significance_boundary(z, eligible):
    delta = 0.02
    d = promotion_gate({"auc": 0.82}, {"auc": 0.80}, GateSettings(policy="protocol24"), _evidence(delta, delta / z))
    assert d.p_value == pytest.approx(norm.sf(z), abs=1e-6)  # one-sided, reported
    assert d.eligible is eligible and _rule(d, "significant-improvement")["p_value"] == pytest.approx(norm.sf(z))
    assert ("not below 0.05" in d.reason) is (not eligible)


def test_protocol24_on_paired_scores_and_too_few_labels():
    rng = np.random.default_rng(4)
    n = 4000
    y = (rng.random(n) < 0.15).astype(int)
    latent = rng.normal(size=n) + 1.1 * y
    sp = latent + rng.normal(scale=1.0, size=n)
    better = latent + rng.normal(scale=0.4, size=n)
    ev = compare_paired(y, sp, better, tolerance=0.02)
    d = promotion_gate({"auc": ev.auc_candidate}, {"auc": ev.auc_production}, GateSettings(policy="protocol24"), ev)
    assert ev.delta > 0.03 and d.eligible and d.p_value == pytest.approx(norm.sf(ev.delta / ev.se), rel=1e-4)
    same = compare_paired(y, sp, sp + 1e-9 * rng.normal(size=n), tolerance=0.02)
    assert not promotion_gate({"auc": 0.8}, {"auc": 0.8}, GateSettings(policy="protocol24"), same).eligible
    few = promotion_gate({"auc": 0.85}, {"auc": 0.80}, GateSettings(policy="protocol24"),
                         _evidence(0.05, 0.001, n=1000, pos=99))
    assert not few.eligible and "too few labels" in few.reason


def test_one_sided_p_value_is_the_normal_tail_of_delta_over_se():
    assert one_sided_p(_evidence(0.0, 0.01)) == pytest.approx(0.5)
    assert one_sided_p(_evidence(-0.02, 0.01)) == pytest.approx(norm.sf(-2.0))
    assert one_sided_p(None) is None


# ---- medimind: absolute floors ------------------------------------------------------------------

PASSING = {"auc": 0.80, "precision": 0.75, "recall": 0.70, "n": 10_000}


def test_medimind_floors_just_pass():
    d = promotion_gate(dict(PASSING), {"auc": 0.85}, GateSettings(policy="medimind"))
    assert d.eligible and not d.needs_approval
    assert {r["rule"] for r in d.rules} == {"min-auc", "floor-auc", "floor-precision", "floor-recall",
                                            "floor-samples"}


@pytest.mark.parametrize("key,value,rule", [("auc", 0.7999, "floor-auc"), ("precision", 0.7499, "floor-precision"),
                                            ("recall", 0.6999, "floor-recall"), ("n", 9_999, "floor-samples")])
def test_medimind_each_floor_just_fails(key, value, rule):
    d = promotion_gate({**PASSING, key: value}, None, GateSettings(policy="medimind"))
    assert not d.eligible
    assert [r["rule"] for r in d.rules if r["passed"] is False] == [rule]


def test_medimind_floors_are_settings():
    gate = GateSettings(policy="medimind", floors={"auc": 0.75, "precision": 0.5, "recall": 0.5, "min_samples": 100})
    assert promotion_gate({"auc": 0.75, "precision": 0.5, "recall": 0.5, "n": 100}, None, gate).eligible
    assert not promotion_gate({"auc": 0.75, "precision": 0.5, "recall": 0.5, "n": 99}, None, gate).eligible


# ---- the fairness floor, with any policy --------------------------------------------------------

def _with_slices(auc_f, pos_f=200, overall=0.80):
    return {"auc": overall, "slices": {"sex": {"F": auc_f, "M": 0.82}},
            "slice_counts": {"sex": {"F": {"n": 2000, "n_pos": pos_f, "n_neg": 1800},
                                     "M": {"n": 2000, "n_pos": 300, "n_neg": 1700}}}}


@pytest.mark.parametrize("auc_f,eligible", [(0.75, True), (0.7499, False)])
def test_fairness_floor_boundary(auc_f, eligible):
    d = promotion_gate(_with_slices(auc_f), None, GateSettings(max_slice_gap=0.05))
    assert d.eligible is eligible
    rule = _rule(d, "fairness")
    f = next(s for s in rule["slices"] if s["slice"] == "sex=F")
    assert f["judged"] and f["gap"] == pytest.approx(0.80 - auc_f) and f["passed"] is eligible
    assert ("sex=F AUC 0.7499" in d.reason) is (not eligible)


def test_fairness_reports_small_slices_without_judging_them():
    small = promotion_gate(_with_slices(0.55, pos_f=29), None, GateSettings(max_slice_gap=0.05))
    assert small.eligible
    rule = _rule(small, "fairness")
    f = next(s for s in rule["slices"] if s["slice"] == "sex=F")
    assert f["judged"] is False and "29 positives" in rule["detail"] and "not judged" in rule["detail"]
    assert not promotion_gate(_with_slices(0.55, pos_f=30), None, GateSettings(max_slice_gap=0.05)).eligible
    undefined = _with_slices(None)
    assert promotion_gate(undefined, None, GateSettings(max_slice_gap=0.05)).eligible


def test_fairness_is_off_by_default_and_combines_with_a_policy():
    assert not any(r["rule"] == "fairness" for r in promotion_gate(_with_slices(0.5), None, GateSettings()).rules)
    cand = {**_with_slices(0.70), "auc": 0.80}
    d = promotion_gate(cand, {"auc": 0.70}, GateSettings(policy="task12", max_slice_gap=0.05))
    # +14% would be automatic under task12, but the slice 0.10 below overall rejects it
    assert _rule(d, "relative-improvement")["passed"] and not d.eligible and not d.needs_approval


# ---- configuration: one clear line for a bad policy ---------------------------------------------

def test_policy_by_configuration_and_bad_values_are_one_line(tmp_path, monkeypatch):
    cfg = tmp_path / "r.yaml"
    cfg.write_text("gate:\n  policy: medimind\n  floors:\n    auc: 0.82\n  max_slice_gap: 0.04\n")
    monkeypatch.setenv("RETRAINER_CONFIG", str(cfg))
    s = load_settings()
    assert s.gate.policy == "medimind" and s.gate.floors.auc == 0.82 and s.gate.floors.recall == 0.70
    assert s.gate.max_slice_gap == 0.04
    for text, where in [("gate:\n  policy: task13\n", "gate.policy"),
                        ("gate:\n  floors:\n    f1: 0.5\n", "gate.floors.f1"),
                        ("gate:\n  min_relative_improvment: 0.1\n", "gate.min_relative_improvment")]:
        cfg.write_text(text)
        with pytest.raises(ConfigError, match=f"bad setting {where}") as exc:
            load_settings()
        assert "\n" not in str(exc.value)
    monkeypatch.setenv("RETRAINER_CONFIG", str(tmp_path / "none.yaml"))
    monkeypatch.delenv("RETRAINER_CONFIG")
    monkeypatch.setenv("RETRAINER_GATE__POLICY", "protocol24")
    assert load_settings().gate.policy == "protocol24"


def test_default_policy_is_the_non_inferiority_gate():
    g = GateSettings()
    assert (g.policy, g.max_auc_drop, g.min_auc, g.max_slice_gap) == ("non-inferiority", 0.02, 0.70, None)
    assert (g.min_relative_improvement, g.min_improvement, g.significance) == (0.05, 0.01, 0.05)
    assert math.isclose(g.floors.auc, 0.80) and g.floors.min_samples == 10_000


# ---- the operating-characteristics benchmark (small reps) ---------------------------------------

def test_gate_benchmark_simulates_the_wanted_aucs_and_the_paired_gate_holds_its_target():
    from benchmarks import oc_gate

    for auc in (0.73, 0.78, 0.80):  # the shared-latent model gives each model its AUC
        assert norm.cdf(oc_gate.MU / math.sqrt(2 * (1 + oc_gate.sigma_for(auc) ** 2))) == pytest.approx(auc)
    rows = oc_gate.run(reps=40, seed=1)
    assert len(rows) == len(oc_gate.SIZES) * len(oc_gate.DELTAS)
    for r in rows:
        assert r["auc_production"] == pytest.approx(0.78, abs=0.01)
        assert r["realised_delta"] == pytest.approx(r["true_delta"], abs=0.012)
    cell = {(r["test_rows"], r["true_delta"]): r for r in rows}
    assert cell[(5000, -0.05)]["p_eligible_new"] == 0 and cell[(5000, 0.02)]["p_eligible_new"] >= 0.9
    assert cell[(1000, -0.03)]["p_eligible_new"] <= cell[(1000, -0.03)]["p_eligible_old"]
    assert "| 1,000 | -0.03 |" in oc_gate.table(rows)
