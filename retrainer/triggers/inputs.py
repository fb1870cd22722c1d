"""The I/O side of monitoring: `collect_inputs` reads the prediction store and the registry (the
production version's recent window, its stored reference profile, labelled AUC windows, label
counts) into a `MonitorInputs`; `evaluate_all` hands those numbers to the pure evaluators.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pandas as pd

from .. import schema as S
from ..drift.profile import ReferenceProfile
from ..drift.report import DriftReport
from ..errors import RetrainerError
from ..predstore import traffic_filter
from .config import PROFILE_FILE, TriggersConfig, as_utc
from .evaluate import (
    TriggerEvaluation,
    WindowAUC,
    auc_standard_error,
    evaluate_concept_drift,
    evaluate_data_drift,
    evaluate_manual,
    evaluate_performance,
    evaluate_scheduled,
    evaluate_volume,
    window_auc,
    window_bounds,
)
from .policy import effective_approvers


@dataclass
class MonitorInputs:
    """Everything the evaluators need, read once per monitor run by `collect_inputs`."""

    now: datetime
    production_version: str | None = None
    production_auc: float | None = None
    production_auc_se: float | None = None  # standard error of the registered test AUC
    last_retrain_at: datetime | None = None
    drift_report: DriftReport | None = None
    drift_window_rows: int = 0
    drift_error: str | None = None
    performance_windows: dict[str, list[WindowAUC]] = field(default_factory=dict)  # trigger name ->
    concept_windows: dict[str, WindowAUC] = field(default_factory=dict)
    new_labelled_rows: int = 0
    approvers: list[str] = field(default_factory=list)


def registered_metric(metrics: dict | None, metric: str = "auc") -> tuple[float | None, float | None]:
    """(test value, its standard error) of `metric` a version was registered with: AUC
    (`registered_auc`) or Spearman (`spearman`, `spearman_se` of a regression model's record)."""
    if metric == "auc":
        return registered_auc(metrics)
    m = (metrics or {}).get("candidate") or {}
    value, se = m.get(metric), m.get(f"{metric}_se")
    return (None if value is None else float(value)), (None if se is None else float(se))


def registered_auc(metrics: dict | None) -> tuple[float | None, float | None]:
    """(test AUC, its standard error) a version was registered with: `metrics["candidate"]`'s
    auc and auc_se (DeLong, stored at registration); for versions registered before auc_se
    existed, Hanley & McNeil's from auc, n_pos/n_neg or n and positive_rate; None when unknown."""
    m = (metrics or {}).get("candidate") or {}
    auc = m.get("auc")
    if auc is None:
        return None, None
    auc = float(auc)
    se = m.get("auc_se")
    if se is not None:
        return auc, float(se)
    n_pos, n_neg = m.get("n_pos"), m.get("n_neg")
    if (n_pos is None or n_neg is None) and m.get("n") is not None and m.get("positive_rate") is not None:
        n_pos = int(round(float(m["n"]) * float(m["positive_rate"])))
        n_neg = int(m["n"]) - n_pos
    if n_pos is None or n_neg is None:
        return auc, None
    return auc, auc_standard_error(auc, int(n_pos), int(n_neg))


def collect_inputs(config: TriggersConfig, registry, predictions, settings, now: datetime) -> MonitorInputs:
    """Read what the triggers need: the recent window of de-identified predictions of the
    production version, its stored reference profile, labelled windows and label counts.
    `registry` and `predictions` are the backend's; returns the MonitorInputs for `now`."""
    now = as_utc(now)
    inputs = MonitorInputs(now=now)
    prod = registry.production()
    versions = registry.list()
    if versions:
        inputs.last_retrain_at = max(as_utc(r.created_at) for r in versions)
    manual = next(iter(config.by_type("manual")), None)
    inputs.approvers = effective_approvers(settings.approvers, manual)
    if prod is not None:
        inputs.production_version = prod.version
        inputs.production_auc, inputs.production_auc_se = registered_auc(prod.metrics)

    def prod_rows(frame: pd.DataFrame) -> pd.DataFrame:
        if prod is None or not len(frame):
            return frame
        return frame[frame["version"].astype(str) == prod.version]

    for trig in config.by_type("data_drift")[:1]:  # one window/profile per run: the first drift trigger
        # production's rows, the caller-targeted ones left out, streamed file by file from the
        # store (local or S3): the window is never held in memory whole
        window = predictions.scan(now - trig.window, now, where=traffic_filter(prod.version if prod else None))
        if prod is None:
            inputs.drift_window_rows = window.count()
            inputs.drift_error = "no production version"
            continue
        try:
            profile = ReferenceProfile.load(Path(registry.verify(prod.version)) / PROFILE_FILE)
        except RetrainerError as exc:
            inputs.drift_window_rows = window.count()
            inputs.drift_error = str(exc)
            continue
        ds = settings.drift.model_copy(update={"psi_threshold": trig.psi_threshold,
                                               "min_window": trig.min_window,
                                               "features_required": trig.min_features})
        report = profile.score(window, ds)
        inputs.drift_window_rows = report.n_cur
        if report.n_cur:
            inputs.drift_report = report

    for trig in config.by_type("performance_degradation"):
        bounds = window_bounds(now, trig.window, trig.consecutive_windows)
        lab = prod_rows(predictions.labelled(bounds[0][0], now))
        inputs.performance_windows[trig.name] = [
            window_auc(lab[(lab["ts"] >= pd.Timestamp(a)) & (lab["ts"] < pd.Timestamp(b))], a, b,
                       label=S.LABEL, metric=trig.metric) for a, b in bounds]
    for trig in config.by_type("concept_drift"):
        lab = prod_rows(predictions.labelled(now - trig.window, now))
        inputs.concept_windows[trig.name] = window_auc(lab, now - trig.window, now, label=S.LABEL, metric=trig.metric)
        if trig.metric != "auc" and prod is not None:
            inputs.production_auc, inputs.production_auc_se = registered_metric(prod.metrics, trig.metric)
    if config.by_type("new_data_volume"):
        inputs.new_labelled_rows = predictions.count_labels_since(inputs.last_retrain_at)
    return inputs


def evaluate_all(config: TriggersConfig, inputs: MonitorInputs) -> list[TriggerEvaluation]:
    """Every configured trigger's evaluation, in file order."""
    out = []
    for t in config.retraining_triggers:
        if t.type == "data_drift":
            if inputs.drift_report is None and inputs.drift_error and t.enabled:
                e = evaluate_data_drift(t, None, n_window=inputs.drift_window_rows,
                                        production_version=inputs.production_version)
                e.reason = f"nothing to compare: {inputs.drift_error}"
            elif inputs.drift_report is None and t.enabled:
                n = inputs.drift_window_rows
                e = TriggerEvaluation.of(t, False, f"too small to tell: {n:,} rows in the window, minimum "
                                         f"{t.min_window:,}", {"n_window": n, "min_window": t.min_window},
                                         too_small=True)
            else:
                e = evaluate_data_drift(t, inputs.drift_report, production_version=inputs.production_version)
        elif t.type == "performance_degradation":
            e = evaluate_performance(t, inputs.performance_windows.get(t.name, []))
        elif t.type == "concept_drift":
            e = evaluate_concept_drift(t, inputs.concept_windows.get(t.name), inputs.production_auc,
                                       inputs.production_version, reference_se=inputs.production_auc_se)
        elif t.type == "new_data_volume":
            e = evaluate_volume(t, inputs.new_labelled_rows,
                                inputs.last_retrain_at.isoformat() if inputs.last_retrain_at else None)
        elif t.type == "scheduled":
            e = evaluate_scheduled(t, inputs.now, inputs.last_retrain_at)
        else:
            e = evaluate_manual(t, inputs.approvers)
        if e.payload:
            e.payload.setdefault("production_version", inputs.production_version)
            e.payload["evaluated_at"] = inputs.now.isoformat()
        out.append(e)
    return out
