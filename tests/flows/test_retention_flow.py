"""The `retention` flow on the shared Prefect server: a dry run changes nothing, a run deletes the
old partitions (audited), keeps a running rollout's window and says why in its markdown artifact."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pandas as pd

from tests.helpers import make_record, registry_with, snapshot

KEY = b"retention-flow-key-0123456789abcdef"


def test_retention_flow_dry_run_then_run(prefect_api, home, monthly_data, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.retention import retention
    from retrainer import retention as domain
    from retrainer.deid import Pseudonymizer
    from retrainer.predstore import PredictionStore
    from retrainer.rollout.journal import RolloutJournal
    from tests.helpers import artifact

    now = datetime(2026, 6, 1, 12, tzinfo=timezone.utc)
    reg = registry_with(home, ["1.0.0", "1.1.0"])
    reg.register(make_record("1.2.0", "rejected"), artifact(tmp_path, "1.2.0"), actor="t")
    store = PredictionStore(home)
    rows = pd.read_parquet(sorted(monthly_data.glob("*.parquet"))[0]).head(6)
    for days in (500, 420, 410, 30):
        store.append(rows, [0.2] * 6, version="1.1.0", variant="blue", latency_ms=1.0, ts=now - timedelta(days=days),
                     pseudonymizer=Pseudonymizer(KEY))
    RolloutJournal(home).start("1.3.0", "1.1.0", "canary", {}, now - timedelta(days=415), traffic=0.1)

    day = lambda d: (now - timedelta(days=d)).date().isoformat()  # noqa: E731
    before = snapshot(home)
    dry = retention(dry_run=True, now=now.isoformat())
    assert dry["dry_run"] and snapshot(home) == before
    assert [p["day"] for p in dry["delete_partitions"]] == [day(500), day(420)]

    out = retention(now=now.isoformat(), actor="scheduler")
    assert out["deleted_partitions"] == [day(500), day(420)] and out["registry_removed"] == ["1.2.0"]
    assert [p["day"] for p in out["kept_partitions"]] == [day(410)]  # the rollout started 415 days ago
    assert sorted(p.name for p in (home / "predictions").glob("date=*")) == [f"date={day(410)}", f"date={day(30)}"]
    [event] = domain.read_audit(store)[0]
    assert event["actor"] == "scheduler" and event["partitions"] == [day(500), day(420)] and event["rows"] == 12

    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["retention"])))
    texts = [a.data for a in arts]
    assert any("dry run: nothing deleted" in t for t in texts)
    assert any("rollout of 1.3.0 is running" in t and "artifacts removed for 1.2.0" in t for t in texts)
