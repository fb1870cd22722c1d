"""SageMaker backend against moto's server over HTTP.

moto runs nothing: a training job is Completed the moment it is created. So where SageMaker would
run the container, the TEST plays its part (`play_sagemaker`): it reads the job moto recorded,
lays out /opt/ml under tmp_path, downloads the channels and the submit directory, runs the entry
point in a subprocess with the container's environment, and uploads model.tar.gz to the job's
output path. Everything else -- launch, wait, download, verify, register, deploy, canary weights,
rollback weight shift, errors -- is the real code.

moto gaps (moto 5.2.5), each met by calling the real API and asserting the exact botocore error:
- UpdateEndpoint is not implemented (HTTP 500): a cold variant change on an existing endpoint.
- StopTrainingJob is not implemented (HTTP 500): the launcher's timeout path.
- A Failed/Stopped training job cannot be produced: the waiter is fed moto's real describe result
  with TrainingJobStatus/FailureReason set by the test (stated in the test).
"""
from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pandas as pd
import pytest
from botocore.exceptions import ClientError

from retrainer.errors import ConfigError, RetrainerError, RolloutError
from retrainer.registry import ModelRecord
from retrainer.training import load_model

from .conftest import BUCKET, ROLE, backend_with_versions, boto, make_settings, snapshot, upload_job_model

PARAMS = {"learning_rate": 0.1, "max_iter": 30, "max_leaf_nodes": 15, "min_samples_leaf": 20,
          "l2_regularization": 1.0, "random_state": 42}


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    from retrainer.datagen import GenerationSpec, generate

    out = tmp_path_factory.mktemp("data")
    files = generate(out, GenerationSpec(months=3, rows_per_month=700, seed=3))
    df = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    return df.iloc[:1400].reset_index(drop=True), df.iloc[1400:].reset_index(drop=True)


class Clock:
    """Injectable clock + sleep: sleeping advances time, nothing waits."""

    def __init__(self):
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.now += s


def container_env(opt: Path, hps: dict) -> dict[str, str]:
    """The environment SageMaker's training toolkit gives the entry point."""
    return {"PATH": os.environ["PATH"], "HOME": str(opt), "PYTHONPATH": str(opt / "ml/code"),
            "SM_MODEL_DIR": str(opt / "ml/model"), "SM_CHANNEL_TRAIN": str(opt / "ml/input/data/train"),
            "SM_CHANNEL_VALIDATION": str(opt / "ml/input/data/validation"),
            "SM_OUTPUT_DATA_DIR": str(opt / "ml/output/data"), "SM_CHANNELS": json.dumps(["train", "validation"]),
            "SM_HPS": json.dumps(hps), "SM_CURRENT_HOST": "algo-1", "SM_HOSTS": json.dumps(["algo-1"]),
            "SM_NUM_CPUS": "2", "SM_USER_ENTRY_POINT": "train.py"}


def toolkit_hps(hyperparameters: dict[str, str]) -> dict:
    """What the toolkit puts in SM_HPS: JSON-decoded values, sagemaker_* removed."""
    return {k: json.loads(v) for k, v in hyperparameters.items() if not k.startswith("sagemaker_")}


def run_entry_point(opt: Path, hps: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "train.py"], cwd=opt / "ml/code", env=container_env(opt, hps),
                          capture_output=True, text=True, timeout=120)


def play_sagemaker(job: str, opt: Path) -> str:
    """Do what SageMaker does for `job` (moto only records it): returns the model.tar.gz URI."""
    sm, s3 = boto("sagemaker"), boto("s3")
    desc = sm.describe_training_job(TrainingJobName=job)
    for ch in desc["InputDataConfig"]:
        uri = ch["DataSource"]["S3DataSource"]["S3Uri"]
        bucket, prefix = uri[5:].split("/", 1)
        dest = opt / "ml/input/data" / ch["ChannelName"]
        dest.mkdir(parents=True)
        for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]:
            s3.download_file(bucket, o["Key"], str(dest / Path(o["Key"]).name))
    hps = desc["HyperParameters"]
    bucket, key = json.loads(hps["sagemaker_submit_directory"])[5:].split("/", 1)
    with tarfile.open(fileobj=io.BytesIO(s3.get_object(Bucket=bucket, Key=key)["Body"].read())) as t:
        t.extractall(opt / "ml/code", filter="data")
    assert json.loads(hps["sagemaker_program"]) == "train.py"
    proc = run_entry_point(opt, toolkit_hps(hps))
    assert proc.returncode == 0, proc.stderr
    return upload_job_model(s3, desc, opt / "ml/model")


def model_record(version: str, status: str = "candidate") -> ModelRecord:
    return ModelRecord(version=version, status=status, created_at="", trigger="test", parent=None, bump="first",
                       bump_reason="", schema_hash="s", data_hash="d", params_hash="p", code_version="c",
                       params=PARAMS, metrics={"auc": 0.78}, data={}, validation={}, gate={"reason": "ok"})


def one_line(exc: BaseException) -> str:
    msg = str(exc)
    assert "\n" not in msg and msg, msg
    return msg


# ---- the entry point, locally, with the container contract ---------------------------------------
def test_entry_point_runs_with_container_env(tmp_path, frames):
    from retrainer.backends.sagemaker.trainer import hyperparameters, source_tarball

    opt = tmp_path / "opt"
    with tarfile.open(fileobj=io.BytesIO(source_tarball())) as t:
        names = t.getnames()
        t.extractall(opt / "ml/code", filter="data")
    assert {"train.py", "inference.py", "requirements.txt", "retrainer/training.py"} <= set(names)
    assert not any("__pycache__" in n or n.startswith("/") or ".." in n for n in names)
    for ch, df in zip(("train", "validation"), frames):
        (opt / "ml/input/data" / ch).mkdir(parents=True)
        df.to_parquet(opt / "ml/input/data" / ch / f"{ch}.parquet")
    hps = toolkit_hps(hyperparameters(PARAMS, submit_dir="s3://b/k", program="train.py", region="us-east-1"))
    assert hps == PARAMS
    proc = run_entry_point(opt, hps)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1])["train_rows"] == 1400
    env = container_env(opt, hps)
    model = load_model(opt / "ml/model")
    assert model.meta["params"] == PARAMS and model.meta["validation_auc"] > 0.6
    scores = model.predict(frames[1].head(5))
    assert len(scores) == 5 and ((scores >= 0) & (scores <= 1)).all()
    # the serving hooks packaged with the same source load the model it wrote
    body = frames[1].head(3).to_json(orient="records", date_format="iso")
    code = ("import inference, os, sys, retrainer; print(retrainer.__file__);"
            "m = inference.model_fn(os.environ['SM_MODEL_DIR']);"
            "print(inference.output_fn(inference.predict_fn(inference.input_fn(sys.argv[1], 'application/json'), m),"
            " 'application/json')[0])")
    served = subprocess.run([sys.executable, "-c", code, body], cwd=opt / "ml/code", env=env, capture_output=True,
                            text=True, timeout=60)
    assert served.returncode == 0, served.stderr
    where, out = served.stdout.strip().splitlines()[-2:]
    assert Path(where).is_relative_to(opt / "ml/code")  # the packaged source, not the checkout
    preds = json.loads(out)["predictions"]  # the endpoint's contract, as the serving image answers
    assert len(preds) == 3 and all(set(p) == {"score", "version"} and 0 <= p["score"] <= 1 for p in preds)


def test_entry_point_failure_writes_failure_file(tmp_path, frames):
    from retrainer.backends.sagemaker.trainer import source_tarball

    opt = tmp_path / "opt"
    with tarfile.open(fileobj=io.BytesIO(source_tarball())) as t:
        t.extractall(opt / "ml/code", filter="data")
    from retrainer import schema as S

    one_class = frames[0].assign(**{S.LABEL: 0})
    for ch, df in (("train", one_class), ("validation", frames[1])):
        (opt / "ml/input/data" / ch).mkdir(parents=True)
        df.to_parquet(opt / "ml/input/data" / ch / f"{ch}.parquet")
    proc = run_entry_point(opt, PARAMS)
    assert proc.returncode == 2
    assert "single class" in (opt / "ml/output/failure").read_text()


# ---- the full path against moto -----------------------------------------------------------------
def test_launch_wait_download_register_deploy_canary_rollback(aws_env, tmp_path, frames):
    from retrainer.backends.sagemaker import build

    boto("s3").create_bucket(Bucket=BUCKET)
    clock = Clock()
    backend = build(make_settings(tmp_path))
    trainer, registry, endpoint = backend.trainer, backend.registry, backend.endpoint
    trainer.sleep, trainer.clock = clock.sleep, clock
    endpoint.sleep, endpoint.clock = clock.sleep, clock

    job = trainer.launch(frames[0], frames[1], PARAMS)
    desc = boto("sagemaker").describe_training_job(TrainingJobName=job)
    assert desc["AlgorithmSpecification"]["TrainingImage"] == \
        "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.9-0-cpu-py3"
    assert desc["RoleArn"] == ROLE
    keys = snapshot()["objects"][BUCKET]
    assert f"retrainer/training/{job}/train/train.parquet" in keys
    assert f"retrainer/training/{job}/validation/validation.parquet" in keys
    assert f"retrainer/training/{job}/source/sourcedir.tar.gz" in keys

    play_sagemaker(job, tmp_path / "opt")
    model_dir = trainer.collect(job, tmp_path / "work")
    info = json.loads((tmp_path / "work/training_job.json").read_text())
    assert len(info["model_artifact_sha256"]) == 64 and info["members"] == ["model.joblib", "model.json"]
    assert load_model(model_dir).meta["params"] == PARAMS

    registry.register(model_record("1.0.0", "production"), model_dir, actor="ci")
    registry.register(model_record("1.1.0"), model_dir, actor="ci")
    pkgs = boto("sagemaker").list_model_packages(ModelPackageGroupName="readmission-30d")["ModelPackageSummaryList"]
    assert sorted(p["ModelApprovalStatus"] for p in pkgs) == ["Approved", "PendingManualApproval"]

    # canary: blue (production) 0.9, green (candidate) 0.1; no previous yet, so no warm standby
    state = endpoint.set_variants([("blue", "1.0.0", 0.9), ("green", "1.1.0", 0.1)])
    assert state["status"] == "InService"
    assert [(v["variant"], v["version"], v["weight"]) for v in state["variants"]] == \
        [("blue", "1.0.0", 0.9), ("green", "1.1.0", 0.1)]
    assert endpoint.state() == state
    configs = snapshot()["endpoint_configs"]
    assert len(configs) == 1

    # promote: weight-only shift to green
    registry.promote("1.1.0", actor="lead", reason="canary passed")
    state = endpoint.set_variants([("green", "1.1.0", 1.0)])
    assert {v["variant"]: v["weight"] for v in state["variants"]} == {"blue": 0.0, "green": 1.0}
    # rollback: registry back to 1.0.0, traffic shifts back to blue without a new config
    assert registry.rollback(actor="oncall", reason="alarm").version == "1.0.0"
    state = endpoint.set_variants([("blue", "1.0.0", 1.0)])
    assert {v["variant"]: (v["version"], v["weight"]) for v in state["variants"]} == \
        {"blue": ("1.0.0", 1.0), "green": ("1.1.0", 0.0)}
    assert snapshot()["endpoint_configs"] == configs  # weight-only: UpdateEndpointWeightsAndCapacities
    assert clock.sleeps == []  # moto is InService at once: no waiting happened


def test_fit_without_sagemaker_running_anything_fails_clearly(aws_env, tmp_path, frames):
    """fit() end to end: moto completes the job but nothing writes model.tar.gz -> clear error."""
    from retrainer.backends.sagemaker import ArtifactError, build

    boto("s3").create_bucket(Bucket=BUCKET)
    trainer = build(make_settings(tmp_path)).trainer
    with pytest.raises(ArtifactError, match=r"^training job readmission-30d-\S+ completed but its model artifact "
                                            r"s3://retrainer-test-bucket/\S+/output/model.tar.gz is missing$"):
        trainer.fit(frames[0], frames[1], PARAMS, tmp_path / "work")


@pytest.mark.parametrize("members, message", [
    ({"../evil.py": b"x", "model.joblib": b"x", "model.json": b"{}"}, "escapes the extraction directory"),
    ({"model.joblib": b"x"}, "lacks model.json at its root"),
    ("symlink", "is a link or device"),
    ("garbage", "is not a readable tar archive"),
])
def test_unsafe_or_incomplete_model_artifact_is_refused(aws_env, tmp_path, frames, members, message):
    from retrainer.backends.sagemaker import ArtifactError, build

    boto("s3").create_bucket(Bucket=BUCKET)
    trainer = build(make_settings(tmp_path)).trainer
    job = trainer.launch(frames[0].head(50), frames[1].head(50), PARAMS)
    out = boto("sagemaker").describe_training_job(TrainingJobName=job)["ModelArtifacts"]["S3ModelArtifacts"]
    buf = io.BytesIO()
    if members == "garbage":
        buf.write(b"not a tarball")
    else:
        with tarfile.open(fileobj=buf, mode="w:gz") as t:
            if members == "symlink":
                info = tarfile.TarInfo("model.joblib")
                info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
                t.addfile(info)
            else:
                for name, data in members.items():
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    t.addfile(info, io.BytesIO(data))
    bucket, key = out[5:].split("/", 1)
    boto("s3").put_object(Bucket=bucket, Key=key, Body=buf.getvalue())
    with pytest.raises(ArtifactError, match=re.escape(message)) as err:
        trainer.collect(job, tmp_path / "work")
    one_line(err.value)
    assert not (tmp_path / "work/model").exists() and not (tmp_path / "evil.py").exists()


class DescribeAs:
    """A real moto sagemaker client whose describe_training_job answers are moto's own, with the
    status sequence set by the test (moto cannot produce Failed/Stopped/InProgress jobs)."""

    def __init__(self, client, statuses, reason=None):
        self._c, self._statuses, self._reason = client, list(statuses), reason

    def __getattr__(self, name):
        return getattr(self._c, name)

    def describe_training_job(self, **kw):
        d = self._c.describe_training_job(**kw)
        d["TrainingJobStatus"] = self._statuses.pop(0) if len(self._statuses) > 1 else self._statuses[0]
        if d["TrainingJobStatus"] in ("Failed", "Stopped"):
            d["FailureReason"] = self._reason
        return d


@pytest.mark.parametrize("final", ["Failed", "Stopped"])
def test_failed_or_stopped_job_quotes_failure_reason(aws_env, tmp_path, frames, final):
    # moto gap: a moto training job is always Completed; the status/FailureReason below are set by the test.
    from retrainer.backends.sagemaker import TrainingJobFailed, build

    boto("s3").create_bucket(Bucket=BUCKET)
    clock = Clock()
    trainer = build(make_settings(tmp_path)).trainer
    trainer.sleep, trainer.clock = clock.sleep, clock
    job = trainer.launch(frames[0].head(50), frames[1].head(50), PARAMS)
    reason = "AlgorithmError: ExecuteUserScriptError:\nExitCode 2\nErrorMessage \"readmitted_30d has a single class\""
    trainer.aws._clients["sagemaker"] = DescribeAs(trainer.aws.sm, ["InProgress", "InProgress", "InProgress", final],
                                                   reason)
    with pytest.raises(TrainingJobFailed) as err:
        trainer.collect(job, tmp_path / "work")
    assert one_line(err.value) == (f"SageMaker training job {job} {final.lower()}: AlgorithmError: "
                                   "ExecuteUserScriptError: ExitCode 2 ErrorMessage "
                                   "\"readmitted_30d has a single class\"")
    assert isinstance(err.value, RetrainerError)
    assert clock.sleeps == [15.0, 30.0, 60.0]  # exponential backoff
    assert not (tmp_path / "work/model").exists()


def test_timeout_stops_the_job_and_reports_moto_gap(aws_env, tmp_path, frames):
    # moto gap: StopTrainingJob is not implemented (HTTP 500); the code calls the real API anyway.
    from retrainer.backends.sagemaker import WaitTimeout, build

    boto("s3").create_bucket(Bucket=BUCKET)
    clock = Clock()
    trainer = build(make_settings(tmp_path)).trainer
    trainer.sleep, trainer.clock, trainer.timeout_s = clock.sleep, clock, 600
    job = trainer.launch(frames[0].head(50), frames[1].head(50), PARAMS)
    trainer.aws._clients["sagemaker"] = DescribeAs(trainer.aws.sm, ["InProgress"])
    with pytest.raises(WaitTimeout) as err:
        trainer.collect(job, tmp_path / "work")
    assert one_line(err.value).startswith(f"training job {job} is still InProgress after 600 s; StopTrainingJob also "
                                          "failed (500: ")
    cause = err.value.__cause__
    assert isinstance(cause, ClientError) and cause.operation_name == "StopTrainingJob"
    assert cause.response["Error"]["Code"] == "500" and cause.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    assert sum(clock.sleeps) == 600 and max(clock.sleeps) <= 120


# ---- endpoint: warm standby, cold change (moto gap), silent rollback -----------------------------
@pytest.fixture
def deployed(aws_env, tmp_path):
    """1.0.0 previous, 1.1.0 production, 1.2.0 and 1.3.0 candidates, tiny fake artifacts."""
    return backend_with_versions(tmp_path, model_record, ("1.2.0", "1.3.0"))


def test_warm_standby_rollback_is_weight_only(deployed):
    ep, reg = deployed.endpoint, deployed.registry
    state = ep.set_variants([("blue", "1.1.0", 0.9), ("green", "1.2.0", 0.1)])
    assert [(v["variant"], v["version"], v["weight"]) for v in state["variants"]] == \
        [("blue", "1.1.0", 0.9), ("green", "1.2.0", 0.1), ("standby", "1.0.0", 0.0)]
    before = snapshot()
    reg.rollback(actor="oncall", reason="alarm")  # -> 1.0.0
    state = ep.set_variants([("blue", "1.0.0", 1.0)])  # served by the warm standby
    assert {v["variant"]: (v["version"], v["weight"]) for v in state["variants"]} == \
        {"blue": ("1.1.0", 0.0), "green": ("1.2.0", 0.0), "standby": ("1.0.0", 1.0)}
    assert snapshot() == before


def test_cold_change_calls_update_endpoint_and_leaves_nothing_behind(deployed):
    # moto gap: UpdateEndpoint is not implemented (HTTP 500); the code calls the real API anyway.
    ep = deployed.endpoint
    ep.set_variants([("blue", "1.1.0", 0.9), ("green", "1.2.0", 0.1)])
    before = snapshot()
    with pytest.raises(RolloutError) as err:
        ep.set_variants([("blue", "1.1.0", 0.9), ("green", "1.3.0", 0.1)])  # 1.3.0 is not deployed: cold
    assert re.fullmatch(r"endpoint readmission-30d: UpdateEndpoint with config readmission-30d-\d{14}-[0-9a-f]{6} "
                        r"failed: 500: <!doctype html> .*", one_line(err.value))
    cause = err.value.__cause__
    assert isinstance(cause, ClientError) and cause.operation_name == "UpdateEndpoint"
    assert cause.response["Error"]["Code"] == "500"
    after = snapshot()
    assert {k: after[k] for k in ("models", "endpoint_configs", "endpoints")} == \
        {k: before[k] for k in ("models", "endpoint_configs", "endpoints")}
    assert [(v["variant"], v["version"]) for v in ep.state()["variants"]] == \
        [("blue", "1.1.0"), ("green", "1.2.0"), ("standby", "1.0.0")]  # the endpoint is untouched


class SilentRollback:
    """Real moto client; after a weight update it re-applies the old weights through the real API,
    like SageMaker rolling an update back on its own while reporting InService."""

    def __init__(self, client):
        self._c = client

    def __getattr__(self, name):
        return getattr(self._c, name)

    def update_endpoint_weights_and_capacities(self, EndpointName, DesiredWeightsAndCapacities):
        old = [{"VariantName": v["VariantName"], "DesiredWeight": v.get("CurrentWeight", 0.0)}
               for v in self._c.describe_endpoint(EndpointName=EndpointName)["ProductionVariants"]]
        out = self._c.update_endpoint_weights_and_capacities(
            EndpointName=EndpointName, DesiredWeightsAndCapacities=DesiredWeightsAndCapacities)
        self._c.update_endpoint_weights_and_capacities(EndpointName=EndpointName, DesiredWeightsAndCapacities=old)
        return out


def test_silent_rollback_is_detected(deployed):
    from retrainer.backends.sagemaker import EndpointMismatch

    ep = deployed.endpoint
    ep.set_variants([("blue", "1.1.0", 0.9), ("green", "1.2.0", 0.1)])
    ep.aws._clients["sagemaker"] = SilentRollback(ep.aws.sm)
    with pytest.raises(EndpointMismatch) as err:
        ep.set_variants([("green", "1.2.0", 1.0)])
    assert re.fullmatch(r"endpoint readmission-30d did not take the change \(SageMaker may have rolled it back\): "
                        r"expected config (\S+) weights \{blue=0, green=1, standby=0\}, found \1 weights "
                        r"\{blue=0\.9, green=0\.1, standby=0\}, status InService", one_line(err.value))


def test_registry_metadata_is_valid_for_the_real_service(deployed):
    """Values: <=256 chars of [\\p{L}\\p{Z}\\p{N}_.:/=+-@]; keys <=128; <=50 entries; approval mapping."""
    sm = boto("sagemaker")
    seen = {}
    for p in sm.list_model_packages(ModelPackageGroupName="readmission-30d")["ModelPackageSummaryList"]:
        d = sm.describe_model_package(ModelPackageName=p["ModelPackageArn"])
        md = d["CustomerMetadataProperties"]
        assert len(md) <= 50
        assert all(len(k) <= 128 and re.fullmatch(r"[\w .:/=+\-@]+", k) for k in md)
        assert all(len(v) <= 256 and re.fullmatch(r"[\w .:/=+\-@]+", v) for v in md.values())
        assert d["InferenceSpecification"]["Containers"][0]["ModelDataUrl"].endswith(
            f"/registry/models/{md['retrainer.version']}/model.tar.gz")
        seen[md["retrainer.version"]] = (md["retrainer.lifecycle"], d["ModelApprovalStatus"])
    assert seen == {"1.0.0": ("previous", "Approved"), "1.1.0": ("production", "Approved"),
                    "1.2.0": ("candidate", "PendingManualApproval"), "1.3.0": ("candidate", "PendingManualApproval")}


# ---- bad configuration: one line, nothing created -------------------------------------------------
def _three_entry_points(backend, frames, tmp_path, art):
    yield "train", lambda: backend.trainer.fit(frames[0].head(50), frames[1].head(50), PARAMS, tmp_path / "w")
    yield "register", lambda: backend.registry.register(model_record("1.0.0", "production"), art, actor="ci")
    yield "deploy", lambda: backend.endpoint.set_variants([("blue", "1.0.0", 1.0)])


@pytest.mark.parametrize("case, aws, message", [
    ("missing bucket", {"bucket": "no-such-bucket-here"},
     "S3 bucket no-such-bucket-here does not exist (aws.bucket); create it first"),
    ("bad role", {"role_arn": "retrainer-role"},
     "aws.role_arn 'retrainer-role' is not an IAM role ARN (arn:aws:iam::<12 digits>:role/<name>)"),
    ("missing region", {"region": None},
     "no AWS region: set aws.region (RETRAINER_AWS__REGION) or AWS_DEFAULT_REGION"),
])
def test_bad_configuration_one_line_nothing_created(aws_env, tmp_path, frames, monkeypatch, case, aws, message):
    from retrainer.backends.sagemaker import build

    boto("s3").create_bucket(Bucket=BUCKET)
    art = tmp_path / "art"
    art.mkdir()
    (art / "model.joblib").write_bytes(b"x")
    (art / "model.json").write_text("{}")
    if case == "bad role":  # the endpoint needs a registered version to get as far as the role check
        build(make_settings(tmp_path)).registry.register(model_record("1.0.0", "production"), art, actor="ci")
    before = snapshot()
    if case == "missing region":
        monkeypatch.delenv("AWS_DEFAULT_REGION")
    backend = build(make_settings(tmp_path, **aws))
    for step, call in _three_entry_points(backend, frames, tmp_path, art):
        if case == "bad role" and step == "register":
            continue  # the registry needs no role
        with pytest.raises(ConfigError) as err:
            call()
        assert one_line(err.value) == message, step
    if case == "missing region":
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    assert snapshot() == before


def test_endpoint_that_does_not_exist(aws_env, tmp_path):
    from retrainer.backends.sagemaker import build

    boto("s3").create_bucket(Bucket=BUCKET)
    before = snapshot()
    ep = build(make_settings(tmp_path, endpoint_name="nobody-home")).endpoint
    with pytest.raises(RolloutError) as err:
        ep.state()
    assert one_line(err.value) == "SageMaker endpoint nobody-home does not exist in us-east-1"
    assert snapshot() == before
