"""The rollout journal: atomic per-version records of running rollouts."""
from __future__ import annotations

import json

import pytest

from retrainer.errors import RolloutError
from retrainer.rollout.journal import RolloutJournal


def test_start_update_active_and_history(tmp_path):
    j = RolloutJournal(tmp_path)
    assert j.all() == [] and j.active() == []
    rec = j.start("1.1.0", "1.0.0", "linear", {"stages": []}, "2026-01-01T00:00:00+00:00", traffic=0.05)
    assert rec.active and rec.traffic == 0.05
    again = j.start("1.1.0", "1.0.0", "linear", {"stages": []}, "2026-01-01T00:00:00+00:00", traffic=0.05)
    assert again == rec  # a resumed run's start writes nothing new
    j.update("1.1.0", "stage", stage=1, traffic=0.25)
    done = j.update("1.1.0", "decision", status="promoted", decision="promote", reason="non-inferior",
                    verdict_due_at="2026-02-01T00:00:00+00:00")
    assert not done.active and [h["event"] for h in done.history] == ["started", "stage", "decision"]
    assert j.active() == [] and [r.version for r in j.pending_verdicts()] == ["1.1.0"]
    assert json.loads((tmp_path / "rollouts" / "1.1.0.json").read_text())["stage"] == 1
    assert not list((tmp_path / "rollouts").glob(".tmp-*"))


def test_refusals(tmp_path):
    j = RolloutJournal(tmp_path)
    with pytest.raises(RolloutError, match="no rollout of 9.9.9"):
        j.update("9.9.9", "stage", stage=1)
    j.start("1.1.0", None, "canary", {}, "2026-01-01T00:00:00+00:00", traffic=0.1)
    with pytest.raises(RolloutError, match="unknown rollout journal field"):
        j.update("1.1.0", "stage", colour="red")
    with pytest.raises(RolloutError, match="bad version"):
        j.get("../etc")
