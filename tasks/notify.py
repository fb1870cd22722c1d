"""Sending notices (`retrainer.notify` words them) through Prefect notification blocks.

    from tasks.notify import notify
    notify("rollout.rolled_back", settings, version="1.2.0", reason="...", n=4210, positives=512,
           delta=-0.031, interval=(-0.05, -0.012), level=0.95)

Blocks are named in settings (`notify.blocks`, env RETRAINER_NOTIFY__BLOCKS) as
"<block-type-slug>/<block-name>"; every one of them gets the notice:

* ``slack-webhook/<name>``: `prefect.blocks.notifications.SlackWebhook` (Apprise);
* ``custom-webhook/<name>``: `CustomWebhookNotificationBlock`, any HTTP receiver; its `json_data`
  template decides the payload, e.g. ``{"subject": "{{subject}}", "body": "{{body}}"}``;
* ``email/<name>``: `EmailNotification` below, plain SMTP (SSL, STARTTLS or INSECURE) with a
  timeout. Chosen over prefect-email's `EmailServerCredentials` (its `get_server` opens the
  connection with no timeout, so an unreachable server would hang the caller) and over an
  Apprise mailto URL (no generic Apprise block in Prefect 3, and its URL form hides the
  settings). Any other Prefect `NotificationBlock` works too (ms-teams-webhook, pager-duty-webhook,
  sendgrid-email, ...).

With no block configured (and no legacy RETRAINER_NOTIFY_BLOCK) the notice is logged at WARNING.

A notifier never stops a flow: `notify` never raises. Each block is loaded and called in its own
thread and waited for at most `notify.timeout_s` seconds in all; a block that is not found, fails
or does not answer in time gets one ERROR log line naming it and the problem, the notice itself is
then logged at WARNING so it is not lost, and the returned dict lists the block under `failed`.
"""
from __future__ import annotations

import contextvars
import logging
import os
import smtplib
import ssl
import threading
import time
from email.message import EmailMessage
from typing import Any, Literal

from prefect.blocks.abstract import NotificationBlock
from prefect.blocks.core import Block
from prefect.blocks.notifications import AbstractAppriseNotificationBlock
from prefect.exceptions import MissingContextError
from prefect.logging import get_run_logger
from pydantic import Field, SecretStr

from retrainer.notify import Notice, fmt, forbidden_fields, render
from retrainer.settings import load_settings

LEGACY_ENV = "RETRAINER_NOTIFY_BLOCK"
LOGGER = "retrainer.notify"
DEFAULT_TIMEOUT_S = 15.0
_APPRISE_TYPE = {"info": "info", "warning": "warning", "critical": "failure"}


class EmailNotification(NotificationBlock):
    """Email over SMTP: `notify(body, subject)` sends one plain-text message from `email_from` to
    every address in `email_to`. `smtp_type` SSL (port 465), STARTTLS (587) or INSECURE (25, no
    encryption: a local relay only); `smtp_port` overrides the port. Every network step is bounded
    by `timeout` seconds."""

    _block_type_name = "Email"
    _block_type_slug = "email"
    _description = "Plain-text email over SMTP with a timeout (retrainer notices)."

    smtp_server: str = Field(description="Host name of the SMTP server.")
    smtp_port: int | None = Field(None, ge=1, le=65535, description="Overrides the smtp_type's default port.")
    smtp_type: Literal["SSL", "STARTTLS", "INSECURE"] = "STARTTLS"
    username: str | None = Field(None, description="Login; none when the server needs no login.")
    password: SecretStr | None = None
    email_from: str = Field(description="The sender address.")
    email_to: list[str] = Field(min_length=1, description="Recipient addresses.")
    timeout: float = Field(10.0, gt=0, description="Seconds for each network step.")
    verify: bool = Field(True, description="Verify the server's TLS certificate.")

    def _message(self, body: str, subject: str | None) -> EmailMessage:
        msg = EmailMessage()
        msg["Subject"] = subject or "retrainer notice"
        msg["From"] = self.email_from
        msg["To"] = ", ".join(self.email_to)
        msg.set_content(body)
        return msg

    def notify(self, body: str, subject: str | None = None) -> None:  # sync: smtplib; always raises on failure
        port = self.smtp_port or {"SSL": 465, "STARTTLS": 587, "INSECURE": 25}[self.smtp_type]
        context = ssl.create_default_context() if self.verify else ssl._create_unverified_context()  # noqa: S323
        if self.smtp_type == "SSL":
            server: smtplib.SMTP = smtplib.SMTP_SSL(self.smtp_server, port, timeout=self.timeout, context=context)
        else:
            server = smtplib.SMTP(self.smtp_server, port, timeout=self.timeout)
        with server:
            if self.smtp_type == "STARTTLS":
                server.starttls(context=context)
            if self.username:
                server.login(self.username, self.password.get_secret_value() if self.password else "")
            server.send_message(self._message(body, subject))


def _logger():
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(LOGGER)


def configured_blocks(settings=None) -> list[str]:
    """The block names notices go to: settings.notify.blocks, else RETRAINER_NOTIFY_BLOCK."""
    blocks = list(getattr(getattr(settings, "notify", None), "blocks", None) or [])
    if not blocks and os.environ.get(LEGACY_ENV):
        blocks = [b.strip() for b in os.environ[LEGACY_ENV].split(",") if b.strip()]
    return blocks


def _problem(name: str, exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, ValueError) and ("Unable to find block document" in text or "not found" in text.lower()
                                        or "block type" in text.lower()):
        slug = name.partition("/")[0]
        return (f"notify block {name!r} not found: create it with `prefect block create {slug}` (or the UI, "
                f"or Python: <BlockClass>(...).save({name.partition('/')[2]!r})) or remove it from "
                "notify.blocks")
    if type(exc).__name__ == "NotificationError":
        text = " ".join(getattr(exc, "log", "").split()) or text
    return f"notify block {name!r} failed: {type(exc).__name__}: {text[:300]}"


def _send_one(name: str, notice: Notice, out: dict[str, str | None]) -> None:
    try:
        block = Block.load(name)
        if not isinstance(block, NotificationBlock):
            raise TypeError(f"{type(block).__name__} is not a notification block")
        if isinstance(block, AbstractAppriseNotificationBlock):
            block.notify_type = _APPRISE_TYPE[notice.severity]
        with block.raise_on_failure():
            block.notify(body=notice.body, subject=notice.subject)
        out[name] = None
    except BaseException as exc:  # noqa: BLE001 - any failure of a notifier is reported, never raised
        out[name] = _problem(name, exc)


def send(notice: Notice, blocks: list[str], timeout_s: float = DEFAULT_TIMEOUT_S) -> dict[str, Any]:
    """Send `notice` through each named block in parallel, waiting at most `timeout_s` in all.
    Returns {"sent": [names], "failed": {name: problem}}; never raises."""
    out: dict[str, str | None] = {}
    threads = []
    for name in dict.fromkeys(blocks):
        ctx = contextvars.copy_context()  # the caller's Prefect settings (API URL) and run context
        t = threading.Thread(target=ctx.run, args=(_send_one, name, notice, out), daemon=True,
                             name=f"notify-{name}")
        try:
            t.start()
        except RuntimeError as exc:  # no thread to be had: report it like any failing block
            out[name] = _problem(name, exc)
            continue
        threads.append((name, t))
    deadline = time.monotonic() + timeout_s
    for _, t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    sent, failed = [], {}
    started = {name for name, _ in threads}
    for name, problem in list(out.items()):  # a copy: threads still running may add to `out`
        if name not in started:
            failed[name] = problem
    for name, t in threads:
        if t.is_alive() or name not in out:
            failed[name] = f"notify block {name!r} did not answer within {timeout_s:g}s (left running, not waited for)"
        elif out[name] is None:
            sent.append(name)
        else:
            failed[name] = out[name]
    return {"sent": sent, "failed": failed}


def _fallback(kind: str, fields: dict[str, Any], error: str) -> Notice:
    model = fmt(fields.get("model") or "model")
    lines = [f"(this notice could not be worded: {error})"]
    lines += [f"{k}: {fmt(v)}" for k, v in fields.items() if k.lower() not in forbidden_fields() and v is not None]
    return Notice(kind=kind, subject=f"[retrainer] {model}: {kind}", body="\n".join(lines) + "\n",
                  severity="warning")


def result_of(state) -> Any:
    """A finished run's result (or its exception) for a flow hook; None when it cannot be read."""
    try:
        return state.result(raise_on_failure=False)
    except Exception:  # noqa: BLE001 - a result that cannot be read still gets a notification
        return None


def settings_of_run(flow_run):
    """The settings a flow run used (its `home` parameter), for its hooks; None if unreadable
    (`notify` then loads the defaults itself)."""
    try:
        params = getattr(flow_run, "parameters", None) or {}
        home, model = params.get("home"), params.get("model")
        return load_settings(**({"home": home} if home else {}), **({"model_name": model} if model else {}))
    except Exception:  # noqa: BLE001 - a hook must not fail on settings
        return None


def notify(kind: str, settings=None, **fields: Any) -> dict[str, Any]:
    """Word event `kind` (`retrainer.notify.KINDS`) with `fields` and send it through every block
    configured in `settings.notify.blocks` (settings default: `load_settings()`); `model`
    defaults to settings.model_name. Never raises. Returns {"kind", "subject", "severity", "sent":
    [block names], "failed": {block name: problem}, "logged": the notice went to the log,
    "error": why the notice could not be worded, or None}."""
    log = _logger()
    try:
        if settings is None:
            settings = load_settings()
    except Exception as exc:  # noqa: BLE001 - bad settings must not stop the notice
        log.error("notify: settings unreadable (%s); using RETRAINER_NOTIFY_BLOCK or the log", exc)
        settings = None
    if getattr(settings, "model_name", None):
        fields.setdefault("model", settings.model_name)
    error = None
    try:
        notice = render(kind, **fields)
    except Exception as exc:  # noqa: BLE001 - a wording mistake must not lose the event
        error = str(exc)
        log.error("notify: %s", error)
        notice = _fallback(kind, fields, error)
    blocks = configured_blocks(settings)
    timeout_s = float(getattr(getattr(settings, "notify", None), "timeout_s", None) or DEFAULT_TIMEOUT_S)
    result = send(notice, blocks, timeout_s) if blocks else {"sent": [], "failed": {}}
    for problem in result["failed"].values():
        log.error(problem)
    logged = not result["sent"]
    if logged:
        why = "no notify block configured" if not blocks else "no notify block delivered it"
        log.warning("%s (%s)\n%s", notice.subject, why, notice.body)
    return {"kind": kind, "subject": notice.subject, "severity": notice.severity, **result, "logged": logged,
            "error": error}
