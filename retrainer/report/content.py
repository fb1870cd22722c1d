"""The text of an evidence package, from plain dicts: the champion/challenger comparison
(`comparison_markdown`), the deployment checklist (`checklist_rows`, `checklist_markdown`) and the
per-check series the plots draw (`check_series`, `traffic_series`).

Inputs are what the rest of the project already hands around as dicts: a version's record
(`ModelRecord.to_dict()`: metrics, gate with its paired evidence, rules and calibration), the
plan (`RolloutPlan.to_dict()`, possibly with a `strategy`), the canary's decisions
(`Decision.to_dict()`, or the flow result's abridged `decisions` plus its final `evidence`) and the
rollout journal's record (`RolloutRecord.to_dict()`). Missing pieces are said, never invented.
Plain Python: no Prefect, no plotting.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any, Iterable

PASS, FAIL, NOT_JUDGED, INCONCLUSIVE, INFO = "pass", "fail", "not judged", "inconclusive", "info"
METRICS = ("auc", "auc_se", "precision", "recall", "f1", "brier", "positive_rate", "predicted_positive_rate", "n",
           "n_pos", "n_neg")


def _num(v: Any, fmt: str = ".4f") -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return format(v, fmt)
    return str(v)


def _cell(v: Any) -> str:
    """A markdown table cell: one line, no pipes."""
    return " ".join(str(v).split()).replace("|", "/")


def _signed(v: float | None) -> str:
    return "-" if v is None else f"{v:+.4f}"


# ---- the comparison -----------------------------------------------------------------------------

def comparison_markdown(candidate: dict[str, Any], champion: dict[str, Any] | None, *,
                        champion_version: str | None, recomputed: dict[str, Any] | None = None) -> str:
    """`model-comparison.md`: both versions on the same test set.

    `candidate`/`champion` are registry records as dicts (`ModelRecord.to_dict()`; champion None
    when there is no production). The metrics are those stored at the candidate's registration
    (`metrics["candidate"]`, `metrics["production"]`: both models scored on its test month); the
    paired interval is `gate["evidence"]`; calibration is each version's `gate["calibration"]`.
    `recomputed` (optional): what the package recomputed for its plots (`source`, `rows`,
    `positives`, `auc` per version label, and `champion_metrics` when the stored production metrics
    were made against another version)."""
    v = candidate["version"]
    metrics = candidate.get("metrics") or {}
    cand_m = metrics.get("candidate") or {}
    prod_m = metrics.get("production") or None
    compared_with = (prod_m or {}).get("version")
    gate = candidate.get("gate") or {}
    ev = gate.get("evidence") or None
    champ = champion_version or "-"
    champ_m = prod_m
    champ_note = ""
    if champion_version and compared_with and compared_with != champion_version:
        champ_note = (f"At registration {v} was compared with {compared_with}, not with today's champion "
                      f"{champion_version}: the stored paired interval is against {compared_with}.")
        champ_m = (recomputed or {}).get("champion_metrics")
        if champ_m is not None:
            champ_note += (" The champion's metrics below were recomputed on the same test rows "
                           f"({recomputed['source']}).")
    lines = [f"# Model comparison: challenger {v} vs champion {champ}", ""]
    period = (ev or {}).get("source") or "registration test month"
    n = cand_m.get("n")
    lines.append(f"Both models scored on the **same test set**: {period}"
                 + (f", {n:,} rows ({_num(cand_m.get('n_pos'))} positives)" if isinstance(n, int) else "") + ".")
    if champ_note:
        lines += ["", champ_note]
    lines += ["", "## Metrics", "",
              f"| metric | champion {champ} | challenger {v} | difference |", "|---|---:|---:|---:|"]
    for k in METRICS:
        c = cand_m.get(k)
        p = (champ_m or {}).get(k)
        diff = c - p if isinstance(c, (int, float)) and isinstance(p, (int, float)) and k not in (
            "n", "n_pos", "n_neg") else None
        lines.append(f"| {k} | {_num(p)} | {_num(c)} | {_signed(diff)} |")

    lines += ["", "## Paired interval (gate evidence at registration)", ""]
    if ev:
        lines += [f"- method: {ev.get('method') or '-'}; {'paired' if ev.get('paired', True) else 'unpaired'}",
                  f"- ΔAUC = AUC({v}) - AUC({compared_with or champ}) = **{_signed(ev.get('delta'))}**, "
                  f"{_num(ev.get('level'), '.0%')} CI [{_signed(ev.get('low'))}, {_signed(ev.get('high'))}], "
                  f"se {_num(ev.get('se'))}",
                  f"- rows {_num(ev.get('n_candidate'))}, positives {_num(ev.get('pos_candidate'))}, "
                  f"negatives {_num(ev.get('neg_candidate'))}; tolerance {_num(ev.get('tolerance'), 'g')}",
                  f"- verdict: **{ev.get('verdict', '-')}**: {_cell(ev.get('reason', '-'))}"]
        if gate.get("p_value") is not None:
            lines.append(f"- one-sided p(Δ > 0) = {gate['p_value']:.4g}")
    else:
        lines.append(f"- no paired comparison in {v}'s lineage (registered without a production model, or "
                     "before the paired gate)")
    lines.append(f"- gate: policy {gate.get('policy', '-')}; eligible {_num(gate.get('eligible'))}; "
                 f"needs approval {_num(gate.get('needs_approval', False))}; {_cell(gate.get('reason', '-'))}")

    lines += ["", "## Slices (AUC per sex and age band, same test set)", ""]
    slices = cand_m.get("slices") or {}
    counts = cand_m.get("slice_counts") or {}
    if slices:
        lines += [f"| slice | rows | positives | champion {champ} | challenger {v} | difference |",
                  "|---|---:|---:|---:|---:|---:|"]
        for name, values in slices.items():
            for value, c in values.items():
                p = ((champ_m or {}).get("slices") or {}).get(name, {}).get(value)
                cnt = (counts.get(name) or {}).get(value) or {}
                diff = c - p if c is not None and p is not None else None
                lines.append(f"| {name}={value} | {_num(cnt.get('n'))} | {_num(cnt.get('n_pos'))} | {_num(p)} | "
                             f"{_num(c)} | {_signed(diff)} |")
    else:
        lines.append("- no slice metrics stored")

    lines += ["", "## Calibration (validation month, at registration)", ""]
    cals = [(champ, ((champion or {}).get("gate") or {}).get("calibration")), (v, gate.get("calibration"))]
    lines += ["| | " + " | ".join(f"{'champion' if i == 0 else 'challenger'} {name}" for i, (name, _) in
                                   enumerate(cals)) + " |", "|---|---:|---:|"]
    for key, label, fmt in (("ok", "calibrated", ""), ("statistic", "Hosmer-Lemeshow χ²", ".3f"), ("df", "df", ""),
                            ("p_value", "HL p-value", ".4g"), ("ece", "ECE", ".4f"),
                            ("tolerance", "ECE tolerance", "g"), ("alpha", "HL alpha", "g"), ("n", "rows", ""),
                            ("positives", "positives", ""), ("mean_score", "mean score", ".4f"),
                            ("mean_label", "mean label", ".4f")):
        vals = []
        for _, cal in cals:
            x = (cal or {}).get(key) if cal else None
            vals.append(_num(x, fmt) if fmt else _num(x))
        lines.append(f"| {label} | {' | '.join(vals)} |")
    for name, cal in cals:
        if cal and cal.get("reason"):
            lines.append(f"\n- {name}: {_cell(cal['reason'])}")
        elif not cal:
            lines.append(f"\n- {name}: no calibration check stored")

    if recomputed:
        lines += ["", "## Recomputed for the plots", "",
                  f"Both registered models re-scored on {recomputed['source']}: {recomputed['rows']:,} rows "
                  f"({recomputed['positives']:,} positives). Scores are never stored at registration, so the ROC "
                  "and calibration curves are recomputed from the models' artifacts (sha256-verified)."]
        for label, auc in (recomputed.get("auc") or {}).items():
            lines.append(f"- AUC {label}: {_num(auc)}")
        for note in recomputed.get("notes") or ():
            lines.append(f"- note: {note}")
    return "\n".join(lines) + "\n"


# ---- decisions ---------------------------------------------------------------------------------

def _elapsed_h(d: dict[str, Any]) -> float | None:
    e = d.get("elapsed_s")
    return None if e is None else float(e) / 3600


def evidence_of(decisions: list[dict[str, Any]], result: dict[str, Any] | None = None) -> tuple[dict, int | None]:
    """The evidence the final decision stood on: the last decision carrying evidence (a manual
    decision carries none: the last policy check's), else the flow result's `evidence`. Returns
    (evidence, index of the check it came from or None)."""
    for d in reversed(decisions):
        if d.get("evidence"):
            return d["evidence"], d.get("index")
    return (result or {}).get("evidence") or {}, None


def stages_of(plan: dict[str, Any]) -> list[dict[str, Any]]:
    """The plan's stages as dicts with `traffic`, `start_h`, `end_h` (hours since the start)."""
    out, t = [], 0.0
    for s in (plan or {}).get("stages") or []:
        dur = float(s.get("duration_s") or 0) / 3600
        out.append({**s, "traffic": float(s.get("traffic", 0.0)), "start_h": t, "end_h": t + dur})
        t += dur
    return out


def _result(passed: bool | None) -> str:
    return NOT_JUDGED if passed is None else (PASS if passed else FAIL)


def _row(section: str, criterion: str, value: Any, limit: Any, result: str, blocking: bool = True) -> dict[str, Any]:
    """`blocking`: a fail of this criterion stops (or stopped) the rollout; an advisory one
    (calibration: it only decides whether a label-free estimate is made) does not."""
    return {"section": section, "criterion": criterion, "value": _cell(value), "limit": _cell(limit),
            "result": result, "blocking": blocking}


def _gate_rows(gate: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for r in gate.get("rules") or []:
        soft = r.get("on_fail") == "approval"
        rows.append(_row("gate", r.get("rule", "?"), r.get("detail", "-"), "approval if failed" if soft else "required",
                         _result(r.get("passed")), blocking=not soft))
    if not rows:
        rows.append(_row("gate", "registration gate", gate.get("reason", "-"), "eligible",
                         _result(gate.get("eligible"))))
    if gate.get("needs_approval"):
        rows.append(_row("gate", "approval", "the gate policy asked for a human review", "approved_by",
                         INFO))
    cal = gate.get("calibration")
    if cal:
        judged = "df" in cal
        value = (f"HL χ² {_num(cal.get('statistic'), '.3f')} (p {_num(cal.get('p_value'), '.4g')}), "
                 f"ECE {_num(cal.get('ece'))} on {_num(cal.get('n'))} rows" if judged else cal.get("reason", "-"))
        limit = (f"p >= {_num(cal.get('alpha'), 'g')} and ECE <= {_num(cal.get('tolerance'), 'g')} "
                 "(else no label-free estimate)" if judged else "-")
        rows.append(_row("calibration", "calibration check (validation month)", value, limit,
                         _result(bool(cal.get("ok"))) if judged else NOT_JUDGED, blocking=False))
    return rows


def _guardrail_rows(evidence: dict[str, Any], where: str) -> list[dict[str, Any]]:
    rows = []
    for g in evidence.get("guardrails") or []:
        name = g.get("name", "?")
        est, bound, limit = g.get("estimate"), g.get("bound"), g.get("limit")
        if name == "error_rate":
            value = f"{_num(est, '.3%')} of {_num(g.get('n'))} requests; lower bound {_num(bound, '.3%')}"
            lim = f"lower bound <= {_num(limit, '.2%')}"
        elif name.startswith("latency"):
            unit = " ms" if name == "latency_p95" else "x"
            value = (f"p95 {_num(est, '.2f' if unit == 'x' else '.1f')}{unit} on {_num(g.get('n'))} requests; "
                     f"lower bound {_num(bound, '.2f' if unit == 'x' else '.1f')}{unit}")
            lim = f"lower bound <= {_num(limit, 'g')}{unit}"
        else:
            value = g.get("reason", "-")
            lim = "no NaN or out-of-range score" if name == "output" else _num(limit, "g")
        result = FAIL if g.get("fired") else (PASS if g.get("judged", True) else NOT_JUDGED)
        rows.append(_row("guardrails", f"{name} ({where})", value, lim, result))
    lf = evidence.get("label_free")
    if lf:
        result = FAIL if lf.get("worse") else (NOT_JUDGED if lf.get("refused") else PASS)
        rows.append(_row("guardrails", f"label-free estimate ({where})", lf.get("reason", "-"),
                         f"upper bound >= -{_num(lf.get('tolerance'), 'g')}", result))
    elif evidence:
        why = next((n for n in evidence.get("notes") or [] if "label-free" in n), "no label-free estimate made")
        rows.append(_row("guardrails", f"label-free estimate ({where})", why, "-", NOT_JUDGED))
    return rows


def _stage_rows(plan: dict[str, Any], decisions: list[dict[str, Any]], final: dict[str, Any] | None
                ) -> list[dict[str, Any]]:
    rows = []
    stages = stages_of(plan)
    end_h = _elapsed_h(final) if final else None
    for i, s in enumerate(stages, start=1):
        last = i == len(stages)  # the last stage also holds its extensions' checks
        checks = [d for d in decisions if (h := _elapsed_h(d)) is not None and s["start_h"] <= h
                  and (last or h < s["end_h"] - 1e-9)]
        share = "shadow (0%)" if s.get("shadow") else f"{s['traffic']:.0%}"
        label = f"stage {i}: {share} for {s['end_h'] - s['start_h']:g} h"
        crit = s.get("criteria") or {}
        limit = "held for its duration, no guardrail fired" + (
            "; criteria " + ", ".join(f"{k} {v:g}" for k, v in sorted(crit.items())) if crit else "")
        if final and final.get("action") == "rollback" and end_h is not None and end_h <= s["end_h"] + 1e-9 \
                and end_h >= s["start_h"]:
            rows.append(_row("stages", label, f"rolled back at {end_h:.2f} h after {len(checks)} check(s): "
                                              f"{final.get('reason', '-')}", limit, FAIL))
        elif end_h is not None and (end_h >= s["end_h"] - 1e-9):
            rows.append(_row("stages", label, f"completed: {len(checks)} check(s), last at "
                                              f"{max((_elapsed_h(d) or 0) for d in checks) if checks else 0:.2f} h",
                             limit, PASS))
        elif final and final.get("action") == "promote" and end_h is not None and end_h >= s["start_h"]:
            rows.append(_row("stages", label, f"promoted at {end_h:.2f} h (before the stage's end) after "
                                              f"{len(checks)} check(s)", limit, INFO))
        else:
            rows.append(_row("stages", label, "not reached", limit, NOT_JUDGED))
    return rows


def _verdict_row(evidence: dict[str, Any], where: str) -> list[dict[str, Any]]:
    v = evidence.get("verdict")
    if not v:
        return [_row("verdict", f"non-inferiority on matured labels ({where})", "no verdict evidence", "-",
                     NOT_JUDGED)]
    verdict = v.get("verdict")
    result = {"promote": PASS, "rollback": FAIL}.get(verdict, INCONCLUSIVE)
    value = (f"ΔAUC {_signed(v.get('delta'))}, {_num(v.get('level'), '.0%')} CI [{_signed(v.get('low'))}, "
             f"{_signed(v.get('high'))}] on {_num(v.get('n_candidate'))} rows ({_num(v.get('pos_candidate'))} "
             f"positives) by {v.get('method') or '-'}; {verdict}")
    return [_row("verdict", f"non-inferiority on matured labels ({where})", value,
                 f"lower bound > -{_num(v.get('tolerance'), 'g')}", result)]


def _ab_rows(ab: dict[str, Any]) -> list[dict[str, Any]]:
    """The A/B test's result (`ab-test-results.json`: its `result` is `ABResult.to_dict()`)."""
    r = ab.get("result") if isinstance(ab.get("result"), dict) else ab
    metric = r.get("metric") or ab.get("metric") or "?"
    winner = ab.get("winner", r.get("winner"))
    decided = ab.get("decided", r.get("decided"))
    value = (f"candidate {_num(r.get('estimate_candidate'))} (n {_num(r.get('n_candidate'))}) vs production "
             f"{_num(r.get('estimate_production'))} (n {_num(r.get('n_production'))}); difference "
             f"{_signed(r.get('difference'))}, interval [{_signed(r.get('low'))}, {_signed(r.get('high'))}] at "
             f"alpha {_num(r.get('alpha_per_look'), 'g')} per look ({_num(r.get('looks'))} looks) by "
             f"{r.get('method') or '-'}; winner {winner or 'none'}")
    result = INCONCLUSIVE if not decided else {"candidate": PASS, "production": FAIL}.get(winner, INFO)
    return [_row("ab", f"A/B on {metric}", value, "the interval excludes 0 in the candidate's favour", result)]


def checklist_rows(candidate: dict[str, Any], plan: dict[str, Any], decisions: list[dict[str, Any]],
                   result: dict[str, Any] | None = None, ab_results: dict[str, Any] | None = None
                   ) -> list[dict[str, Any]]:
    """The deployment checklist: one row per criterion (`section`, `criterion`, `value`, `limit`,
    `result` in pass/fail/not judged/inconclusive/info): the gate policy's rules and the
    calibration check at registration, each guardrail and the label-free estimate of the final
    decision's evidence, each stage of the plan, the verdict on matured labels, the A/B test's result
    when there is one (`ab_results`: the `ab-test-results.json` document), and the decision."""
    final = decisions[-1] if decisions else None
    evidence, at = evidence_of(decisions, result)
    where = f"check {at}" if at is not None else "final decision"
    rows = _gate_rows(candidate.get("gate") or {})
    rows += _guardrail_rows(evidence, where)
    rows += _stage_rows(plan, decisions, final)
    rows += _verdict_row(evidence, where)
    if ab_results:
        rows += _ab_rows(ab_results)
    if final is not None:
        action = final.get("action", "?")
        who = final.get("actor") or (result or {}).get("actor") or "-"
        manual = final.get("manual", (result or {}).get("manual", False))
        rows.append(_row("decision", f"final decision ({'manual' if manual else 'policy'}, {who})",
                         f"{action}: {final.get('reason', '-')}", "promote",
                         PASS if action == "promote" else (FAIL if action == "rollback" else INFO)))
    else:
        rows.append(_row("decision", "final decision", "no decision recorded", "promote", NOT_JUDGED))
    return rows


def _kind(r: dict[str, Any]) -> str:
    return "fail (advisory)" if r["result"] == FAIL and not r.get("blocking", True) else r["result"]


def tally(rows: list[dict[str, Any]]) -> dict[str, int]:
    """How many rows per result (a non-blocking fail counted as "fail (advisory)")."""
    out: dict[str, int] = {}
    for r in rows:
        out[_kind(r)] = out.get(_kind(r), 0) + 1
    return out


def checklist_markdown(version: str, rows: list[dict[str, Any]], *, strategy: str | None = None) -> str:
    """`deployment-checklist.md`: the rows as a table, with a one-line tally and the verdict."""
    counts = tally(rows)
    final = next((r for r in reversed(rows) if r["section"] == "decision"), None)
    head = [f"# Deployment checklist: {version}" + (f" ({strategy})" if strategy else ""), "",
            f"**Verdict: {final['value'].split(':')[0].upper() if final else 'none'}** - "
            + ", ".join(f"{n} {k}" for k, n in counts.items()), "",
            "| section | criterion | value | limit | result |", "|---|---|---|---|---|"]
    mark = {PASS: "pass", FAIL: "**FAIL**", INCONCLUSIVE: "inconclusive", NOT_JUDGED: "not judged", INFO: "info"}

    body = [f"| {r['section']} | {r['criterion']} | {r['value']} | {r['limit']} | {mark.get(_kind(r), _kind(r))} |"
            for r in rows]
    return "\n".join(head + body) + "\n"


# ---- series for the plots ---------------------------------------------------------------------

def check_series(decisions: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per check (decisions with evidence, in order): elapsed hours, the error-rate and p95
    guardrails' estimate, bound and limit, and the verdict's ΔAUC with its interval and tolerance."""
    out = []
    for d in decisions:
        ev = d.get("evidence") or {}
        if not ev:
            continue
        row: dict[str, Any] = {"index": d.get("index"), "hours": _elapsed_h(d) or 0.0, "action": d.get("action")}
        for g in ev.get("guardrails") or []:
            if g.get("name") == "error_rate":
                row.update(error_rate=g.get("estimate"), error_bound=g.get("bound"), error_limit=g.get("limit"))
            elif g.get("name") == "latency_p95":
                row.update(p95=g.get("estimate"), p95_bound=g.get("bound"), p95_limit=g.get("limit"))
        v = ev.get("verdict") or {}
        tol = v.get("tolerance", (d.get("details") or {}).get("auc_tolerance"))
        row.update(delta=v.get("delta", d.get("auc_diff")), low=v.get("low"), high=v.get("high"), tolerance=tol)
        out.append(row)
    return out


def _at(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        return None


def traffic_series(plan: dict[str, Any], decisions: list[dict[str, Any]], journal: dict[str, Any] | None
                   ) -> dict[str, Any]:
    """The planned share per stage (`planned`: [(hours, share)] as steps), the shares the journal
    recorded (`journal`: [(hours, share, event)]) and the decisions' (`decisions`: [(hours, share,
    action)])."""
    planned = [(s["start_h"], s["traffic"]) for s in stages_of(plan)]
    stages = stages_of(plan)
    if stages:
        planned.append((stages[-1]["end_h"], stages[-1]["traffic"]))
    observed = []
    start = _at((journal or {}).get("started_at"))
    if journal and start is not None:
        for e in journal.get("history") or []:
            at = _at(e.get("at"))
            if at is None or e.get("traffic") is None:
                continue
            try:
                hours = (at - start).total_seconds() / 3600
            except TypeError:  # one naive, one aware: the journal writes aware times
                continue
            observed.append((hours, float(e["traffic"]), str(e.get("event", ""))))
    dec = [(h, float(d["traffic"]), str(d.get("action"))) for d in decisions
           if d.get("traffic") is not None and (h := _elapsed_h(d)) is not None]
    return {"planned": planned, "journal": observed, "decisions": dec}
