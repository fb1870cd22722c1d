"""Backtest a retraining policy: replay past months with their labels, month by month.

The first model trains on the first `warmup` months (the project's time split: oldest months train,
then validation, then test). For every later month m:

1. each policy's production model scores month m, whose labels are known in the replay, and its
   AUC (DeLong SE, rows, positives) is recorded;
2. the policy decides whether to retrain: **never**, **every month**, or **triggers**: the
   configured triggers (`triggers.yaml`) evaluated on month m against that policy's production,
   through the monitor's own pure evaluators (`retrainer.triggers.evaluate`):
   - data drift: month m (the whole month is the window) against the production model's
     reference profile (`drift.fit_reference_profile`), PSI above the family-wise floor;
   - performance: the AUC windows (`window` x `consecutive_windows`) ending at the end of month m,
     on the rows production scored;
   - concept drift: the AUC over `window` against the test AUC (and its SE) production was
     registered with;
   - volume: labelled rows since the last retrain; schedule: a cron tick since the last retrain;
3. a retrain trains on every month up to m (train / validation / test months by
   `settings.split`, test = month m), applies the registration gate
   (`evaluation.gate_comparison`, i.e. `promotion_gate` on the paired comparison of the two models
   on the test month) and then the canary's rule (`evidence.compare_paired`, tolerance
   `settings.canary.auc_tolerance`) on both models' scores of the first `canary_rows` labelled rows
   of month m+1 (of the whole test month when m is the last month); the candidate is adopted, and serves
   from month m+1, when both pass.

Every policy adopts through the same gate and canary rule. Models are small (`max_iter` capped).
Plain Python, no Prefect: `flows/backtest.py` publishes the result as artifacts.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from . import evaluation
from . import schema as S
from .dataio import load_batch, time_split
from .drift.profile import ReferenceProfile, fit_reference_profile
from .errors import ConfigError, DataError
from .evidence import compare_paired
from .settings import Settings
from .training import LoadedModel, build_pipeline, feature_frame
from .triggers.config import TriggersConfig, as_utc
from .triggers.evaluate import (
    TriggerEvaluation,
    WindowAUC,
    auc_window,
    evaluate_concept_drift,
    evaluate_data_drift,
    evaluate_manual,
    evaluate_performance,
    evaluate_scheduled,
    evaluate_volume,
    window_auc,
    window_bounds,
)
from .triggers.inputs import registered_auc

NEVER, EVERY_MONTH, TRIGGERS = "never", "every-month", "triggers"
POLICIES: tuple[str, ...] = (NEVER, EVERY_MONTH, TRIGGERS)
DEFAULT_WARMUP = 3
DEFAULT_MAX_ITER = 100
DEFAULT_CANARY_ROWS = 1000


# ---- data -----------------------------------------------------------------------------------

def load_months(path: str | Path) -> list[tuple[str, pd.DataFrame]]:
    """The labelled rows under `path` (a Parquet file or a folder of monthly files), one frame per
    calendar month of the admission timestamp, oldest first, each sorted by time. DataError (one
    line) for a missing or empty folder, unreadable files, or missing timestamp/label columns."""
    df = load_batch(path)
    missing = [c for c in (S.TIMESTAMP, S.LABEL) if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}; a backtest needs the admission "
                        "time and the outcome label")
    y = pd.to_numeric(df[S.LABEL], errors="coerce")
    if y.isna().any() or not y.isin((0, 1)).all():
        raise DataError(f"{path}: {S.LABEL} must be 0 or 1 on every row (a backtest replays known labels)")
    ts = pd.to_datetime(df[S.TIMESTAMP], errors="coerce")
    if ts.isna().any():
        raise DataError(f"{path}: {int(ts.isna().sum())} rows have no readable {S.TIMESTAMP}")
    if getattr(ts.dt, "tz", None) is not None:
        ts = ts.dt.tz_convert("UTC").dt.tz_localize(None)
    df = df.assign(**{S.TIMESTAMP: ts}).sort_values(S.TIMESTAMP, kind="stable").reset_index(drop=True)
    key = df[S.TIMESTAMP].dt.strftime("%Y-%m")
    return [(k, df[key == k].reset_index(drop=True)) for k in sorted(key.unique())]


def month_end(key: str) -> pd.Timestamp:
    """The first instant after month `key` ("YYYY-MM"): the replay's clock when month `key` is judged."""
    return pd.Timestamp(key + "-01") + pd.offsets.MonthBegin(1)


# ---- models ---------------------------------------------------------------------------------

@dataclass
class Fitted:
    """One trained model of the replay: trained on months up to `months["test"]`, its registration
    metrics on the test month (`metrics`: `evaluation.classification_metrics` + slices) and its
    reference drift profile."""

    model: LoadedModel
    months: dict[str, list[str]]
    metrics: dict[str, Any]
    profile: ReferenceProfile
    index: int  # index of its test month in the replay

    @property
    def trained_at(self) -> pd.Timestamp:
        return month_end(self.months["test"][-1])


def metrics_of(test: pd.DataFrame, scores: np.ndarray) -> dict[str, Any]:
    """The metrics a version is registered with (as `evaluation.evaluate`, without latency)."""
    y = test[S.LABEL].to_numpy().astype(int)
    m = evaluation.classification_metrics(y, scores)
    m["slices"] = evaluation.slice_auc(test, scores)
    m["slice_counts"] = evaluation.slice_counts(test)
    return m


def fit_model(frames: list[pd.DataFrame], settings: Settings, params: dict[str, Any], index: int) -> Fitted:
    """Train on `frames` (months in order) with the project's time split and model pipeline."""
    split = time_split(pd.concat(frames, ignore_index=True), settings.split)
    X = feature_frame(split.train)
    y = split.train[S.LABEL].to_numpy().astype(np.int64)
    if len(np.unique(y)) < 2:
        raise DataError(f"training months {', '.join(split.months['train'])} have a single label class")
    pipe = build_pipeline(params)
    pipe.fit(X, y)
    model = LoadedModel(pipe, {"params": params, "months": split.months, "train_rows": int(len(split.train))})
    metrics = metrics_of(split.test, model.predict(split.test))
    profile = fit_reference_profile(model, split.train, split.validation, settings,
                                    meta={"months": split.months})
    return Fitted(model, split.months, metrics, profile, index)


# ---- results --------------------------------------------------------------------------------

def _r(v, nd: int = 6):
    return None if v is None else round(float(v), nd)


def _evidence_brief(e: dict[str, Any] | None) -> dict[str, Any] | None:
    """Δ, interval, n, positives, verdict and method of an `Evidence.to_dict()`."""
    if not e:
        return None
    return {"verdict": e.get("verdict"), "delta": _r(e.get("delta")), "low": _r(e.get("low")),
            "high": _r(e.get("high")), "n": e.get("n_candidate"), "positives": e.get("pos_candidate"),
            "negatives": e.get("neg_candidate"), "method": e.get("method"), "source": e.get("source"),
            "reason": e.get("reason")}


@dataclass
class Retrain:
    """One retrain of one policy: why it ran, on which months, the gate's and the canary's
    decisions with their evidence, and whether the candidate was adopted."""

    policy: str
    month: str
    version: str
    production: str
    why: list[str]
    months: dict[str, list[str]]
    test_auc: float | None
    gate: dict[str, Any]
    canary: dict[str, Any] | None
    adopted: bool
    outcome: str  # adopted | rejected by gate | needs approval | canary rollback | canary inconclusive

    def line(self) -> str:
        g = self.gate
        ge = g.get("evidence")
        gtxt = f"gate {'pass' if g['eligible'] else 'reject'} ({g['policy']})"
        if g.get("needs_approval"):
            gtxt = f"gate needs approval ({g['policy']})"
        if ge:
            gtxt += f" {_interval_text(ge)}"
        if not g["eligible"]:
            gtxt += f": {g['reason']}"
        ctxt = ""
        if self.canary is not None:
            ctxt = f"; canary {self.canary['verdict']} {_interval_text(self.canary)}"
        span = f"train {_span(self.months['train'])}, val {_span(self.months['validation'])}, " \
               f"test {_span(self.months['test'])}"
        return (f"{self.policy:<11} {self.month}  {self.version} vs {self.production} ({span}; "
                f"why: {', '.join(self.why)}): {gtxt}{ctxt} -> {self.outcome}")


def _span(months: list[str]) -> str:
    return months[0] if len(months) == 1 else f"{months[0]}..{months[-1]}"


def _interval_text(e: dict[str, Any]) -> str:
    if e.get("delta") is None:
        return f"(n={e.get('n') or 0:,}, pos={e.get('positives') or 0:,}: no interval)"
    return (f"ΔAUC {e['delta']:+.4f} [{e['low']:+.4f}, {e['high']:+.4f}] n={e['n']:,} pos={e['positives']:,}")


@dataclass
class MonthResult:
    """One replayed month: per policy the production version, its AUC on the month (SE, rows,
    positives) and the retrain it started (version and outcome); the triggers that fired."""

    month: str
    policies: dict[str, dict[str, Any]]
    fired: list[str]
    trigger_reasons: dict[str, str]


@dataclass
class BacktestResult:
    data: str
    policy_file: str
    months: list[MonthResult]
    retrains: list[Retrain]
    warmup_months: list[str]
    options: dict[str, Any]
    seconds: float = 0.0
    evaluations: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # month -> trigger evaluations

    # -- summaries --
    def aucs(self, policy: str) -> list[float | None]:
        return [m.policies[policy]["auc"] for m in self.months]

    def summary(self) -> dict[str, dict[str, Any]]:
        out = {}
        for p in POLICIES:
            aucs = [a for a in self.aucs(p) if a is not None]
            mine = [r for r in self.retrains if r.policy == p]
            out[p] = {"mean_auc": _r(sum(aucs) / len(aucs), 4) if aucs else None,
                      "min_auc": _r(min(aucs), 4) if aucs else None,
                      "retrains": len(mine), "adopted": sum(r.adopted for r in mine),
                      "rejected_by_gate": sum(r.outcome == "rejected by gate" for r in mine),
                      "needs_approval": sum(r.outcome == "needs approval" for r in mine),
                      "canary_rollback": sum(r.outcome == "canary rollback" for r in mine),
                      "canary_inconclusive": sum(r.outcome == "canary inconclusive" for r in mine),
                      "final_version": self.months[-1].policies[p]["version"] if self.months else None}
        return out

    def table_rows(self) -> list[dict[str, Any]]:
        """One flat row per replayed month (for a table artifact and `--json`)."""
        rows = []
        for m in self.months:
            row: dict[str, Any] = {"month": m.month}
            for p in POLICIES:
                d = m.policies[p]
                row[f"{p} version"] = d["version"]
                row[f"{p} auc"] = _r(d["auc"], 4)
                row[f"{p} decision"] = d["decision"] or "-"
            row["triggers fired"] = ", ".join(m.fired) or "-"
            rows.append(row)
        return rows

    def to_dict(self) -> dict[str, Any]:
        return {"data": self.data, "policy_file": self.policy_file, "warmup_months": self.warmup_months,
                "options": self.options, "seconds": round(self.seconds, 2),
                "months": [asdict(m) for m in self.months], "table": self.table_rows(),
                "retrains": [asdict(r) for r in self.retrains], "summary": self.summary(),
                "evaluations": self.evaluations}

    # -- text --
    def fired_lines(self) -> list[str]:
        """One line per trigger that fired: month, trigger, its reason (n, estimate, bound)."""
        return [f"{m.month} {name}: {m.trigger_reasons.get(name, '')}" for m in self.months for name in m.fired]

    def format_table(self) -> str:
        head = ["month", *(f"{p}" for p in POLICIES), "triggers fired"]
        body = []
        for m in self.months:
            cells = [m.month]
            for p in POLICIES:
                d = m.policies[p]
                auc = "-" if d["auc"] is None else f"{d['auc']:.4f}"
                cells.append(f"{d['version']} {auc}" + (f"  {d['decision']}" if d["decision"] else ""))
            cells.append(", ".join(m.fired) or "-")
            body.append(cells)
        widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
        fmt = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
        return "\n".join([fmt(head), fmt(["-" * w for w in widths]), *(fmt(r) for r in body)])

    def format_summary(self) -> str:
        s = self.summary()
        lines = [f"{'policy':<12} {'mean AUC':>8} {'min AUC':>8} {'retrains':>8} {'adopted':>7} "
                 f"{'gate rej':>8} {'canary rb':>9} {'inconcl':>7}  final"]
        for p, d in s.items():
            fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
            lines.append(f"{p:<12} {fmt(d['mean_auc']):>8} {fmt(d['min_auc']):>8} {d['retrains']:>8} "
                         f"{d['adopted']:>7} {d['rejected_by_gate'] + d['needs_approval']:>8} "
                         f"{d['canary_rollback']:>9} {d['canary_inconclusive']:>7}  {d['final_version']}")
        return "\n".join(lines)

    def format_text(self) -> str:
        o = self.options
        parts = [f"backtest of {self.data}: first model on {_span(self.warmup_months)}, "
                 f"{len(self.months)} months replayed; triggers from {self.policy_file}; "
                 f"max_iter {o['max_iter']}, canary on the first {o['canary_rows']:,} rows of the next month",
                 "",
                 "AUC of each policy's production model on each month (before that month's retrain); "
                 "decision: the retrain it started (+ adopted, x gate rejected, ~ canary inconclusive, "
                 "! canary rollback, ? needs approval)",
                 self.format_table(), "", "retrains:"]
        parts += [f"  {r.line()}" for r in self.retrains] or ["  none"]
        parts += ["", "triggers that fired (the evidence they decided on):"]
        parts += [f"  {line}" for line in self.fired_lines()] or ["  none"]
        parts += ["", self.format_summary(), "", f"replayed in {self.seconds:.1f} s"]
        return "\n".join(parts)

    def summary_markdown(self) -> str:
        s = self.summary()
        lines = [f"# Backtest of `{self.data}`", "",
                 f"First model on {_span(self.warmup_months)}; {len(self.months)} months replayed; "
                 f"triggers from `{self.policy_file}`; replayed in {self.seconds:.1f} s.", "",
                 "| policy | mean AUC | min AUC | retrains | adopted | gate rejected | canary rollback | "
                 "inconclusive | final version |", "|---|---|---|---|---|---|---|---|---|"]
        for p, d in s.items():
            lines.append(f"| {p} | {d['mean_auc']} | {d['min_auc']} | {d['retrains']} | {d['adopted']} | "
                         f"{d['rejected_by_gate'] + d['needs_approval']} | {d['canary_rollback']} | "
                         f"{d['canary_inconclusive']} | {d['final_version']} |")
        lines += ["", "## Retrains", ""] + ([f"- {r.line()}" for r in self.retrains] or ["- none"])
        lines += ["", "## Triggers that fired", ""] + ([f"- {x}" for x in self.fired_lines()] or ["- none"])
        return "\n".join(lines)


_MARK = {"adopted": "+", "rejected by gate": "x", "needs approval": "?", "canary rollback": "!",
         "canary inconclusive": "~"}


# ---- the replay -----------------------------------------------------------------------------

@dataclass
class _State:
    """One policy's production model and what it has served."""
    name: str
    production: Fitted
    version: str = "1.0.0"
    minor: int = 0
    last_retrain_at: pd.Timestamp | None = None
    served: list[pd.DataFrame] = field(default_factory=list)  # ts, label, score, version


class _Replay:
    def __init__(self, months: list[tuple[str, pd.DataFrame]], settings: Settings, config: TriggersConfig,
                 params: dict[str, Any], canary_rows: int):
        self.months = months
        self.settings = settings
        self.config = config
        self.params = params
        self.canary_rows = canary_rows
        self._fits: dict[int, Fitted] = {}
        self._scores: dict[tuple[int, int], np.ndarray] = {}

    def fit(self, last: int) -> Fitted:
        """The model trained on months[0..last] (test month = months[last]); cached across policies."""
        if last not in self._fits:
            self._fits[last] = fit_model([f for _, f in self.months[:last + 1]], self.settings, self.params, last)
        return self._fits[last]

    def scores(self, model: Fitted, month: int) -> np.ndarray:
        key = (id(model), month)
        if key not in self._scores:
            self._scores[key] = np.asarray(model.model.predict(self.months[month][1]), dtype=float)
        return self._scores[key]

    # -- triggers --
    def evaluate_triggers(self, st: _State, i: int, scores: np.ndarray) -> list[TriggerEvaluation]:
        key, frame = self.months[i]
        now = month_end(key)
        now_utc = as_utc(now.to_pydatetime())
        served = pd.concat(st.served, ignore_index=True)
        prod_rows = served[served["version"] == st.version]
        out = []
        for t in self.config.retraining_triggers:
            if t.type == "data_drift":
                report = None
                if t.enabled:
                    ds = self.settings.drift.model_copy(update={"psi_threshold": t.psi_threshold,
                                                                "min_window": t.min_window,
                                                                "features_required": t.min_features})
                    window = frame[list(S.FEATURES)].assign(score=scores)
                    report = st.production.profile.score(window, ds)
                e = evaluate_data_drift(t, report, n_window=len(frame), production_version=st.version)
            elif t.type == "performance_degradation":
                e = evaluate_performance(t, [_window(prod_rows, a, b)
                                             for a, b in window_bounds(now_utc, t.window, t.consecutive_windows)])
            elif t.type == "concept_drift":
                ref_auc, ref_se = registered_auc({"candidate": st.production.metrics})
                e = evaluate_concept_drift(t, _window(prod_rows, now_utc - t.window, now_utc), ref_auc, st.version,
                                           reference_se=ref_se)
            elif t.type == "new_data_volume":
                since = st.last_retrain_at
                n_new = int((served[S.TIMESTAMP] >= since).sum()) if since is not None else len(served)
                e = evaluate_volume(t, n_new, since.isoformat() if since is not None else None)
            elif t.type == "scheduled":
                last = as_utc(st.last_retrain_at.to_pydatetime()) if st.last_retrain_at is not None else None
                e = evaluate_scheduled(t, now_utc, last)
                if t.enabled and e.numbers.get("missed"):
                    e = TriggerEvaluation.of(t, True, f"cron {t.cron} ({t.timezone}) ticked at "
                                             f"{e.numbers['last_tick']}, after the last retrain "
                                             f"({e.numbers['last_retrain']})", e.numbers)
            else:
                e = evaluate_manual(t, list(self.settings.approvers))
            out.append(e)
        return out

    # -- one retrain through the gate and the canary --
    def retrain(self, st: _State, i: int, why: list[str]) -> Retrain:
        key, test = self.months[i]
        cand = self.fit(i)
        st.minor += 1
        version = f"1.{st.minor}.0"
        s_cand, s_prod = self.scores(cand, i), self.scores(st.production, i)
        prod_metrics = dict(metrics_of(test, s_prod), version=st.version)
        cmp = evaluation.compare_on_test(cand.metrics, prod_metrics, test, s_cand, s_prod, self.settings.gate)
        gate = evaluation.gate_comparison(cmp, self.settings.gate)
        gate_d = {"eligible": gate.eligible, "needs_approval": gate.needs_approval, "policy": gate.policy,
                  "reason": gate.reason, "candidate_auc": gate.candidate_auc,
                  "production_auc": gate.production_auc, "evidence": _evidence_brief(gate.evidence)}
        canary = None
        if not gate.eligible:
            outcome = "rejected by gate"
        elif gate.needs_approval:
            outcome = "needs approval"
        else:
            canary = self.canary(st, cand, i).to_dict()
            verdict = canary["verdict"]
            outcome = {"promote": "adopted", "rollback": "canary rollback"}.get(verdict, "canary inconclusive")
            canary = _evidence_brief(canary)
        r = Retrain(policy=st.name, month=key, version=version, production=st.version, why=why,
                    months=cand.months, test_auc=cand.metrics.get("auc"), gate=gate_d, canary=canary,
                    adopted=outcome == "adopted", outcome=outcome)
        st.last_retrain_at = month_end(key)
        if r.adopted:
            st.production, st.version = cand, version
        return r

    def canary(self, st: _State, cand: Fitted, i: int):
        """The canary's paired non-inferiority on the first `canary_rows` rows of the next month
        (on the whole test month, the newest matured month, when there is none)."""
        j = i + 1 if i + 1 < len(self.months) else i
        key, frame = self.months[j]
        n = min(self.canary_rows, len(frame)) if j != i else len(frame)
        rows = frame.iloc[:n]
        pid = evaluation.patient_column(rows)
        c = self.settings.canary
        where = f"first {n:,} rows of {key}" if j != i else f"test month {key} (no next month)"
        return compare_paired(rows[S.LABEL].to_numpy().astype(int), self.scores(st.production, j)[:n],
                              self.scores(cand, j)[:n], tolerance=c.auc_tolerance, level=c.level,
                              source=f"canary replay: {where}",
                              clusters=rows[pid].to_numpy(object) if pid else None,
                              min_positives=c.min_positives, min_negatives=c.min_negatives)


def _window(rows: pd.DataFrame, start: datetime, end: datetime) -> WindowAUC:
    a, b = pd.Timestamp(start).tz_convert(None), pd.Timestamp(end).tz_convert(None)
    w = rows[(rows[S.TIMESTAMP] >= a) & (rows[S.TIMESTAMP] < b)]
    return window_auc(w, start, end, label=S.LABEL, score="score")


def run_backtest(data: str | Path, settings: Settings, config: TriggersConfig, *, policy_file: str = "",
                 warmup: int = DEFAULT_WARMUP, max_iter: int = DEFAULT_MAX_ITER,
                 canary_rows: int = DEFAULT_CANARY_ROWS, threads: int = 1, progress=None) -> BacktestResult:
    """Replay the months under `data` (see the module docstring) for the three policies: never
    retrain, retrain every month, and retrain when a trigger of `config` fires. `progress`, when
    given, is called with one line per replayed month; `threads` caps the BLAS/OpenMP threads of
    training and scoring."""
    need = settings.split.min_train_months + settings.split.validation_months + settings.split.test_months
    if warmup < need:
        raise ConfigError(f"--warmup must be at least {need} months (the time split's train + validation + "
                          f"test months), got {warmup}")
    if max_iter < 1:
        raise ConfigError(f"--max-iter must be >= 1, got {max_iter}")
    if canary_rows < 1:
        raise ConfigError(f"--canary-rows must be >= 1, got {canary_rows}")
    t0 = time.perf_counter()
    # One thread per fit: on a shared 2-core machine OpenMP threads waiting on a busy core made a
    # replay slower (8 months x 4,000 rows with one core busy: 18.5 s on two threads, 11.3 s on one).
    with threadpool_limits(limits=threads):
        result = _replay(data, settings, config, policy_file, warmup, max_iter, canary_rows, progress)
    result.seconds = time.perf_counter() - t0
    return result


def _replay(data, settings: Settings, config: TriggersConfig, policy_file: str, warmup: int, max_iter: int,
            canary_rows: int, progress) -> BacktestResult:
    months = load_months(data)
    if len(months) < warmup + 1:
        raise DataError(f"{data}: {len(months)} month(s) of data ({', '.join(k for k, _ in months)}); a backtest "
                        f"needs at least {warmup + 1} (--warmup {warmup} for the first model, then one to replay)")
    params = settings.model.model_dump()
    params["max_iter"] = min(int(params["max_iter"]), int(max_iter))
    replay = _Replay(months, settings, config, params, canary_rows)
    first = replay.fit(warmup - 1)
    states = {p: _State(p, first, last_retrain_at=first.trained_at) for p in POLICIES}
    results: list[MonthResult] = []
    retrains: list[Retrain] = []
    evaluations: dict[str, list[dict[str, Any]]] = {}
    for i in range(warmup, len(months)):
        key, frame = months[i]
        y = frame[S.LABEL].to_numpy().astype(int)
        row: dict[str, dict[str, Any]] = {}
        fired: list[str] = []
        reasons: dict[str, str] = {}
        for p, st in states.items():
            s = replay.scores(st.production, i)
            st.served.append(pd.DataFrame({S.TIMESTAMP: frame[S.TIMESTAMP].to_numpy(), S.LABEL: y, "score": s,
                                           "version": st.version}))
            w = auc_window(y, s, key, month_end(key))
            row[p] = {"version": st.version, "auc": _r(w.auc), "auc_se": _r(w.se), "n": w.n,
                      "positives": w.n_pos, "decision": None, "retrain": None}
            why: list[str] = []
            if p == EVERY_MONTH:
                why = ["every month"]
            elif p == TRIGGERS:
                evs = replay.evaluate_triggers(st, i, s)
                evaluations[key] = [_eval_brief(e) for e in evs]
                fired = [e.name for e in evs if e.fired]
                reasons = {e.name: e.reason for e in evs}
                why = fired
            if why:
                r = replay.retrain(st, i, why)
                retrains.append(r)
                row[p]["retrain"] = r.version
                row[p]["decision"] = f"{_MARK[r.outcome]}{r.version}"
        results.append(MonthResult(key, row, fired, reasons))
        if progress:
            progress(f"{key}: " + ", ".join(f"{p} {row[p]['auc'] or float('nan'):.4f}" for p in POLICIES)
                     + (f"; fired {', '.join(fired)}" if fired else ""))
    return BacktestResult(data=str(data), policy_file=policy_file, months=results, retrains=retrains,
                          warmup_months=[k for k, _ in months[:warmup]],
                          options={"warmup": warmup, "max_iter": params["max_iter"], "canary_rows": canary_rows,
                                   "gate_policy": settings.gate.policy, "max_auc_drop": settings.gate.max_auc_drop,
                                   "auc_tolerance": settings.canary.auc_tolerance},
                          evaluations=evaluations)


def _eval_brief(e: TriggerEvaluation) -> dict[str, Any]:
    return {"name": e.name, "type": e.type, "fired": e.fired, "too_small": e.too_small, "reason": e.reason}


# ---- the plot -------------------------------------------------------------------------------

def plot(result: BacktestResult, path: str | Path) -> Path:
    """A PNG of each policy's AUC per replayed month; adopted retrains are marked where the new
    model starts serving."""
    import matplotlib  # noqa: PLC0415 - heavy: matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415 - heavy: matplotlib

    path = Path(path)
    if path.parent and not path.parent.exists():
        raise ConfigError(f"--plot: folder {path.parent} does not exist")
    x = [m.month for m in result.months]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.7 * len(x) + 2), 4.2))
    # every-month drawn wide and pale underneath, so a trigger policy that matches it stays visible
    styles = {NEVER: ("tab:gray", "--", 1.5, 1.0), EVERY_MONTH: ("tab:blue", "-", 4.0, 0.45),
              TRIGGERS: ("tab:orange", "-", 1.6, 1.0)}
    for p in POLICIES:
        color, ls, lw, alpha = styles[p]
        y = [math.nan if a is None else a for a in result.aucs(p)]
        ax.plot(x, y, ls, color=color, lw=lw, alpha=alpha, marker="o", ms=3, label=p)
        adopt = [k for k, m in enumerate(result.months[:-1]) if m.policies[p]["decision"]
                 and m.policies[p]["decision"].startswith("+")]
        ax.plot([x[k + 1] for k in adopt], [y[k + 1] for k in adopt], "^", color=color, ms=8, mfc="none")
    ax.set_ylabel("AUC of production on the month")
    ax.set_xlabel("month (triangle: a newly adopted model's first month)")
    ax.set_title(f"Backtest: never vs every month vs triggers ({Path(result.policy_file).name or 'policy'})")
    ax.grid(alpha=0.3)
    ax.legend()
    plt.setp(ax.get_xticklabels(), rotation=45, ha="right")
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=110)
    except OSError as exc:
        raise ConfigError(f"--plot: cannot write {path}: {exc.strerror or exc}") from None
    finally:
        plt.close(fig)
    return path
