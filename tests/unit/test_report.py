"""Evidence packages (`retrainer.report`): a real registry with two real models registered through
the real gate (paired evidence and calibration in their lineage), real decisions made by the
canary policy on real guardrail tests and a real paired comparison, a real rollout journal and a
real drift report; the package's files, numbers and pictures; `retrainer report`."""
from __future__ import annotations

import json
import os
import shutil
import struct
import sys
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml

from tests.helpers import run_cli, snapshot

# one worker builds the world (two trained models, ~20 s) once for the whole module
pytestmark = [pytest.mark.unit, pytest.mark.xdist_group("report")]

PNGS = ("roc.png", "calibration.png", "psi.png", "canary-metrics.png", "traffic.png")
PLAN = {"strategy": "canary", "stages": [{"traffic": 0.1, "duration_s": 7200.0, "check_interval_s": 3600.0},
                                         {"traffic": 0.5, "duration_s": 7200.0, "check_interval_s": 3600.0}]}
T0 = datetime(2026, 3, 1, 8, 0, tzinfo=timezone.utc)


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk, after checking the signature."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path.name} is not a PNG"
    assert data[12:16] == b"IHDR"
    assert data.endswith(b"IEND\xaeB`\x82"), f"{path.name} is truncated"
    return struct.unpack(">II", data[16:24])


def _decisions(test, s_prod, s_cand, settings):
    """Four checks of the two-stage plan made by the real policy on real evidence: guardrails from
    real counts and latencies, the verdict from the paired comparison on the test rows."""
    import numpy as np

    from retrainer import schema as S
    from retrainer.evidence import compare_paired
    from retrainer.evidence.guardrails import error_rate_guardrail, latency_guardrail, output_guardrail
    from retrainer.rollout import ArmStats, LiveEvidence, RolloutPlan, check

    plan = RolloutPlan.from_dict({"stages": PLAN["stages"]})
    verdict = compare_paired(test[S.LABEL].to_numpy(), s_prod, s_cand, tolerance=0.02, source="registration month")
    rng = np.random.default_rng(0)
    out = []
    for i, hours in enumerate((1, 2, 3, 4)):
        n = 300 * hours
        lat = rng.gamma(4.0, 10.0 + 3 * i, size=n)
        guards = (error_rate_guardrail(i + 1, n, 0.01, checks=5), latency_guardrail(lat, 250.0, checks=5),
                  output_guardrail(n, 0, 0))
        cand = ArmStats("green", "1.1.0", n, 0, None, (i + 1) / n, float(np.quantile(lat, 0.95)), i + 1)
        prod = ArmStats("blue", "1.0.0", 9 * n, 0, None, 0.0, 30.0, 0)
        live = LiveEvidence(cand, prod, guards, None, verdict if hours >= 2 else None,
                            ("no label-free estimate: test",))
        d = replace(check(plan, T0, T0 + timedelta(hours=hours), live, settings), index=i)
        out.append(d)
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Two versions registered through the real gate on the same test month, a canary's
    decisions, its journal, a stored drift report, and the package written from them."""
    from retrainer import clock, lifecycle
    from retrainer.datagen import GenerationSpec, generate
    from retrainer.dataio import load_batch, parquet_files, time_split
    from retrainer.drift.report import drift_report
    from retrainer.registry import LocalRegistry
    from retrainer.report import save_drift_report, write_package
    from retrainer.rollout.journal import RolloutJournal
    from retrainer.settings import ModelSettings, Settings
    from retrainer.training import load_model, train

    tmp = tmp_path_factory.mktemp("report")
    data = tmp / "data"
    generate(data, GenerationSpec(months=3, rows_per_month=2000, seed=5))
    frame = load_batch(data)
    files = [str(p) for p in parquet_files(data)]
    home = tmp / "home"
    reg = LocalRegistry(home / "registry")
    base = Settings(home=home)
    split = time_split(frame, base.split)
    versions = []
    for i, kw in enumerate((dict(max_iter=3, max_leaf_nodes=2), dict(max_iter=60))):
        settings = Settings(home=home, model=ModelSettings(**kw), gate={"min_auc": 0.55})
        model_dir = tmp / f"model-{i}"
        train(split.train, split.validation, model_dir, settings.model.model_dump())
        cmp = lifecycle.evaluate_against_production(reg, model_dir, split.test, settings.gate)
        versions.append(lifecycle.register_candidate(
            reg, model_dir, frame=frame, files=files, split=split, metrics=cmp, validation={"success": True},
            trigger="manual", settings=settings, actor="test", context=None))
    prod, cand = versions
    assert prod.status == "production" and cand.gate.get("evidence"), cand.gate
    s_prod = load_model(reg.verify(prod.version)).predict(split.test)
    s_cand = load_model(reg.verify(cand.version)).predict(split.test)
    decisions = _decisions(split.test, s_prod, s_cand, base)

    journal = RolloutJournal(home)
    mc = clock.ManualClock(T0)
    with clock.use(mc):
        journal.start(cand.version, prod.version, "canary", PLAN, T0, traffic=0.1)
        mc.set(T0 + timedelta(hours=2))
        journal.update(cand.version, "stage", stage=1, traffic=0.5)
        mc.set(T0 + timedelta(hours=4))
        final = decisions[-1]
        journal.update(cand.version, final.action, status="promoted" if final.action == "promote" else "rolled_back",
                       traffic=1.0 if final.action == "promote" else 0.0, decision=final.action,
                       reason=final.reason)
    report = drift_report(split.train, split.test, base.drift)
    save_drift_report(home, report, production_version=prod.version)
    triggers = tmp / "triggers.yaml"
    shutil.copy(Path(__file__).resolve().parents[2] / "triggers.yaml", triggers)
    from retrainer.rollout.ab import ABResult, results_document
    ev = cand.gate["evidence"]
    ab = results_document(
        ABResult("auc", "paired DeLong", ev["n_candidate"], ev["n_production"], ev["pos_candidate"],
                 ev["pos_production"], ev["auc_candidate"], ev["auc_production"], ev["delta"], ev["low"], ev["high"],
                 1e-6, 0.05, 1, 0.05, True, ev["low"] > 0, "candidate" if ev["low"] > 0 else None, ev["reason"]),
        versions={"candidate": cand.version, "production": prod.version}, split={"candidate": 0.5},
        started_at=T0, decided_at=T0 + timedelta(hours=4))
    path = write_package(home, cand.version, registry=reg, plan=PLAN, decisions=[d.to_dict() for d in decisions],
                         journal_record=journal.get(cand.version).to_dict(), triggers_file=triggers,
                         ab_results=ab)
    return dict(home=home, reg=reg, prod=prod, cand=cand, path=path, decisions=decisions, data=data, ab=ab,
                triggers=triggers, split=split, drift=report, journal=journal, s_prod=s_prod, s_cand=s_cand)


# ---- the package ------------------------------------------------------------------------------

def test_every_file_is_there_and_parses(world):
    p = world["path"]
    assert p == world["home"] / "evidence" / world["cand"].version
    names = {f.name for f in p.iterdir()}
    expected = {"trigger-config.yaml", "rollout-plan.yaml", "model-comparison.md", "ab-test-results.json",
                "deployment-checklist.md", "checklist.json", "manifest.json", *PNGS}
    assert names == expected
    assert (p / "trigger-config.yaml").read_bytes() == world["triggers"].read_bytes()  # copied as loaded
    assert "retraining_triggers" in yaml.safe_load((p / "trigger-config.yaml").read_text())
    plan = yaml.safe_load((p / "rollout-plan.yaml").read_text())
    assert plan["stages"] == PLAN["stages"] and plan["strategy"] == "canary"
    assert plan["version"] == world["cand"].version and plan["production"] == world["prod"].version
    assert json.loads((p / "ab-test-results.json").read_text()) == world["ab"]
    manifest = json.loads((p / "manifest.json").read_text())
    assert set(manifest["files"]) == expected - {"manifest.json"}
    import hashlib
    for name, meta in manifest["files"].items():
        assert meta["sha256"] == hashlib.sha256((p / name).read_bytes()).hexdigest()
    assert manifest["decision"] == world["decisions"][-1].action
    assert manifest["sources"]["test_rows"].startswith(f"{world['cand'].version}'s test month")
    assert "monitor report" in manifest["sources"]["drift_report"]
    assert not list((world["home"] / "evidence").glob(".*"))  # no temporary folder left behind
    assert oct(p.stat().st_mode & 0o777) == "0o700" and oct((p / "roc.png").stat().st_mode & 0o777) == "0o600"


def test_every_picture_is_a_valid_800x500_png(world):
    for name in PNGS:
        f = world["path"] / name
        assert f.stat().st_size > 5000, name  # a drawn picture, not an empty canvas
        assert png_size(f) == (800, 500), name
    from PIL import Image
    with Image.open(world["path"] / "roc.png") as im:
        im.load()
        colours = len(set(im.convert("RGB").getdata()))
    assert colours > 50  # curves, text and legend: far more than a blank canvas


def test_comparison_has_the_stored_numbers(world):
    text = (world["path"] / "model-comparison.md").read_text()
    cand, prod = world["cand"], world["prod"]
    m_c, m_p = cand.metrics["candidate"], cand.metrics["production"]
    ev = cand.gate["evidence"]
    assert f"challenger {cand.version} vs champion {prod.version}" in text
    assert f"| auc | {m_p['auc']:.4f} | {m_c['auc']:.4f} | {m_c['auc'] - m_p['auc']:+.4f} |" in text
    assert f"| brier | {m_p['brier']:.4f} | {m_c['brier']:.4f} |" in text
    assert f"**{ev['delta']:+.4f}**" in text and f"[{ev['low']:+.4f}, {ev['high']:+.4f}]" in text
    assert ev["method"] in text and f"rows {ev['n_candidate']:,}" in text
    age = next(iter(m_c["slices"]["age_band"]))
    assert f"| age_band={age} | {m_c['slice_counts']['age_band'][age]['n']:,} |" in text
    assert "| sex=" in text
    for rec in (prod, cand):  # each version's own calibration check, as stored
        cal = rec.gate["calibration"]
        assert f"{cal['ece']:.4f}" in text and f"{cal['p_value']:.4g}" in text
    # the plots' scores are the registered models re-scored on the same rows: same AUCs as registered
    assert f"- AUC challenger {cand.version}: {m_c['auc']:.4f}" in text
    assert f"- AUC champion {prod.version}: {m_p['auc']:.4f}" in text
    assert "differs from the registered" not in text


def test_checklist_lists_every_criterion_with_its_value(world):
    rows = json.loads((world["path"] / "checklist.json").read_text())
    md = (world["path"] / "deployment-checklist.md").read_text()
    by = {(r["section"], r["criterion"].split(" (")[0]): r for r in rows}
    gate_rules = {r["rule"]: r for r in world["cand"].gate["rules"]}
    for name, rule in gate_rules.items():  # every gate rule with its verdict
        assert by[("gate", name)]["result"] == ("pass" if rule["passed"] else "fail")
    cal = world["cand"].gate["calibration"]
    assert by[("calibration", "calibration check")]["result"] == ("pass" if cal["ok"] else "fail")
    last = world["decisions"][-1]
    err = next(g for g in last.evidence["guardrails"] if g["name"] == "error_rate")
    row = by[("guardrails", "error_rate")]
    assert row["result"] == "pass" and f"{err['estimate']:.3%}" in row["value"] and "1.00%" in row["limit"]
    assert by[("guardrails", "latency_p95")]["result"] == "pass"
    assert by[("guardrails", "output")]["result"] == "pass"
    assert by[("guardrails", "label-free estimate")]["result"] == "not judged"
    s1, s2 = by[("stages", "stage 1: 10% for 2 h")], by[("stages", "stage 2: 50% for 2 h")]
    assert s1["result"] == "pass" and "1 check(s), last at 1.00 h" in s1["value"]  # the 2 h check is stage 2's
    assert s2["result"] == "pass" and "3 check(s), last at 4.00 h" in s2["value"]
    calib = by[("calibration", "calibration check")]
    assert calib["blocking"] is False and all(r["blocking"] for r in rows if r["section"] != "calibration")
    v = last.evidence["verdict"]
    vrow = by[("verdict", "non-inferiority on matured labels")]
    assert f"{v['delta']:+.4f}" in vrow["value"] and vrow["result"] == {"promote": "pass", "rollback": "fail"}.get(
        v["verdict"], "inconclusive")
    ab = by[("ab", "A/B on auc")]
    assert f"difference {world['ab']['result']['difference']:+.4f}" in ab["value"] and ab["result"] == "pass"
    dec = next(r for r in rows if r["section"] == "decision")
    assert dec["value"].startswith(last.action) and dec["result"] == ("pass" if last.action == "promote" else "fail")
    assert f"**Verdict: {last.action.upper()}**" in md and md.count("\n| ") == len(rows) + 1


def test_a_rolled_back_stage_fails_the_checklist():
    """A guardrail that fired at 1.5 h fails stage 1, leaves stage 2 unreached, and fails the decision."""
    from retrainer.report.content import checklist_rows

    guard = {"name": "error_rate", "fired": True, "judged": True, "estimate": 0.05, "bound": 0.03, "limit": 0.01,
             "n": 400, "reason": "FIRED"}
    decisions = [{"index": 0, "action": "continue", "elapsed_s": 3600, "traffic": 0.1, "reason": "ok",
                  "evidence": {"guardrails": [dict(guard, fired=False, estimate=0.0, bound=0.0)]}},
                 {"index": 1, "action": "rollback", "elapsed_s": 5400, "traffic": 0.0,
                  "reason": "guardrail: error rate", "actor": "canary-policy",
                  "evidence": {"guardrails": [guard], "verdict": None}}]
    rows = checklist_rows({"version": "2.0.0", "gate": {}}, PLAN, decisions)
    result = {r["criterion"]: r["result"] for r in rows}
    assert result["error_rate (check 1)"] == "fail"
    assert result["stage 1: 10% for 2 h"] == "fail" and result["stage 2: 50% for 2 h"] == "not judged"
    assert result["final decision (policy, canary-policy)"] == "fail"
    linear = {"strategy": "linear", "stages": [dict(PLAN["stages"][0], criteria={"error_rate": 0.02}),
                                               dict(PLAN["stages"][1], traffic=1.0)]}
    rows = checklist_rows({"version": "2.0.0", "gate": {}}, linear, decisions)
    stage1 = next(r for r in rows if r["criterion"] == "stage 1: 10% for 2 h")
    assert stage1["limit"].endswith("criteria error_rate 0.02") and stage1["result"] == "fail"


def test_without_drift_report_or_test_data_the_pictures_say_why(world, tmp_path):
    """The lineage's data files gone and no drift report: the package is still complete, and the
    ROC, calibration and PSI images are placeholders of the same size; the manifest says why."""
    from retrainer.report import write_package

    home2 = tmp_path / "home2"
    moved = tmp_path / "moved"
    os.rename(world["data"], moved)
    try:
        path = write_package(home2, world["cand"].version, registry=world["reg"], plan=PLAN,
                             decisions=[d.to_dict() for d in world["decisions"]], journal_record=None,
                             triggers_file=tmp_path / "absent.yaml")
    finally:
        os.rename(moved, world["data"])
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["sources"]["drift_report"] is None and manifest["sources"]["test_rows"] is None
    assert "no longer exists" in manifest["sources"]["test_rows_missing"]
    assert "ab-test-results.json" not in manifest["files"]
    for name in PNGS:
        assert png_size(path / name) == (800, 500)
    # placeholders are smaller than drawn plots: text only
    assert (path / "psi.png").stat().st_size < (world["path"] / "psi.png").stat().st_size
    assert (path / "roc.png").stat().st_size < (world["path"] / "roc.png").stat().st_size
    assert yaml.safe_load((path / "trigger-config.yaml").read_text()) == {"retraining_triggers": None}
    assert "Recomputed for the plots" not in (path / "model-comparison.md").read_text()


def test_a_champion_other_than_the_registration_comparison_is_rescored(world, tmp_path):
    """A candidate registered against 1.0.0 rolled out against another champion: the stored
    interval is said to be against 1.0.0, and the champion's metrics are recomputed on the
    candidate's test rows (the same month every version here was tested on)."""
    from retrainer import lifecycle
    from retrainer.dataio import load_batch, parquet_files
    from retrainer.report import write_package
    from retrainer.settings import ModelSettings, Settings
    from retrainer.training import train

    split, reg = world["split"], world["reg"]
    settings = Settings(home=world["home"], model=ModelSettings(max_iter=20, random_state=7), gate={"min_auc": 0.55})
    train(split.train, split.validation, tmp_path / "model", settings.model.model_dump())
    cmp = lifecycle.evaluate_against_production(reg, tmp_path / "model", split.test, settings.gate)
    third = lifecycle.register_candidate(
        reg, tmp_path / "model", frame=load_batch(world["data"]), files=[str(p) for p in parquet_files(world["data"])],
        split=split, metrics=cmp, validation={"success": True}, trigger="manual", settings=settings, actor="test",
        context=None)
    champion = world["cand"]  # 1.0.1, not the 1.0.0 the third version was compared with
    path = write_package(tmp_path / "home5", third.version, registry=reg, plan=PLAN, decisions=[],
                         journal_record=None, triggers_file=world["triggers"], production=champion.version)
    text = (path / "model-comparison.md").read_text()
    assert f"compared with {world['prod'].version}, not with today's champion {champion.version}" in text
    c_auc, t_auc = champion.metrics["candidate"]["auc"], third.metrics["candidate"]["auc"]
    assert f"| auc | {c_auc:.4f} | {t_auc:.4f} | {t_auc - c_auc:+.4f} |" in text
    assert f"AUC({third.version}) - AUC({world['prod'].version})" in text
    rows = {r["criterion"]: r for r in json.loads((path / "checklist.json").read_text())}
    assert rows["final decision"]["result"] == "not judged"
    assert png_size(path / "canary-metrics.png") == (800, 500)  # "no per-check evidence"


def test_a_failed_write_leaves_the_previous_package_untouched(world, tmp_path):
    from retrainer.report import write_package

    home = tmp_path / "home3"
    good = [d.to_dict() for d in world["decisions"]]
    ab_file = tmp_path / "ab-test-results.json"  # as rollout.ab.write_results leaves it
    ab_file.write_text(json.dumps(world["ab"], indent=2) + "\n")
    first = write_package(home, world["cand"].version, registry=world["reg"], plan=PLAN, decisions=good,
                          journal_record=None, triggers_file=world["triggers"], test_frame=world["split"].test,
                          ab_results=ab_file)
    assert (first / "ab-test-results.json").read_bytes() == ab_file.read_bytes()
    before = snapshot(first)
    roc = (first / "roc.png").read_bytes()
    bad = good[:-1] + [dict(good[-1], elapsed_s="not a number")]  # fails after several files were written
    with pytest.raises(ValueError):
        write_package(home, world["cand"].version, registry=world["reg"], plan=PLAN, decisions=bad,
                      journal_record=None, triggers_file=world["triggers"], test_frame=world["split"].test)
    assert snapshot(first) == before
    assert sorted(p.name for p in (home / "evidence").iterdir()) == [world["cand"].version]
    # a second good write replaces it whole: new manifest, nothing left beside it
    again = write_package(home, world["cand"].version, registry=world["reg"], plan=PLAN, decisions=good[:2],
                          journal_record=None, triggers_file=world["triggers"], test_frame=world["split"].test)
    assert json.loads((again / "manifest.json").read_text())["decision"] == "continue"
    assert (again / "roc.png").read_bytes() == roc  # same rows, same models: the same picture, byte for byte
    assert sorted(p.name for p in (home / "evidence").iterdir()) == [world["cand"].version]


def test_a_writer_killed_between_its_renames_is_recovered(world, tmp_path):
    """The previous package moved aside and the new one not yet in place: the next read puts the
    previous one back."""
    from retrainer.report import read_manifest, write_package

    home = tmp_path / "home4"
    path = write_package(home, world["cand"].version, registry=world["reg"], plan=PLAN,
                         decisions=[d.to_dict() for d in world["decisions"]], journal_record=None,
                         triggers_file=world["triggers"], test_frame=world["split"].test)
    os.rename(path, path.parent / f".old-{world['cand'].version}-deadbeef")
    m = read_manifest(home, world["cand"].version)
    assert m is not None and Path(m["path"]) == path and (path / "roc.png").exists()


def test_psi_and_traffic_pictures_use_the_stored_drift_report_and_journal(world):
    from retrainer.report.content import traffic_series
    from retrainer.report.package import find_drift_report

    drift = find_drift_report(world["home"], world["cand"].to_dict(), [world["prod"].version])
    assert drift is not None and len(drift["features"]) == len(world["drift"].results)
    assert drift["threshold"] == world["drift"].threshold
    assert all("family_floor" in f for f in drift["features"])
    assert find_drift_report(world["home"], world["cand"].to_dict(), ["9.9.9"]) is None  # another version's
    series = traffic_series(PLAN, [d.to_dict() for d in world["decisions"]],
                            world["journal"].get(world["cand"].version).to_dict())
    assert series["planned"] == [(0.0, 0.1), (2.0, 0.5), (4.0, 0.5)]
    assert [(h, t) for h, t, _ in series["journal"]][:2] == [(0.0, 0.1), (2.0, 0.5)]
    assert series["journal"][-1][0] == 4.0


def test_the_artifact_text_holds_the_comparison_checklist_and_picture_paths(world):
    """What tasks/report.py publishes to Prefect: the same numbers as the files, and every path."""
    from retrainer.report.package import checklist_table, package_markdown

    md = package_markdown(world["path"])
    ev = world["cand"].gate["evidence"]
    assert f"**{ev['delta']:+.4f}**" in md and "## Deployment checklist" in md and "## Model comparison" in md
    for name in PNGS:
        assert str(world["path"] / name) in md
    rows = checklist_table(world["path"])
    assert rows == json.loads((world["path"] / "checklist.json").read_text())
    assert {r["result"] for r in rows} <= {"pass", "fail", "not judged", "inconclusive", "info"}


# ---- the command ------------------------------------------------------------------------------

def test_cli_report_found(world, monkeypatch):
    monkeypatch.setenv("RETRAINER_HOME", str(world["home"]))
    monkeypatch.delenv("RETRAINER_CONFIG", raising=False)
    code, out = run_cli("report", world["cand"].version)
    assert code == 0, out
    assert str(world["path"]) in out and "roc.png" in out and "deployment-checklist.md" in out
    assert f"decision: {world['decisions'][-1].action}" in out
    code, out = run_cli("report", world["cand"].version, "--json")
    assert code == 0
    data = json.loads(out)
    assert data["path"] == str(world["path"]) and "psi.png" in data["files"]


def test_cli_report_unknown_version_or_no_package(world, monkeypatch):
    monkeypatch.setenv("RETRAINER_HOME", str(world["home"]))
    monkeypatch.delenv("RETRAINER_CONFIG", raising=False)
    code, out = run_cli("report", "9.9.9")
    assert code == 2 and out.startswith("error: ") and "9.9.9" in out and len(out.strip().splitlines()) == 1
    code, out = run_cli("report", world["prod"].version)  # registered, never rolled out
    assert code == 2 and "no evidence package" in out and len(out.strip().splitlines()) == 1
    code, out = run_cli("report", "../registry")
    assert code == 2 and out.startswith("error: ")


def test_cli_report_open_uses_the_os_opener_or_prints_the_path(world, monkeypatch, tmp_path):
    monkeypatch.setenv("RETRAINER_HOME", str(world["home"]))
    monkeypatch.delenv("RETRAINER_CONFIG", raising=False)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    record = tmp_path / "opened.txt"
    opener = bindir / ("open" if sys.platform == "darwin" else "xdg-open")
    opener.write_text(f"#!/bin/sh\necho \"$1\" > {record}\n")
    opener.chmod(0o755)
    monkeypatch.setenv("PATH", str(bindir))
    code, out = run_cli("report", world["cand"].version, "--open")
    assert code == 0 and f"opened {world['path']}" in out
    assert record.read_text().strip() == str(world["path"])
    opener.write_text("#!/bin/sh\nexit 3\n")  # no desktop session: xdg-open fails
    code, out = run_cli("report", world["cand"].version, "--open")
    assert code == 0 and "could not open it (exit 3)" in out and str(world["path"]) in out
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    code, out = run_cli("report", world["cand"].version, "--open")
    assert code == 0 and "no opener" in out and str(world["path"]) in out
