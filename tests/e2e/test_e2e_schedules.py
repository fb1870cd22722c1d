"""prefect.yaml's schedules, as the server's scheduler sees them: the monthly retrain must get
real scheduled runs on the 1st of the month at 02:00 UTC (this failed silently with SQLAlchemy
2.1, which is why pyproject pins <2.1)."""
from __future__ import annotations

import subprocess
import time

from tests.helpers import BIN, REPO


def test_monthly_retrain_gets_scheduled_runs_first_of_month_0200_utc(prefect_server):
    env = dict(prefect_server.env)
    subprocess.run([str(BIN / "prefect"), "work-pool", "create", "retrainer-local", "--type", "process"],
                   env=env, cwd=REPO, capture_output=True, timeout=120)
    proc = subprocess.run([str(BIN / "prefect"), "--no-prompt", "deploy", "--name", "retrain-monthly"],
                          env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: prefect_server.url}):
        with get_client(sync_client=True) as client:
            deployment = client.read_deployment_by_name("retrain/retrain-monthly")
            deadline = time.monotonic() + 120
            runs = []
            while time.monotonic() < deadline and not runs:
                runs = client.read_flow_runs(deployment_filter=DeploymentFilter(
                    id={"any_": [deployment.id]}))
                time.sleep(2)
    assert runs, "the scheduler created no runs for retrain-monthly"
    starts = sorted(r.expected_start_time for r in runs)
    for s in starts:
        utc = s.astimezone(__import__("datetime").timezone.utc)
        assert (utc.day, utc.hour, utc.minute) == (1, 2, 0), starts
    assert all(r.parameters.get("trigger") == "scheduled" for r in runs)
