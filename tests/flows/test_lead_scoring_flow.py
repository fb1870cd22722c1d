"""The lead-scoring model through the real retrain flow, beside the readmission model in one
project: its own namespace, its spec's 4/1/2-day split, the XGBoost entry point, the Spearman gate
against production, and the readmission registry untouched."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import copy_months

MODEL = "lead-scoring"


@pytest.fixture(scope="module")
def lead_days(tmp_path_factory) -> list[Path]:
    from examples.lead_scoring.datagen import generate

    return generate(tmp_path_factory.mktemp("leads"), periods=14, rows_per_period=1200, seed=3)


def _batch(files: list[Path], dst: Path) -> Path:
    return copy_months(files[0].parent, dst, [f.name for f in files])


def test_lead_scoring_retrains_in_its_own_namespace_and_gates_on_spearman(prefect_api, home, tmp_path, lead_days,
                                                                          monthly_data):
    from flows.retrain import retrain
    from retrainer import schema as S
    from retrainer.registry import LocalRegistry
    from retrainer.training import load_model

    os.environ["RETRAINER_PSEUDONYM_KEY"] = "flow-test-pseudonym-key-0123456789"
    first = retrain(data=str(_batch(lead_days[:7], tmp_path / "first")), trigger="manual", model=MODEL)
    assert first["version"] == "1.0.0" and first["status"] == "production", first
    assert first["metric"] == "spearman" and 0.3 < first["spearman"] <= 1.0

    weekly = retrain(data=str(_batch(lead_days, tmp_path / "weekly")), trigger="scheduled", model=MODEL)
    assert weekly["version"] != "1.0.0" and weekly["status"] in ("candidate", "rejected"), weekly

    ns = home / "models" / MODEL
    reg = LocalRegistry(ns / "registry", MODEL)
    rec = reg.get(weekly["version"])
    # the spec's split: the last 2 days test, the day before validates, the 4 before that train
    split = rec.data["split"]
    assert [len(split[k]["months"]) for k in ("train", "validation", "test")] == [4, 1, 2]
    assert split["test"]["months"] == ["2024-03-16", "2024-03-17"]
    # the gate compared the two models on the same test rows, on Spearman, and says so
    ev = rec.gate["evidence"]
    assert "spearman" in (ev.get("metric") or ev.get("method") or "").lower() or "Spearman" in rec.gate["reason"]
    assert rec.metrics["candidate"]["spearman"] is not None and rec.metrics["production"]["version"] == "1.0.0"
    # the artifact is the lead-scoring model: XGBoost, scores within the business rule [1, 5]
    model = load_model(reg.verify(weekly["version"]))
    assert model.meta["model"] == MODEL and "xgboost" in model.meta["entry_point"]
    import pandas as pd

    scores = model.predict(pd.read_parquet(lead_days[-1]))
    assert scores.min() >= 1.0 and scores.max() <= 5.0
    # the default model's namespace is untouched, and the active model is back to the default
    assert not (home / "registry").exists()
    assert S.LABEL == "readmitted_30d"

    # the readmission model still trains in the same project, in its own place
    ra = retrain(data=str(monthly_data), trigger="manual")
    assert ra["version"] == "1.0.0" and ra["metric"] == "auc" and (home / "registry").is_dir()
    assert [r.version for r in LocalRegistry(home / "registry").list()] == ["1.0.0"]
    assert len(reg.list()) == 2


def test_an_unknown_model_is_refused_before_anything_is_written(prefect_api, home, tmp_path, lead_days):
    from flows.retrain import retrain
    from retrainer.spec import SpecError

    with pytest.raises(SpecError, match="unknown model 'nope'"):
        retrain(data=str(tmp_path), trigger="manual", model="nope")
    assert not home.exists() or not any(home.rglob("*.json"))
