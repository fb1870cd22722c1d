"""The evidence package of a rollout: one folder `<home>/evidence/<version>/` with everything a
reviewer needs to see why a version was (or was not) deployed.

    trigger-config.yaml       the retraining triggers in force (settings.triggers_file, its bytes)
    rollout-plan.yaml         the plan (its dict form, with the strategy)
    model-comparison.md       champion and challenger on the same test set: metrics, the paired
                              interval stored at registration, slices, calibration
    ab-test-results.json      the A/B results, when there are any (written as given)
    deployment-checklist.md   every criterion with its value, limit and pass/fail
    roc.png calibration.png   both models on the candidate's test rows (re-scored: see below)
    psi.png                   PSI per feature, threshold and noise floor (or "no drift report")
    canary-metrics.png        error rate, p95 latency and ΔAUC per check, with the guardrail lines
    traffic.png               the candidate's share per stage over time (plan, journal, decisions)
    manifest.json             what is in the folder, each file's sha256, where each input came from

**Scores for ROC and calibration.** Registration never stores score vectors (only the paired
evidence), so both registered models are loaded (artifacts verified) and re-score the candidate's
test rows: the rows its lineage names (`record.data["files"]`, test months of
`record.data["split"]`), or `test_frame` when the caller has them. If the files are gone, the two
plots are placeholders saying so; nothing is invented.

**Drift.** The monitor publishes its drift report as a Prefect artifact only; `save_drift_report`
keeps the latest one as `<home>/monitor/drift-latest.json` for the package. The package uses, in
order: the `drift_report` passed in, that file when it concerns either version, the drift event's
payload in the candidate's lineage (a drift-triggered retrain), else a "no drift report" image.

**Atomic.** Everything is written into a hidden temporary folder next to the target, made
owner-only, and renamed into place; a failure leaves no partial package (and an earlier package
of the same version stays as it was). Plain Python: no Prefect.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Iterable

import yaml

from .. import schema as S
from ..clock import utcnow_iso
from ..errors import DataError, RetrainerError, RolloutError
from ..perms import private_dir, private_tree
from ..registry import atomic_write_text
from . import content, plots

EVIDENCE_DIR = "evidence"
MANIFEST = "manifest.json"
DRIFT_LATEST = Path("monitor") / "drift-latest.json"
STALE_SECONDS = 600
FILES = {
    "trigger-config.yaml": "the retraining triggers in force",
    "rollout-plan.yaml": "the rollout plan",
    "model-comparison.md": "champion and challenger on the same test set",
    "ab-test-results.json": "the A/B test results",
    "deployment-checklist.md": "each criterion with its value and pass/fail",
    "roc.png": "ROC curves of both versions on the same test rows",
    "calibration.png": "reliability diagram of both versions",
    "psi.png": "PSI per feature with threshold and noise floor",
    "canary-metrics.png": "error rate, p95 latency and ΔAUC per check with guardrail lines",
    "traffic.png": "traffic share per stage over time",
    MANIFEST: "this list",
}


# ---- where packages live ------------------------------------------------------------------------

def _check_version(version: str) -> str:
    if not version or "/" in version or "\\" in version or version.startswith("."):
        raise RolloutError(f"bad version for an evidence package: {version!r}")
    return version


def evidence_root(home: str | os.PathLike) -> Path:
    return Path(home) / EVIDENCE_DIR


def package_dir(home: str | os.PathLike, version: str) -> Path:
    """`<home>/evidence/<version>` (whether or not it exists)."""
    return evidence_root(home) / _check_version(version)


def _recover(root: Path, version: str) -> None:
    """A writer that died between its two renames left the previous package as `.old-<version>-*`
    and no package: put it back."""
    final = root / version
    if final.exists() or not root.is_dir():
        return
    olds = sorted(root.glob(f".old-{version}-*"), key=lambda p: p.stat().st_mtime)
    if olds:
        try:
            os.rename(olds[-1], final)
        except OSError:
            pass


def _clean_stale(root: Path) -> None:
    """Temporary folders of writers that died more than STALE_SECONDS ago."""
    now = time.time()
    for p in list(root.glob(".tmp-*")) + list(root.glob(".old-*")):
        try:
            if now - p.stat().st_mtime > STALE_SECONDS:
                if p.name.startswith(".old-") and not (root / p.name[5:].rsplit("-", 1)[0]).exists():
                    continue  # the only copy of a package: _recover puts it back
                shutil.rmtree(p, ignore_errors=True)
        except OSError:
            pass


def read_manifest(home: str | os.PathLike, version: str) -> dict[str, Any] | None:
    """The package's manifest (with its `path`), or None when `version` has no package."""
    d = package_dir(home, version)
    _recover(d.parent, version)
    try:
        m = json.loads((d / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise RolloutError(f"evidence package {d} has an unreadable manifest: {exc}") from None
    m["path"] = str(d)
    return m


def list_packages(home: str | os.PathLike) -> list[str]:
    root = evidence_root(home)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")
                  and (p / MANIFEST).exists())


# ---- inputs ---------------------------------------------------------------------------------------

def _plain(obj: Any) -> Any:
    """`obj` as JSON-native data (dataclasses with to_dict, datetimes as ISO strings)."""
    if hasattr(obj, "to_dict"):
        obj = obj.to_dict()
    return json.loads(json.dumps(obj, default=str))


def _records(report: Any) -> list[dict[str, Any]]:
    if hasattr(report, "to_records"):
        return report.to_records()
    return list(report)


def normalize_drift(report: Any, source: str) -> dict[str, Any] | None:
    """A drift report in any of its shapes as {"source", "threshold", "features": [{feature, psi,
    noise_floor?, family_floor?, status?, role?}], "summary"}: a `DriftReport`, its records
    (`to_records()`), a dict with `results`/`features` (and `threshold`), or a drift event's
    payload (`top_features`: feature -> PSI, `psi_threshold`). None when it holds no feature."""
    if report is None:
        return None
    threshold = getattr(report, "threshold", None)
    summary = report.summary() if hasattr(report, "summary") and callable(report.summary) else None
    if isinstance(report, dict):
        threshold = report.get("threshold", report.get("psi_threshold"))
        summary = report.get("summary")
        if "top_features" in report:
            feats = [{"feature": f, "psi": float(p)} for f, p in (report.get("top_features") or {}).items()]
            over = set(report.get("features_over_threshold") or ())
            for f in feats:
                f["status"] = "drift" if f["feature"] in over else "ok"
            summary = summary or (f"the drift event that triggered the retrain: top {len(feats)} features by PSI "
                                  f"(max {report.get('max_psi', '-')}) on {report.get('n_window', '?')} rows; "
                                  "per-feature noise floors are not in the event")
        else:
            feats = list(report.get("results") or report.get("features") or [])
    else:
        feats = _records(report)
    feats = [_plain(f) for f in feats if f and f.get("feature") is not None]
    if not feats:
        return None
    return {"source": source, "threshold": float(threshold if threshold is not None else 0.2),
            "features": feats, "summary": summary}


def save_drift_report(home: str | os.PathLike, report: Any, *, production_version: str | None,
                      at: str | None = None) -> Path:
    """Keep `report` (a `DriftReport` or its records) as the latest drift report,
    `<home>/monitor/drift-latest.json`, for the evidence package. The monitor can call this after
    scoring its window."""
    data = {"production_version": production_version, "at": at or utcnow_iso(),
            "threshold": getattr(report, "threshold", None), "alpha": getattr(report, "alpha", None),
            "summary": report.summary() if hasattr(report, "summary") else None,
            "results": [_plain(r) for r in _records(report)]}
    path = Path(home) / DRIFT_LATEST
    private_dir(path.parent)
    atomic_write_text(path, json.dumps(data, indent=1, default=str))
    return path


def find_drift_report(home: str | os.PathLike, record: dict[str, Any], versions: Iterable[str | None]
                      ) -> dict[str, Any] | None:
    """The latest stored drift report when it concerns one of `versions` (the monitor scores
    production's traffic), else the drift event in the record's lineage, else None."""
    path = Path(home) / DRIFT_LATEST
    wanted = {v for v in versions if v}
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        stored = None
    if stored and stored.get("production_version") in wanted:
        return normalize_drift(stored, f"monitor report at {stored.get('at')} on production "
                                       f"{stored.get('production_version')}'s traffic ({path})")
    ctx = ((record.get("extra") or {}).get("context")) or {}
    if ctx.get("top_features"):
        return normalize_drift(ctx, f"the drift event in {record['version']}'s lineage")
    return None


def test_rows_from_lineage(record: dict[str, Any]):
    """The candidate's test rows, re-read from the files its lineage names and cut to its test
    months. Returns (frame, source) or (None, why not)."""
    import pandas as pd  # noqa: PLC0415 - heavy: pandas, only when a package is written

    from ..dataio import read_parquet  # noqa: PLC0415 - heavy: pyarrow

    data = record.get("data") or {}
    files = data.get("files") or []
    test = (data.get("split") or {}).get("test") or {}
    months = test.get("months") or []
    if not files or not months:
        return None, f"{record['version']}'s lineage names no data files or test months"
    missing = [f for f in files if not Path(f).exists()]
    if missing:
        return None, f"the training data {missing[0]} named in {record['version']}'s lineage no longer exists"
    frames = []
    try:
        for f in files:
            df = read_parquet(f)
            month = pd.to_datetime(df[S.TIMESTAMP]).dt.strftime("%Y-%m")
            frames.append(df[month.isin(months)])
    except (DataError, KeyError) as exc:
        return None, f"cannot re-read {record['version']}'s test rows: {exc}"
    frame = pd.concat(frames, ignore_index=True) if frames else None
    if frame is None or not len(frame):
        return None, f"no rows of the test months {', '.join(months)} in {record['version']}'s data files"
    expected = test.get("rows")
    if expected is not None and int(expected) != len(frame):
        return None, (f"the data files now hold {len(frame):,} rows of {', '.join(months)}, the lineage recorded "
                      f"{int(expected):,}: they changed since registration")
    return frame, f"{record['version']}'s test month {', '.join(months)} (re-read from its lineage's data files)"


def _score(registry, version: str, frame):
    from ..training import load_model  # noqa: PLC0415 - heavy: scikit-learn

    return load_model(registry.verify(version)).predict(frame)


# ---- writing ----------------------------------------------------------------------------------------

def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _yaml(data: Any) -> str:
    return yaml.safe_dump(_plain(data), sort_keys=False, allow_unicode=True)


def _triggers_text(triggers_file: str | os.PathLike | None) -> tuple[str, str]:
    if triggers_file is None:
        return "# no triggers file configured\nretraining_triggers: null\n", "none configured"
    p = Path(triggers_file)
    try:
        return p.read_text(encoding="utf-8"), str(p.resolve())
    except OSError as exc:
        return (f"# the triggers file {p} could not be read: {exc.strerror or exc}\nretraining_triggers: null\n",
                f"{p} (unreadable)")


def _champion(production: str | None, journal: dict | None, result: dict | None, record: dict) -> str | None:
    for v in (production, (journal or {}).get("production"), (result or {}).get("production_before"),
              ((record.get("metrics") or {}).get("production") or {}).get("version")):
        if v:
            return str(v)
    return None


def write_package(home: str | os.PathLike, version: str, *, registry, plan: dict[str, Any],
                  decisions: list[dict[str, Any]], journal_record: dict[str, Any] | None,
                  triggers_file: str | os.PathLike | None, production: str | None = None,
                  result: dict[str, Any] | None = None, ab_results: dict[str, Any] | str | os.PathLike | None = None,
                  drift_report: Any = None, test_frame=None) -> Path:
    """Write `<home>/evidence/<version>/` (see the module doc) and return its path.

    `registry`: the backend's registry (records and verified model artifacts). `plan`: the plan's
    dict form. `decisions`: every decision of the rollout in order (`Decision.to_dict()`; the flow
    result's abridged ones work too, with `result["evidence"]` as the final evidence). `production`:
    the champion (default: the journal's or the result's production before the rollout, else the
    version the candidate was compared with at registration). `drift_report`: a `DriftReport`, its
    records or a dict (default: see `find_drift_report`). `ab_results`: the A/B results document
    (written as given) or the path of the `ab-test-results.json` that `rollout.ab.write_results`
    wrote (copied byte for byte). `test_frame`: the candidate's test rows,
    when the caller has them (default: re-read from the lineage)."""
    root = evidence_root(home)
    _check_version(version)
    plan = _plain(plan or {})
    decisions = [_plain(d) for d in (decisions or [])]
    journal = _plain(journal_record) if journal_record is not None else None
    result = _plain(result) if result is not None else None
    record = _plain(registry.get(version))
    champion = _champion(production, journal, result, record)
    champ_record = None
    if champion:
        try:
            champ_record = _plain(registry.get(champion))
        except RetrainerError:
            champ_record = None
    strategy = (journal or {}).get("strategy") or plan.get("strategy") or "canary"
    sources: dict[str, Any] = {"journal": bool(journal), "decisions": len(decisions)}

    private_dir(root)
    _recover(root, version)
    _clean_stale(root)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".tmp-{version}-"))
    try:
        text, where = _triggers_text(triggers_file)
        (tmp / "trigger-config.yaml").write_text(text, encoding="utf-8")
        sources["triggers_file"] = where
        (tmp / "rollout-plan.yaml").write_text(_yaml({"version": version, "production": champion,
                                                      "strategy": strategy, **plan}), encoding="utf-8")
        if isinstance(ab_results, (str, os.PathLike)):  # the file `rollout.ab.write_results` wrote
            try:
                shutil.copyfile(ab_results, tmp / "ab-test-results.json")
                sources["ab_results"] = str(ab_results)
            except OSError as exc:
                sources["ab_results"] = f"{ab_results} could not be read: {exc.strerror or exc}"
        elif ab_results is not None:
            (tmp / "ab-test-results.json").write_text(json.dumps(ab_results, indent=2, default=str) + "\n",
                                                      encoding="utf-8")
        elif strategy == "ab":
            sources["ab_results"] = "the plan is A/B but no results were given"

        recomputed = _roc_and_calibration(tmp, registry, record, champion, test_frame, sources)
        (tmp / "model-comparison.md").write_text(
            content.comparison_markdown(record, champ_record, champion_version=champion, recomputed=recomputed),
            encoding="utf-8")
        ab_doc = None
        if (tmp / "ab-test-results.json").exists():
            try:
                ab_doc = json.loads((tmp / "ab-test-results.json").read_text(encoding="utf-8"))
            except ValueError:
                sources["ab_results"] = "ab-test-results.json is not valid JSON"
        rows = content.checklist_rows(record, plan, decisions, result,
                                      ab_doc if isinstance(ab_doc, dict) else None)
        (tmp / "deployment-checklist.md").write_text(content.checklist_markdown(version, rows, strategy=strategy),
                                                     encoding="utf-8")
        (tmp / "checklist.json").write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")

        drift = (normalize_drift(drift_report, "passed in by the caller") if drift_report is not None
                 else find_drift_report(home, record, (version, champion)))
        if drift is None:
            plots.placeholder(tmp / "psi.png", "no drift report",
                              f"no drift report for {version} or {champion or '-'}: the monitor has not scored a "
                              "window yet")
            sources["drift_report"] = None
        else:
            n_drift = sum(f.get("status") == "drift" for f in drift["features"])
            plots.psi_plot(tmp / "psi.png", drift["features"], threshold=drift["threshold"],
                           title=f"PSI per feature: {n_drift} of {len(drift['features'])} drifted (red)",
                           subtitle=drift["source"])
            sources["drift_report"] = drift["source"]
            sources["drift_summary"] = drift.get("summary")

        checks = content.check_series(decisions)
        if checks:
            plots.canary_plot(tmp / "canary-metrics.png", checks,
                              title=f"{version}: candidate metrics per check ({strategy})")
        else:
            plots.placeholder(tmp / "canary-metrics.png", "no per-check evidence",
                              f"the decisions given for {version} carry no evidence (pass Decision.to_dict())")
        plots.traffic_plot(tmp / "traffic.png", content.traffic_series(plan, decisions, journal),
                           title=f"{version}: candidate traffic share ({strategy})")

        final = decisions[-1] if decisions else {}
        manifest = {"version": version, "production": champion, "strategy": strategy, "written_at": utcnow_iso(),
                    "decision": final.get("action"), "reason": final.get("reason"),
                    "journal_status": (journal or {}).get("status"), "checklist": content.tally(rows),
                    "sources": sources, "files": {}}
        for p in sorted(tmp.iterdir()):
            manifest["files"][p.name] = {"bytes": p.stat().st_size, "sha256": _sha256(p),
                                         "what": FILES.get(p.name, "the checklist as JSON rows"
                                                           if p.name == "checklist.json" else "")}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, default=str) + "\n", encoding="utf-8")
        private_tree(tmp)
        final_dir = root / version
        if final_dir.exists():
            old = root / f".old-{version}-{uuid.uuid4().hex[:8]}"
            os.rename(final_dir, old)
            os.rename(tmp, final_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, final_dir)
        return final_dir
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _roc_and_calibration(tmp: Path, registry, record: dict[str, Any], champion: str | None, test_frame,
                         sources: dict[str, Any]) -> dict[str, Any] | None:
    """roc.png and calibration.png from both models' scores of the same test rows; placeholders
    (with the reason) when the rows or a model cannot be had. Returns what was recomputed."""
    import numpy as np  # noqa: PLC0415 - numpy is light, but keep this module's import cheap for the CLI

    version = record["version"]
    if test_frame is not None:
        frame, source = test_frame, "the test rows passed in by the caller"
    else:
        frame, source = test_rows_from_lineage(record)
    why = None if frame is not None else source
    scores: dict[str, Any] = {}
    if frame is not None:
        if S.LABEL not in frame.columns:
            why = f"the test rows have no {S.LABEL} column"
        else:
            try:
                if champion and champion != version:
                    scores[f"champion {champion}"] = _score(registry, champion, frame)
                scores[f"challenger {version}"] = _score(registry, version, frame)
            except RetrainerError as exc:
                why = f"cannot load a model to re-score the test rows: {exc}"
    if why is None and len(np.unique(frame[S.LABEL].to_numpy())) < 2:
        why = "the test rows hold one class only: no ROC curve"
    if why is not None:
        for name, title in (("roc.png", "no ROC curves"), ("calibration.png", "no calibration curves")):
            plots.placeholder(tmp / name, title, why)
        sources["test_rows"] = None
        sources["test_rows_missing"] = why
        return None
    y = frame[S.LABEL].to_numpy().astype(int)
    n, pos = len(y), int(y.sum())
    plots.roc_plot(tmp / "roc.png", y, scores, title=f"ROC on the same {n:,} test rows ({pos:,} positives)")
    plots.calibration_plot(tmp / "calibration.png", y, scores,
                           title=f"Calibration on the same {n:,} test rows ({pos:,} positives)")
    sources["test_rows"] = source
    from ..evaluation import classification_metrics, slice_auc, slice_counts  # noqa: PLC0415 - heavy: sklearn

    out: dict[str, Any] = {"source": source, "rows": n, "positives": pos, "notes": [],
                           "auc": {k: classification_metrics(y, s)["auc"] for k, s in scores.items()}}
    stored = ((record.get("metrics") or {}).get("candidate") or {}).get("auc")
    got = out["auc"].get(f"challenger {version}")
    if stored is not None and got is not None and abs(stored - got) > 1e-4:
        out["notes"].append(f"recomputed AUC {got:.4f} differs from the registered {stored:.4f}: the rows or "
                            "the model differ from registration")
    compared_with = ((record.get("metrics") or {}).get("production") or {}).get("version")
    key = f"champion {champion}"
    if champion and key in scores and compared_with != champion:
        m = classification_metrics(y, scores[key])
        m["slices"] = slice_auc(frame, scores[key])
        m["slice_counts"] = slice_counts(frame)
        out["champion_metrics"] = m
    return out


# ---- reading a package back (for Prefect artifacts and the CLI) ----------------------------------

def checklist_table(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The package's checklist rows (`checklist.json`)."""
    return json.loads((Path(path) / "checklist.json").read_text(encoding="utf-8"))


def package_markdown(path: str | os.PathLike) -> str:
    """One markdown text for a Prefect artifact: where the package is, its pictures (paths: a
    Prefect artifact cannot embed local files), the comparison and the checklist."""
    path = Path(path)
    m = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    lines = [f"# Evidence package: {m['version']} vs {m.get('production') or '-'} ({m.get('strategy')})", "",
             f"- folder: `{path}` (`retrainer report {m['version']}`)",
             f"- decision: **{m.get('decision') or '-'}**: {m.get('reason') or '-'}", "", "## Files", ""]
    for name, meta in sorted(m["files"].items()):
        lines.append(f"- `{path / name}`: {meta.get('what', '')} ({meta['bytes']:,} bytes)")
    src = m.get("sources") or {}
    if src.get("test_rows_missing"):
        lines.append(f"- ROC and calibration are placeholders: {src['test_rows_missing']}")
    if not src.get("drift_report"):
        lines.append("- psi.png is a placeholder: no drift report")
    body = [(path / "model-comparison.md").read_text(encoding="utf-8"),
            (path / "deployment-checklist.md").read_text(encoding="utf-8")]
    return "\n".join(lines) + "\n\n" + "\n".join(b.replace("\n# ", "\n## ").replace("# ", "## ", 1) for b in body)
