"""The live evidence of a running canary, read from the prediction store and the registry.

`gather(...)` builds the `LiveEvidence` that `policy.check` decides on:

* **traffic per routed arm** over [start, now] (`variant_stats`: shadow and targeted rows left out);
* **guardrail tests** on the candidate's routed traffic: error rate (failed and invalid requests
  are captured as error rows), p95 latency, NaN or out-of-range scores (routed and shadow);
* **the label-free estimate** (CBPE) of each model's AUC on the same live requests, from their
  calibrated scores, when the candidate's registration found it calibrated;
* **the verdict on matured labels**: only predictions made at least `label_delay` before `now` can
  have a label. The registration comparison (both models on the newest matured month, paired) is
  pooled with the paired comparison on matured shadow-scored live rows, or, when nothing was
  scored in shadow, the unpaired comparison of the routed arms' matured rows.
"""
from __future__ import annotations

import math
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from .. import schema as S
from ..deid import PATIENT_PSEUDONYM
from ..evidence import Evidence, compare_paired, compare_unpaired, pool
from ..evidence.cbpe import Calibration, estimate_difference
from ..evidence.guardrails import (
    GuardrailResult,
    clopper_pearson_lower,
    error_rate_guardrail,
    latency_guardrail,
    output_guardrail,
    relative_latency_guardrail,
)
from ..evidence.power import power_statement
from ..predstore import (
    ERROR,
    LATENCY,
    PAIR_READ,
    SCORE,
    SHADOW,
    SHADOW_READ,
    TARGETED,
    TS,
    VARIANT,
    paired_scores,
    routed,
    shadow_summary,
)
from . import ab
from .policy import LiveEvidence, arms_from_stats, max_extensions

# the columns one read of a check's window serves: paired scores, guardrails and shadow checks
WINDOW_COLUMNS = list(dict.fromkeys([*PAIR_READ, *SHADOW_READ, LATENCY, SHADOW]))


def registration_piece(record, production_version: str | None) -> tuple[Evidence | None, str | None]:
    """The candidate's registration-time paired comparison (stored in `record.gate["evidence"]`),
    usable only when it was made against the version that is production now."""
    gate = getattr(record, "gate", None) or {}
    ev = gate.get("evidence")
    if not ev:
        return None, f"{record.version} has no registration comparison in its lineage"
    against = (record.metrics.get("production") or {}).get("version")
    if against is not None and production_version is not None and against != production_version:
        return None, (f"{record.version} was compared at registration with {against}, not with production "
                      f"{production_version}: that comparison is left out")
    return Evidence.from_dict(ev), None


def _redecided(e: Evidence, tolerance: float, source: str) -> Evidence:
    """A stored comparison as a pool input (its Δ and interval; the verdict is re-made by `pool`)."""
    return replace(e, source=source, tolerance=tolerance)


def _is_classifier() -> bool:
    return S.TASK == "binary_classification"


def _matured_verdict_regression(store, window, record, production_version, settings, start, now, candidate,
                                production) -> tuple[Evidence, list[str]]:
    """A regression or ranking model's verdict: non-inferiority of Spearman (margin: the spec's
    `metrics.gate.tolerance`) pooled over the registration comparison and the matured shadow rows
    (paired, Zou) or routed arms (unpaired, Zou); at least canary.min_positives + min_negatives
    matured labelled rows per arm before it decides."""
    from ..evidence.correlation import compare_spearman_paired, compare_spearman_unpaired, pool_spearman  # noqa: PLC0415

    c = settings.canary
    tol = S.contract().spec.metrics.gate.tolerance
    notes: list[str] = []
    pieces: list[Evidence] = []
    reg, why = registration_piece(record, production_version) if record is not None else (None, None)
    if reg is not None:
        pieces.append(replace(reg, source="registration test days", tolerance=tol))
    elif why:
        notes.append(why)
    matured_before = now - settings.label_delay
    if matured_before > start:
        matured = window[window[TS] < matured_before]
        paired = paired_scores(matured, production=production, candidate=candidate, labels=store.read_labels())
        if len(paired):
            pieces.append(compare_spearman_paired(
                paired[S.LABEL].to_numpy(float), paired["score_production"].to_numpy(float),
                paired["score_candidate"].to_numpy(float), tolerance=tol, level=c.level,
                clusters=paired[PATIENT_PSEUDONYM].to_numpy(object), source="matured shadow rows", min_rows=1))
        else:
            lab = store.labelled(start, matured_before)
            a_c, a_p = (lab[lab[VARIANT] == v] for v in (candidate, production))
            if len(a_c) and len(a_p):
                pieces.append(compare_spearman_unpaired(
                    a_c[S.LABEL].to_numpy(float), a_c["score"].to_numpy(float), a_p[S.LABEL].to_numpy(float),
                    a_p["score"].to_numpy(float), tolerance=tol, level=c.level, source="matured routed arms",
                    min_rows=1))
    else:
        notes.append(f"no live prediction has matured yet (label delay {settings.label_delay})")
    pieces = [p for p in pieces if p.delta is not None]
    source = " + ".join(p.source for p in pieces) or "matured labels"
    return pool_spearman(pieces, tol, source=source, level=c.level,
                         min_rows=c.min_positives + c.min_negatives), notes


def matured_verdict(store, window, record, production_version: str | None, settings, start: datetime,
                    now: datetime, candidate: str = "green", production: str = "blue") -> tuple[Evidence, list[str]]:
    """The pooled non-inferiority verdict on matured labels, and notes on what was left out."""
    if not _is_classifier():
        return _matured_verdict_regression(store, window, record, production_version, settings, start, now,
                                           candidate, production)
    c = settings.canary
    notes: list[str] = []
    pieces: list[Evidence] = []
    reg, why = registration_piece(record, production_version) if record is not None else (None, None)
    if reg is not None:
        pieces.append(_redecided(reg, c.auc_tolerance, "registration month"))
    elif why:
        notes.append(why)
    matured_before = now - settings.label_delay
    kw = dict(tolerance=c.auc_tolerance, level=c.level, min_positives=1, min_negatives=1)
    if matured_before > start:
        matured = window[window[TS] < matured_before]
        paired = paired_scores(matured, production=production, candidate=candidate, labels=store.read_labels())
        if len(paired):
            pieces.append(compare_paired(paired[S.LABEL].to_numpy(), paired["score_production"].to_numpy(float),
                                         paired["score_candidate"].to_numpy(float),
                                         clusters=paired[PATIENT_PSEUDONYM].to_numpy(object),
                                         source="matured shadow rows", **kw))
        else:
            lab = store.labelled(start, matured_before)
            arms = [lab[lab[VARIANT] == v] for v in (candidate, production)]
            if all(len(a) for a in arms):
                a_c, a_p = arms
                pieces.append(compare_unpaired(
                    a_c[S.LABEL].to_numpy(), a_c["score"].to_numpy(float), a_p[S.LABEL].to_numpy(),
                    a_p["score"].to_numpy(float), clusters_candidate=a_c[PATIENT_PSEUDONYM].to_numpy(object),
                    clusters_production=a_p[PATIENT_PSEUDONYM].to_numpy(object), source="matured routed arms",
                    **kw))
    else:
        notes.append(f"no live prediction has matured yet (label delay {settings.label_delay})")
    pieces = [p for p in pieces if p.delta is not None]
    source = " + ".join(p.source for p in pieces) or "matured labels"
    verdict = pool(pieces, c.auc_tolerance, source=source, min_positives=c.min_positives,
                   min_negatives=c.min_negatives)
    return verdict, notes


def _calibration(record):
    d = ((getattr(record, "gate", None) or {}).get("calibration") or {}) if record is not None else {}
    if not d:
        return None
    if "df" not in d:  # registration could not check it: stored as {"ok": false, "reason": ...}
        return Calibration(False, str(d.get("reason", "not checked")), 0, 0, None, 0, None, None, 0.0, 0.0, 0)
    return Calibration.from_dict(d)


def label_free(window, record, production_record, settings, checks: int, candidate: str = "green",
               production: str = "blue") -> tuple[Any | None, str | None]:
    """The CBPE comparison on live requests both models scored (paired), or (None, why not). Made
    only when both models passed the calibration check at their registration."""
    c = settings.canary
    if not _is_classifier():
        return None, (f"no label-free estimate: it applies to calibrated classifiers only ({S.MODEL} is a {S.TASK} "
                      "model; the decision waits for matured labels)")
    if not c.label_free_estimate:
        return None, "label-free estimate switched off (canary.label_free_estimate)"
    cal_c, cal_p = _calibration(record), _calibration(production_record)
    for name, rec, cal in (("candidate", record, cal_c), ("production", production_record, cal_p)):
        if cal is None:
            return None, f"no label-free estimate: {name} {getattr(rec, 'version', '-')} has no calibration check"
        if not cal.ok:
            return None, f"no label-free estimate: {name} {rec.version} is not calibrated ({cal.reason})"
    rows = paired_scores(window, production=production, candidate=candidate)
    if len(rows) < c.min_requests:
        return None, f"label-free estimate needs {c.min_requests} requests scored by both models, has {len(rows)}"
    level = 1 - (1 - c.level) / max(checks, 1)
    est = estimate_difference(rows["score_production"].to_numpy(float), rows["score_candidate"].to_numpy(float),
                              c.auc_tolerance, level=level, calibration_production=cal_p,
                              calibration_candidate=cal_c, paired=True)
    return est, None


def guardrails(window, settings, stats, checks: int, candidate: str = "green") -> tuple[Any, ...]:
    """The candidate's guardrail tests over [start, now]."""
    c = settings.canary
    cand, _ = arms_from_stats(stats, candidate)
    traffic = routed(window)
    lat = traffic.loc[traffic[VARIANT] == candidate, LATENCY].dropna().to_numpy(dtype=float)
    out = [error_rate_guardrail(cand.n_errors, cand.n_predictions, c.max_error_rate, checks, c.guardrail_alpha),
           latency_guardrail(lat, c.max_p95_latency_ms, c.min_requests, checks, c.guardrail_alpha)]
    sh = shadow_summary(window).get(candidate) or {}
    out.append(output_guardrail(int(sh.get("n_scored", 0)), int(sh.get("n_nan", 0)),
                                int(sh.get("n_out_of_range", 0))))
    return tuple(out)


def disagreement_guardrail(n_pairs: int, cross_rate: float | None, limit: float, checks: int = 1,
                           alpha: float = 0.05) -> GuardrailResult:
    """Fires iff the Clopper-Pearson lower bound of the share of rows the two models put on
    different sides of 0.5 (at level 1 - alpha/checks) exceeds `limit`."""
    level = 1 - alpha / max(int(checks), 1)
    if not n_pairs or cross_rate is None:
        return GuardrailResult("disagreement", False, "disagreement with production: no row scored by both yet",
                               0, None, None, limit, level, judged=False, checks=checks)
    k = int(round(cross_rate * n_pairs))
    low = clopper_pearson_lower(k, n_pairs, level)
    fired = low > limit
    return GuardrailResult(
        "disagreement", fired,
        f"disagreement with production: {k:,} of {n_pairs:,} rows on the other side of 0.5 ({cross_rate:.3g}); "
        f"Clopper-Pearson lower bound {low:.3g} at {level:.4g} {'>' if fired else '<='} limit {limit:g}: "
        f"{'FIRED' if fired else 'ok'}", n_pairs, cross_rate, low, limit, level, checks=checks)


def stage_criteria(stage_window, stage, settings, checks: int, candidate: str = "green",
                   production: str = "blue") -> tuple[tuple[GuardrailResult, ...], int]:
    """The current stage's criteria (`Stage.criteria`) on the rows since the stage began, as
    guardrail tests (a criterion fails only when its confidence bound is past the limit), and the
    number of the candidate's requests they were judged on: routed rows, or for a shadow stage the
    candidate's shadow-scored rows."""
    limits = stage.limits
    alpha = settings.canary.guardrail_alpha
    need = int(limits.get("min_requests", settings.canary.min_requests))
    out: list[GuardrailResult] = []
    if stage.shadow:
        rows = stage_window[(stage_window[VARIANT] == candidate) & stage_window[SHADOW].eq(True)]
    else:
        traffic = routed(stage_window)
        rows = traffic[traffic[VARIANT] == candidate]
    n = int(len(rows))
    errors = int(rows[ERROR].astype(bool).sum()) if n else 0
    ok_lat = rows.loc[~rows[ERROR].astype(bool), LATENCY].dropna().to_numpy(dtype=float) if n else []
    if "error_rate" in limits:
        out.append(error_rate_guardrail(errors, n, limits["error_rate"], checks, alpha))
    if "p95_latency_ms" in limits:
        out.append(latency_guardrail(ok_lat, limits["p95_latency_ms"], need, checks, alpha))
    if "latency_spike" in limits:
        traffic = routed(stage_window)
        prod = traffic.loc[(traffic[VARIANT] == production) & ~traffic[ERROR].astype(bool), LATENCY]
        out.append(relative_latency_guardrail(ok_lat, prod.dropna().to_numpy(dtype=float), limits["latency_spike"],
                                              need, checks, alpha))
    if "max_disagreement" in limits:
        d = (shadow_summary(stage_window, production=production).get(candidate) or {}).get("disagreement") or {}
        out.append(disagreement_guardrail(int(d.get("n_pairs", 0)), d.get("cross_rate"), limits["max_disagreement"],
                                          checks, alpha))
    return tuple(out), n


def _score_shift_note(window, candidate: str, production: str) -> str:
    """A regression canary's distributional evidence: the candidate's and production's live score
    distributions compared (KS and PSI, with n). Reported, never a promotion reason."""
    from .statistics import score_shift  # noqa: PLC0415 - local, keeps scipy off the import path

    ok = ~window[ERROR].astype(bool) if ERROR in window.columns else True
    rows = window[ok]
    d = score_shift(rows.loc[rows[VARIANT] == candidate, SCORE], rows.loc[rows[VARIANT] == production, SCORE])
    if d is None:
        return "score distribution shift: too few live scores in an arm to compare"
    return (f"score distribution shift (evidence, not a promotion reason): KS {d['ks']:.3f} (p {d['ks_p']:.3g}), "
            f"PSI {d['psi']:.3f}, n {d['n_candidate']:,} candidate / {d['n_production']:,} production scores")


def gather(store, registry, settings, *, candidate_version: str, start: datetime, now: datetime, checks: int,
           candidate: str = "green", production: str = "blue", plan=None, stage: int | None = None,
           stage_start: datetime | None = None) -> LiveEvidence:
    """Everything a canary check decides on (see the module doc). With `plan` (and the current
    `stage` and its `stage_start`), also the stage's criteria on the stage's rows, and for an ab
    plan the A/B test's look (`retrainer.rollout.ab`)."""
    rejected = _rejected(registry, candidate_version)
    stats = store.variant_stats(start, now)
    cand, prod = arms_from_stats(stats, candidate, production)
    window = store.read(start, now, columns=WINDOW_COLUMNS)  # read once: pairs, guardrails, shadow checks
    record = registry.get(candidate_version)
    current = registry.production()
    verdict, notes = matured_verdict(store, window, record, current.version if current else None, settings, start,
                                     now, candidate, production)
    estimate, why = label_free(window, record, current, settings, checks, candidate, production)
    if why:
        notes.append(why)
    if not _is_classifier():
        notes.append(_score_shift_note(window, candidate, production))
    criteria: tuple[GuardrailResult, ...] = ()
    stage_requests = None
    ab_result = None
    if plan is not None and plan.stages:
        index = plan.stage_at(now - start)[0] if stage is None else int(stage)
        cur = plan.stages[index]
        since = stage_start or (start + plan.stage_start(index))
        stage_window = window if since <= start else window[window[TS] >= since]
        if cur.criteria:
            criteria, stage_requests = stage_criteria(stage_window, cur, settings, checks, candidate, production)
        if plan.strategy == "ab":
            ab_result = ab_look(store, plan, settings, start, now)
    return LiveEvidence(cand, prod, guardrails(window, settings, stats, checks, candidate),
                        estimate, verdict, tuple(notes), criteria, stage_requests, ab_result, rejected)


def _rejected(registry, version: str) -> str | None:
    """Who rejected `version` and why, when the registry already has it rejected (e.g. the
    5-minute guardrails deployment rolled it back between two checks of the flow)."""
    rec = registry.get(version)
    if str(rec.status) != "rejected":
        return None
    events = [e for e in registry.audit() if e.get("version") == version and e.get("to") == "rejected"]
    if events:
        return f"{version} was rejected by {events[-1].get('actor')}: {events[-1].get('reason')}"
    return f"{version} is already rejected in the registry"


def ab_looks(plan) -> int:
    """How many looks the A/B test makes: one per check from min_duration to max_duration."""
    ab = plan.ab_settings
    span = float(ab.get("max_duration_s", 0)) - float(ab.get("min_duration_s", 0))
    return max(1, int(span // plan.stages[0].check_interval.total_seconds()) + 1)


def ab_look(store, plan, settings, start: datetime, now: datetime):
    """One look of the A/B test (`retrainer.rollout.ab.evaluate_store`) over [start, now]."""
    s = plan.ab_settings
    kw = {k: s[k] for k in ("min_per_arm", "min_positives") if k in s}
    return ab.evaluate_store(store, start, now, s.get("metric", "auc"), label_delay=settings.label_delay,
                             alpha=s.get("alpha", 0.05), looks=ab_looks(plan), **kw)


def rows_per_day(store, now: datetime, days: int = 7) -> float:
    """Routed predictions (requests' rows, not shadow scores) per day over the last `days` days:
    the rate at which live labels can mature."""
    frame = store.read(now - timedelta(days=days), now, columns=[VARIANT, SHADOW, TARGETED])
    return float(len(routed(frame))) / days




def spearman_rows_needed(r: float, tolerance: float, level: float = 0.95) -> int:
    """Rows per arm for the unpaired Δ Spearman interval's half-width to fall under `tolerance`:
    var(r) ~ (1 - r²)² (1 + r²/2) / (n - 3) per arm (Fisher z, Bonett-Wright, delta method), two
    equal arms, so n = 3 + 2 z² (1 - r²)² (1 + r²/2) / tolerance²."""
    from ..evidence.auc import z_two_sided  # noqa: PLC0415 - local

    z = z_two_sided(level)
    return int(math.ceil(3 + 2 * z ** 2 * (1 - r ** 2) ** 2 * (1 + r ** 2 / 2) / tolerance ** 2))


def power_at_start(store, registry, settings, plan, candidate_version: str, now: datetime) -> dict[str, Any]:
    """The day-0 power statement of a canary (`evidence.power.power_statement`): the matured
    labelled rows the non-inferiority rule needs at margin `auc_tolerance` (one-sided α 0.025,
    80% power, from the variance of the registration comparison), how many the registration month
    supplies, and when live traffic and the label delay supply the rest. A dict with `text`."""

    c = settings.canary
    record = registry.get(candidate_version)
    prod = registry.production()
    reg, why = registration_piece(record, prod.version if prod else None)
    max_duration = plan.end(max_extensions(plan, settings))
    per_day = rows_per_day(store, now)
    if not _is_classifier():
        tol = S.contract().spec.metrics.gate.tolerance
        have = reg.candidate.n if reg is not None else 0
        r = reg.auc_production if reg is not None and reg.auc_production else 0.5
        need = max(c.min_positives + c.min_negatives, spearman_rows_needed(r, tol, c.level))
        days = 2 * need / per_day if per_day > 0 else None  # two arms share the traffic
        when = (now + timedelta(days=days) + settings.label_delay) if days is not None else None
        text = (f"power: a {S.TASK} model is judged on Spearman (margin {tol:g}) once matured labels decide; an "
                f"unpaired canary needs ~{need:,} matured rows per arm for the interval's half-width to fall under "
                f"the margin (Fisher z, Bonett-Wright, Spearman {r:.2f}); at {per_day:,.0f} predictions/day and "
                f"a label delay of {settings.label_delay} that is "
                + (f"{when:%Y-%m-%d %H:%M}" if when else "never (no traffic)")
                + f"; the registration comparison brings {have:,} rows; shadow (paired) rows need fewer")
        return {"text": text, "needed_rows": need, "have_rows": have, "rows_per_day": per_day,
                "decidable_at": when.isoformat() if when else None,
                "decidable_before_max": (when <= now + max_duration) if when else False}
    if reg is None or not reg.se or reg.candidate.n <= 0:
        text = (f"power: no paired registration comparison to size the test from ({why or 'none recorded'}); "
                f"the rule decides once {c.min_positives} positives and {c.min_negatives} negatives per arm "
                f"have matured labels (label delay {settings.label_delay}), at {per_day:,.0f} predictions/day")
        return {"text": text, "needed_rows": None, "have_rows": 0, "rows_per_day": per_day,
                "decidable_before_max": None}
    shadow = 1.0 if settings.serving.shadow != "off" else plan.stages[0].traffic
    st = power_statement(reg.se, reg.candidate.n, c.auc_tolerance, start=now, label_delay=settings.label_delay,
                         max_duration=max_duration, predictions_per_day=per_day, shadow_coverage=shadow,
                         have_rows=reg.candidate.n, prevalence=reg.candidate.positives / reg.candidate.n,
                         min_positives=c.min_positives, min_negatives=c.min_negatives)
    return st.to_dict()
