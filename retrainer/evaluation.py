"""Evaluation of a candidate against production on the same held-out data, and the promotion gate.

Both models are scored on the same test month, so the gate compares them **paired** (paired
DeLong, or a bootstrap clustered on the patient when one repeats): `Comparison` keeps the two score
vectors and the labels just long enough for the gate, and the gate's decision keeps only the
evidence (Δ, interval, rows, positives, method, rule) - never the scores.

The gate's policy is a setting (`GateSettings.policy`): the readmission default is non-inferiority
on the interval; `task12`, `protocol24` and `medimind` are the rules those documents name, and a
fairness floor on the slices can be added to any of them. Every rule's result is kept.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from . import schema as S
from .errors import ConfigError
from .evidence import Evidence, compare_paired, delong_auc_variance
from .settings import GateSettings

# Comparisons at a boundary allow for the float error of a difference of rounded metrics
# (0.84 / 0.80 - 1 is 0.04999999999999993): a value within EPS of its bound is at the bound.
EPS = 1e-9


def _spec():
    from .spec import active  # noqa: PLC0415 - cycle: spec -> settings

    return active().spec


def is_classifier() -> bool:
    """Whether the active model is a binary classifier (AUC) rather than a regression or ranking
    model (Spearman)."""
    return _spec().task == "binary_classification"


def _auc(y: np.ndarray, p: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score  # noqa: PLC0415 - heavy: sklearn

    return float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else None


def classification_metrics(y: np.ndarray, p: np.ndarray, threshold: float = 0.5) -> dict[str, Any]:
    """Test metrics at `threshold`, with the AUC's sampling error: `auc_se` (DeLong) and the
    positives and negatives it was measured on (`n_pos`, `n_neg`)."""
    from sklearn.metrics import brier_score_loss, f1_score, precision_score, recall_score  # noqa: PLC0415 - heavy: sklearn

    y = np.asarray(y).astype(int)
    p = np.asarray(p, dtype=float)
    pred = (p >= threshold).astype(int)
    r = lambda v: None if v is None else round(float(v), 6)  # noqa: E731
    dv = delong_auc_variance(y, p)
    n_pos = int(y.sum())
    return {
        "auc": r(_auc(y, p)),
        "auc_se": r(math.sqrt(max(dv[1], 0.0))) if dv is not None else None,
        "precision": r(precision_score(y, pred, zero_division=0)),
        "recall": r(recall_score(y, pred, zero_division=0)),
        "f1": r(f1_score(y, pred, zero_division=0)),
        "brier": r(brier_score_loss(y, p)),
        "positive_rate": r(float(np.mean(y))),
        "predicted_positive_rate": r(float(np.mean(pred))),
        "threshold": threshold,
        "n": int(len(y)),
        "n_pos": n_pos,
        "n_neg": int(len(y)) - n_pos,
    }


def _slice_keys(df: pd.DataFrame) -> dict[str, pd.Series]:
    """The spec's slices (readmission: sex and age band) of `df`, those whose column it has."""
    c = S.contract()
    return {name: c.slice_values(df, name) for name, col in c.SLICES.items() if col in df.columns}


def slice_auc(df: pd.DataFrame, p: np.ndarray) -> dict[str, dict[str, float | None]]:
    y = df[S.LABEL].to_numpy()
    out: dict[str, dict[str, float | None]] = {}
    for name, key in _slice_keys(df).items():
        out[name] = {}
        for value in sorted(key.dropna().unique()):
            m = (key == value).to_numpy()
            auc = _auc(y[m], p[m])
            out[name][str(value)] = None if auc is None else round(auc, 6)
    return out


def slice_counts(df: pd.DataFrame) -> dict[str, dict[str, dict[str, int]]]:
    """Rows, positives and negatives of each slice of `slice_auc` (the fairness floor judges a
    slice only when it has enough of both)."""
    y = df[S.LABEL].to_numpy().astype(int)
    out: dict[str, dict[str, dict[str, int]]] = {}
    for name, key in _slice_keys(df).items():
        out[name] = {}
        for value in sorted(key.dropna().unique()):
            m = (key == value).to_numpy()
            pos = int(y[m].sum())
            out[name][str(value)] = {"n": int(m.sum()), "n_pos": pos, "n_neg": int(m.sum()) - pos}
    return out


def latency(model, df: pd.DataFrame, single_rows: int = 50) -> dict[str, float]:
    """Batch per-row latency and single-row (one request, one row) latency in milliseconds."""
    t0 = time.perf_counter()
    model.predict(df)
    batch_ms = (time.perf_counter() - t0) * 1000 / max(len(df), 1)
    times = []
    for i in range(min(single_rows, len(df))):
        t0 = time.perf_counter()
        model.predict(df.iloc[i:i + 1])
        times.append((time.perf_counter() - t0) * 1000)
    return {"batch_ms_per_row": round(batch_ms, 5),
            "single_row_p50_ms": round(float(np.median(times)), 3) if times else None,
            "single_row_p95_ms": round(float(np.percentile(times, 95)), 3) if times else None}


def slice_spearman(df: pd.DataFrame, p: np.ndarray) -> dict[str, dict[str, float | None]]:
    """Spearman per slice value (a regression model's slices)."""
    from .evidence.correlation import spearman  # noqa: PLC0415 - heavy: scipy

    y = df[S.LABEL].to_numpy(dtype=float)
    out: dict[str, dict[str, float | None]] = {}
    for name, key in _slice_keys(df).items():
        out[name] = {}
        for value in sorted(key.dropna().unique()):
            m = (key == value).to_numpy()
            r = spearman(y[m], p[m]) if m.sum() >= 4 else None
            out[name][str(value)] = None if r is None else round(r, 6)
    return out


def evaluate(model, test: pd.DataFrame, scores: np.ndarray | None = None) -> dict[str, Any]:
    """The metrics a version records, by the active model's task (classification: AUC and the
    rest at 0.5; regression and ranking: Spearman, MAE, RMSE); `scores` are the model's scores of
    `test` when the caller already has them (they are not scored twice)."""
    p = model.predict(test) if scores is None else np.asarray(scores, dtype=float)
    if not is_classifier():
        from .evidence.correlation import regression_metrics  # noqa: PLC0415 - heavy: scipy

        m = regression_metrics(test[S.LABEL].to_numpy(dtype=float), p)
        m["slices"] = slice_spearman(test, p)
        m["latency"] = latency(model, test)
        return m
    y = test[S.LABEL].to_numpy()
    m = classification_metrics(y, p)
    m["slices"] = slice_auc(test, p)
    m["slice_counts"] = slice_counts(test)
    m["latency"] = latency(model, test)
    return m


def patient_column(test: pd.DataFrame) -> str | None:
    """The entity column of `test` (the spec's `columns.entity`: a patient, an account), if it has
    one: a repeated entity makes the paired comparison a bootstrap clustered on it."""
    entity = S.ENTITY
    return entity if entity and entity in test.columns else None


def _test_unit() -> str:
    """How the spec's split names its test period: "month" (readmission), "days", "weeks"."""
    unit = _spec().split.unit
    return "month" if unit == "months" else unit


def period_of(test: pd.DataFrame) -> str:
    """`YYYY-MM-DD..YYYY-MM-DD` of the test rows' timestamps ("" without them)."""
    if S.TIMESTAMP not in test.columns or not len(test):
        return ""
    ts = pd.to_datetime(test[S.TIMESTAMP])
    return f"{ts.min():%Y-%m-%d}..{ts.max():%Y-%m-%d}"


@dataclass(frozen=True)
class Comparison:
    """The candidate and the current production model scored on the same held-out test set
    (`evaluate` metrics each; production's also carry its `version`, and it is None when there is
    no production yet), with the paired `evidence` of AUC(candidate) - AUC(production).

    The labels, both score vectors and the patient ids are kept (never stored, never in
    `to_dict`) so that the gate can re-make the paired comparison under its own settings.
    `to_dict` is what a version's record keeps as its metrics."""

    candidate: dict[str, Any]
    production: dict[str, Any] | None
    evidence: Evidence | None = None
    source: str = "registration test month"
    y: np.ndarray | None = field(default=None, repr=False, compare=False)
    s_candidate: np.ndarray | None = field(default=None, repr=False, compare=False)
    s_production: np.ndarray | None = field(default=None, repr=False, compare=False)
    clusters: np.ndarray | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {"candidate": self.candidate, "production": self.production}

    def paired(self, gate: GateSettings) -> Evidence | None:
        """The paired comparison under `gate`'s tolerance (`max_auc_drop`; a regression model's
        spec's `metrics.gate.tolerance`), level and minimum counts: the kept `evidence` when it was
        made under them, else re-made from the scores. None without production."""
        if self.production is None:
            return None
        e = self.evidence
        tolerance = tolerance_of(gate)
        made_here = e is not None and e.tolerance == tolerance and e.level == gate.level
        if made_here or self.y is None or self.s_candidate is None or self.s_production is None:
            return e
        if not is_classifier():
            from .evidence.correlation import compare_spearman_paired  # noqa: PLC0415 - heavy: scipy

            return compare_spearman_paired(self.y, self.s_production, self.s_candidate, tolerance=tolerance,
                                           level=gate.level, source=self.source, clusters=self.clusters,
                                           min_rows=min_rows_of(gate))
        return compare_paired(self.y, self.s_production, self.s_candidate, tolerance=gate.max_auc_drop,
                              level=gate.level, source=self.source, clusters=self.clusters,
                              min_positives=gate.min_positives, min_negatives=gate.min_negatives)

    def for_gate(self, gate: GateSettings) -> "Comparison":
        """This comparison with its evidence made under `gate`."""
        return replace(self, evidence=self.paired(gate))


def compare_on_test(candidate: dict[str, Any], production: dict[str, Any] | None, test: pd.DataFrame,
                    s_candidate: np.ndarray, s_production: np.ndarray | None,
                    gate: GateSettings | None = None) -> Comparison:
    """The `Comparison` of two models' scores of the same `test` rows, with its paired evidence."""
    pid = patient_column(test)
    period = period_of(test)
    cmp = Comparison(candidate=candidate, production=production,
                     source=f"registration test {_test_unit()} {period}".strip(),
                     y=test[S.LABEL].to_numpy().astype(int if is_classifier() else float),
                     s_candidate=np.asarray(s_candidate, dtype=float),
                     s_production=None if s_production is None else np.asarray(s_production, dtype=float),
                     clusters=test[pid].to_numpy(object) if pid else None)
    return cmp.for_gate(gate or GateSettings())


# ---- the gate -------------------------------------------------------------------------------

def primary_metric() -> str:
    return _spec().metrics.primary


def tolerance_of(gate: GateSettings) -> float:
    """The non-inferiority margin: `gate.max_auc_drop` for a classifier, the spec's
    `metrics.gate.tolerance` for a regression or ranking model."""
    return gate.max_auc_drop if is_classifier() else _spec().metrics.gate.tolerance


def minimum_of(gate: GateSettings) -> float:
    """The candidate's floor on the primary metric: `gate.min_auc` for a classifier, the spec's
    `metrics.gate.min` (default 0) otherwise."""
    if is_classifier():
        return gate.min_auc
    m = _spec().metrics.gate.min
    return 0.0 if m is None else m


def min_rows_of(gate: GateSettings) -> int:
    """Labelled test rows a regression comparison needs before it decides: min_positives +
    min_negatives (200 by default), the fewest rows the classification gate can decide on."""
    return gate.min_positives + gate.min_negatives


@dataclass
class GateDecision:
    """The gate's decision: `eligible` (registered as a candidate, else rejected), whether a person
    must approve it before a canary (`needs_approval`), the `policy` that decided, every rule's
    result (`rules`: rule, passed (None: not judged), detail), the paired `evidence`
    (`Evidence.to_dict()`, None without production) and its one-sided `p_value` of Δ > 0."""

    eligible: bool
    reason: str
    candidate_auc: float | None  # the primary metric's values (AUC, Spearman, ...): see `metric`
    production_auc: float | None
    min_auc: float
    max_auc_drop: float
    policy: str = "non-inferiority"
    metric: str = "auc"
    needs_approval: bool = False
    evidence: dict[str, Any] | None = None
    p_value: float | None = None
    rules: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def one_sided_p(evidence: Evidence | None) -> float | None:
    """P-value of the one-sided test of Δ > 0 (H0: Δ <= 0) from the evidence's Δ and standard
    error (normal approximation, as DeLong)."""
    if evidence is None or evidence.delta is None or evidence.se is None:
        return None
    from scipy.stats import norm  # noqa: PLC0415 - heavy: scipy

    if evidence.se <= 0:
        return 0.0 if evidence.delta > 0 else 1.0
    return float(norm.sf(evidence.delta / evidence.se))


def _rule(name: str, passed: bool | None, detail: str, **extra) -> dict[str, Any]:
    return {"rule": name, "passed": passed, "detail": detail, **extra}


def _enough(e: Evidence, gate: GateSettings) -> str | None:
    """Why `e` has too few labels for the gate to judge on it (None: enough)."""
    if e.metric != "auc":
        need = min_rows_of(gate)
        return None if e.candidate.n >= need else f"too few labelled test rows ({e.candidate.n}; need {need})"
    c = e.candidate
    if c.positives < gate.min_positives or c.negatives < gate.min_negatives:
        return (f"too few labels on the test set ({c.positives} positives, {c.negatives} negatives; need "
                f"{gate.min_positives} and {gate.min_negatives})")
    return None


def _interval(e: Evidence) -> str:
    if e.metric != "auc":
        return (f"paired ΔSpearman {e.delta:+.4f}, {e.level:.0%} CI [{e.low:+.4f}, {e.high:+.4f}] on "
                f"{e.candidate.n:,} rows by {e.method}")
    return (f"paired ΔAUC {e.delta:+.4f}, {e.level:.0%} CI [{e.low:+.4f}, {e.high:+.4f}] on "
            f"{e.candidate.n:,} rows ({e.candidate.positives:,} positives) by {e.method}")


def _non_inferiority(e: Evidence | None, has_production: bool, gate: GateSettings) -> dict[str, Any]:
    if not has_production:
        return _rule("non-inferiority", True, "no production model to compare with")
    if e is None or e.delta is None:
        return _rule("non-inferiority", False, "no paired comparison with production on the test set")
    short = _enough(e, gate)
    if short:
        return _rule("non-inferiority", False, short)
    tol = tolerance_of(gate)
    ok = e.low > -tol
    return _rule("non-inferiority", ok, f"{_interval(e)}: lower bound {'>' if ok else '<='} "
                                         f"-{tol:g}" + ("" if ok else " (not shown non-inferior)"))


def _relative_improvement(c: float | None, p: float | None, has_production: bool,
                          gate: GateSettings) -> dict[str, Any]:
    if not has_production:
        return _rule("relative-improvement", True, "no production model to compare with", on_fail="approval")
    if c is None or p is None or p <= 0:
        return _rule("relative-improvement", False, "AUCs undefined on the test set", on_fail="approval")
    rel = (c - p) / p
    ok = rel >= gate.min_relative_improvement - EPS
    return _rule("relative-improvement", ok,
                 f"AUC {c:.4f} vs production {p:.4f}: relative change {rel:+.2%} "
                 f"{'>=' if ok else '<'} {gate.min_relative_improvement:.0%}"
                 + ("" if ok else ": needs a human review"), relative=round(rel, 6), on_fail="approval")


def _significant_improvement(e: Evidence | None, p_value: float | None, has_production: bool,
                             gate: GateSettings) -> dict[str, Any]:
    if not has_production:
        return _rule("significant-improvement", True, "no production model to compare with")
    if e is None or e.delta is None or p_value is None:
        return _rule("significant-improvement", False, "no paired comparison with production on the test set")
    short = _enough(e, gate)
    if short:
        return _rule("significant-improvement", False, short)
    big = e.delta > gate.min_improvement + EPS
    sig = p_value < gate.significance
    why = []
    if not big:
        why.append(f"improvement {e.delta:+.4f} not above {gate.min_improvement:g}")
    if not sig:
        why.append(f"p = {p_value:.4f} not below {gate.significance:g}")
    return _rule("significant-improvement", big and sig,
                 f"{_interval(e)}; one-sided p(Δ > 0) = {p_value:.4g}: "
                 + ("; ".join(why) if why else f"Δ > {gate.min_improvement:g} and p < {gate.significance:g}"),
                 p_value=p_value)


def _floors(candidate: dict[str, Any], gate: GateSettings) -> list[dict[str, Any]]:
    f = gate.floors
    out = []
    for key, floor in (("auc", f.auc), ("precision", f.precision), ("recall", f.recall)):
        v = candidate.get(key)
        ok = v is not None and v >= floor - EPS
        shown = "undefined" if v is None else f"{v:.4f}"
        out.append(_rule(f"floor-{key}", ok, f"{key} {shown} {'>=' if ok else '<'} {floor:g}"))
    n = int(candidate.get("n") or 0)
    ok = n >= f.min_samples
    out.append(_rule("floor-samples", ok, f"{n:,} test samples {'>=' if ok else '<'} {f.min_samples:,}"))
    return out


def _fairness(candidate: dict[str, Any], gate: GateSettings) -> dict[str, Any]:
    """No judged slice more than `max_slice_gap` below the overall AUC."""
    gap_max = gate.max_slice_gap
    overall = candidate.get("auc")
    counts = candidate.get("slice_counts") or {}
    slices, failed, unjudged = [], [], []
    for name, values in (candidate.get("slices") or {}).items():
        for value, auc in values.items():
            label = f"{name}={value}"
            cnt = (counts.get(name) or {}).get(value)
            entry: dict[str, Any] = {"slice": label, "auc": auc, **(cnt or {})}
            if auc is None or overall is None:
                entry.update(judged=False, why="AUC undefined (one class)")
            elif cnt is not None and min(cnt.get("n_pos", 0), cnt.get("n_neg", 0)) < gate.slice_min_count:
                entry.update(judged=False, why=f"{cnt.get('n_pos', 0)} positives, {cnt.get('n_neg', 0)} negatives "
                                               f"(< {gate.slice_min_count})")
            else:
                gap = overall - auc
                entry.update(judged=True, gap=round(gap, 6), passed=gap <= gap_max + EPS)
                if not entry["passed"]:
                    failed.append(f"{label} AUC {auc:.4f} is {gap:.4f} below overall {overall:.4f}")
            if not entry["judged"]:
                unjudged.append(f"{label}: {entry['why']}")
            slices.append(entry)
    judged = [s for s in slices if s["judged"]]
    if failed:
        detail = "; ".join(failed) + f" (max gap {gap_max:g})"
    else:
        detail = f"no slice more than {gap_max:g} below the overall AUC ({len(judged)} judged)"
    if unjudged:
        detail += "; not judged: " + "; ".join(unjudged)
    return _rule("fairness", not failed, detail, slices=slices)


def promotion_gate(candidate: dict[str, Any], production: dict[str, Any] | None, gate: GateSettings,
                   evidence: Evidence | None = None) -> GateDecision:
    """Decide a candidate's registration under `gate.policy` (see `GateSettings`).

    `candidate`/`production` are the `evaluate` metrics of both models on the same test set
    (production None: there is none yet, the candidate is judged on its own); `evidence` is their
    paired comparison (`Comparison.paired`). Every policy needs AUC >= `min_auc`; a rule marked
    `on_fail: approval` (task12's improvement) does not reject, it asks for a human review."""
    metric = primary_metric()
    name = "AUC" if metric == "auc" else metric.capitalize()
    floor = minimum_of(gate)
    c = candidate.get(metric)
    p = production.get(metric) if production else None
    has_prod = production is not None
    p_value = one_sided_p(evidence) if has_prod else None
    if metric != "auc" and gate.policy != "non-inferiority":
        raise ConfigError(f"gate.policy {gate.policy!r} judges AUC; a {_spec().task} model is gated by "
                          "non-inferiority on its primary metric (set gate.policy: non-inferiority)")
    rules: list[dict[str, Any]] = []
    if c is None:
        why = "one class" if metric == "auc" else "too few rows or constant scores"
        rules.append(_rule(f"min-{metric}", False, f"candidate {name} undefined on the test set ({why})"))
    else:
        ok = c >= floor - EPS
        rules.append(_rule(f"min-{metric}", ok, f"{name} {c:.4f} {'>=' if ok else 'below the minimum'} {floor:.2f}"))
    if gate.policy == "non-inferiority":
        rules.append(_non_inferiority(evidence, has_prod, gate))
    elif gate.policy == "task12":
        rules.append(_relative_improvement(c, p, has_prod, gate))
    elif gate.policy == "protocol24":
        rules.append(_significant_improvement(evidence, p_value, has_prod, gate))
    elif gate.policy == "medimind":
        rules.extend(_floors(candidate, gate))
    else:  # GateSettings refuses any other name; a hand-built one gets one clear line
        raise ValueError(f"unknown gate policy {gate.policy!r}")
    if gate.max_slice_gap is not None:
        rules.append(_fairness(candidate, gate))

    hard_failed = [r for r in rules if r["passed"] is False and r.get("on_fail") != "approval"]
    soft_failed = [r for r in rules if r["passed"] is False and r.get("on_fail") == "approval"]
    eligible = not hard_failed
    needs_approval = eligible and bool(soft_failed)
    if not eligible:
        reason = "; ".join(r["detail"] for r in hard_failed)
    elif needs_approval:
        reason = "needs approval: " + "; ".join(r["detail"] for r in soft_failed)
    else:
        vs = f"; production {p:.4f} on the same test set" if p is not None else ""
        main = [r["detail"] for r in rules[1:] if r["passed"] and r["rule"] != "fairness"]
        reason = (f"{name} {c:.4f} passes the {gate.policy} gate (minimum {floor:.2f}){vs}"
                  + (f"; {'; '.join(main)}" if main and has_prod else ""))
    return GateDecision(eligible, reason, c, p, floor, tolerance_of(gate), policy=gate.policy,
                        needs_approval=needs_approval, evidence=evidence.to_dict() if evidence and has_prod else None,
                        p_value=p_value, rules=rules, metric=metric)


def gate_comparison(comparison: Comparison, gate: GateSettings) -> GateDecision:
    """The gate on a `Comparison` (its paired evidence made under `gate`)."""
    return promotion_gate(comparison.candidate, comparison.production, gate, comparison.paired(gate))


def comparison_table(candidate: dict[str, Any], production: dict[str, Any] | None,
                     cand_version: str, prod_version: str | None) -> list[dict[str, Any]]:
    """Rows for a champion/challenger table artifact."""
    rows = []
    keys = (["auc", "precision", "recall", "f1", "brier", "positive_rate", "predicted_positive_rate"]
            if is_classifier() else ["spearman", "mae", "rmse", "mean_label", "mean_prediction"])
    metric = primary_metric()
    for k in keys:
        c = candidate.get(k)
        p = production.get(k) if production else None
        rows.append({"metric": k, f"candidate {cand_version}": c,
                     f"production {prod_version or '-'}": p,
                     "difference": None if c is None or p is None else round(c - p, 6)})
    for sl, vals in candidate.get("slices", {}).items():
        for v, c in vals.items():
            p = production.get("slices", {}).get(sl, {}).get(v) if production else None
            rows.append({"metric": f"{metric}[{sl}={v}]", f"candidate {cand_version}": c,
                         f"production {prod_version or '-'}": p,
                         "difference": None if c is None or p is None else round(c - p, 6)})
    return rows
