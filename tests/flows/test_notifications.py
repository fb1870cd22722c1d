"""Notices through real channels: an SMTP server (aiosmtpd) and an HTTP webhook receiver on
127.0.0.1, Prefect blocks saved by name on the shared test server, `tasks.notify.notify` and the
retrain flow's notices. A failing channel (closed port, silent server, unknown block) is reported
in the return value and an ERROR log line, within the configured timeout, and never raises."""
from __future__ import annotations

import email
import email.policy
import json
import logging
import socket
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pandas as pd
import pytest

from retrainer import schema as S
from tests.helpers import copy_months

pytestmark = pytest.mark.timeout(300)

FROM, TO = "retrainer@example.org", ["ml-admins@example.org", "oncall@example.org"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# ---------------------------------------------------------------------------------------------
# Receivers


class _Mailbox:
    def __init__(self):
        self.messages: list[email.message.EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []

    async def handle_DATA(self, server, session, envelope):  # aiosmtpd handler hook
        self.messages.append(email.message_from_bytes(envelope.original_content or envelope.content,
                                                      policy=email.policy.default))
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 Message accepted for delivery"


@pytest.fixture
def smtp():
    from aiosmtpd.controller import Controller

    box = _Mailbox()
    controller = Controller(box, hostname="127.0.0.1", port=free_port())
    controller.start()
    box.port = controller.port
    try:
        yield box
    finally:
        controller.stop()


class _Hooks:
    def __init__(self):
        self.posts: list[dict] = []


@pytest.fixture
def webhook():
    hooks = _Hooks()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            hooks.posts.append({"path": self.path, "json": json.loads(body), "ua": self.headers.get("user-agent")})
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    hooks.port = server.server_address[1]
    try:
        yield hooks
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def silent_port():
    """A port that accepts TCP connections (kernel backlog) and never says a word."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    try:
        yield s.getsockname()[1]
    finally:
        s.close()


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


@pytest.fixture
def notify_log():
    """The records of the `retrainer.notify` logger, on a handler of its own (Prefect's logging
    setup, which may run during a test, replaces the root handlers that caplog relies on)."""
    handler = _Records()
    logger = logging.getLogger("retrainer.notify")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


# ---------------------------------------------------------------------------------------------
# Blocks


def email_block(port: int, timeout: float = 3.0) -> str:
    from tasks.notify import EmailNotification

    name = uid("admins")
    EmailNotification(smtp_server="127.0.0.1", smtp_port=port, smtp_type="INSECURE", email_from=FROM,
                      email_to=TO, timeout=timeout).save(name)
    return f"email/{name}"


def webhook_block(port: int, timeout: float = 3.0) -> str:
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    name = uid("hook")
    CustomWebhookNotificationBlock(name="retrainer", url=f"http://127.0.0.1:{port}/notify", timeout=timeout,
                                   json_data={"subject": "{{subject}}", "body": "{{body}}"}).save(name)
    return f"custom-webhook/{name}"


def settings_with(blocks: list[str], timeout_s: float = 10.0):
    from retrainer.settings import load_settings

    return load_settings(notify={"blocks": blocks, "timeout_s": timeout_s})


ROLLED_BACK = dict(version="1.2.0", reason="ΔAUC interval below the -0.02 margin", n=4210, positives=512,
                   delta=-0.031, interval=(-0.05, -0.012), level=0.95, production="1.1.0")


# ---------------------------------------------------------------------------------------------
# Delivery


def test_email_and_webhook_receive_the_notice(prefect_api, home, smtp, webhook):
    from tasks.notify import notify

    blocks = [email_block(smtp.port), webhook_block(webhook.port)]
    out = notify("rollout.rolled_back", settings_with(blocks), **ROLLED_BACK)

    subject = "[retrainer] readmission-30d: canary 1.2.0 ROLLED BACK"
    assert out["subject"] == subject and sorted(out["sent"]) == sorted(blocks)
    assert out["failed"] == {} and out["logged"] is False and out["error"] is None

    assert len(smtp.messages) == 1
    msg = smtp.messages[0]
    assert msg["Subject"] == subject and msg["From"] == FROM
    assert smtp.envelopes[0] == (FROM, TO)
    text = msg.get_content()
    assert "Version 1.2.0 was rolled back; all traffic is on production 1.1.0." in text
    assert "n=4,210 (512 positives), ΔAUC = -0.0310, 95% interval [-0.0500, -0.0120]" in text

    assert len(webhook.posts) == 1
    post = webhook.posts[0]
    assert post["path"] == "/notify" and post["json"]["subject"] == subject
    assert "Reason: ΔAUC interval below the -0.02 margin" in post["json"]["body"]


def test_every_kind_goes_through_the_webhook(prefect_api, home, webhook):
    from retrainer.notify import KINDS, render, test_fields
    from tasks.notify import notify

    settings = settings_with([webhook_block(webhook.port)])
    for kind in KINDS:
        out = notify(kind, settings, **test_fields(kind))
        assert out["sent"] and not out["failed"], (kind, out)
    assert [p["json"]["subject"] for p in webhook.posts] == [
        render(k, model="readmission-30d", **test_fields(k)).subject for k in KINDS]


def test_failing_channels_are_reported_not_raised(prefect_api, home, webhook, notify_log):
    from tasks.notify import notify

    closed = free_port()  # nothing listens: connection refused
    good = webhook_block(webhook.port)
    dead_mail, dead_hook = email_block(closed), webhook_block(closed)
    unknown, unknown_type = f"email/{uid('nope')}", f"no-such-type/{uid('x')}"

    t0 = time.monotonic()
    out = notify("guardrail.breach", settings_with([dead_mail, unknown, good, dead_hook, unknown_type], timeout_s=8),
                 version="1.2.0", reason="error rate above 1%", measured={"error_rate": 0.03})
    assert time.monotonic() - t0 < 8

    assert out["sent"] == [good] and len(webhook.posts) == 1  # the working channel still delivers
    assert set(out["failed"]) == {dead_mail, unknown, dead_hook, unknown_type}
    assert out["failed"][unknown].startswith(f"notify block '{unknown}' not found: create it with")
    assert out["failed"][unknown_type].startswith(f"notify block '{unknown_type}' not found: create it with")
    assert "ConnectionRefusedError" in out["failed"][dead_mail]
    assert f"notify block '{dead_hook}' failed: ConnectError" in out["failed"][dead_hook]
    errors = [r.getMessage() for r in notify_log.records if r.levelno == logging.ERROR]
    for name in (dead_mail, unknown, dead_hook, unknown_type):
        assert sum(name in line for line in errors) == 1, errors


def test_a_silent_server_is_cut_off_at_the_timeout(prefect_api, home, silent_port, webhook, notify_log):
    from tasks.notify import notify

    slow_mail, slow_hook = email_block(silent_port, timeout=60), webhook_block(silent_port, timeout=60)
    good = webhook_block(webhook.port)

    t0 = time.monotonic()
    out = notify("rollout.needs_approval", settings_with([slow_mail, slow_hook, good], timeout_s=2),
                 version="1.2.0", reason="inconclusive after 144h")
    elapsed = time.monotonic() - t0
    assert 1.5 < elapsed < 5, elapsed
    assert out["sent"] == [good]
    for name in (slow_mail, slow_hook):
        assert out["failed"][name] == f"notify block '{name}' did not answer within 2s (left running, not waited for)"
    assert any("did not answer within 2s" in r.getMessage() and r.levelno == logging.ERROR for r in notify_log.records)


def test_no_block_configured_logs_the_notice(home, monkeypatch, notify_log):
    from retrainer.settings import load_settings
    from tasks.notify import notify

    monkeypatch.delenv("RETRAINER_NOTIFY_BLOCK", raising=False)
    monkeypatch.delenv("RETRAINER_NOTIFY__BLOCKS", raising=False)
    out = notify("update.planned", load_settings(), version="1.2.0", planned_at="2026-12-07 09:00 UTC")
    assert out["logged"] is True and out["sent"] == [] and out["failed"] == {}
    warning = [r.getMessage() for r in notify_log.records if r.levelno == logging.WARNING]
    assert len(warning) == 1
    assert "model update PLANNED: 1.2.0 at 2026-12-07 09:00 UTC (no notify block configured)" in warning[0]
    assert "Advance notice: the readmission-30d model will be updated to version 1.2.0" in warning[0]


def test_legacy_env_block_and_env_list(prefect_api, home, webhook, monkeypatch):
    from retrainer.settings import load_settings
    from tasks.notify import notify

    block = webhook_block(webhook.port)
    monkeypatch.delenv("RETRAINER_NOTIFY__BLOCKS", raising=False)
    monkeypatch.setenv("RETRAINER_NOTIFY_BLOCK", block)
    assert notify("rollout.stage", load_settings(), version="1.2.0", stage=2, traffic=0.25)["sent"] == [block]
    monkeypatch.delenv("RETRAINER_NOTIFY_BLOCK")
    monkeypatch.setenv("RETRAINER_NOTIFY__BLOCKS", f"{block}, {block}")  # comma-separated, deduplicated
    assert notify("rollout.stage", load_settings(), version="1.2.0", stage=3, traffic=0.5)["sent"] == [block]
    assert [p["json"]["subject"] for p in webhook.posts] == [
        "[retrainer] readmission-30d: canary 1.2.0 stage 2: 25% traffic",
        "[retrainer] readmission-30d: canary 1.2.0 stage 3: 50% traffic"]


def test_unknown_kind_still_sends_a_notice(prefect_api, home, webhook):
    from tasks.notify import notify

    out = notify("rollout.exploded", settings_with([webhook_block(webhook.port)]), version="9.9.9", mrn="M-1")
    assert out["error"].startswith("unknown notification kind 'rollout.exploded'")
    assert out["sent"] and webhook.posts[0]["json"]["subject"] == "[retrainer] readmission-30d: rollout.exploded"
    assert "version: 9.9.9" in webhook.posts[0]["json"]["body"]
    assert "M-1" not in webhook.posts[0]["json"]["body"]  # an identifier-named field is never sent


# ---------------------------------------------------------------------------------------------
# The retrain flow's notices


@pytest.fixture
def small_retrain(monkeypatch):
    monkeypatch.setenv("RETRAINER_MODEL__MAX_ITER", "30")
    monkeypatch.setenv("RETRAINER_VALIDATION__MIN_ROWS", "100")


def test_retrain_flow_notifies_model_registered(prefect_api, home, small_retrain, monthly_data, tmp_path,
                                                webhook, monkeypatch):
    from flows.retrain import retrain

    monkeypatch.setenv("RETRAINER_NOTIFY__BLOCKS", json.dumps([webhook_block(webhook.port)]))
    data = copy_months(monthly_data, tmp_path / "d", [f"admissions_2024_0{m}.parquet" for m in (1, 2, 3)])
    out = retrain(data=str(data), trigger="scheduled", home=str(home))

    assert out["version"] == "1.0.0"
    assert len(webhook.posts) == 1
    subject, body = webhook.posts[0]["json"]["subject"], webhook.posts[0]["json"]["body"]
    if out["status"] == "rejected":
        assert subject == "[retrainer] readmission-30d: model 1.0.0 REJECTED" and out["gate"] in body
    else:
        assert subject == f"[retrainer] readmission-30d: model 1.0.0 REGISTERED ({out['status']})"
        assert "Trigger: scheduled" in body and "Gate evidence: " in body


def test_retrain_flow_notifies_failed_validation_once(prefect_api, home, small_retrain, monthly_data, tmp_path,
                                                      webhook, monkeypatch):
    from flows.retrain import retrain
    from retrainer.errors import ValidationFailed

    monkeypatch.setenv("RETRAINER_NOTIFY__BLOCKS", webhook_block(webhook.port))
    frame = pd.read_parquet(monthly_data / "admissions_2024_01.parquet")
    frame[S.LABEL] = 1  # label rate 100%: outside [0.05, 0.35]
    (tmp_path / "bad").mkdir()
    frame.to_parquet(tmp_path / "bad" / "admissions_2024_01.parquet", index=False)

    with pytest.raises(ValidationFailed):
        retrain(data=str(tmp_path / "bad"), home=str(home))
    assert len(webhook.posts) == 1  # validation.failed, and no second retrain.failed for the same failure
    subject, body = webhook.posts[0]["json"]["subject"], webhook.posts[0]["json"]["body"]
    assert subject.startswith("[retrainer] readmission-30d: data validation FAILED (")
    assert "Failed expectations:\n  - " in body and S.LABEL in body


def test_retrain_flow_failure_notifies_retrain_failed(prefect_api, home, webhook, tmp_path, monkeypatch):
    from flows.retrain import retrain
    from retrainer.errors import RetrainerError

    monkeypatch.setenv("RETRAINER_NOTIFY__BLOCKS", webhook_block(webhook.port))
    with pytest.raises(RetrainerError):
        retrain(data=str(tmp_path / "missing"), trigger="drift", home=str(home))
    assert len(webhook.posts) == 1
    subject, body = webhook.posts[0]["json"]["subject"], webhook.posts[0]["json"]["body"]
    assert subject == "[retrainer] readmission-30d: retraining FAILED"
    assert "no such file" in body.lower() and "Trigger: drift" in body


def test_monitor_notifies_the_fired_trigger_once_per_event(prefect_api, home, small_retrain, monthly_data, tmp_path,
                                                           webhook, monkeypatch):
    from flows.monitor import monitor
    from flows.retrain import retrain
    from retrainer import deid
    from retrainer.backends import get_backend
    from retrainer.datagen import GenerationSpec, generate
    from retrainer.settings import load_settings
    from retrainer.training import load_model

    monkeypatch.setenv("RETRAINER_PSEUDONYM_KEY", "notify-test-pseudonym-key-0123456789")
    first = copy_months(monthly_data, tmp_path / "first", [f"admissions_2024_0{m}.parquet" for m in (1, 2, 3)])
    assert retrain(data=str(first), trigger="scheduled")["status"] == "production"
    b = get_backend(load_settings())
    prod = b.registry.production()
    drifted = pd.read_parquet(generate(tmp_path / "drift", GenerationSpec(months=6, rows_per_month=2500, seed=5,
                                                                          drift_from=1))[-1])
    b.predictions.append(drifted, load_model(b.registry.verify(prod.version)).predict(drifted), version=prod.version,
                         variant="production", latency_ms=4.0,
                         pseudonymizer=deid.pseudonymizer_from_env("RETRAINER_PSEUDONYM_KEY"))

    monkeypatch.setenv("RETRAINER_NOTIFY__BLOCKS", webhook_block(webhook.port))
    out = monitor()
    assert out["emitted"] and out["reported"] == "data-drift"
    assert len(webhook.posts) == 1
    subject, body = webhook.posts[0]["json"]["subject"], webhook.posts[0]["json"]["body"]
    assert subject == "[retrainer] readmission-30d: retraining trigger data-drift FIRED"
    assert f"Statistic: max PSI {out['payload']['max_psi']:.4g}" in body
    assert "Action: retrain requested (event retrainer.drift.detected)" in body

    assert not monitor()["emitted"]  # within the event's cooldown: no event, no second notice
    assert len(webhook.posts) == 1


def test_deferred_verdict_flow_notifies_its_outcome(prefect_api, home, webhook, monkeypatch):
    from datetime import timedelta

    from flows.verdict import deferred_verdict
    from retrainer.clock import utcnow

    monkeypatch.setenv("RETRAINER_NOTIFY__BLOCKS", webhook_block(webhook.port))
    end = utcnow()
    out = deferred_verdict(version="1.2.0", previous="1.1.0", window_start=(end - timedelta(days=3)).isoformat(),
                           window_end=end.isoformat(), home=str(home))
    assert out["outcome"] == "not_due"
    assert len(webhook.posts) == 1
    subject, body = webhook.posts[0]["json"]["subject"], webhook.posts[0]["json"]["body"]
    assert subject == "[retrainer] readmission-30d: deferred verdict on 1.2.0: NOT DUE"
    assert "labels mature at" in body and "Evidence: no evidence recorded" in body
