"""Retention (retrainer/retention.py, `retrainer retention`): old day partitions and label files
deleted and audited, protected ones kept with their reason, the dry run changes nothing, a running
rollout's and a pending verdict's window kept, registry retention deferred while a rollout needs a
version, too-small retention refused. Real Parquet store, real registry, real journal."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest

from retrainer import datagen, retention
from retrainer import schema as S
from retrainer.deid import Pseudonymizer
from retrainer.errors import ConfigError
from retrainer.predstore import PredictionStore
from retrainer.rollout.journal import RolloutJournal
from retrainer.settings import Settings, load_settings
from tests.helpers import artifact, make_record, registry_with, run_cli, snapshot

KEY = b"retention-test-key-0123456789abcdef"
NOW = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(days=500)  # labels ingested "500 days ago"


@pytest.fixture(scope="module")
def frame(tmp_path_factory):
    out = tmp_path_factory.mktemp("retention-data")
    paths = datagen.generate(out, datagen.GenerationSpec(months=1, rows_per_month=120, seed=5))
    return pd.read_parquet(paths[0]).reset_index(drop=True)


def put(store: PredictionStore, rows: pd.DataFrame, when: datetime, *, shadow: bool = False) -> None:
    store.append(rows, [0.3] * len(rows), version="1.3.0", variant="green" if shadow else "blue", latency_ms=1.0,
                 ts=when, pseudonymizer=Pseudonymizer(KEY), shadow=shadow,
                 request_id=[f"req-{i}" for i in range(len(rows))], row=[0] * len(rows))


def labels_file(tmp, rows: pd.DataFrame, name: str):
    path = tmp / f"{name}.csv"
    rows[[S.ADMISSION_ID, "patient_id", S.LABEL]].to_csv(path, index=False)
    return path


def partitions(home) -> list[str]:
    return sorted(p.name for p in (home / "predictions").glob("date=*"))


@pytest.fixture
def world(tmp_path, frame):
    home = tmp_path / "home"
    # 1.3.0 production, 1.2.0 and 1.1.0 previous, 1.0.0 archived; 1.4.0 rejected
    reg = registry_with(home, ["1.0.0", "1.1.0", "1.2.0", "1.3.0"])
    reg.register(make_record("1.4.0", "rejected"), artifact(tmp_path, "1.4.0"), actor="t")
    store = PredictionStore(home)
    put(store, frame.iloc[0:10], NOW - timedelta(days=450))
    put(store, frame.iloc[0:10], NOW - timedelta(days=450), shadow=True)  # shadow rows share the request's day
    put(store, frame.iloc[10:20], NOW - timedelta(days=402))
    put(store, frame.iloc[20:30], NOW - timedelta(days=399))  # inside the 400 days
    put(store, frame.iloc[30:40], NOW - timedelta(days=3))
    put(store, frame.iloc[0:1], NOW - timedelta(days=3))  # admission 0 predicted again recently
    ps = Pseudonymizer(KEY)
    store.ingest_labels(labels_file(tmp_path, frame.iloc[10:20], "old"), ps)  # only old predictions
    store.ingest_labels(labels_file(tmp_path, frame.iloc[0:10], "mixed"), ps)  # admission 0 still kept
    settings = Settings(home=home)
    return {"home": home, "reg": reg, "store": store, "settings": settings, "journal": RolloutJournal(home)}


def test_dry_run_changes_nothing_and_apply_deletes_old_partitions_with_an_audit_line(world):
    home, store, reg = world["home"], world["store"], world["reg"]
    before = snapshot(home)
    p = retention.plan(store, reg, world["journal"], world["settings"], NOW)
    assert snapshot(home) == before  # the dry run only reads
    old = [(NOW - timedelta(days=d)).date().isoformat() for d in (450, 402)]
    assert [x["day"] for x in p.delete_partitions] == old
    assert p.rows == 30 and sum(x["shadow_rows"] for x in p.delete_partitions) == 10
    assert p.recent_partitions == 2 and p.kept_partitions == [] and p.holds == []
    assert [f["rows"] for f in p.delete_label_files] == [10]
    assert "1 of its 10 admissions still have kept predictions" in p.kept_label_files[0]["reason"]
    assert p.registry_remove == ["1.0.0", "1.4.0"]
    kept = {k["version"]: k["reason"] for k in p.registry_kept}
    assert kept["1.3.0"] == "production" and kept["1.2.0"] == kept["1.1.0"] == retention.KEEP_PREVIOUS_REASON

    result = retention.apply(store, reg, world["journal"], world["settings"], NOW, actor="janitor",
                             reason="test retention")
    assert result["deleted_partitions"] == old
    assert partitions(home) == [f"date={(NOW - timedelta(days=d)).date().isoformat()}" for d in (399, 3)]
    assert len(store.read()) == 21  # the kept partitions read as before
    assert len(store.read_labels()) == 10  # the old-only label file went, the mixed one stayed whole
    assert result["registry_removed"] == ["1.0.0", "1.4.0"]
    for v in ("1.1.0", "1.2.0", "1.3.0"):
        assert reg.artifact_dir(v).is_dir()
    events, bad = retention.read_audit(store)
    assert bad == 0 and len(events) == 1
    e = events[0]
    assert (e["actor"], e["reason"], e["partitions"], e["rows"], e["shadow_rows"], e["label_rows"]) == \
        ("janitor", "test retention", old, 30, 10, 10)
    assert e["time"] == NOW.isoformat() and e["horizon"] == (NOW - timedelta(days=400)).isoformat()
    assert oct(retention.audit_path(store).stat().st_mode & 0o777) == "0o600"
    assert any(a.get("reason") == "retention: artifacts removed" for a in reg.audit())

    again = retention.apply(store, reg, world["journal"], world["settings"], NOW, actor="janitor")
    assert again["deleted_partitions"] == [] and again["audit"] is None  # nothing left: no new audit line
    assert len(retention.read_audit(store)[0]) == 1


def test_running_rollout_and_pending_verdict_windows_are_kept(world, frame):
    home, store, reg, journal = world["home"], world["store"], world["reg"], world["journal"]
    settings = Settings(home=home, predictions={"retention_days": 40})
    for d in (60, 50, 45, 42):
        put(store, frame.iloc[40:45], NOW - timedelta(days=d))
    started = NOW - timedelta(days=46)
    journal.start("1.5.0", "1.3.0", "canary", {"stages": [{"traffic": 0.1}]}, started, traffic=0.1)
    p = retention.plan(store, reg, journal, settings, NOW)
    kept = {x["day"]: x["reason"] for x in p.kept_partitions}
    day = lambda d: (NOW - timedelta(days=d)).date().isoformat()  # noqa: E731
    assert set(kept) == {day(45), day(42)}  # from the rollout's start (46 days ago) on
    assert "rollout of 1.5.0 is running" in kept[day(45)]
    assert day(50) in [x["day"] for x in p.delete_partitions] and day(60) in [x["day"] for x in p.delete_partitions]
    assert p.cutoff == started.isoformat() and p.holds[0]["kind"] == "rollout"

    # the rollout was promoted and its deferred verdict is still due: its window stays
    journal.update("1.5.0", "promoted", status="promoted", verdict_due_at=(NOW + timedelta(days=2)).isoformat())
    p2 = retention.plan(store, reg, journal, settings, NOW)
    assert [h["kind"] for h in p2.holds] == ["verdict"]
    assert {x["day"] for x in p2.kept_partitions} == {day(45), day(42)}
    assert "deferred verdict on 1.5.0" in p2.kept_partitions[0]["reason"]
    result = retention.apply(store, reg, journal, settings, NOW, actor="janitor")
    assert f"date={day(45)}" in partitions(home) and f"date={day(50)}" not in partitions(home)
    assert result["audit"]["kept"][0]["day"] == day(45)

    # the verdict ran: nothing holds the window any more
    journal.update("1.5.0", "verdict", verdict_due_at=None)
    p3 = retention.plan(store, reg, journal, settings, NOW)
    assert p3.holds == [] and {day(45), day(42)} <= {x["day"] for x in p3.delete_partitions}

    # a rollout whose start cannot be read holds everything rather than guess
    journal.start("1.6.0", "1.3.0", "canary", {}, "not a time", traffic=0.1)
    p4 = retention.plan(store, reg, journal, settings, NOW)
    assert p4.delete_partitions == [] and "start time is unreadable" in p4.kept_partitions[0]["reason"]


def test_registry_retention_is_deferred_while_a_rollout_needs_an_archived_version(world):
    store, reg, journal = world["store"], world["reg"], world["journal"]
    journal.start("1.3.0", "1.0.0", "canary", {}, NOW - timedelta(days=5), traffic=1.0)
    journal.update("1.3.0", "promoted", status="promoted", verdict_due_at=(NOW + timedelta(days=1)).isoformat())
    p = retention.plan(store, reg, journal, world["settings"], NOW)
    assert p.registry_remove == [] and "1.0.0 is archived but the deferred verdict on 1.3.0" in p.registry_deferred
    result = retention.apply(store, reg, journal, world["settings"], NOW, actor="janitor")
    assert result["registry_removed"] == []
    assert reg.artifact_dir("1.0.0").is_dir() and reg.artifact_dir("1.4.0").is_dir()
    kept = {k["version"]: k["reason"] for k in p.registry_kept}
    assert kept["1.0.0"].startswith("archived: cleaning deferred this run; the deferred verdict on 1.3.0 may roll")
    assert kept["1.4.0"] == "rejected: cleaning deferred this run"
    # a version routed on the endpoint is kept the same way
    p2 = retention.plan(store, reg, RolloutJournal(world["home"] / "other"), world["settings"], NOW,
                        endpoint_versions={"1.4.0"})
    assert "1.4.0 is rejected but routed on the endpoint" in p2.registry_deferred


def test_too_small_retention_is_refused(world, monkeypatch, home):
    with pytest.raises(ConfigError, match=r"retention_days=35 is below .* = 36 days.*use at least 36"):
        load_settings(predictions={"retention_days": 35})
    assert load_settings(predictions={"retention_days": 36}).predictions.retention_days == 36
    with pytest.raises(ConfigError, match="at least 2"):  # label delay 1 h + 24 h canary: 2 days
        load_settings(label_delay="1h", canary={"max_duration_hours": 24}, predictions={"retention_days": 1})
    with pytest.raises(ConfigError, match="use at least 36"):
        retention.plan(world["store"], world["reg"], world["journal"], world["settings"], NOW, retention_days=30)
    monkeypatch.setenv("RETRAINER_PREDICTIONS__RETENTION_DAYS", "10")
    before = snapshot(home)
    code, out = run_cli("retention")
    assert code == 2 and out.startswith("error: bad settings: predictions.retention_days=10 is below")
    assert snapshot(home) == before


def test_cli_dry_run_apply_and_an_interrupted_run(tmp_path, frame, home, monkeypatch):
    real_now = datetime.now(timezone.utc)
    store = PredictionStore(home)
    registry_with(home, ["1.0.0"])
    put(store, frame.iloc[0:5], real_now - timedelta(days=420))
    put(store, frame.iloc[5:10], real_now - timedelta(days=2))
    old = f"date={(real_now - timedelta(days=420)).date().isoformat()}"
    # a killed earlier run left a renamed partition behind
    leftover = home / "predictions" / ".deleting-0123abcd-date=2020-01-01"
    leftover.mkdir()
    before = snapshot(home)
    code, out = run_cli("retention", "--dry-run", "--json")
    assert code == 0 and snapshot(home) == before
    data = json.loads(out)
    assert data["dry_run"] is True and [p["day"] for p in data["delete_partitions"]] == [old[5:]]

    code, out = run_cli("retention", "--actor", "ops")
    assert code == 0, out
    assert f"deleted 1 prediction partition(s), 5 rows (0 shadow): {old[5:]}" in out
    assert "finished an interrupted run: 2020-01-01" in out
    assert not leftover.exists() and partitions(home) == [f"date={(real_now - timedelta(days=2)).date().isoformat()}"]
    events, _ = retention.read_audit(store)
    assert [e["reason"] for e in events] == ["finishing an interrupted retention run", "manual retention"]
    assert events[0]["partitions"] == ["2020-01-01"] and events[1]["actor"] == "ops"


def test_a_torn_audit_line_is_closed_and_skipped(tmp_path):
    store = PredictionStore(tmp_path / "home")
    retention.append_audit(store, {"n": 1})
    with open(retention.audit_path(store), "a") as f:
        f.write('{"n": 2, "torn')  # a crash mid-write
    retention.append_audit(store, {"n": 3})
    events, bad = retention.read_audit(store)
    assert [e["n"] for e in events] == [1, 3] and bad == 1


def test_an_interrupted_runs_compacted_partition_is_audited_with_each_row_once(world, frame):
    """A partition renamed aside by a killed run, holding a compact file and the inputs its
    compaction had not deleted yet: the finishing event counts what readers counted, once."""
    from datetime import date

    store, home = world["store"], world["home"]
    for i in range(3):
        put(store, frame.iloc[50 + 2 * i: 52 + 2 * i], datetime(2020, 1, 1, i, tzinfo=timezone.utc))
    part = home / "predictions" / "date=2020-01-01"
    inputs = {f.name: f.read_bytes() for f in part.glob("part-*.parquet")}
    store.compact([date(2020, 1, 1)])
    for name, data in inputs.items():  # the compaction stopped before deleting its inputs
        (part / name).write_bytes(data)
    assert len(list(part.glob("*.parquet"))) == 4 and len(store.read(end="2020-01-02")) == 6
    part.rename(part.with_name(".deleting-0123abcd-date=2020-01-01"))
    result = retention.apply(store, world["reg"], world["journal"], world["settings"], NOW, actor="janitor")
    finished = result["interrupted"]
    assert (finished["partitions"], finished["rows"]) == (["2020-01-01"], 6)
    assert not list((home / "predictions").glob(".deleting-*"))
