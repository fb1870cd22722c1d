"""`retrainer.client.EndpointClient` against moto's server over HTTP.

moto's InvokeEndpoint is canned: it neither routes nor checks TargetVariant, and it answers from
a queue the test fills through moto's own API (`/moto-api/static/sagemaker/endpoint-results`; the
default answer is the literal body "body"). So what the client SENDS is asserted on the real
requests, caught with botocore's `before-send` event (the hook returns None: every request still
goes to moto). DescribeEndpoint (the weights) and UpdateEndpointWeightsAndCapacities are moto's
real implementations. moto cannot throttle: that case is a local HTTP server answering
InvokeEndpoint with SageMaker's error shape, parsed by the real botocore client.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import urllib.request
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from retrainer.client import EndpointClient, EndpointClientError
from retrainer.deid import Pseudonymizer
from retrainer.entity_routing import entity_point
from retrainer.errors import ConfigError

from .conftest import ROLE, boto

KEY = "a-test-pseudonym-key-of-32-bytes!"
UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def make_endpoint(name: str, weights: list[tuple[str, float]]) -> None:
    """A moto endpoint with these production variants, in this order."""
    sm = boto("sagemaker")
    sm.create_model(ModelName=f"{name}-model", ExecutionRoleArn=ROLE,
                    PrimaryContainer={"Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/x:1"})
    sm.create_endpoint_config(EndpointConfigName=f"{name}-config", ProductionVariants=[
        {"VariantName": v, "ModelName": f"{name}-model", "InitialVariantWeight": w, "InitialInstanceCount": 1,
         "InstanceType": "ml.m5.large"} for v, w in weights])
    sm.create_endpoint(EndpointName=name, EndpointConfigName=f"{name}-config")


def queue_answers(moto_url: str, answers: list[tuple[list, str | None]]) -> None:
    """moto answers the next InvokeEndpoint calls with these (predictions, invoked variant)."""
    results = [{"Body": json.dumps({"predictions": preds}), "ContentType": "application/json",
                **({"InvokedProductionVariant": v} if v else {})} for preds, v in answers]
    req = urllib.request.Request(f"{moto_url}/moto-api/static/sagemaker/endpoint-results",
                                 data=json.dumps({"results": results}).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    urllib.request.urlopen(req).read()


class Sent:
    """The real requests a boto3 client sends for one operation (botocore `before-send`)."""

    def __init__(self, client, operation: str):
        self.requests = []
        client.meta.events.register(f"before-send.{client.meta.service_model.service_id.hyphenize()}.{operation}",
                                    self)

    def __call__(self, request, **_):
        self.requests.append(request)
        return None  # send it for real

    def header(self, i: int, name: str) -> str | None:
        value = self.requests[i].headers.get(name)
        return value.decode() if isinstance(value, bytes) else value

    def instances(self, i: int) -> list[dict]:
        return json.loads(self.requests[i].body)["instances"]


def client(name: str, **kw) -> EndpointClient:
    return EndpointClient(name, pseudonym_key=KEY, **kw)


def patients(n: int, start: int = 0) -> list[dict]:
    return [{"patient_id": f"P{i:05d}", "admission_id": f"A{i:05d}-1", "age": 60} for i in range(start, start + n)]


def one_line(exc: BaseException) -> str:
    msg = str(exc)
    assert msg and "\n" not in msg, msg
    return msg


def local_table(weights: list[tuple[str, float]]):
    """The local endpoint's routing table for the same weights (serving.routing)."""
    from retrainer.serving.routing import RoutingTable, VariantSpec

    return RoutingTable.build([VariantSpec(v, "1.0.0", w) for v, w in weights], {}, 1, "")


def test_client_module_imports_neither_fastapi_nor_prefect():
    code = "import sys, retrainer.client; print(sorted(m for m in ('fastapi', 'prefect') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_same_patient_always_gets_the_same_target_variant(aws_env):
    make_endpoint("readmit", [("blue", 0.5), ("green", 0.5)])
    c = client("readmit")
    sent = Sent(c.runtime, "InvokeEndpoint")
    visits = [dict(p, admission_id=f"A{k}-{j}") for j in range(3) for k, p in enumerate(patients(60))]
    queue_answers(aws_env, [([{"score": 0.5}], None)] * len(visits))
    for rec in visits:  # one InvokeEndpoint per call: the patient's three admissions, separately
        assert c.invoke([rec]) == [{"score": 0.5}]
    assert len(sent.requests) == len(visits)
    seen: dict[str, set[str]] = {}
    for i in range(len(visits)):
        (rec,) = sent.instances(i)
        seen.setdefault(rec["patient_id"], set()).add(sent.header(i, "X-Amzn-SageMaker-Target-Variant"))
    assert len(seen) == 60 and all(len(v) == 1 for v in seen.values())
    assert {next(iter(v)) for v in seen.values()} == {"blue", "green"}  # both variants are in use
    ids = [sent.header(i, "X-Amzn-SageMaker-Inference-Id") for i in range(len(visits))]
    assert all(UUID4.match(x) for x in ids) and len(set(ids)) == len(ids)
    # the same id as a custom attribute: the one SageMaker forwards to the container, which captures it
    attrs = [sent.header(i, "X-Amzn-SageMaker-Custom-Attributes") for i in range(len(visits))]
    assert attrs == [f"retrainer-request-id={x}" for x in ids]


def test_share_per_variant_matches_weights_and_the_local_routing_table(aws_env):
    weights = [("blue", 0.8), ("standby", 0.0), ("green", 0.2)]  # a weight-0 warm standby in the middle
    make_endpoint("readmit", weights)
    c = client("readmit")
    sent = Sent(c.runtime, "InvokeEndpoint")
    n = 4000
    recs = patients(n)
    for r in recs[::10]:  # every tenth has no patient id: routed by its admission id, on both sides
        del r["patient_id"]
    table, ps = local_table(weights), Pseudonymizer(KEY)
    expected = [table.route(entity_point(r, ps)) for r in recs]
    queue_answers(aws_env, [([{"row": i} for i, v in enumerate(expected) if v == name], name)
                            for name in ("blue", "green")])
    out = c.invoke(recs)
    assert [p["row"] for p in out] == list(range(n))
    # the real requests: one per variant, the records routed there, the same choice as locally
    targets = [sent.header(i, "X-Amzn-SageMaker-Target-Variant") for i in range(len(sent.requests))]
    assert targets == ["blue", "green"]
    got = {}
    for i, t in enumerate(targets):
        for inst in sent.instances(i):
            got[inst["admission_id"]] = t
    assert [got[r["admission_id"]] for r in recs] == expected
    share = Counter(expected)["green"] / n
    bound = 4 * (0.2 * 0.8 / n) ** 0.5  # binomial: 4 standard errors (0.025 at n = 4000)
    assert abs(share - 0.2) < bound, share
    assert "standby" not in got.values()
    assert [(k.variant, len(k.rows), k.invoked_variant) for k in c.last_calls] == \
        [("blue", n - Counter(expected)["green"], "blue"), ("green", Counter(expected)["green"], "green")]


def test_several_patients_split_per_variant_and_answers_reassemble(aws_env):
    weights = [("blue", 0.5), ("green", 0.5)]
    make_endpoint("readmit", weights)
    c = client("readmit")
    sent = Sent(c.runtime, "InvokeEndpoint")
    recs = patients(40)
    table, ps = local_table(weights), Pseudonymizer(KEY)
    expected = [table.route(entity_point(r, ps)) for r in recs]
    groups = {v: [i for i, e in enumerate(expected) if e == v] for v in ("blue", "green")}
    assert all(groups.values())
    queue_answers(aws_env, [([{"score": i / 100, "row": i} for i in groups[v]], v) for v in ("blue", "green")])
    out = c.invoke(recs)
    assert [p["row"] for p in out] == list(range(40))
    assert len(sent.requests) == 2
    for i, v in enumerate(("blue", "green")):
        assert sent.header(i, "X-Amzn-SageMaker-Target-Variant") == v
        assert sent.instances(i) == [recs[j] for j in groups[v]]
        assert sent.header(i, "Content-Type") == "application/json"
    ids = [sent.header(i, "X-Amzn-SageMaker-Inference-Id") for i in range(2)]
    assert all(UUID4.match(x) for x in ids) and ids[0] != ids[1]
    assert [k.inference_id for k in c.last_calls] == ids


def test_weights_are_cached_for_the_ttl_then_re_read(aws_env):
    make_endpoint("readmit", [("blue", 0.5), ("green", 0.5)])
    now = [0.0]
    c = client("readmit", weights_ttl_s=30, clock=lambda: now[0])
    describes = Sent(c.sagemaker, "DescribeEndpoint")
    recs = patients(200)
    before = c.route(recs)
    blue = recs[before.index("blue")]
    now[0] = 10.0
    boto("sagemaker").update_endpoint_weights_and_capacities(EndpointName="readmit", DesiredWeightsAndCapacities=[
        {"VariantName": "blue", "DesiredWeight": 0.0}, {"VariantName": "green", "DesiredWeight": 1.0}])
    assert c.route([blue]) == ["blue"]  # still the cached weights
    assert len(describes.requests) == 1
    now[0] = 30.0
    assert c.route(recs) == ["green"] * 200  # re-read: blue is at 0 now
    assert len(describes.requests) == 2


def test_endpoint_missing_is_one_line(aws_env):
    c = client("nobody-home")
    with pytest.raises(EndpointClientError) as err:
        c.invoke(patients(1))
    assert one_line(err.value) == "SageMaker endpoint nobody-home does not exist in us-east-1"


def test_bad_responses_are_one_line(aws_env):
    make_endpoint("readmit", [("blue", 1.0)])
    c = client("readmit")
    with pytest.raises(EndpointClientError) as err:  # moto's canned default answer: the body "body"
        c.invoke(patients(1))
    assert one_line(err.value) == "endpoint readmit variant blue returned a bad response: not JSON (b'body')"
    queue_answers(aws_env, [([], "blue")])
    with pytest.raises(EndpointClientError) as err:
        c.invoke(patients(2))
    assert one_line(err.value) == "endpoint readmit variant blue returned a bad response: 0 predictions for 2 records"


@pytest.mark.parametrize("records, message", [
    ({"patient_id": "P1"}, "records must be a list of objects ({column: value, ...})"),
    ([{"patient_id": "P1"}, "P2"], "record 1 is not an object ({column: value, ...})"),
    ([{"patient_id": "P1", "x": float("nan")}], "records cannot be sent as JSON: Out of range float values are "
                                                "not JSON compliant"),
])
def test_bad_records_are_one_line(aws_env, records, message):
    make_endpoint("readmit", [("blue", 1.0)])
    with pytest.raises(EndpointClientError) as err:
        client("readmit").invoke(records)
    assert one_line(err.value) == message


def test_no_key_is_one_line(aws_env, monkeypatch):
    monkeypatch.delenv("RETRAINER_PSEUDONYM_KEY", raising=False)
    with pytest.raises(ConfigError) as err:
        EndpointClient("readmit")
    assert one_line(err.value).startswith("pseudonym key missing: set the RETRAINER_PSEUDONYM_KEY environment variable")


class _SageMakerErrors(BaseHTTPRequestHandler):
    """Answers every InvokeEndpoint with the error named by the test (SageMaker's rest-json shape)."""
    answer = (400, "ThrottlingException", "Rate exceeded")

    def do_POST(self):  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        status, code, message = self.answer
        body = json.dumps({"message": message}).encode()
        self.send_response(status)
        self.send_header("x-amzn-ErrorType", code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("answer, message", [
    ((400, "ThrottlingException", "Rate exceeded"),
     "endpoint readmit variant blue: InvokeEndpoint throttled (ThrottlingException: Rate exceeded); retry later or "
     "lower the request rate"),
    ((424, "ModelError", "Received server error (500) from primary"),
     "endpoint readmit variant blue: the model failed (Received server error (500) from primary)"),
])
def test_throttled_and_model_errors_are_one_line(aws_env, answer, message):
    """moto cannot throttle: InvokeEndpoint goes to a local HTTP server answering with SageMaker's
    error shape; DescribeEndpoint (the weights) is moto's."""
    import boto3

    make_endpoint("readmit", [("blue", 1.0)])
    handler = type("Handler", (_SageMakerErrors,), {"answer": answer})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        session = boto3.session.Session()
        runtime = session.client("sagemaker-runtime", endpoint_url=f"http://127.0.0.1:{server.server_port}")
        c = client("readmit", runtime_client=runtime, sagemaker_client=session.client("sagemaker"))
        describes = Sent(c.sagemaker, "DescribeEndpoint")
        with pytest.raises(EndpointClientError) as err:
            c.invoke(patients(3))
        assert one_line(err.value) == message
        with pytest.raises(EndpointClientError):
            c.invoke(patients(3))
        assert len(describes.requests) == 2  # an error drops the cached weights
    finally:
        server.shutdown()
        server.server_close()
