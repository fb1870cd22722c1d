"""Prediction-store retention on an S3 prefix of moto's server: expired partitions and label files
deleted and audited (an object per event), a running rollout's window kept, compacted partitions
counted once, and a run killed between its audit and its deletes finished by the next one."""
from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest

from retrainer import datagen, retention
from retrainer import schema as S
from retrainer.deid import Pseudonymizer
from retrainer.predstore import PredictionStore
from retrainer.rollout.journal import RolloutJournal
from retrainer.settings import Settings
from tests.helpers import registry_with

from .conftest import BUCKET, boto

KEY = b"retention-s3-test-key-0123456789abcdef"
NOW = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(days=500)  # labels ingested "500 days ago"


@pytest.fixture(scope="module")
def frame(tmp_path_factory):
    out = tmp_path_factory.mktemp("retention-s3-data")
    return pd.read_parquet(datagen.generate(out, datagen.GenerationSpec(months=1, rows_per_month=60, seed=8))[0])


@pytest.fixture
def world(aws_env, tmp_path, frame):
    boto("s3").create_bucket(Bucket=BUCKET)
    store = PredictionStore(f"s3://{BUCKET}/r-{uuid.uuid4().hex[:6]}/readmission-30d")
    ps = Pseudonymizer(KEY)
    for days, lo in ((500, 0), (420, 6), (410, 12), (30, 18)):
        for i in range(3):  # 3 small files a day, as capture writes them
            rows = frame.iloc[lo + 2 * i: lo + 2 * i + 2]
            store.append(rows, [0.2, 0.4], version="1.1.0", variant="blue", latency_ms=1.0,
                         ts=NOW - timedelta(days=days, minutes=i), pseudonymizer=ps)
    store.compact([(NOW - timedelta(days=420)).date()])  # one expired partition compacted
    old = frame.iloc[0:6][[S.ADMISSION_ID, S.LABEL]]
    old.to_csv(tmp_path / "old.csv", index=False)
    store.ingest_labels(tmp_path / "old.csv", ps)
    home = tmp_path / "home"
    return {"store": store, "registry": registry_with(home, ["1.0.0", "1.1.0"]), "journal": RolloutJournal(home),
            "settings": Settings(home=home)}


def day(d: int) -> str:
    return (NOW - timedelta(days=d)).date().isoformat()


def keys(store: PredictionStore) -> list[str]:
    loc = store.location
    out = boto("s3").list_objects_v2(Bucket=BUCKET, Prefix=f"{loc.prefix}/").get("Contents", [])
    return sorted(o["Key"][len(loc.prefix) + 1:] for o in out)


def test_expired_partitions_go_a_running_rollouts_window_stays_and_it_is_audited(world):
    store, journal = world["store"], world["journal"]
    journal.start("1.3.0", "1.1.0", "canary", {}, NOW - timedelta(days=415), traffic=0.1)
    args = (store, world["registry"], journal, world["settings"])

    plan = retention.plan(*args, NOW)
    assert [p["day"] for p in plan.delete_partitions] == [day(500), day(420)]
    assert [p["rows"] for p in plan.delete_partitions] == [6, 6]  # the compacted day counted once
    assert [p["day"] for p in plan.kept_partitions] == [day(410)]

    out = retention.apply(*args, NOW, actor="scheduler")
    assert out["deleted_partitions"] == [day(500), day(420)]
    left = keys(store)
    assert not any(k.startswith(f"predictions/date={day(500)}/") or k.startswith(f"predictions/date={day(420)}/")
                   for k in left)
    assert sum(k.startswith(f"predictions/date={day(410)}/") for k in left) == 3
    assert not any(k.startswith("retention/") for k in left)  # no pending marker left
    [event], bad = retention.read_audit(store)
    assert bad == 0 and event["actor"] == "scheduler" and event["rows"] == 12
    assert event["partitions"] == [day(500), day(420)] and event["kept"][0]["day"] == day(410)
    assert len(store.read()) == 12  # 410 and 30 days ago
    # the label file's admissions were all in deleted partitions and it is old: deleted whole
    assert out["deleted_label_files"] and not any(k.startswith("labels/") for k in left)


def test_a_run_killed_between_its_audit_and_its_deletes_is_finished_by_the_next(world, monkeypatch):
    store = world["store"]
    args = (store, world["registry"], world["journal"], world["settings"])
    real_delete, calls = store.location.delete, []

    def dies_after_two(rel: str) -> bool:
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")
        calls.append(rel)
        return real_delete(rel)

    monkeypatch.setattr(store.location, "delete", dies_after_two)
    with pytest.raises(KeyboardInterrupt):
        retention.apply(*args, NOW, actor="first")
    monkeypatch.setattr(store.location, "delete", real_delete)
    assert any(k.startswith("retention/pending-") for k in keys(store))
    [first], _ = retention.read_audit(store)
    assert first["actor"] == "first"

    out = retention.apply(*args, NOW, actor="second")
    assert out["interrupted"]["reason"] == "finishing an interrupted retention run"
    assert out["interrupted"]["rows"] > 0 and out["interrupted"]["partitions"]
    left = keys(store)
    assert not any(k.startswith("retention/") for k in left)
    assert sorted({k.split("/")[1] for k in left if k.startswith("predictions/")}) == [f"date={day(30)}"]
    events, _ = retention.read_audit(store)
    assert [e["actor"] for e in events] == ["first", "second"]
