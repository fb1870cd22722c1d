"""`aws.instance_count` > 1 against moto's server over HTTP: the job definition SageMaker receives,
and the job played through on this machine.

moto records the job and runs nothing, so the test plays SageMaker's part for a two-instance job:
the train channel is ShardedByS3Key, so host k gets every object of the train prefix whose index
(in key order) is k modulo the instance count (SageMaker's documented split: each instance gets
1/n of the objects; which object goes where is SageMaker's choice); validation is replicated.
Each host is a `train.py` process from the job's own submit directory with SageMaker's
multi-host environment, and RETRAINER_TRACKER_HOST=127.0.0.1 stands in for resolving algo-1.
Host 1's model directory becomes the job's model.tar.gz (only it writes one), which the trainer
then collects as it does for a one-instance job.
"""
from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import tarfile
from pathlib import Path

import pandas as pd
import pytest

from retrainer.errors import ConfigError
from retrainer.training import load_model

from .conftest import BUCKET, ROLE, boto, snapshot, upload_job_model

PARAMS = {"n_estimators": 60, "max_depth": 4, "learning_rate": 0.1, "random_state": 42, "n_jobs": 1}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def settings(tmp_path, model: str, **aws):
    from retrainer.settings import Settings

    return Settings(home=tmp_path / "home", backend="sagemaker", model_name=model,
                    aws={"bucket": BUCKET, "role_arn": ROLE, "region": "us-east-1", **aws})


@pytest.fixture(scope="module")
def leads(tmp_path_factory):
    from examples.lead_scoring.datagen import generate

    files = generate(tmp_path_factory.mktemp("leads"), periods=5, rows_per_period=600, seed=11)
    return (pd.concat([pd.read_parquet(f) for f in files[:4]], ignore_index=True),
            pd.read_parquet(files[4]))


def objects(prefix: str) -> list[str]:
    return sorted(o["Key"] for o in boto("s3").list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", []))


def play_two_instances(job: str, root: Path) -> tuple[dict, str]:
    """Run the job on as many local processes as its ResourceConfig asks for; returns each
    host's result line and the model.tar.gz URI uploaded from host 1."""
    sm, s3 = boto("sagemaker"), boto("s3")
    desc = sm.describe_training_job(TrainingJobName=job)
    n = desc["ResourceConfig"]["InstanceCount"]
    hosts = [f"algo-{k + 1}" for k in range(n)]
    hps = {k: json.loads(v) for k, v in desc["HyperParameters"].items() if not k.startswith("sagemaker_")}
    bucket, key = json.loads(desc["HyperParameters"]["sagemaker_submit_directory"])[5:].split("/", 1)
    source = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    for rank, host in enumerate(hosts):
        opt = root / host
        with tarfile.open(fileobj=io.BytesIO(source)) as t:
            t.extractall(opt / "ml/code", filter="data")
        for ch in desc["InputDataConfig"]:
            src = ch["DataSource"]["S3DataSource"]
            prefix = src["S3Uri"][5:].split("/", 1)[1]
            keys = objects(prefix)
            if src["S3DataDistributionType"] == "ShardedByS3Key":
                keys = keys[rank::n]
            dest = opt / "ml/input/data" / ch["ChannelName"]
            dest.mkdir(parents=True)
            for k in keys:
                s3.download_file(BUCKET, k, str(dest / Path(k).name))
    procs = {}
    for host in reversed(hosts):  # the workers start before the tracker's host, as they may on SageMaker
        opt = root / host
        env = {"PATH": os.environ["PATH"], "HOME": str(opt), "PYTHONPATH": str(opt / "ml/code"),
               "SM_MODEL_DIR": str(opt / "ml/model"), "SM_CHANNEL_TRAIN": str(opt / "ml/input/data/train"),
               "SM_CHANNEL_VALIDATION": str(opt / "ml/input/data/validation"),
               "SM_OUTPUT_DATA_DIR": str(opt / "ml/output/data"), "SM_HPS": json.dumps(hps),
               "SM_HOSTS": json.dumps(hosts), "SM_CURRENT_HOST": host, "RETRAINER_TRACKER_HOST": "127.0.0.1"}
        procs[host] = subprocess.Popen([sys.executable, "train.py"], cwd=opt / "ml/code", env=env,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = {}
    for host, p in procs.items():
        out, err = p.communicate(timeout=180)
        assert p.returncode == 0, f"{host}: {err[-2000:]}"
        lines[host] = json.loads([ln for ln in out.splitlines() if ln.startswith("{")][-1])
    assert not (root / "algo-2/ml/model").exists()  # only the first host writes the model
    return lines, upload_job_model(s3, desc, root / "algo-1/ml/model")


def test_two_instances_reach_the_job_definition_and_train_one_model(aws_env, tmp_path, leads):
    from retrainer.backends.sagemaker import build

    boto("s3").create_bucket(Bucket=BUCKET)
    port = free_port()
    trainer = build(settings(tmp_path, "lead-scoring", instance_count=2, tracker_port=port)).trainer
    job = trainer.launch(leads[0], leads[1], PARAMS)

    desc = boto("sagemaker").describe_training_job(TrainingJobName=job)
    assert desc["ResourceConfig"]["InstanceCount"] == 2
    dist = {ch["ChannelName"]: ch["DataSource"]["S3DataSource"]["S3DataDistributionType"]
            for ch in desc["InputDataConfig"]}
    assert dist == {"train": "ShardedByS3Key", "validation": "FullyReplicated"}
    assert json.loads(desc["HyperParameters"]["distributed"]) == {"tracker_port": port, "timeout_s": 900.0}
    train_keys = objects(f"retrainer/training/{job}/train/")
    assert train_keys == [f"retrainer/training/{job}/train/part-00000.parquet",
                          f"retrainer/training/{job}/train/part-00001.parquet"]
    sizes = [len(pd.read_parquet(io.BytesIO(boto("s3").get_object(Bucket=BUCKET, Key=k)["Body"].read())))
             for k in train_keys]
    assert sum(sizes) == len(leads[0]) and min(sizes) > 0
    assert trainer.last_job["instance_count"] == 2

    lines, _ = play_two_instances(job, tmp_path / "opt")
    assert [lines[h]["host_train_rows"] for h in ("algo-1", "algo-2")] == sizes
    assert lines["algo-1"]["validation_spearman"] == lines["algo-2"]["validation_spearman"]
    model = load_model(trainer.collect(job, tmp_path / "work"))
    assert model.meta["distributed"]["train_rows"] == sizes and model.meta["train_rows"] == len(leads[0])
    assert model.meta["params"] == PARAMS  # the reserved hyperparameters are not model parameters
    assert len(model.predict(leads[1].head(5))) == 5


def test_one_instance_stays_as_it_was(aws_env, tmp_path, leads):
    from retrainer.backends.sagemaker import build

    boto("s3").create_bucket(Bucket=BUCKET)
    trainer = build(settings(tmp_path, "lead-scoring")).trainer
    job = trainer.launch(leads[0], leads[1], PARAMS)
    desc = boto("sagemaker").describe_training_job(TrainingJobName=job)
    assert desc["ResourceConfig"]["InstanceCount"] == 1
    assert {ch["DataSource"]["S3DataSource"]["S3DataDistributionType"] for ch in desc["InputDataConfig"]} == \
        {"FullyReplicated"}
    assert "distributed" not in desc["HyperParameters"]
    assert objects(f"retrainer/training/{job}/train/") == [f"retrainer/training/{job}/train/train.parquet"]


def test_an_entry_point_that_cannot_train_distributed_is_refused_before_anything_is_created(aws_env, tmp_path):
    from retrainer.backends.sagemaker import build
    from retrainer.datagen import GenerationSpec, generate

    boto("s3").create_bucket(Bucket=BUCKET)
    files = generate(tmp_path / "data", GenerationSpec(months=2, rows_per_month=300, seed=3))
    train_df, val_df = (pd.read_parquet(f) for f in files)
    before = snapshot()
    trainer = build(settings(tmp_path, "readmission-30d", instance_count=2)).trainer
    with pytest.raises(ConfigError) as err:
        trainer.fit(train_df, val_df, {}, tmp_path / "work")
    assert str(err.value) == (
        "aws.instance_count=2 needs an entry point that trains distributed, and model readmission-30d's "
        "retrainer.training:hist_gradient_boosting_classifier does not (these do: "
        "retrainer.training:xgboost_regressor, retrainer.training:xgboost_ranker); set aws.instance_count to 1")
    assert snapshot() == before
    assert not (tmp_path / "work").exists()


def test_instance_count_setting_is_validated(tmp_path):
    from retrainer.settings import load_settings

    with pytest.raises(ConfigError, match=r"^bad setting aws\.instance_count: Input should be greater than or "
                                          r"equal to 1$"):
        load_settings(home=tmp_path, aws={"instance_count": 0})
