"""The notification catalogue: every event a person must know about, and how it reads.

`render(kind, **fields)` turns an event into a `Notice` (subject, plain-text body, severity) that
any channel can carry: an email, a Slack message, a webhook's JSON. Sending is elsewhere
(`tasks/notify.py`, through Prefect notification blocks); this module only words the event.

    >>> n = render("rollout.rolled_back", model="readmission-30d", version="1.2.0",
    ...            reason="guardrail: error rate", n=4210, positives=512, delta=-0.031,
    ...            interval=(-0.05, -0.012), level=0.95)
    >>> n.subject
    '[retrainer] readmission-30d: canary 1.2.0 ROLLED BACK'

Each kind names the fields it needs (`KINDS[kind].required`); a missing one, or an unknown kind,
is a ValueError. Fields beyond the kind's own are listed at the end of the body as "name: value",
so a caller can add context without a change here.

Privacy: a notice carries only the fields it is given: versions, statistics, counts, reasons.
Never pass patient-level data (identifiers, rows, scores of one admission). As a guard, a field
named like a direct identifier or join key of the data contract (`schema.IDENTIFIERS`,
`schema.KEYS`: patient_id, mrn, admission_id, ...) is refused with a ValueError.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from . import schema as S

Severity = Literal["info", "warning", "critical"]
PREFIX = "[retrainer]"


def forbidden_fields() -> frozenset[str]:
    """Field names a notice refuses: the active model's identifiers and keys."""
    return frozenset(S.IDENTIFIERS) | frozenset(S.KEYS)


@dataclass(frozen=True)
class Notice:
    kind: str
    subject: str
    body: str
    severity: Severity

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "subject": self.subject, "body": self.body, "severity": self.severity}


@dataclass(frozen=True)
class Kind:
    """One event: who needs it (`audience`), its fields, and how its subject and lines read."""
    audience: str
    severity: Severity
    required: tuple[str, ...]
    optional: tuple[str, ...]
    subject: Callable[[dict[str, Any]], str]
    lines: Callable[[dict[str, Any]], list[str]]
    severity_of: Callable[[dict[str, Any]], Severity] | None = None


# ---------------------------------------------------------------------------------------------
# Formatting helpers


def fmt(value: Any) -> str:
    """A value as a person reads it: floats to 4 significant digits, lists comma-separated."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, Mapping):
        return ", ".join(f"{k} {fmt(v)}" for k, v in value.items()) or "n/a"
    if isinstance(value, (list, tuple, set, frozenset)):
        return ", ".join(fmt(v) for v in value) or "n/a"
    return " ".join(str(value).split())  # one line


def pct(value: Any) -> str:
    try:
        return f"{float(value):.0%}" if float(value) * 100 == round(float(value) * 100) else f"{float(value):.1%}"
    except (TypeError, ValueError):
        return fmt(value)


def _interval(f: dict[str, Any]) -> tuple[float, float] | None:
    iv = f.get("interval")
    if isinstance(iv, Mapping):
        iv = (iv.get("low"), iv.get("high"))
    if isinstance(iv, (list, tuple)) and len(iv) == 2 and all(isinstance(x, (int, float)) for x in iv):
        return float(iv[0]), float(iv[1])
    return None


def evidence_line(n: Any = None, positives: Any = None, delta: Any = None, interval: Any = None,
                  level: Any = None, negatives: Any = None) -> str:
    """"n=4,210 (512 positives), ΔAUC = -0.031, 95% interval [-0.05, -0.012]" from what is known;
    `interval` is (low, high) or a dict with low/high (a Decision's `ci`)."""
    parts = []
    if n is not None:
        counts = [f"{fmt(positives)} positives"] if positives is not None else []
        if negatives is not None:
            counts.append(f"{fmt(negatives)} negatives")
        parts.append(f"n={fmt(n)}" + (f" ({', '.join(counts)})" if counts else ""))
    elif positives is not None:
        parts.append(f"{fmt(positives)} positives")
    if isinstance(delta, (int, float)):
        parts.append(f"ΔAUC = {delta:+.4f}")
    iv = _interval({"interval": interval})
    if iv is not None:
        lvl = level if level is not None else (interval.get("level") if isinstance(interval, Mapping) else None)
        parts.append(f"{pct(lvl) + ' ' if lvl is not None else ''}interval [{iv[0]:+.4f}, {iv[1]:+.4f}]")
    return ", ".join(parts) or "no evidence recorded"


def _evidence(f: dict[str, Any]) -> str:
    if f.get("evidence") is not None and not isinstance(f.get("evidence"), Mapping):
        return fmt(f["evidence"])
    e = dict(f.get("evidence") or {})
    # an Evidence.to_dict() (retrainer.evidence.rule): the candidate arm's counts, Δ and its interval
    for src, dst in (("n_candidate", "n"), ("pos_candidate", "positives"), ("neg_candidate", "negatives")):
        e.setdefault(dst, e.get(src))
    if e.get("interval") is None and e.get("low") is not None and e.get("high") is not None:
        e["interval"] = (e["low"], e["high"])
    for k in ("n", "positives", "negatives", "delta", "interval", "level"):
        if f.get(k) is not None:
            e[k] = f[k]
    return evidence_line(**{k: e.get(k) for k in ("n", "positives", "negatives", "delta", "interval", "level")})


def _measured(value: Any) -> list[str]:
    if isinstance(value, Mapping):
        return [f"  {k}: {fmt(v)}" for k, v in value.items()]
    return [f"  {fmt(value)}"]


def _failures(value: Any) -> list[str]:
    if isinstance(value, str):
        value = [value]
    return [f"  - {fmt(v)}" for v in (value or [])] or ["  (none listed)"]


def _n_failures(value: Any) -> int:
    return 1 if isinstance(value, str) else len(value or [])


def _opt(f: dict[str, Any], key: str, label: str) -> list[str]:
    return [f"{label}: {fmt(f[key])}"] if f.get(key) is not None else []


def _verdict_severity(f: dict[str, Any]) -> Severity:
    outcome = str(f.get("outcome", "")).lower()
    return "warning" if any(w in outcome for w in ("roll", "revers", "fail", "breach", "worse")) else "info"


# ---------------------------------------------------------------------------------------------
# The catalogue

KINDS: dict[str, Kind] = {
    "trigger.fired": Kind(
        "ML on-call", "warning", ("trigger", "statistic", "threshold"), ("detail", "action"),
        lambda f: f"retraining trigger {fmt(f['trigger'])} FIRED",
        lambda f: [f"The retraining trigger {fmt(f['trigger'])} fired.",
                   f"Statistic: {fmt(f['statistic'])} (threshold {fmt(f['threshold'])})",
                   *_opt(f, "detail", "Detail"), *_opt(f, "action", "Action")]),
    "retrain.failed": Kind(
        "ML on-call", "critical", ("error",), ("flow_run", "trigger"),
        lambda f: "retraining FAILED",
        lambda f: ["A retraining run failed; production is unchanged.",
                   f"Error: {fmt(f['error'])}", *_opt(f, "flow_run", "Flow run"), *_opt(f, "trigger", "Trigger")]),
    "validation.failed": Kind(
        "ML on-call and data owners", "critical", ("failures",), ("data", "suite", "rows", "trigger"),
        lambda f: f"data validation FAILED ({_n_failures(f['failures'])} expectation"
                  + ("s)" if _n_failures(f["failures"]) != 1 else ")"),
        lambda f: ["The training data failed validation; no model was trained on it.",
                   *_opt(f, "data", "Data"), *_opt(f, "suite", "Suite"), *_opt(f, "rows", "Rows"),
                   *_opt(f, "trigger", "Trigger"),
                   "Failed expectations:", *_failures(f["failures"])]),
    "model.registered": Kind(
        "ML team", "info", ("version", "evidence", "trigger"), ("status", "policy", "production"),
        lambda f: f"model {fmt(f['version'])} REGISTERED" + (
            f" ({fmt(f['status'])})" if f.get("status") not in (None, "candidate") else ""),
        lambda f: [f"Model version {fmt(f['version'])} passed the promotion gate and was registered.",
                   *_opt(f, "status", "Status"), *_opt(f, "production", "Production"),
                   f"Gate evidence: {_evidence(f)}", *_opt(f, "policy", "Gate policy"),
                   f"Trigger: {fmt(f['trigger'])}"]),
    "model.rejected": Kind(
        "ML team", "warning", ("version", "reason"), ("evidence", "trigger", "policy"),
        lambda f: f"model {fmt(f['version'])} REJECTED",
        lambda f: [f"Model version {fmt(f['version'])} failed the promotion gate and was not registered as a "
                   "candidate; production is unchanged.",
                   f"Reason: {fmt(f['reason'])}",
                   *([f"Gate evidence: {_evidence(f)}"] if f.get("evidence") is not None else []),
                   *_opt(f, "policy", "Gate policy"), *_opt(f, "trigger", "Trigger")]),
    "rollout.started": Kind(
        "ML team and clinical administrators", "info", ("version", "production", "strategy", "plan"),
        ("traffic", "actor"),
        lambda f: f"{fmt(f['strategy'])} {fmt(f['version'])} STARTED",
        lambda f: [f"A {fmt(f['strategy'])} rollout of {fmt(f['version'])} started against production "
                   f"{fmt(f['production'])}.",
                   *([f"Traffic now: {pct(f['traffic'])}"] if f.get("traffic") is not None else []),
                   f"Plan: {fmt(f['plan'])}", *_opt(f, "actor", "Started by")]),
    "rollout.stage": Kind(
        "ML team", "info", ("version", "stage", "traffic"), ("reason",),
        lambda f: f"canary {fmt(f['version'])} stage {fmt(f['stage'])}: {pct(f['traffic'])} traffic",
        lambda f: [f"The canary of {fmt(f['version'])} entered stage {fmt(f['stage'])}: {pct(f['traffic'])} "
                   "of live traffic.", *_opt(f, "reason", "Reason")]),
    "guardrail.breach": Kind(
        "ML on-call", "critical", ("version", "reason", "measured"), ("action",),
        lambda f: f"canary {fmt(f['version'])} GUARDRAIL BREACH",
        lambda f: [f"A live guardrail was breached by the canary of {fmt(f['version'])}.",
                   f"Reason: {fmt(f['reason'])}", "Measured:", *_measured(f["measured"]),
                   *_opt(f, "action", "Action")]),
    "update.planned": Kind(
        "clinical administrators", "warning", ("version", "planned_at"), ("production", "change", "contact"),
        lambda f: f"model update PLANNED: {fmt(f['version'])} at {fmt(f['planned_at'])}",
        lambda f: [f"Advance notice: the {S.MODEL} model will be updated to version {fmt(f['version'])} at "
                   f"{fmt(f['planned_at'])}.",
                   *_opt(f, "production", "Current version"), *_opt(f, "change", "Change"),
                   *_opt(f, "contact", "Questions")]),
    "rollout.promoted": Kind(
        "ML team and clinical administrators", "info", ("version", "reason"),
        ("evidence", "n", "positives", "negatives", "delta", "interval", "level", "actor", "previous"),
        lambda f: f"canary {fmt(f['version'])} PROMOTED",
        lambda f: [f"Version {fmt(f['version'])} was promoted to production.",
                   *_opt(f, "previous", "Previous production"), f"Reason: {fmt(f['reason'])}",
                   f"Evidence: {_evidence(f)}", *_opt(f, "actor", "Decided by")]),
    "rollout.rolled_back": Kind(
        "ML team and clinical administrators", "warning", ("version", "reason"),
        ("evidence", "n", "positives", "negatives", "delta", "interval", "level", "actor", "production"),
        lambda f: f"canary {fmt(f['version'])} ROLLED BACK",
        lambda f: [f"Version {fmt(f['version'])} was rolled back; all traffic is on production"
                   + (f" {fmt(f['production'])}." if f.get("production") else "."),
                   f"Reason: {fmt(f['reason'])}", f"Evidence: {_evidence(f)}", *_opt(f, "actor", "Decided by")]),
    "verdict": Kind(
        "ML team", "info", ("version", "outcome"),
        ("reason", "evidence", "n", "positives", "negatives", "delta", "interval", "level", "action"),
        lambda f: f"deferred verdict on {fmt(f['version'])}: {fmt(f['outcome']).replace('_', ' ').upper()}",
        lambda f: [f"The deferred verdict on {fmt(f['version'])}, re-checked on matured labels: "
                   f"{fmt(f['outcome'])}.", *_opt(f, "reason", "Reason"), f"Evidence: {_evidence(f)}",
                   *_opt(f, "action", "Action")],
        severity_of=_verdict_severity),
    "rollout.needs_approval": Kind(
        "model approvers", "warning", ("version", "reason"), ("approvers", "command", "evidence"),
        lambda f: f"canary {fmt(f['version'])} NEEDS APPROVAL",
        lambda f: [f"Version {fmt(f['version'])} waits for a person's decision.", f"Reason: {fmt(f['reason'])}",
                   *([f"Evidence: {_evidence(f)}"] if f.get("evidence") is not None else []),
                   *_opt(f, "approvers", "Approvers"), *_opt(f, "command", "To answer")]),
}

COMMON = ("model", "flow_run", "at")  # accepted by every kind: the model's name, a run link, when


def render(kind: str, **fields: Any) -> Notice:
    """The notice for event `kind` with its `fields` (see `KINDS`); `model` names the model in
    the subject. Unknown kind, missing field or identifier-like field name: ValueError."""
    spec = KINDS.get(kind)
    if spec is None:
        raise ValueError(f"unknown notification kind {kind!r}; known: {', '.join(sorted(KINDS))}")
    bad = sorted(k for k in fields if k.lower() in forbidden_fields())
    if bad:
        raise ValueError(f"notice {kind!r} refuses patient-level field(s) {', '.join(bad)}: notices never carry "
                         "patient identifiers")
    missing = [k for k in spec.required if fields.get(k) is None]
    if missing:
        raise ValueError(f"notice {kind!r} needs field(s): {', '.join(missing)}")
    f = dict(fields)
    model = fmt(f.get("model") or "model")
    subject = f"{PREFIX} {model}: {spec.subject(f)}"
    lines = spec.lines(f)
    known = set(spec.required) | set(spec.optional) | set(COMMON) | {"evidence"}
    extra = [f"{k}: {fmt(v)}" for k, v in f.items() if k not in known and v is not None]
    tail = _opt(f, "at", "At") + ([] if "flow_run" in spec.optional else _opt(f, "flow_run", "Flow run"))
    body_lines = [*lines, *([""] + ["Details:"] + [f"  {x}" for x in extra] if extra else []), *tail,
                  "", f"Model: {model}. Event: {kind}. For: {spec.audience}."]
    severity = spec.severity_of(f) if spec.severity_of else spec.severity
    return Notice(kind=kind, subject=subject, body="\n".join(body_lines).strip() + "\n", severity=severity)


def trigger_fields(name: str, numbers: Mapping[str, Any], reason: str) -> dict[str, Any]:
    """The `trigger.fired` fields of a trigger evaluation (`TriggerEvaluation.name/numbers/reason`):
    its statistic and threshold, read from the numbers each trigger type records."""
    n = dict(numbers or {})
    if "max_psi" in n:
        stat = (f"max PSI {fmt(n['max_psi'])}, {fmt(n.get('features_drifted'))} feature(s) drifted on "
                f"{fmt(n.get('n_window'))} rows")
        thr = (f"PSI > {fmt(n.get('psi_threshold'))} (or the family-wise floor) on >= {fmt(n.get('min_features'))} "
               "feature(s)")
    elif "window_upper_bound" in n:
        stat = f"window AUC {fmt(n.get('window_auc'))}, upper bounds {fmt(n['window_upper_bound'])}"
        thr = f"AUC upper bound < {fmt(n.get('threshold'))} in {fmt(n.get('consecutive_windows'))} consecutive windows"
    elif "current_auc" in n:
        stat = (f"AUC {fmt(n['current_auc'])} vs reference {fmt(n.get('reference_auc'))} on {fmt(n.get('n_labels'))} "
                f"labels ({fmt(n.get('positives'))} positives)")
        thr = f"drop >= {fmt(n.get('min_drop'))}"
    elif "new_labelled_rows" in n:
        stat = f"{fmt(n['new_labelled_rows'])} new labelled rows since {fmt(n.get('since'))}"
        thr = f">= {fmt(n.get('min_new_labelled_rows'))} rows"
    else:
        stat, thr = fmt(reason), "see the trigger's rule"
    return {"trigger": name, "statistic": stat, "threshold": thr, "detail": reason}


def test_fields(kind: str) -> dict[str, Any]:
    """Plausible fields for `kind`, for `retrainer notify test` and for tests."""
    sample: dict[str, Any] = {
        "trigger": "psi-drift", "statistic": 0.31, "threshold": 0.2, "error": "TEST: nothing failed",
        "failures": ["TEST: expect_column_values_to_not_be_null(age): 3.1% null"],
        "version": "0.0.0-test", "evidence": "TEST: ΔAUC = +0.010, 95% interval [-0.004, +0.024]",
        "reason": "TEST notice, no action needed", "production": "0.0.0-prod", "strategy": "canary",
        "plan": "10% for 72h, checked every 6h", "stage": 1, "traffic": 0.1,
        "measured": {"error_rate": 0.02}, "planned_at": "2026-01-01T09:00Z", "outcome": "confirmed",
    }
    return {k: sample[k] for k in KINDS[kind].required}


test_fields.__test__ = False  # not a pytest test


def kinds_table(spec: Sequence[str] | None = None) -> str:
    """The catalogue as a Markdown table (README)."""
    rows = ["| kind | severity | for | fields (required; optional) |", "| --- | --- | --- | --- |"]
    for name in spec or KINDS:
        k = KINDS[name]
        rows.append(f"| `{name}` | {k.severity} | {k.audience} | {', '.join(k.required)}"
                    + (f"; {', '.join(k.optional)}" if k.optional else "") + " |")
    return "\n".join(rows)
