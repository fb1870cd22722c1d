"""The A/B test's statistics: is one version better than the other on a chosen metric, with a
false-winner rate controlled over every look the rollout policy takes.

Two versions serve at a fixed split (routing by a hash of the patient pseudonym, so a patient
stays in one arm). At each check the policy calls `evaluate(window, metric, looks=K)` on the
experiment window's prediction-store rows and gets an `ABResult`: the test, the counts, the
difference candidate - production with its two-sided interval, the p-value, and - only when the
interval excludes 0 - the winner, the arm better in the metric's direction. `write_results`
writes the decision as `ab-test-results.json` (atomic).

Metrics (`METRICS`), each computed on the routed rows of each arm (shadow and targeted rows are
not traffic, `predstore.routed`):

* ``auc`` (higher is better): matured labelled rows (predicted before `matured_before`, label
  joined), unerrored, finite score. Unpaired DeLong between the arms; when `pairs` (rows both
  versions scored, one in shadow: `predstore.paired` / `paired_scores`) hold `min_positives`
  positives and as many negatives, paired DeLong on them instead (far more precise; the reason
  says which, and why not when the pairs are too few). Each compared arm needs `min_positives`
  positives and `min_negatives` negatives, else no decision.
* ``error_rate`` (lower is better): share of the arm's routed rows flagged `error`. Two-proportion
  test: the interval is Newcombe's hybrid score (Wilson) interval of the difference, the p-value
  the pooled two-proportion z-test; a winner needs both (interval excludes 0 and p < α/K).
* ``latency_ms`` (lower is better): latency of the arm's answered (unerrored) requests.
* ``outcome`` (lower is better): the matured label (30-day readmission, 0/1) per request, all the
  arm's routed matured rows (errored ones too: the patient's outcome does not depend on whether
  the score was served).
* ``score`` (no better direction unless `higher_is_better` is passed): the mean predicted risk.
  A difference is reported, but a higher or lower mean risk is not in itself better, so no winner
  is chosen unless the caller says which direction wins.

  Numeric metrics use Welch's t-test (`scipy.stats.ttest_ind(equal_var=False)`) with the
  Welch-Satterthwaite interval: d ± t(1 - α/2K; ν) * se, ν the Welch-Satterthwaite degrees of
  freedom, which excludes 0 exactly when p < α/K.

**Sequential looks.** The policy looks at every check, and each look is another chance to declare
a false winner. With K planned looks (`looks`) each look tests at α/K (Bonferroni) and its
interval is two-sided at 1 - α/K, so the chance that equal arms produce a winner at any of the K
looks is at most α. `benchmarks/oc_ab.py` measures it against a naive α per look.

No decision on fewer than `min_per_arm` rows per arm. Rows of one patient are treated as
independent (DeLong, Welch); a patient's repeated admissions stay within one arm.

Plain Python, no Prefect.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from .. import schema as S
from ..deid import ADMISSION_PSEUDONYM, PATIENT_PSEUDONYM
from ..errors import ConfigError, DataError
from ..evidence.auc import paired_delong, unpaired_delong, z_two_sided
from ..predstore import (
    ERROR,
    LATENCY,
    PAIR_READ,
    REQUEST_ID,
    ROW,
    SCORE,
    SCORE_CANDIDATE,
    SCORE_PRODUCTION,
    SHADOW,
    TARGETED,
    TS,
    VARIANT,
    VERSION,
    paired_scores,
    routed,
)

RESULTS_FILE = "ab-test-results.json"
ARMS = ("candidate", "production")
# the prediction-store columns one read of an A/B window needs for every metric and for the pairs
AB_READ = list(dict.fromkeys([*PAIR_READ, LATENCY, SHADOW, TARGETED, REQUEST_ID, ROW, ADMISSION_PSEUDONYM,
                              PATIENT_PSEUDONYM]))


@dataclass(frozen=True)
class Metric:
    """What a metric is measured on and which direction wins."""

    name: str
    higher_is_better: bool | None  # None: no better direction (a difference, never a winner by default)
    test: str  # the method named in results
    labels: bool  # needs matured labels
    unit: str
    description: str


METRICS: dict[str, Metric] = {
    "auc": Metric("auc", True, "DeLong (paired when enough shadow-scored pairs, else unpaired)", True, "AUC",
                  "AUC of each arm's score on its matured labelled rows"),
    "error_rate": Metric("error_rate", False, "two-proportion z", False, "share",
                         "share of the arm's routed rows that failed or were invalid"),
    "latency_ms": Metric("latency_ms", False, "Welch t", False, "ms", "latency of the arm's answered requests"),
    "outcome": Metric("outcome", False, "Welch t", True, "share",
                      "matured 30-day readmission label per routed request (0/1)"),
    "score": Metric("score", None, "Welch t", False, "probability", "mean predicted readmission risk"),
}


@dataclass(frozen=True)
class ABResult:
    """One look of an A/B test. `difference` is candidate - production on the metric's natural
    scale; [low, high] its two-sided interval at 1 - alpha_per_look. `positives_*`: label
    positives (auc, outcome) or error rows (error_rate); None for the other metrics. A winner only
    when `decided`: the interval excludes 0 and the metric has a better direction."""

    metric: str
    method: str
    n_candidate: int
    n_production: int
    positives_candidate: int | None
    positives_production: int | None
    estimate_candidate: float | None
    estimate_production: float | None
    difference: float | None
    low: float | None
    high: float | None
    p_value: float | None
    alpha: float
    looks: int
    alpha_per_look: float
    higher_is_better: bool | None
    decided: bool
    winner: str | None
    reason: str
    level: float = 0.95
    se: float | None = None
    statistic: float | None = None  # z or t
    df: float | None = None  # Welch-Satterthwaite degrees of freedom (Welch t only)
    paired: bool = False
    candidate: str = "green"
    production: str = "blue"
    version_candidate: str | None = None
    version_production: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: non-finite floats become None."""
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}


# --------------------------------------------------------------------------------------------------
# inputs

def _utc(value) -> pd.Timestamp:
    stamp = pd.Timestamp(value)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def _check_args(metric: str, alpha: float, looks: int, min_per_arm: int, min_positives: int,
                min_negatives: int) -> Metric:
    if metric not in METRICS:
        raise ConfigError(f"unknown A/B metric {metric!r}: use one of {', '.join(METRICS)}")
    if metric == "auc" and S.TASK != "binary_classification":
        raise ConfigError(f"A/B metric 'auc' applies to a binary classifier; {S.MODEL} is a {S.TASK} model "
                          "(its matured labels are judged on Spearman by the canary verdict)")
    if not 0 < alpha < 1:
        raise ConfigError(f"A/B alpha must be in (0, 1), got {alpha}")
    if isinstance(looks, bool) or int(looks) != looks or looks < 1:
        raise ConfigError(f"A/B looks must be a whole number >= 1, got {looks}")
    for name, v in (("min_per_arm", min_per_arm), ("min_positives", min_positives),
                    ("min_negatives", min_negatives)):
        if int(v) != v or v < 0:
            raise ConfigError(f"A/B {name} must be a whole number >= 0, got {v}")
    return METRICS[metric]


def _require(frame: pd.DataFrame, columns: list[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(f"A/B {what} lacks column(s) {', '.join(missing)}")


def _matured(frame: pd.DataFrame, matured_before) -> pd.DataFrame:
    """Rows predicted before `matured_before` (only their labels can all have arrived: early
    labels of later rows would favour quick readmissions)."""
    if matured_before is None:
        return frame
    _require(frame, [TS], "window (matured_before needs ts)")
    return frame[pd.to_datetime(frame[TS], utc=True) < _utc(matured_before)]


def _with_labels(frame: pd.DataFrame, labels: pd.DataFrame | None, what: str) -> pd.DataFrame:
    """`frame` with a label column: its own, or joined from `labels` (a `read_labels()` frame) on
    the admission pseudonym. Rows without a label are dropped."""
    if S.LABEL not in frame.columns:
        if labels is None:
            raise DataError(f"A/B {what} has no {S.LABEL} column and no labels were given")
        _require(frame, [ADMISSION_PSEUDONYM], what)
        lab = labels[[ADMISSION_PSEUDONYM, S.LABEL]].drop_duplicates(ADMISSION_PSEUDONYM, keep="last")
        frame = frame[frame[ADMISSION_PSEUDONYM].notna()].merge(lab, on=ADMISSION_PSEUDONYM, how="inner")
    y = pd.to_numeric(frame[S.LABEL], errors="coerce")
    return frame[y.notna().to_numpy()]


def _errors(frame: pd.DataFrame) -> np.ndarray:
    return frame[ERROR].fillna(False).astype(bool).to_numpy() if ERROR in frame.columns else np.zeros(len(frame),
                                                                                                       bool)


def _finite(values) -> np.ndarray:
    a = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=float)
    return np.isfinite(a)


def _version(frame: pd.DataFrame) -> str | None:
    if VERSION not in frame.columns or not len(frame):
        return None
    if TS in frame.columns:
        frame = frame.sort_values(TS, kind="stable")
    return str(frame[VERSION].iloc[-1])


# --------------------------------------------------------------------------------------------------
# tests

def welch(candidate, production, level: float) -> dict[str, float] | None:
    """Welch's t-test of mean(candidate) - mean(production) with the Welch-Satterthwaite interval
    at `level`; None when neither arm varies (no standard error)."""
    c, p = np.asarray(candidate, float), np.asarray(production, float)
    nc, npr = len(c), len(p)
    vc, vp = float(np.var(c, ddof=1)) / nc, float(np.var(p, ddof=1)) / npr
    se2 = vc + vp
    d = float(c.mean() - p.mean())
    if not se2 > 0:
        return None
    se = math.sqrt(se2)
    df = se2 ** 2 / (vc ** 2 / (nc - 1) + vp ** 2 / (npr - 1))
    res = stats.ttest_ind(c, p, equal_var=False)
    q = float(stats.t.ppf(0.5 + level / 2, df))
    return {"difference": d, "low": d - q * se, "high": d + q * se, "se": se, "df": float(df),
            "statistic": float(res.statistic), "p_value": float(res.pvalue)}


def _wilson(k: int, n: int, z: float) -> tuple[float, float]:
    p = k / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z / den * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def two_proportions(k_candidate: int, n_candidate: int, k_production: int, n_production: int,
                    level: float) -> dict[str, float]:
    """Rate difference candidate - production: Newcombe's hybrid score interval (from the two
    Wilson intervals) at `level` and the pooled two-proportion z-test's two-sided p-value."""
    z = z_two_sided(level)
    pc, pp = k_candidate / n_candidate, k_production / n_production
    lc, uc = _wilson(k_candidate, n_candidate, z)
    lp, up = _wilson(k_production, n_production, z)
    d = pc - pp
    low = d - math.sqrt((pc - lc) ** 2 + (up - pp) ** 2)
    high = d + math.sqrt((uc - pc) ** 2 + (pp - lp) ** 2)
    pool = (k_candidate + k_production) / (n_candidate + n_production)
    se0 = math.sqrt(pool * (1 - pool) * (1 / n_candidate + 1 / n_production))
    stat = d / se0 if se0 > 0 else 0.0
    p_value = float(2 * stats.norm.sf(abs(stat))) if se0 > 0 else 1.0
    se = math.sqrt(pc * (1 - pc) / n_candidate + pp * (1 - pp) / n_production)
    return {"difference": d, "low": low, "high": high, "se": se, "statistic": stat, "p_value": p_value}


# --------------------------------------------------------------------------------------------------
# evaluate

def _fmt(metric: str, v: float | None, signed: bool = False) -> str:
    if v is None or not math.isfinite(v):
        return "-"
    if metric == "latency_ms":
        return f"{v:+.2f} ms" if signed else f"{v:.2f} ms"
    return f"{v:+.4f}" if signed else f"{v:.4f}"


def _arms_text(r: dict[str, Any], events: str | None) -> str:
    def one(arm: str) -> str:
        n, k = r[f"n_{arm}"], r.get(f"positives_{arm}")
        if events is None or k is None:
            return f"{arm} {n:,} rows"
        if events == "positives":
            return f"{arm} {n:,} rows ({k:,}+/{n - k:,}-)"
        return f"{arm} {n:,} rows ({k:,} {events})"
    if r.get("paired"):
        n, k = r["n_candidate"], r["positives_candidate"]
        return f"{n:,} rows both versions scored ({k:,}+/{n - k:,}-)"
    return f"{one('candidate')}, {one('production')}"


def evaluate(window: pd.DataFrame, metric: str, *, alpha: float = 0.05, looks: int = 1, min_per_arm: int = 100,
             min_positives: int = 100, candidate: str = "green", production: str = "blue", matured_before=None,
             pairs: pd.DataFrame | None = None, labels: pd.DataFrame | None = None,
             min_negatives: int | None = None, higher_is_better: bool | None = None) -> ABResult:
    """One look of the A/B test on `metric` over the experiment `window` (prediction-store rows,
    e.g. `store.read(start, now, columns=AB_READ)`, or `store.labelled(...)` which carries labels).

    Label metrics (auc, outcome) use the rows predicted before `matured_before` with a label: the
    window's own `readmitted_30d` column or `labels` (a `read_labels()` frame) joined on the
    admission pseudonym. `pairs`: the rows both versions scored (`predstore.paired` or
    `paired_scores`, with labels), used for a paired AUC comparison when they hold enough
    positives and negatives. `min_negatives` defaults to `min_positives`. `higher_is_better`
    overrides the metric's direction (needed for a winner on `score`)."""
    spec = _check_args(metric, alpha, looks, min_per_arm, min_positives,
                       min_positives if min_negatives is None else min_negatives)
    min_neg = min_positives if min_negatives is None else int(min_negatives)
    direction = spec.higher_is_better if higher_is_better is None else bool(higher_is_better)
    apl = alpha / looks
    level = 1 - apl
    _require(window, [VARIANT], "window")
    traffic = routed(window)
    arms = {"candidate": traffic[traffic[VARIANT] == candidate], "production": traffic[traffic[VARIANT] == production]}
    base: dict[str, Any] = dict(metric=metric, alpha=alpha, looks=int(looks), alpha_per_look=apl, level=level,
                                higher_is_better=direction, candidate=candidate, production=production,
                                version_candidate=_version(arms["candidate"]),
                                version_production=_version(arms["production"]),
                                positives_candidate=None, positives_production=None, estimate_candidate=None,
                                estimate_production=None, difference=None, low=None, high=None, p_value=None)
    if metric == "auc":
        r = _auc(arms, base, pairs, labels, matured_before, min_per_arm, min_positives, min_neg)
    elif metric == "error_rate":
        r = _error_rate(arms, base, min_per_arm)
    else:
        r = _numeric(spec, arms, base, labels, matured_before, min_per_arm)
    return _decide(r)


def _undecided(r: dict[str, Any], why: str) -> ABResult:
    r.update(decided=False, winner=None)
    r["reason"] = f"{r['metric']}: {why}: no decision"
    return ABResult(**r)


def _short(r: dict[str, Any], min_per_arm: int, events: str | None, min_positives: int = 0,
           min_negatives: int = 0) -> str | None:
    arms = ("candidate",) if r.get("paired") else ARMS
    short = []
    for arm in arms:
        n, k = r[f"n_{arm}"], r.get(f"positives_{arm}")
        if n < min_per_arm:
            short.append(f"{arm} has {n:,} rows")
        elif events == "positives" and k is not None and (k < min_positives or n - k < min_negatives):
            short.append(f"{arm} has {k:,} positives and {n - k:,} negatives")
    if not short:
        return None
    need = f"{min_per_arm:,} rows per arm"
    if events == "positives":
        need += f", {min_positives:,} positives and {min_negatives:,} negatives"
    return f"too few ({'; '.join(short)}; need {need})"


def _auc(arms, base, pairs, labels, matured_before, min_per_arm, min_positives, min_neg) -> ABResult | dict:
    note = ""
    if pairs is not None:
        p = _with_labels(_matured(pairs, matured_before), labels, "pairs")
        _require(p, [SCORE_PRODUCTION, SCORE_CANDIDATE], "pairs")
        p = p[_finite(p[SCORE_PRODUCTION]) & _finite(p[SCORE_CANDIDATE])]
        y = pd.to_numeric(p[S.LABEL]).to_numpy().astype(int)
        m, n = int(y.sum()), len(y)
        if m >= min_positives and n - m >= min_neg and n >= min_per_arm:
            d = paired_delong(y, p[SCORE_PRODUCTION].to_numpy(float), p[SCORE_CANDIDATE].to_numpy(float),
                              base["level"])
            r = dict(base, method="paired DeLong", paired=True, n_candidate=n, n_production=n,
                     positives_candidate=m, positives_production=m)
            return _from_delta(r, d)
        note = (f" (paired DeLong not used: {n:,} shadow-scored pairs with {m:,}+/{n - m:,}-, need "
                f"{min_positives:,}+/{min_neg:,}-)")
    r = dict(base, method="unpaired DeLong", paired=False)
    data = {}
    for arm, rows in arms.items():
        rows = _with_labels(_matured(rows, matured_before), labels, "window")
        _require(rows, [SCORE], "window")
        rows = rows[~_errors(rows) & _finite(rows[SCORE])]
        y = pd.to_numeric(rows[S.LABEL]).to_numpy().astype(int)
        data[arm] = (y, rows[SCORE].to_numpy(float))
        r[f"n_{arm}"], r[f"positives_{arm}"] = len(y), int(y.sum())
    short = _short(r, min_per_arm, "positives", min_positives, min_neg)
    if short:
        return _undecided(r, f"unpaired DeLong on matured labelled rows: {short}{note}")
    d = unpaired_delong(*data["candidate"], *data["production"], base["level"])
    r["method_note"] = note
    return _from_delta(r, d)


def _from_delta(r: dict[str, Any], d) -> ABResult | dict:
    note = r.pop("method_note", "")
    if d is None:
        return _undecided(r, f"{r['method']}: an arm lacks a class")
    stat = d.delta / d.se if d.se > 0 else (0.0 if d.delta == 0 else math.copysign(math.inf, d.delta))
    r.update(estimate_candidate=d.auc_candidate, estimate_production=d.auc_production, difference=d.delta,
             low=d.low, high=d.high, se=d.se, statistic=stat, p_value=float(2 * stats.norm.sf(abs(stat))))
    r["note"] = note
    return r


def _error_rate(arms, base, min_per_arm) -> ABResult | dict:
    r = dict(base, method="two-proportion z (Newcombe interval)", paired=False)
    for arm, rows in arms.items():
        r[f"n_{arm}"], r[f"positives_{arm}"] = len(rows), int(_errors(rows).sum())
    short = _short(r, max(min_per_arm, 1), "errors")
    if short:
        return _undecided(r, f"routed rows: {short}")
    t = two_proportions(r["positives_candidate"], r["n_candidate"], r["positives_production"], r["n_production"],
                        base["level"])
    r.update(t, estimate_candidate=r["positives_candidate"] / r["n_candidate"],
             estimate_production=r["positives_production"] / r["n_production"])
    return r


def _numeric(spec: Metric, arms, base, labels, matured_before, min_per_arm) -> ABResult | dict:
    r = dict(base, method="Welch t", paired=False)
    values = {}
    for arm, rows in arms.items():
        if spec.name == "outcome":
            rows = _with_labels(_matured(rows, matured_before), labels, "window")
            v = pd.to_numeric(rows[S.LABEL]).to_numpy(float)
            r[f"positives_{arm}"] = int(v.sum())
        else:
            col = LATENCY if spec.name == "latency_ms" else SCORE
            _require(rows, [col], "window")
            rows = rows[~_errors(rows)]
            v = pd.to_numeric(rows[col], errors="coerce").to_numpy(float)
            v = v[np.isfinite(v)]
        values[arm] = v
        r[f"n_{arm}"] = len(v)
    short = _short(r, max(min_per_arm, 2), "positives" if spec.name == "outcome" else None)
    if short:
        return _undecided(r, f"{'matured labelled' if spec.labels else 'routed'} rows: {short}")
    r.update(estimate_candidate=float(values["candidate"].mean()),
             estimate_production=float(values["production"].mean()))
    w = welch(values["candidate"], values["production"], base["level"])
    if w is None:
        return _undecided(r, f"Welch t: neither arm varies ({_arms_text(r, None)}, both {r['estimate_candidate']:g} "
                             f"and {r['estimate_production']:g})")
    r.update(w)
    return r


def _decide(r: ABResult | dict) -> ABResult:
    if isinstance(r, ABResult):
        return r
    note = r.pop("note", "")
    metric = r["metric"]
    events = "positives" if metric in ("auc", "outcome") else ("errors" if metric == "error_rate" else None)
    looks = (f"α {r['alpha']:g}/{r['looks']} looks = {r['alpha_per_look']:.4g} per look, Bonferroni"
             if r["looks"] > 1 else f"α {r['alpha']:g}, one look")
    what = (f"{metric}: {r['method']} on {_arms_text(r, events)}{note}: candidate "
            f"{_fmt(metric, r['estimate_candidate'])} vs production {_fmt(metric, r['estimate_production'])}, "
            f"difference {_fmt(metric, r['difference'], True)}, {100 * r['level']:.4g}% CI "
            f"[{_fmt(metric, r['low'], True)}, {_fmt(metric, r['high'], True)}], p {r['p_value']:.3g} ({looks})")
    excludes = r["low"] > 0 or r["high"] < 0
    significant = r["p_value"] < r["alpha_per_look"]
    if not excludes or (metric == "error_rate" and not significant):
        why = "interval contains 0" if not excludes else f"p >= {r['alpha_per_look']:.4g}"
        r.update(decided=False, winner=None, reason=f"{what}: {why}, no winner yet")
        return ABResult(**r)
    direction = r["higher_is_better"]
    if direction is None:
        r.update(decided=False, winner=None,
                 reason=f"{what}: the arms differ, but {metric} has no better direction: no winner "
                        "(pass higher_is_better to pick one)")
        return ABResult(**r)
    cand_better = (r["difference"] > 0) == direction
    winner = "candidate" if cand_better else "production"
    better = "higher" if direction else "lower"
    r.update(decided=True, winner=winner,
             reason=f"{what}: interval excludes 0, {winner} wins ({better} is better)")
    return ABResult(**r)


# --------------------------------------------------------------------------------------------------
# convenience: one read of the store

def evaluate_store(store, start, end, metric: str, *, label_delay=None, candidate: str = "green",
                   production: str = "blue", **kw) -> ABResult:
    """`evaluate` on the store's window [start, end): one read (`AB_READ`), labels from
    `store.read_labels()` for label metrics, and for `auc` the shadow-scored pairs of the window,
    matured = predicted before end - label_delay."""
    window = store.read(start, end, columns=AB_READ)
    matured_before = None if label_delay is None else _utc(end) - pd.Timedelta(label_delay)
    labels = pairs = None
    if METRICS.get(metric, METRICS["score"]).labels:
        labels = store.read_labels()
    if metric == "auc":
        pairs = paired_scores(window, production=production, candidate=candidate, labels=labels)
    return evaluate(window, metric, candidate=candidate, production=production, matured_before=matured_before,
                    labels=labels, pairs=pairs, **kw)


# --------------------------------------------------------------------------------------------------
# the results file

def _iso(t) -> str:
    if isinstance(t, datetime):
        return t.isoformat()
    return str(t)


def results_document(result: ABResult | dict[str, Any], *, versions: dict, split: dict, started_at,
                     decided_at) -> dict[str, Any]:
    """The content of `ab-test-results.json`, from an `ABResult` or its `to_dict()` (a decision's
    evidence carries the dict)."""
    r = result.to_dict() if isinstance(result, ABResult) else dict(result)
    winner = r.get("winner")
    return {
        "test": "A/B",
        "metric": r.get("metric"),
        "method": r.get("method"),
        "decided": r.get("decided"),
        "winner": winner,
        "winner_version": versions.get(winner) if winner else None,
        "reason": r.get("reason"),
        "versions": dict(versions),
        "split": dict(split),
        "started_at": _iso(started_at),
        "decided_at": _iso(decided_at),
        "result": r,
    }


def write_results(result: ABResult, path, *, versions: dict, split: dict, started_at, decided_at) -> Path:
    """Write `ab-test-results.json` atomically (a temporary file in the same directory, then
    `os.replace`): `path` is the file, or a directory to write it in. Returns the file's path."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = results_document(result, versions=versions, split=split, started_at=started_at, decided_at=decided_at)
    text = json.dumps(doc, indent=2, allow_nan=False, default=str) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
