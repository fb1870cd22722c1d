"""moto's server over HTTP for the SageMaker backend tests (this folder's conftest).

`moto_server` (module scope) starts `moto_server` from the venv on a free 127.0.0.1 port, waits
until it answers and stops it at the end. `aws_env` (per test) resets moto's state and points the
AWS chain at it with monkeypatch, so every variable is restored afterwards.
"""
from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.helpers import mark_folder

BUCKET = "retrainer-test-bucket"
ROLE = "arn:aws:iam::123456789012:role/retrainer-sagemaker"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def moto_server():
    port = _free_port()
    exe = Path(sys.executable).with_name("moto_server")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "moto.server"]
    proc = subprocess.Popen([*cmd, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"{url}/moto-api/", timeout=1).read()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"moto_server did not start on {url}")
            time.sleep(0.1)
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture
def aws_env(moto_server, monkeypatch, tmp_path):
    urllib.request.urlopen(urllib.request.Request(f"{moto_server}/moto-api/reset", method="POST")).read()
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_SECURITY_TOKEN",
                "RETRAINER_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    env = {"AWS_ENDPOINT_URL": moto_server, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_MAX_ATTEMPTS": "1", "SAGEMAKER_VALIDATE_ROLE": "false",
           "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
           "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials")}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return moto_server


def boto(service: str):
    import boto3

    return boto3.session.Session().client(service)


def make_settings(tmp_path, **aws):
    from retrainer.settings import Settings

    base = {"bucket": BUCKET, "role_arn": ROLE, "region": "us-east-1"}
    base.update(aws)
    return Settings(home=tmp_path / "home", backend="sagemaker", aws=base)


def snapshot() -> dict:
    """Everything the SageMaker backend can create, for before/after comparisons."""
    s3, sm = boto("s3"), boto("sagemaker")
    buckets = sorted(b["Name"] for b in s3.list_buckets().get("Buckets", []))
    objects = {b: sorted(o["Key"] for o in s3.list_objects_v2(Bucket=b).get("Contents", [])) for b in buckets}
    return {
        "buckets": buckets, "objects": objects,
        "training_jobs": sorted(j["TrainingJobName"] for j in sm.list_training_jobs()["TrainingJobSummaries"]),
        "models": sorted(m["ModelName"] for m in sm.list_models()["Models"]),
        "endpoint_configs": sorted(c["EndpointConfigName"] for c in sm.list_endpoint_configs()["EndpointConfigs"]),
        "endpoints": sorted(e["EndpointName"] for e in sm.list_endpoints()["Endpoints"]),
        "groups": sorted(g["ModelPackageGroupName"]
                         for g in sm.list_model_package_groups()["ModelPackageGroupSummaryList"]),
    }


def pytest_collection_modifyitems(items):
    mark_folder(items, __file__, "aws")


def backend_with_versions(tmp_path, record, versions=("1.2.0",)):
    """A SageMaker backend on moto whose registry holds 1.0.0 (previous), 1.1.0 (production) and
    `versions` as candidates, with tiny artifacts (nothing is served). `record(version, status=...)`
    makes the registry records."""
    from retrainer.backends.sagemaker import build

    boto("s3").create_bucket(Bucket=BUCKET)
    art = tmp_path / "art"
    art.mkdir()
    (art / "model.joblib").write_bytes(b"x")
    (art / "model.json").write_text("{}")
    backend = build(make_settings(tmp_path))
    reg = backend.registry
    reg.register(record("1.0.0", "production"), art, actor="ci")
    reg.register(record("1.1.0"), art, actor="ci")
    reg.promote("1.1.0", actor="ci", reason="x")
    for v in versions:
        reg.register(record(v), art, actor="ci")
    return backend


def upload_job_model(s3, desc: dict, model_dir) -> str:
    """What SageMaker does at the end of a training job moto only records: `model_dir`'s files as
    the job's model.tar.gz at its S3ModelArtifacts; returns that URI."""
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for f in sorted(model_dir.iterdir()):
            t.add(f, arcname=f.name)
    uri = desc["ModelArtifacts"]["S3ModelArtifacts"]
    bucket, key = uri[5:].split("/", 1)
    s3.put_object(Bucket=bucket, Key=key, Body=buf.getvalue())
    return uri
