"""The SageMaker inference container, run exactly as SageMaker runs it: `python -m
retrainer.serving.container serve` (the image's entry point) with the Model's environment, the model
extracted under a model directory laid out like /opt/ml/model, the port from
SAGEMAKER_BIND_TO_PORT, the pseudonym key from Secrets Manager and capture to an S3 prediction
store, all on moto's server over HTTP. The same request file gets the same answer from the local
endpoint and from the container."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from retrainer import datagen, training
from retrainer.container_env import (
    KEY_SECRET_ENV,
    MODEL_DIR_ENV,
    PORT_ENV,
    SHA256_ENV,
    SHADOW_ENV,
    STORE_ENV,
    VARIANT_ENV,
    VERSION_ENV,
)
from retrainer.deid import Pseudonymizer
from retrainer.predstore import PredictionStore
from retrainer.registry import LocalRegistry
from retrainer.registry.storage import sha256_dir
from retrainer.settings import ModelSettings
from tests.helpers import free_port, make_record
from tests.store_contract import identifier_values, scan_for_identifiers

from .conftest import BUCKET, boto

REQUEST_FILE = Path(__file__).resolve().parents[1] / "data" / "invocation.json"
KEY = "container-test-pseudonym-key-0123456789"
VERSION = "1.4.0"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A trained model as SageMaker extracts it from ModelDataUrl (model.joblib, model.json)."""
    tmp = tmp_path_factory.mktemp("container-model")
    paths = datagen.generate(tmp / "data", datagen.GenerationSpec(months=2, rows_per_month=800, seed=5))
    df = pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)
    out = tmp / "opt" / "ml" / "model"
    training.train(df.iloc[:1200], df.iloc[1200:], out, ModelSettings(max_iter=20).model_dump())
    return out


# The serving image has no Prefect, Great Expectations, sagemaker SDK, matplotlib or moto
# (deployments/serving-requirements.txt): every container here runs with those imports refused.
BLOCKED = ("prefect", "great_expectations", "sagemaker", "matplotlib", "moto")
BLOCKER = f"""
import sys
class _Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {BLOCKED!r}:
            raise ImportError("not in the serving image: " + name)
        return None
sys.meta_path.insert(0, _Refuse())
"""


@pytest.fixture
def world(aws_env, tmp_path, model_dir):
    boto("s3").create_bucket(Bucket=BUCKET)
    boto("secretsmanager").create_secret(Name="retrainer/pseudonym-key", SecretString=KEY)
    env = {**os.environ, MODEL_DIR_ENV: str(model_dir), VERSION_ENV: VERSION, SHA256_ENV: sha256_dir(model_dir),
           VARIANT_ENV: "green", SHADOW_ENV: "0", PORT_ENV: str(free_port()),
           STORE_ENV: f"s3://{BUCKET}/retrainer/readmission-30d", KEY_SECRET_ENV: "retrainer/pseudonym-key",
           "RETRAINER_HOME": str(tmp_path / "container-home")}
    blocker = tmp_path / "image-site"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(BLOCKER)
    env["PYTHONPATH"] = os.pathsep.join([str(blocker), str(Path.cwd())])
    env.pop("RETRAINER_PSEUDONYM_KEY", None)
    return env


class Container:
    """The entry point as a process; stopped with SIGTERM (what `docker stop` sends)."""

    def __init__(self, env: dict, *args: str):
        self.env = env
        self.url = f"http://127.0.0.1:{env[PORT_ENV]}"
        self.proc = subprocess.Popen([sys.executable, "-m", "retrainer.serving.container", *(args or ("serve",))],
                                     env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"container exited {self.proc.returncode}: {self.proc.stderr.read()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/ping", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        raise AssertionError("container did not answer /ping")

    def post(self, path: str, body: bytes, headers: dict | None = None) -> tuple[int, dict, dict]:
        req = urllib.request.Request(f"{self.url}{path}", data=body, method="POST",
                                     headers={"Content-Type": "application/json", **(headers or {})})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.loads(r.read()), dict(r.headers)
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read()), dict(e.headers)

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.stderr.read()


def run_refused(env: dict, *args: str) -> tuple[int, str]:
    proc = subprocess.run([sys.executable, "-m", "retrainer.serving.container", *args], env=env,
                          capture_output=True, text=True, timeout=120)
    return proc.returncode, proc.stderr


def test_the_container_answers_like_the_local_endpoint_and_captures_to_s3(world, tmp_path, model_dir):
    body = REQUEST_FILE.read_bytes()
    container = Container(world)
    try:
        container.wait_ready()
        status, answer, headers = container.post("/invocations", body,
                                                 {"X-Amzn-SageMaker-Custom-Attributes": "retrainer-request-id=req-42"})
        assert status == 200, answer
        with urllib.request.urlopen(f"{container.url}/metrics", timeout=5) as r:
            assert b"retrainer_capture" in r.read()
        # no admin routes and no status in the container: SageMaker owns the weights
        assert container.post("/admin/variants", b"[]")[0] == 404
    finally:
        container.stop()

    # the same request file on the local endpoint serving the same version
    registry = LocalRegistry(tmp_path / "registry")
    registry.register(make_record(VERSION, "production"), model_dir, actor="test")
    from retrainer.serving import create_app
    from retrainer.settings import Settings

    settings = Settings(home=tmp_path / "local-home", serving={"admin_token": "t" * 40})
    with TestClient(create_app(settings, registry)) as client:
        local = client.post("/invocations", content=body, headers={"Content-Type": "application/json"}).json()
    n = len(json.loads(body)["instances"])
    assert len(answer["predictions"]) == len(local["predictions"]) == n
    assert [p["score"] for p in answer["predictions"]] == pytest.approx([p["score"] for p in local["predictions"]])
    assert {p["version"] for p in answer["predictions"]} == {VERSION}
    assert {p["variant"] for p in answer["predictions"]} == {"green"}
    assert {k.lower(): v for k, v in headers.items()}["x-amzn-invoked-production-variant"] == "green"

    # captured, de-identified, to S3 on shutdown: under the variant of the Model, keyed by the caller's request id
    store = PredictionStore(world[STORE_ENV])
    rows = store.read()
    assert len(rows) == n and set(rows["variant"]) == {"green"} and set(rows["version"]) == {VERSION}
    assert set(rows["request_id"]) == {"req-42"} and not rows["shadow"].any()
    assert rows["admission_pseudonym"].iloc[0] == Pseudonymizer(KEY.encode()).pseudonym(
        json.loads(body)["instances"][0]["admission_id"], "admission_id")
    s3 = boto("s3")
    objects = [(o["Key"], s3.get_object(Bucket=BUCKET, Key=o["Key"])["Body"].read())
               for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", []) if not o["Key"].endswith("/")]
    sent = pd.DataFrame(json.loads(body)["instances"])
    assert scan_for_identifiers(objects, identifier_values(sent), extra_bytes=(KEY.encode(),)) == []


def test_a_shadow_variant_container_captures_shadow_scores(world):
    container = Container({**world, VARIANT_ENV: "candidate", SHADOW_ENV: "1"})
    try:
        container.wait_ready()
        status, answer, _ = container.post("/invocations", REQUEST_FILE.read_bytes(),
                                           {"X-Amzn-SageMaker-Custom-Attributes": "retrainer-request-id=req-7"})
        assert status == 200
    finally:
        container.stop()
    rows = PredictionStore(world[STORE_ENV]).read()
    assert len(rows) == len(answer["predictions"]) and rows["shadow"].all()
    assert set(rows["variant"]) == {"candidate"} and set(rows["request_id"]) == {"req-7"}


@pytest.mark.parametrize("case, change, message", [
    ("train", {"args": ("train",)}, "this image serves models: run it with 'serve' (got train)"),
    ("no model", {MODEL_DIR_ENV: "/nonexistent/opt/ml/model"}, "no model in /nonexistent/opt/ml/model"),
    ("tampered", {SHA256_ENV: "sha256v2:" + "0" * 64}, "does not match its recorded sha256"),
    ("no version", {VERSION_ENV: ""}, f"{VERSION_ENV} and {SHA256_ENV} must be set"),
    ("no bucket", {STORE_ENV: "s3://no-such-bucket-9/p"}, "bucket 'no-such-bucket-9' does not exist"),
    ("no secret", {KEY_SECRET_ENV: "retrainer/missing"}, "cannot read the pseudonym key from Secrets Manager"),
])
def test_start_up_refusals_are_one_line(world, case, change, message):
    change = dict(change)
    args = change.pop("args", ("serve",))
    code, err = run_refused({**world, **change}, *args)
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err
    assert "Traceback" not in err


def test_denied_capture_writes_are_one_line_at_start_up(world):
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Deny", "Principal": "*", "Action": "s3:PutObject",
                                                      "Resource": f"arn:aws:s3:::{BUCKET}/*"}]}
    boto("s3").put_bucket_policy(Bucket=BUCKET, Policy=json.dumps(policy))
    code, err = run_refused(world, "serve")
    assert code == 2 and err.count("\n") == 1 and "access denied when trying to write" in err, err


def test_a_model_directory_copied_with_an_extra_file_is_refused(world, model_dir, tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(model_dir, copy)
    (copy / "inference.py").write_text("import os\n")  # anything not in the registered artifact
    code, err = run_refused({**world, MODEL_DIR_ENV: str(copy)}, "serve")
    assert code == 2 and "does not match its recorded sha256" in err


def test_the_dockerfile_runs_this_entry_point_with_the_serving_requirements(world):
    """The image's ENTRYPOINT/CMD/EXPOSE are what SageMaker calls, and every third-party
    distribution the container imports is named in deployments/serving-requirements.txt."""
    repo = Path(__file__).resolve().parents[2]
    docker = (repo / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["python", "-m", "retrainer.serving.container"]' in docker
    assert 'CMD ["serve"]' in docker and "EXPOSE 8080" in docker
    assert "COPY deployments/serving-requirements.txt" in docker
    script = (
        "import sys, json\n"
        "from importlib.metadata import packages_distributions\n"
        "from retrainer.serving.container import build_container_app\n"
        "app = build_container_app()\n"
        "dists = packages_distributions()\n"
        "top = {m.split('.')[0] for m in list(sys.modules)}\n"
        "print(json.dumps(sorted({d for m in top for d in dists.get(m, [])})))\n")
    proc = subprocess.run([sys.executable, "-c", script], env=world, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    used = {d.lower().replace("_", "-") for d in json.loads(proc.stdout.strip().splitlines()[-1])}
    listed = {line.split(">")[0].split("<")[0].split("=")[0].strip().lower()
              for line in (repo / "deployments" / "serving-requirements.txt").read_text().splitlines()
              if line.strip() and not line.startswith("#")}
    direct = {"fastapi", "uvicorn", "pandas", "numpy", "pyarrow", "scikit-learn", "pydantic", "pydantic-settings",
              "pyyaml", "boto3", "prometheus-client", "orjson"}
    assert direct <= used, direct - used  # the import map is real: these are all imported
    assert direct <= listed
    assert not {b.replace("_", "-") for b in BLOCKED} & used


def _metric(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name) and not line.startswith("#"))


def test_capture_that_cannot_write_keeps_serving_and_says_so(world):
    """S3 denies writes after start-up: every request is still answered, the rows wait in the
    bounded backlog, and /metrics and the log say what could not be stored."""
    container = Container({**world, "RETRAINER_SERVING__CAPTURE_FLUSH_SECONDS": "0.2"})
    try:
        container.wait_ready()
        policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Deny", "Principal": "*",
                                                          "Action": "s3:PutObject",
                                                          "Resource": f"arn:aws:s3:::{BUCKET}/*"}]}
        boto("s3").put_bucket_policy(Bucket=BUCKET, Policy=json.dumps(policy))
        body = REQUEST_FILE.read_bytes()
        answers = [container.post("/invocations", body)[0] for _ in range(5)]
        assert answers == [200] * 5
        deadline, text = time.monotonic() + 20, ""
        while time.monotonic() < deadline:
            with urllib.request.urlopen(f"{container.url}/metrics", timeout=5) as r:
                text = r.read().decode()
            if _metric(text, "retrainer_capture_write_failures_total") > 0:
                break
            time.sleep(0.2)
        assert _metric(text, "retrainer_capture_write_failures_total") > 0
        assert _metric(text, "retrainer_capture_rows_written_total") == 0
        assert _metric(text, "retrainer_capture_backlog_rows") == 15  # 5 requests x 3 rows, held for a retry
        boto("s3").delete_bucket_policy(Bucket=BUCKET)  # writes work again: the backlog goes out
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with urllib.request.urlopen(f"{container.url}/metrics", timeout=5) as r:
                text = r.read().decode()
            if _metric(text, "retrainer_capture_rows_written_total") == 15:
                break
            time.sleep(0.3)
        assert _metric(text, "retrainer_capture_rows_written_total") == 15
    finally:
        log = container.stop()
    assert "AccessDenied" in log or "ACCESS_DENIED" in log or "access denied" in log.lower(), log[-2000:]
    assert len(PredictionStore(world[STORE_ENV]).read()) == 15
