"""The deferred-verdict flow started a moment before its labels are due (a scheduled run that
Prefect lets through early: its server rounds the ordered wait to whole seconds) waits for them
instead of ending `not_due`; a run started long before its time still ends `not_due` at once."""
from __future__ import annotations

import time
from datetime import timedelta

from retrainer import clock

LABEL_DELAY_S = 10


def run_verdict(home, due_in_s: float) -> tuple[dict, float, object]:
    from flows.verdict import deferred_verdict

    end = clock.utcnow() - timedelta(seconds=LABEL_DELAY_S) + timedelta(seconds=due_in_s)
    t0 = time.monotonic()
    out = deferred_verdict(version="1.2.0", previous="1.1.0", window_start=(end - timedelta(minutes=5)).isoformat(),
                           window_end=end.isoformat(), home=str(home))
    return out, time.monotonic() - t0, end + timedelta(seconds=LABEL_DELAY_S)


def test_verdict_started_just_early_waits_for_its_labels(prefect_api, home, monkeypatch):
    monkeypatch.setenv("RETRAINER_LABEL_DELAY", f"{LABEL_DELAY_S}s")
    out, took, due = run_verdict(home, due_in_s=3.0)
    assert out["outcome"] != "not_due", out["reason"]
    assert out["outcome"] == "inconclusive" and "too few labels" in out["evidence"]["reason"], out
    assert out["due_at"] == due.isoformat()


def test_verdict_started_long_before_its_time_is_not_due(prefect_api, home, monkeypatch):
    monkeypatch.setenv("RETRAINER_LABEL_DELAY", f"{LABEL_DELAY_S}s")
    out, took, _ = run_verdict(home, due_in_s=600.0)
    assert out["outcome"] == "not_due" and out["evidence"] is None, out
    assert took < 60
