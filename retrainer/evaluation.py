"""Evaluation of a candidate against production on the same held-out data, and the promotion gate."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from . import schema as S
from .settings import GateSettings


def _auc(y: np.ndarray, p: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score  # noqa: PLC0415 - heavy: sklearn

    return float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else None


def classification_metrics(y: np.ndarray, p: np.ndarray, threshold: float = 0.5) -> dict[str, Any]:
    from sklearn.metrics import brier_score_loss, f1_score, precision_score, recall_score  # noqa: PLC0415 - heavy: sklearn

    pred = (p >= threshold).astype(int)
    r = lambda v: None if v is None else round(float(v), 6)  # noqa: E731
    return {
        "auc": r(_auc(y, p)),
        "precision": r(precision_score(y, pred, zero_division=0)),
        "recall": r(recall_score(y, pred, zero_division=0)),
        "f1": r(f1_score(y, pred, zero_division=0)),
        "brier": r(brier_score_loss(y, p)),
        "positive_rate": r(float(np.mean(y))),
        "predicted_positive_rate": r(float(np.mean(pred))),
        "threshold": threshold,
        "n": int(len(y)),
    }


def slice_auc(df: pd.DataFrame, p: np.ndarray) -> dict[str, dict[str, float | None]]:
    y = df[S.LABEL].to_numpy()
    out: dict[str, dict[str, float | None]] = {}
    keys = {"sex": df["sex"].astype("string"), "age_band": S.age_band(df["age"])}
    for name, key in keys.items():
        out[name] = {}
        for value in sorted(key.dropna().unique()):
            m = (key == value).to_numpy()
            auc = _auc(y[m], p[m])
            out[name][str(value)] = None if auc is None else round(auc, 6)
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


def evaluate(model, test: pd.DataFrame) -> dict[str, Any]:
    p = model.predict(test)
    y = test[S.LABEL].to_numpy()
    m = classification_metrics(y, p)
    m["slices"] = slice_auc(test, p)
    m["latency"] = latency(model, test)
    return m


@dataclass(frozen=True)
class Comparison:
    """The candidate and the current production model scored on the same held-out test set
    (`evaluate` metrics each; production's also carry its `version`, and it is None when there is
    no production yet). `to_dict` is what a version's record keeps as its metrics."""

    candidate: dict[str, Any]
    production: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        return {"candidate": self.candidate, "production": self.production}


@dataclass
class GateDecision:
    eligible: bool
    reason: str
    candidate_auc: float | None
    production_auc: float | None
    min_auc: float
    max_auc_drop: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def promotion_gate(candidate: dict[str, Any], production: dict[str, Any] | None,
                   gate: GateSettings) -> GateDecision:
    """Eligible for canary when AUC >= min_auc and not more than max_auc_drop below production
    (both scored on the same test set)."""
    c = candidate.get("auc")
    p = production.get("auc") if production else None
    base = dict(candidate_auc=c, production_auc=p, min_auc=gate.min_auc, max_auc_drop=gate.max_auc_drop)
    if c is None:
        return GateDecision(False, "candidate AUC undefined on the test set (one class)", **base)
    if c < gate.min_auc:
        return GateDecision(False, f"AUC {c:.4f} below the minimum {gate.min_auc:.2f}", **base)
    if p is not None and c < p - gate.max_auc_drop:
        return GateDecision(False, f"AUC {c:.4f} more than {gate.max_auc_drop:.2f} below production's "
                                   f"{p:.4f}", **base)
    vs = f"; production {p:.4f} on the same test set" if p is not None else ""
    return GateDecision(True, f"AUC {c:.4f} passes the gate (minimum {gate.min_auc:.2f}){vs}", **base)


def comparison_table(candidate: dict[str, Any], production: dict[str, Any] | None,
                     cand_version: str, prod_version: str | None) -> list[dict[str, Any]]:
    """Rows for a champion/challenger table artifact."""
    rows = []
    keys = ["auc", "precision", "recall", "f1", "brier", "positive_rate", "predicted_positive_rate"]
    for k in keys:
        c = candidate.get(k)
        p = production.get(k) if production else None
        rows.append({"metric": k, f"candidate {cand_version}": c,
                     f"production {prod_version or '-'}": p,
                     "difference": None if c is None or p is None else round(c - p, 6)})
    for sl, vals in candidate.get("slices", {}).items():
        for v, c in vals.items():
            p = production.get("slices", {}).get(sl, {}).get(v) if production else None
            rows.append({"metric": f"auc[{sl}={v}]", f"candidate {cand_version}": c,
                         f"production {prod_version or '-'}": p,
                         "difference": None if c is None or p is None else round(c - p, 6)})
    return rows
