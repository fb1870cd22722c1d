"""The prediction store on an S3 prefix of moto's server over HTTP: the same contract suite as
the local store (`tests/store_contract.py`), the identifier scan over every stored object's bytes,
and the start-up check's one-line errors (no bucket, access denied, endpoint unreachable)."""
from __future__ import annotations

import json
import pickle
import uuid

import pytest

from retrainer.errors import ConfigError
from retrainer.predstore import PredictionStore
from tests.store_contract import *  # noqa: F403 - the contract suite runs here on S3

from .conftest import BUCKET, boto


@pytest.fixture
def new_store(aws_env):
    boto("s3").create_bucket(Bucket=BUCKET)
    run = uuid.uuid4().hex[:8]

    def make(name: str = "store", compression: str | None = "zstd") -> PredictionStore:
        return PredictionStore(f"s3://{BUCKET}/t-{run}/{name}", compression=compression)
    return make


@pytest.fixture
def objects(aws_env):
    s3 = boto("s3")

    def listing(store: PredictionStore) -> list[tuple[str, bytes]]:
        loc = store.location
        prefix = f"{loc.prefix}/"
        out = []
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=loc.bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                if obj["Key"].endswith("/"):  # an empty directory marker pyarrow leaves after a delete
                    assert obj["Size"] == 0
                    continue
                body = s3.get_object(Bucket=loc.bucket, Key=obj["Key"])["Body"].read()
                out.append((obj["Key"][len(prefix):], body))
        return sorted(out)
    return listing


def test_a_missing_bucket_is_one_line_at_start_up(aws_env):
    with pytest.raises(ConfigError, match=r"^prediction store s3://no-such-bucket-x/p: bucket 'no-such-bucket-x' "
                                          r"does not exist$"):
        PredictionStore("s3://no-such-bucket-x/p").check()


def test_denied_writes_are_one_line_at_start_up_and_name_the_permission(aws_env, new_store):
    store = new_store()
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Deny", "Principal": "*", "Action": "s3:PutObject",
                                                      "Resource": f"arn:aws:s3:::{BUCKET}/*"}]}
    boto("s3").put_bucket_policy(Bucket=BUCKET, Policy=json.dumps(policy))
    with pytest.raises(ConfigError) as err:
        store.check()
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"prediction store {store.url}: access denied when trying to write")
    assert "s3:PutObject" in msg


def test_an_unreachable_endpoint_is_one_line_at_start_up(aws_env, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens on the discard port
    store = PredictionStore(f"s3://{BUCKET}/p")
    store.location.connect_timeout, store.location.max_attempts = 1.0, 1
    with pytest.raises(ConfigError, match=r"^prediction store s3://.*: cannot reach S3 at http://127\.0\.0\.1:9"):
        store.check()


def test_a_pickled_store_carries_no_credentials(aws_env, new_store, raw, ps):
    store = new_store()
    store.append(raw.head(2), [0.1, 0.2], version="1", variant="blue", latency_ms=1.0, ts="2024-03-01",
                 pseudonymizer=ps)  # the filesystem exists now
    blob = pickle.dumps(store)
    assert b"testing" not in blob  # the access key and secret of aws_env
    assert len(pickle.loads(blob).read()) == 2


@pytest.mark.parametrize("url", ["s3://", "s3:///prefix", "s3://bucket/a//b", "s3://bucket/../x"])
def test_malformed_store_urls_are_refused(url):
    with pytest.raises(ConfigError, match="prediction store"):
        PredictionStore(url)
