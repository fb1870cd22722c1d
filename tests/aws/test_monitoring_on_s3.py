"""Monitoring on the AWS path: with `backend: sagemaker`, the monitor flow (on the session Prefect
server) reads its drift window from the S3 prediction store on moto's server, streamed file by
file, and emits the drift event; the canary's live checks, the label ingest and compaction run on
the same S3 store. The production version lives in the SageMaker registry (model package + S3
artifact), trained by the local retrain flow and registered there."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.helpers import copy_months

from .conftest import BUCKET, ROLE, boto

KEY = "monitor-s3-test-pseudonym-key-0123456789"


@pytest.fixture
def aws_world(aws_env, prefect_api, home, monthly_data, tmp_path, monkeypatch):
    """Production 1.0.0 (trained locally with its reference profile) registered in the SageMaker
    registry; the process configured for the sagemaker backend, its store on S3."""
    from flows.retrain import retrain
    from retrainer.backends.sagemaker import build
    from retrainer.registry import LocalRegistry
    from retrainer.settings import load_settings

    monkeypatch.setenv("RETRAINER_PSEUDONYM_KEY", KEY)
    first = copy_months(monthly_data, tmp_path / "first", [f"admissions_2024_0{m}.parquet" for m in range(1, 6)])
    assert retrain(data=str(first), trigger="scheduled")["version"] == "1.0.0"
    local = LocalRegistry(home / "registry")
    record, artifact = local.get("1.0.0"), local.verify("1.0.0")

    boto("s3").create_bucket(Bucket=BUCKET)
    for k, v in {"RETRAINER_BACKEND": "sagemaker", "RETRAINER_AWS__BUCKET": BUCKET, "RETRAINER_AWS__ROLE_ARN": ROLE,
                 "RETRAINER_AWS__REGION": "us-east-1", "RETRAINER_HOME": str(tmp_path / "aws-home")}.items():
        monkeypatch.setenv(k, v)
    settings = load_settings()
    backend = build(settings)
    backend.registry.register(record, artifact, actor="test")
    assert backend.registry.production().version == "1.0.0"
    return backend


def test_the_monitor_reads_its_window_from_s3_and_emits_the_drift_event(aws_world, tmp_path):
    from flows.monitor import monitor
    from retrainer import deid
    from retrainer.datagen import GenerationSpec, generate
    from retrainer.training import load_model

    backend = aws_world
    assert backend.predictions.url == f"s3://{BUCKET}/retrainer/readmission-30d"
    paths = generate(tmp_path / "drift", GenerationSpec(months=8, rows_per_month=2500, seed=5, drift_from=1))
    frame = pd.read_parquet(paths[-1])
    model = load_model(backend.registry.verify("1.0.0"))
    ps = deid.pseudonymizer_from_env("RETRAINER_PSEUDONYM_KEY")
    for part in np.array_split(np.arange(len(frame)), 25):  # 25 small capture files, as the container writes
        rows = frame.iloc[part]
        backend.predictions.append(rows, model.predict(rows), version="1.0.0", variant="blue", latency_ms=3.0,
                                   pseudonymizer=ps)
    keys = [o["Key"] for o in boto("s3").list_objects_v2(Bucket=BUCKET, Prefix="retrainer/readmission-30d/predictions/")
            .get("Contents", [])]
    assert len(keys) >= 25

    out = monitor()
    assert out["reported"] == "data-drift" and out["emitted"] and out["event"] == "retrainer.drift.detected"
    drift = {e["name"]: e for e in out["evaluations"]}["data-drift"]
    assert drift["fired"] and drift["numbers"]["n_window"] == len(frame)

    # compaction on S3 changes what is stored, not what the monitor sees
    from flows.compact import compact_predictions

    result = compact_predictions(days_back=0)
    assert result["files_in"] >= 25 and result["files_out"] == 1 and result["rows"] == len(frame)
    again = {e["name"]: e for e in monitor()["evaluations"]}["data-drift"]
    assert again["fired"] and again["numbers"]["n_window"] == len(frame)
    assert again["numbers"]["max_psi"] == pytest.approx(drift["numbers"]["max_psi"])


def test_labels_and_live_canary_statistics_on_s3(aws_world, tmp_path):
    """The label ingest (CLI path) and the canary's per-variant statistics read the S3 store."""
    from retrainer import deid
    from retrainer import schema as S
    from retrainer.datagen import GenerationSpec, generate

    backend = aws_world
    frame = pd.read_parquet(generate(tmp_path / "d", GenerationSpec(months=1, rows_per_month=400, seed=9))[0])
    ps = deid.pseudonymizer_from_env("RETRAINER_PSEUDONYM_KEY")
    rng = np.random.default_rng(0)
    scores = np.clip(0.3 * frame[S.LABEL].to_numpy() + 0.7 * rng.random(len(frame)), 0, 1)
    half = len(frame) // 2
    backend.predictions.append(frame.iloc[:half], scores[:half], version="1.0.0", variant="blue", latency_ms=2.0,
                               ts="2024-03-01T10:00:00Z", pseudonymizer=ps)
    backend.predictions.append(frame.iloc[half:], scores[half:], version="1.1.0", variant="green", latency_ms=2.0,
                               ts="2024-03-01T11:00:00Z", pseudonymizer=ps)
    frame[[S.ADMISSION_ID, S.LABEL]].to_csv(tmp_path / "labels.csv", index=False)
    assert backend.predictions.ingest_labels(tmp_path / "labels.csv", ps) == len(frame)
    stats = backend.predictions.variant_stats()
    assert stats["blue"]["n_labels"] == half and stats["green"]["n_labels"] == len(frame) - half
    assert 0.5 < stats["green"]["auc"] < 1.0
