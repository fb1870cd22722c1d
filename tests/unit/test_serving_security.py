"""Security review of the local endpoint, one regression test (or a few) per finding; most run the
real app under uvicorn on a free loopback port (`BackgroundServer`), some over a raw socket.

1. no default admin token; serving refuses a missing, empty, old-default or short token
2. only known category values reach the prediction store; strings are capped at the boundary
3. out-of-range numbers are a 422 naming the field, and never cost anyone else's capture
4. admin routing changes are audited and refuse rejected/archived versions without force
5. deeply nested JSON is a 400 with one log line, no traceback
6. the target-variant header: weight-0 variants need the token; targeted rows leave canary stats
7. a slow body is a 408 (connection closed); a client disconnect logs no traceback
"""
from __future__ import annotations

import json
import logging
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from retrainer import datagen, training
from retrainer import schema as S
from retrainer.deid import Pseudonymizer
from retrainer.errors import ConfigError
from retrainer.predstore import PredictionStore
from retrainer.registry import LocalRegistry
from retrainer.serving import BackgroundServer, create_app, serve
from retrainer.serving.contract import exposure_warning, is_loopback
from retrainer.settings import ModelSettings, Settings, load_settings
from tests.helpers import free_port, make_record

TOKEN = "security-test-admin-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
KEY = b"security-test-pseudonym-key-0123456789"
REPO = Path(__file__).resolve().parents[2]
APP_LOGGER = "retrainer.serving.app"
PARSING_LOGGER = "retrainer.serving.parsing"  # request bodies (deep nesting is logged there)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """One small real model registered as five versions: 1.0.0 previous, 1.1.0 production,
    1.2.0 rejected, 1.3.0 archived, 1.4.0 candidate."""
    tmp = tmp_path_factory.mktemp("security")
    paths = datagen.generate(tmp / "data", datagen.GenerationSpec(months=2, rows_per_month=800, seed=5))
    df = pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)
    model_dir = tmp / "model"
    training.train(df.iloc[:1200], df.iloc[1200:], model_dir, ModelSettings(max_iter=10).model_dump())
    reg = LocalRegistry(tmp / "registry")
    reg.register(make_record("1.0.0", "production"), model_dir, actor="test")
    for v in ("1.1.0", "1.2.0", "1.3.0", "1.4.0"):
        reg.register(make_record(v, "candidate"), model_dir, actor="test")
    reg.promote("1.1.0", actor="test", reason="test")
    reg.set_status("1.2.0", "rejected", actor="test", reason="test")
    reg.set_status("1.3.0", "archived", actor="test", reason="test")
    cols = list(S.FEATURES) + ["patient_id", S.ADMISSION_ID]
    rows = json.loads(df[cols].iloc[:200].to_json(orient="records"))
    return {"registry": reg, "rows": rows}


def settings_for(home: Path, **serving) -> Settings:
    return Settings(home=home, serving={"admin_token": TOKEN, **serving})


class Live(BackgroundServer):
    """The real app with capture on, under uvicorn on 127.0.0.1:<free port>."""

    def __init__(self, world, home: Path, **serving):
        self.settings = settings_for(home, **serving)
        self.store = PredictionStore(home)
        self.app = create_app(self.settings, world["registry"], self.store, Pseudonymizer(KEY),
                              flush_rows=100_000, flush_seconds=None, capture_interval=0.05)
        super().__init__(self.app, free_port(), name="uvicorn-security-test")

    @property
    def state(self):
        return self.app.state.serving

    def flush(self) -> pd.DataFrame:
        self.state.capture.drain()
        self.state.capture.writer.flush()
        return self.store.read()


@pytest.fixture
def live(world, tmp_path):
    with Live(world, tmp_path / "home", body_timeout_s=0.5) as server:
        yield server


def post(server, body, **headers):
    return httpx.post(f"{server.url}/invocations", json=body, headers=headers, timeout=30)


# ------------------------------------------------------------------------------------------------
# 1. The admin token

@pytest.mark.parametrize("token, fragment", [
    (None, "no admin token"), ("", "empty"), ("change-me", "old default"), ("x" * 31, "too short (31 bytes")])
def test_app_refuses_to_start_without_a_strong_admin_token(world, tmp_path, token, fragment):
    serving = {} if token is None else {"admin_token": token}
    settings = Settings(home=tmp_path / "home", serving=serving)
    with pytest.raises(ConfigError, match="refusing to serve") as info:
        create_app(settings, world["registry"])
    assert fragment in str(info.value) and "\n" not in str(info.value)
    assert "RETRAINER_SERVING__ADMIN_TOKEN" in str(info.value)
    with pytest.raises(ConfigError, match=re.escape(fragment)):  # serve() refuses before anything listens
        serve(settings, host="127.0.0.1", port=free_port(), capture=False)


def test_settings_have_no_default_token_and_stay_on_loopback(monkeypatch):
    monkeypatch.delenv("RETRAINER_SERVING__ADMIN_TOKEN", raising=False)
    monkeypatch.delenv("RETRAINER_SERVING__HOST", raising=False)
    monkeypatch.delenv("RETRAINER_CONFIG", raising=False)
    serving = Settings().serving
    assert serving.admin_token is None and is_loopback(serving.host)
    assert exposure_warning(serving.host, 8080) is None
    assert "reachable beyond this machine" in exposure_warning("0.0.0.0", 8080)
    monkeypatch.setenv("RETRAINER_SERVING__ADMIN_TOKEN", "")
    assert load_settings().serving.admin_token.get_secret_value() == ""


def test_cli_serve_refuses_weak_token_in_one_line_exit_2(tmp_path):
    """The real `retrainer serve` process: one `error:` line, exit 2, the non-loopback host named."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RETRAINER_")}
    env |= {"RETRAINER_HOME": str(tmp_path / "home"), "RETRAINER_SERVING__ADMIN_TOKEN": "change-me",
            "RETRAINER_SERVING__HOST": "0.0.0.0", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "cli.main", "serve", "--port", str(free_port())], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: refusing to serve: the admin token is the old default")
    assert "'0.0.0.0' is not loopback" in lines[0]


def test_default_or_empty_bearer_never_authorises(live):
    for value in ("Bearer change-me", "Bearer", "", f"Basic {TOKEN}", f"Bearer {TOKEN[:-1]}"):
        r = httpx.get(f"{live.url}/admin/variants", headers={"Authorization": value}, timeout=10)
        assert r.status_code == 401, value
    assert httpx.get(f"{live.url}/admin/variants", headers=AUTH, timeout=10).status_code == 200


# ------------------------------------------------------------------------------------------------
# 2. Free text in category fields / string lengths

def test_unknown_category_text_is_stored_as_null_and_counted(live, world):
    rows = [dict(r) for r in world["rows"][:3]]
    rows[0]["insurance"] = "Medicare SSN-123-45-6789"
    rows[1]["sex"] = "call me at 555-0100"
    r = post(live, {"instances": rows})
    assert r.status_code == 200, r.text
    stored = live.flush()
    assert len(stored) == 3
    assert stored["insurance"].isna().sum() == 1 and stored["sex"].isna().sum() == 1
    for col in S.CATEGORICAL_FEATURES:
        assert set(stored[col].dropna()) <= set(S.CATEGORIES[col]), col
    blob = b"".join(p.read_bytes() for p in Path(live.store.root).rglob("*.parquet"))
    assert b"SSN-123" not in blob and b"555-0100" not in blob
    contract = httpx.get(f"{live.url}/admin/variants", headers=AUTH, timeout=10).json()["contract"]
    assert contract["unknown_category_values_nulled"] == 2
    assert contract["by_field"] == {"insurance": 1, "sex": 1}


def test_long_strings_are_refused_at_the_boundary(live, world):
    base = world["rows"][0]
    for field, value in (("insurance", "x" * 900_000), ("insurance", "M" * 257), ("patient_name", "n" * 300),
                         ("patient_id", "p" * 257)):
        r = post(live, {"instances": [dict(base, **{field: value})]})
        assert r.status_code in (413, 422), (field, r.status_code)
        err = r.json()["error"]
        assert field in err and "256" in err and len(err) < 200 and "\n" not in err
    stored = live.flush()  # refused requests are captured as error rows, without the refused values
    assert len(stored) == 4 and stored["error"].all() and stored["score"].isna().all()
    assert stored["insurance"].isna().all() and stored["patient_pseudonym"].isna().sum() == 1
    assert post(live, {"instances": [dict(base, insurance="M" * 256)]}).status_code == 200  # at the limit


# ------------------------------------------------------------------------------------------------
# 3. Out-of-range numbers

def test_out_of_range_numbers_are_422_and_capture_survives(live, world):
    base = world["rows"][0]
    bad = [("age", 1e300), ("age", 1e19), ("age", -1e19), ("n_procedures", 2 ** 63), ("n_procedures", -(2 ** 64)),
           ("sodium_mmol_l", 1e19), ("age", 111), ("patient_id", 2 ** 63)]
    for field, value in bad:
        r = post(live, {"instances": [world["rows"][1], dict(base, **{field: value})]})
        assert r.status_code == 422, (field, value, r.text)
        err = r.json()["error"]
        assert f"'{field}'" in err and "\n" not in err, err
    csv_text = pd.DataFrame([dict(base, age=1e19)]).to_csv(index=False)
    r = httpx.post(f"{live.url}/invocations", content=csv_text, headers={"Content-Type": "text/csv"}, timeout=30)
    assert r.status_code == 422 and "'age'" in r.json()["error"]
    good = world["rows"][:5]
    assert post(live, {"instances": good}).status_code == 200
    assert post(live, {"instances": [dict(base, age=110, n_procedures=40)]}).status_code == 200  # range ends
    stored = live.flush()  # the 9 refused requests' 17 instances are error rows with no feature stored
    assert int((~stored["error"]).sum()) == 6 and live.state.capture.dropped == 0
    refused = stored[stored["error"]]
    assert len(refused) == 17 and refused["age"].isna().all() and refused["n_procedures"].isna().all()


# ------------------------------------------------------------------------------------------------
# 4. Admin audit and status checks

def routing(*triples):
    return [{"variant": n, "version": v, "weight": w} for n, v, w in triples]


def test_admin_changes_are_audited(live, world):
    reg = world["registry"]
    before = len(reg.audit())
    r = httpx.post(f"{live.url}/admin/variants", headers=AUTH, timeout=30,
                   json=routing(("blue", "1.1.0", 0.9), ("green", "1.4.0", 0.1)))
    assert r.status_code == 200, r.text
    r = httpx.post(f"{live.url}/admin/variants", headers={**AUTH, "X-Retrainer-Actor": "alice"}, timeout=30,
                   json={"variants": routing(("blue", "1.1.0", 1.0)), "reason": "end of canary"})
    assert r.status_code == 200, r.text
    events = reg.audit()[before:]
    assert [(e["kind"], e["actor"], e["version"]) for e in events] == [
        ("routing", "admin-api", "routing"), ("routing", "alice", "routing")]
    assert events[0]["to"] == "blue=1.1.0:0.9 green=1.4.0:0.1" and events[0]["reason"]
    assert events[1]["from"] == events[0]["to"] and events[1]["to"] == "blue=1.1.0:1"
    assert events[1]["reason"] == "end of canary" and events[1]["force"] is False
    for headers, body, fragment in (
            ({"X-Retrainer-Actor": "bad actor"}, routing(("blue", "1.1.0", 1.0)), "X-Retrainer-Actor"),
            ({}, {"variants": routing(("blue", "1.1.0", 1.0)), "reason": "two\nlines"}, "reason"),
            ({}, {"variants": routing(("blue", "1.1.0", 1.0)), "force": "yes"}, "force"),
            ({}, {"variants": routing(("blue", "1.1.0", 1.0)), "who": 1}, "unknown field")):
        r = httpx.post(f"{live.url}/admin/variants", headers={**AUTH, **headers}, json=body, timeout=30)
        assert r.status_code == 422 and fragment in r.json()["error"], r.text
    assert len(reg.audit()) == before + 2  # refusals change nothing and audit nothing


@pytest.mark.parametrize("version, status", [("1.2.0", "rejected"), ("1.3.0", "archived")])
def test_admin_refuses_rejected_or_archived_versions_unless_forced(live, world, version, status):
    reg = world["registry"]
    before = len(reg.audit())
    body = routing(("blue", version, 1.0), ("previous-1", "1.1.0", 0.0))
    r = httpx.post(f"{live.url}/admin/variants", headers=AUTH, json=body, timeout=30)
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert f"{version} is {status}" in err and "force" in err and "\n" not in err
    assert live.state.table.variants[0].version == "1.1.0" and len(reg.audit()) == before
    r = httpx.post(f"{live.url}/admin/variants", headers=AUTH, json={"variants": body, "force": True,
                                                                     "reason": "incident drill"}, timeout=30)
    assert r.status_code == 200, r.text
    assert post(live, {"instances": world["rows"][:1]}).json()["predictions"][0]["version"] == version
    last = reg.audit()[-1]
    assert last["force"] is True and last["forced"] == {version: status} and last["reason"] == "incident drill"


def test_audit_failure_changes_nothing(world, tmp_path, monkeypatch):
    settings = settings_for(tmp_path / "home")
    app = create_app(settings, world["registry"])
    with TestClient(app) as client:
        def broken(events):
            raise OSError("disk full")

        monkeypatch.setattr(world["registry"].storage, "append_audit", broken)
        r = client.post("/admin/variants", headers=AUTH, json=routing(("blue", "1.4.0", 1.0)))
        assert r.status_code == 503 and "audit log" in r.json()["error"] and "nothing changed" in r.json()["error"]
        assert app.state.serving.table.variants[0].version == "1.1.0"
        assert not (settings.home / "serving" / "routing.json").exists()  # restored: there was none


# ------------------------------------------------------------------------------------------------
# 5. Deep nesting

@pytest.mark.parametrize("body", [b"[" * 100_000, b'{"a":' * 5_000 + b"1" + b"}" * 5_000,
                                  b'{"instances": [{"age": ' + b"[" * 50_000 + b"]" * 50_000 + b"}]}"])
def test_deeply_nested_json_is_400_with_one_log_line(live, body, caplog, capfd):
    caplog.set_level(logging.INFO)
    for path, headers in (("/invocations", {}), ("/admin/variants", AUTH)):
        r = httpx.post(f"{live.url}{path}", content=body, timeout=30,
                       headers={"Content-Type": "application/json", **headers})
        assert r.status_code == 400, (path, r.status_code, r.text[:200])
        assert "nested too deeply" in r.json()["error"] and "\n" not in r.json()["error"]
    ours = [rec for rec in caplog.records if rec.name == PARSING_LOGGER]
    assert len(ours) == 2 and all("nested too deeply" in rec.getMessage() for rec in ours)
    assert not any(rec.exc_info for rec in caplog.records)
    assert "Traceback" not in capfd.readouterr().err


# ------------------------------------------------------------------------------------------------
# 6. The target-variant header

def test_target_header_needs_weight_or_token_and_is_left_out_of_canary_stats(live, world):
    r = httpx.post(f"{live.url}/admin/variants", headers=AUTH, timeout=30, json=routing(
        ("blue", "1.1.0", 0.5), ("green", "1.4.0", 0.5), ("previous-1", "1.0.0", 0.0)))
    assert r.status_code == 200, r.text
    rows = world["rows"]
    r = post(live, {"instances": rows[:1]}, **{"X-Amzn-SageMaker-Target-Variant": "previous-1"})
    assert r.status_code == 403 and "admin_token" in r.json()["error"]
    r = post(live, {"instances": rows[:1]}, **{"X-Amzn-SageMaker-Target-Variant": "previous-1",
                                                "Authorization": "Bearer change-me"})
    assert r.status_code == 403
    r = post(live, {"instances": rows[:2]}, **{"X-Amzn-SageMaker-Target-Variant": "previous-1", **AUTH})
    assert r.status_code == 200 and {p["variant"] for p in r.json()["predictions"]} == {"previous-1"}
    r = post(live, {"instances": rows[:30]}, **{"X-Amzn-SageMaker-Target-Variant": "green"})  # weight > 0
    assert r.status_code == 200 and {p["variant"] for p in r.json()["predictions"]} == {"green"}
    routed = post(live, {"instances": rows[30:130]}).json()["predictions"]
    n_green = sum(p["variant"] == "green" for p in routed)
    stored = live.flush()
    assert int(stored["shadow"].eq(True).sum()) == 100  # routed rows only are scored in shadow
    stored = stored[~stored["shadow"].eq(True)]
    assert len(stored) == 132 and int(stored["targeted"].eq(True).sum()) == 32
    stats = live.store.variant_stats()
    assert stats["green"]["n_predictions"] == n_green  # the 30 targeted rows are not canary traffic
    assert stats["blue"]["n_predictions"] == 100 - n_green and "previous-1" not in stats
    contract = httpx.get(f"{live.url}/admin/variants", headers=AUTH, timeout=10).json()["contract"]
    assert contract["targeted_predictions"] == 32


# ------------------------------------------------------------------------------------------------
# 7. Slow bodies and disconnects (raw sockets against the real server)

def raw_headers(port: int, length: int) -> bytes:
    return (f"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {length}\r\n\r\n").encode()


def read_all(sock: socket.socket) -> bytes:
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not chunk:
            break
        data += chunk
    return data


def test_slow_body_gets_408_and_the_connection_is_closed(live, caplog, capfd):
    caplog.set_level(logging.INFO)
    with socket.create_connection(("127.0.0.1", live.port), timeout=20) as sock:  # a guard, not a timing check
        sock.sendall(raw_headers(live.port, 1000) + b'{"instance')  # 10 of 1000 bytes, then stall
        data = read_all(sock)  # returns when the server closes the connection
    assert data.startswith(b"HTTP/1.1 408"), data[:200]
    assert b"not received within 0.5 s" in data and b"connection: close" in data.lower()
    assert not any(rec.exc_info for rec in caplog.records)
    assert "Traceback" not in capfd.readouterr().err
    assert post(live, {"instances": []}).status_code == 400  # the server is fine


def test_client_disconnect_mid_body_logs_no_traceback(live, caplog, capfd):
    caplog.set_level(logging.INFO)
    with socket.create_connection(("127.0.0.1", live.port), timeout=20) as sock:
        sock.sendall(raw_headers(live.port, 1000) + b'{"instance')
    deadline = time.monotonic() + 20
    while not any("disconnected" in rec.getMessage() for rec in caplog.records if rec.name == APP_LOGGER):
        assert time.monotonic() < deadline, "the server never noticed the disconnect"
        time.sleep(0.02)
    assert not any(rec.exc_info or rec.levelno >= logging.ERROR for rec in caplog.records)
    assert "Traceback" not in capfd.readouterr().err
