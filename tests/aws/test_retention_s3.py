"""Prediction-store retention on an S3 prefix of moto's server over HTTP: expired partitions and
label files deleted and audited (an object per event), a running rollout's window and a label file
it still needs kept, compacted partitions counted once and deleted whole even when a compaction left
its replaced inputs behind, and a retention process killed (SIGKILL, a real child process) before
its audit, between its audit and its deletes, or between its two delete steps, finished by the
next run."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

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
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def frame(tmp_path_factory):
    out = tmp_path_factory.mktemp("retention-s3-data")
    return pd.read_parquet(datagen.generate(out, datagen.GenerationSpec(months=1, rows_per_month=60, seed=8))[0])


@pytest.fixture
def world(aws_env, tmp_path, frame):
    """Days 500, 420, 410 and 30 ago, three small capture files each (6 rows); day 420 compacted.
    Labels: one file for day 500's admissions, one for day 410's."""
    boto("s3").create_bucket(Bucket=BUCKET)
    store = PredictionStore(f"s3://{BUCKET}/r-{uuid.uuid4().hex[:6]}/readmission-30d")
    ps = Pseudonymizer(KEY)
    for days, lo in ((500, 0), (420, 6), (410, 12), (30, 18)):
        for i in range(3):  # 3 small files a day, as capture writes them
            rows = frame.iloc[lo + 2 * i: lo + 2 * i + 2]
            store.append(rows, [0.2, 0.4], version="1.1.0", variant="blue", latency_ms=1.0,
                         ts=NOW - timedelta(days=days, minutes=i), pseudonymizer=ps,
                         shadow=[False, i == 0])  # one shadow row in each day's first file
    originals = objects(store, f"predictions/date={day(420)}/")
    store.compact([(NOW - timedelta(days=420)).date()])  # one expired partition compacted
    for name, lo in (("old", 0), ("held", 12)):
        frame.iloc[lo:lo + 6][[S.ADMISSION_ID, S.LABEL]].to_csv(tmp_path / f"{name}.csv", index=False)
        store.ingest_labels(tmp_path / f"{name}.csv", ps)
    home = tmp_path / "home"
    return {"store": store, "registry": registry_with(home, ["1.0.0", "1.1.0"]), "journal": RolloutJournal(home),
            "settings": Settings(home=home), "home": home, "replaced_420": originals}


def day(d: int) -> str:
    return (NOW - timedelta(days=d)).date().isoformat()


def keys(store: PredictionStore) -> list[str]:
    loc = store.location
    out = boto("s3").list_objects_v2(Bucket=BUCKET, Prefix=f"{loc.prefix}/").get("Contents", [])
    return sorted(o["Key"][len(loc.prefix) + 1:] for o in out)


def objects(store: PredictionStore, under: str) -> dict[str, bytes]:
    s3, loc = boto("s3"), store.location
    return {k: s3.get_object(Bucket=BUCKET, Key=f"{loc.prefix}/{k}")["Body"].read()
            for k in keys(store) if k.startswith(under)}


def put_back(store: PredictionStore, saved: dict[str, bytes]) -> None:
    """The inputs a compaction replaced, back in place: as if it had stopped before deleting them."""
    for rel, data in saved.items():
        boto("s3").put_object(Bucket=BUCKET, Key=f"{store.location.prefix}/{rel}", Body=data)


def under(left: list[str], d: int) -> list[str]:
    return [k for k in left if k.startswith(f"predictions/date={day(d)}/")]


def test_expired_partitions_go_a_running_rollouts_window_stays_and_it_is_audited(world):
    store, journal = world["store"], world["journal"]
    journal.start("1.3.0", "1.1.0", "canary", {}, NOW - timedelta(days=415), traffic=0.1)
    args = (store, world["registry"], journal, world["settings"])

    before = keys(store)
    plan = retention.plan(*args, NOW)
    assert keys(store) == before  # the dry run only reads
    assert [p["day"] for p in plan.delete_partitions] == [day(500), day(420)]
    assert [p["rows"] for p in plan.delete_partitions] == [6, 6]  # the compacted day counted once
    assert [p["shadow_rows"] for p in plan.delete_partitions] == [1, 1]
    assert [p["day"] for p in plan.kept_partitions] == [day(410)]
    assert "rollout of 1.3.0 is running" in plan.kept_partitions[0]["reason"]
    [held] = plan.kept_label_files  # day 410's labels: its predictions are kept, so is the file
    assert "6 of its 6 admissions still have kept predictions" in held["reason"]

    out = retention.apply(*args, NOW, actor="scheduler")
    assert out["deleted_partitions"] == [day(500), day(420)]
    left = keys(store)
    assert under(left, 500) == [] and under(left, 420) == [] and len(under(left, 410)) == 3
    assert not any(k.startswith("retention/") for k in left)  # no pending marker left
    assert [d.isoformat() for d in store.days()] == [day(410), day(30)]
    [event], bad = retention.read_audit(store)
    assert bad == 0 and event["actor"] == "scheduler" and (event["rows"], event["shadow_rows"]) == (12, 2)
    assert event["partitions"] == [day(500), day(420)] and event["kept"][0]["day"] == day(410)
    assert event["label_files"] == out["deleted_label_files"] and event["label_rows"] == 6
    assert len(store.read()) == 12  # 410 and 30 days ago
    assert len(store.read_labels()) == 6 and [k for k in left if k.startswith("labels/")] == [f"labels/{held['file']}"]
    assert retention.audit_path(store) == f"{store.url}/audit/retention/"

    again = retention.apply(*args, NOW, actor="scheduler")  # nothing left to delete: no event
    assert again["deleted_partitions"] == [] and again["audit"] is None and len(retention.read_audit(store)[0]) == 1


def test_a_partition_whose_compaction_left_its_inputs_is_counted_once_and_deleted_whole(world):
    store = world["store"]
    put_back(store, world["replaced_420"])
    assert len(under(keys(store), 420)) == 4  # the compact file and the 3 files it replaced
    args = (store, world["registry"], world["journal"], world["settings"])
    plan = retention.plan(*args, NOW)
    assert {p["day"]: p["rows"] for p in plan.delete_partitions}[day(420)] == 6
    out = retention.apply(*args, NOW, actor="scheduler")
    assert day(420) in out["deleted_partitions"]
    assert under(keys(store), 420) == [] and day(420) not in [d.isoformat() for d in store.days()]
    [event], _ = retention.read_audit(store)
    assert event["rows"] == 18  # days 500, 420, 410: 6 rows each, none twice


def test_audit_events_read_back_in_write_order_when_they_share_a_time(world):
    store = world["store"]
    for n in range(12):
        retention.append_audit(store, {"time": NOW.isoformat(), "n": n})
    events, bad = retention.read_audit(store)
    assert [e["n"] for e in events] == list(range(12)) and bad == 0


CHILD = textwrap.dedent("""
    import os, signal, sys
    from datetime import datetime
    from pathlib import Path
    from retrainer import retention
    from retrainer.predstore import PredictionStore
    from retrainer.registry import LocalRegistry
    from retrainer.rollout.journal import RolloutJournal
    from retrainer.settings import Settings

    url, home, now, target, nth = sys.argv[1:]
    real, calls = getattr(retention, target), []

    def killed_on_call(*args, **kwargs):
        calls.append(1)
        if len(calls) == int(nth):
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)

    setattr(retention, target, killed_on_call)
    home = Path(home)
    retention.apply(PredictionStore(url), LocalRegistry(home / "registry"), RolloutJournal(home),
                    Settings(home=home), datetime.fromisoformat(now), actor="killed")
    print("not killed")
""")


@pytest.mark.parametrize("target,nth,audited", [
    ("append_audit", 1, False),  # the marker is written, the audit event is not
    ("_delete_objects", 1, True),  # the audit event is written, nothing deleted
    ("_delete_objects", 2, True),  # the replaced inputs deleted, the live files and label file not
])
def test_a_run_killed_before_or_after_its_audit_or_between_deletes_is_finished_by_the_next(world, target, nth,
                                                                                            audited):
    store = world["store"]
    put_back(store, world["replaced_420"])  # so the first delete step has something to delete
    proc = subprocess.run([sys.executable, "-c", CHILD, store.url, str(world["home"]), NOW.isoformat(), target,
                           str(nth)], cwd=REPO, env=os.environ.copy(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stdout + proc.stderr[-2000:]  # SIGKILL
    left = keys(store)
    [marker] = [k for k in left if k.startswith("retention/pending-")]
    assert [e["actor"] for e in retention.read_audit(store)[0]] == (["killed"] if audited else [])
    assert len(under(left, 420)) == (1 if nth == 2 else 4)
    assert len(store.read()) == 24  # readers may still see the expired rows, never one twice

    out = retention.apply(store, world["registry"], world["journal"], world["settings"], NOW, actor="next")
    finished = out["interrupted"]
    assert finished["reason"] == "finishing an interrupted retention run"
    assert finished["partitions"] == [day(500), day(420), day(410)]
    assert (finished["rows"], finished["shadow_rows"], finished["label_rows"]) == (18, 3, 12)
    [run] = finished["interrupted_runs"]
    assert run["actor"] == "killed" and run["audited"] is audited
    assert out["audit"] is None  # the next run's own plan found nothing more to delete
    left = keys(store)
    assert marker not in left and not any(k.startswith("retention/") for k in left)
    assert [d.isoformat() for d in store.days()] == [day(30)] and len(store.read()) == 6
    assert not any(k.startswith("labels/") for k in left)  # both label files' admissions are gone
    events, bad = retention.read_audit(store)
    assert bad == 0 and [e["actor"] for e in events] == (["killed", "next"] if audited else ["next"])
    if audited:  # the killed run's own event, named in its marker, was kept as written
        assert events[0]["rows"] == 18 and f"audit/retention/{run['audit']}" in left


def test_the_retention_command_on_the_sagemaker_backend_deletes_from_the_s3_store(aws_env, tmp_path, frame,
                                                                                 monkeypatch):
    """`retrainer retention` with `backend: sagemaker`: the store is the S3 prefix derived from
    aws.bucket, the registry SageMaker's (on moto); the dry run changes nothing, the run deletes and
    audits on S3. (Before, the command refused any store without a local directory.)"""
    from tests.helpers import run_cli

    from .conftest import ROLE

    boto("s3").create_bucket(Bucket=BUCKET)
    for k, v in {"RETRAINER_BACKEND": "sagemaker", "RETRAINER_AWS__BUCKET": BUCKET, "RETRAINER_AWS__ROLE_ARN": ROLE,
                 "RETRAINER_AWS__REGION": "us-east-1", "RETRAINER_HOME": str(tmp_path / "aws-home")}.items():
        monkeypatch.setenv(k, v)
    store = PredictionStore(f"s3://{BUCKET}/retrainer/readmission-30d")
    real_now = datetime.now(timezone.utc)
    for days, lo in ((420, 0), (2, 5)):
        store.append(frame.iloc[lo:lo + 5], [0.3] * 5, version="1.0.0", variant="blue", latency_ms=1.0,
                     ts=real_now - timedelta(days=days), pseudonymizer=Pseudonymizer(KEY))
    old = (real_now - timedelta(days=420)).date().isoformat()
    before = keys(store)
    code, out = run_cli("retention", "--dry-run")
    assert code == 0, out
    assert f"would delete 1 prediction partition(s), 5 rows (0 shadow): {old}" in out and keys(store) == before
    code, out = run_cli("retention", "--actor", "ops")
    assert code == 0, out
    assert f"deleted 1 prediction partition(s), 5 rows (0 shadow): {old}" in out
    assert [d.isoformat() for d in store.days()] == [(real_now - timedelta(days=2)).date().isoformat()]
    [event], _ = retention.read_audit(store)
    assert (event["actor"], event["reason"], event["partitions"], event["rows"]) == ("ops", "manual retention",
                                                                                     [old], 5)
