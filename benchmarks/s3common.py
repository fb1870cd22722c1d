"""Shared by bench_s3_store.py and bench_monitor_s3.py: moto's S3 server in a subprocess, fast
de-identified prediction rows, and peak-RSS readings of the current process.

- `MotoServer()`: `moto_server` from the venv on a free 127.0.0.1 port (as tests/aws/conftest.py
  starts it), a bucket created, and `env()` the variables that point boto3 and pyarrow at it
  (fake credentials, AWS_MAX_ATTEMPTS=1, no user config files). Stopped on `close()`.
- `prediction_table(n, day, seed)`: `n` de-identified rows for the active model's
  `prediction_schema()`, built column by column with numpy/pyarrow (no pandas, no HMAC): 32-hex
  pseudonyms, ages capped at 90, 3-digit zip3, features drawn within the contract's ranges and
  categories, timestamps spread over `day`, version "1.0.0", variants blue 90% / green 10%, 2% of
  rows targeted (left out by `traffic_filter`). `shift` moves the float features by that many SD
  (a drifted window). It passes the store's de-identification check.
"""
from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import date, datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from retrainer import deid  # noqa: E402
from retrainer import schema as S  # noqa: E402
from retrainer.predstore import prediction_schema  # noqa: E402

BUCKET = "retrainer-bench"
VERSION = "1.0.0"
_REQUEST = re.compile(r'"(GET|PUT|POST|HEAD|DELETE) (\S+) HTTP/[0-9.]+" \d{3}')
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


# ---- moto ---------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MotoServer:
    def __init__(self, bucket: str = BUCKET, tmp: Path | None = None, log: Path | None = None):
        self.port = free_port()
        self.log = log  # moto's request log (werkzeug, one line per request): `requests()` counts it
        self._log_file = open(log, "wb") if log else subprocess.DEVNULL
        self.url = f"http://127.0.0.1:{self.port}"
        exe = Path(sys.executable).with_name("moto_server")
        cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "moto.server"]
        self.proc = subprocess.Popen([*cmd, "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=self._log_file)
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{self.url}/moto-api/", timeout=1).read()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.close()
                    raise SystemExit(f"moto_server did not start on {self.url}") from None
                time.sleep(0.1)
        nowhere = str((tmp or Path("/nonexistent")) / "no-aws-config")
        self._env = {"AWS_ENDPOINT_URL": self.url, "AWS_ACCESS_KEY_ID": "testing",
                     "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
                     "AWS_MAX_ATTEMPTS": "1", "AWS_CONFIG_FILE": nowhere, "AWS_SHARED_CREDENTIALS_FILE": nowhere}
        for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_ENDPOINT_URL_S3"):
            os.environ.pop(var, None)
        os.environ.update(self._env)
        import boto3

        self.s3 = boto3.session.Session().client("s3")
        self.s3.create_bucket(Bucket=bucket)
        self.bucket = bucket

    def env(self) -> dict[str, str]:
        return dict(self._env)

    def objects(self, prefix: str = "") -> tuple[int, int]:
        """(objects, bytes) under `prefix`."""
        n = size = 0
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            for o in page.get("Contents", []):
                n += 1
                size += o["Size"]
        return n, size

    def requests(self) -> dict[str, int]:
        """Requests moto answered so far, by HTTP method, LIST apart from GET (from its log; the
        /moto-api probes left out)."""
        out: dict[str, int] = {}
        if not self.log:
            return out
        for m in _REQUEST.finditer(Path(self.log).read_text(errors="replace")):
            method, path = m.group(1), m.group(2)
            if path.startswith("/moto-api"):
                continue
            if method == "GET" and "list-type=" in path:
                method = "LIST"  # priced like a PUT
            out[method] = out.get(method, 0) + 1
        return out

    def cpu_s(self) -> float:
        """CPU seconds (user + system) the moto server has used so far."""
        try:
            import psutil

            t = psutil.Process(self.proc.pid).cpu_times()
            return t.user + t.system
        except Exception:
            return float("nan")

    def rss_mb(self) -> float:
        try:
            import psutil

            return psutil.Process(self.proc.pid).memory_info().rss / 2**20
        except Exception:
            return float("nan")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        if self._log_file is not subprocess.DEVNULL:
            self._log_file.close()


def local_objects(root: Path) -> tuple[int, int]:
    files = [p for p in Path(root).rglob("*.parquet")]
    return len(files), sum(p.stat().st_size for p in files)


# ---- rows ---------------------------------------------------------------------------------------


def hex_strings(rng: np.random.Generator, n: int, chars: int = deid.PSEUDONYM_HEX_CHARS) -> pa.Array:
    data = _HEX[rng.integers(0, 16, size=n * chars, dtype=np.uint8)]
    offsets = np.arange(0, (n + 1) * chars, chars, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data))


def _choice(rng: np.random.Generator, values, n: int) -> pa.Array:
    return pc.take(pa.array(list(values), pa.string()), pa.array(rng.integers(0, len(values), n, dtype=np.int32)))


def prediction_table(n: int, day: date, seed: int, shift: float = 0.0) -> pa.Table:
    c = S.contract()
    schema = prediction_schema()
    rng = np.random.default_rng([seed, day.toordinal()])
    t0 = int(datetime(day.year, day.month, day.day, tzinfo=timezone.utc).timestamp() * 1_000_000)
    ts = np.sort(rng.integers(t0, t0 + 86_400_000_000, n, dtype=np.int64))
    cols: dict[str, pa.Array] = {
        "ts": pa.array(ts, pa.timestamp("us", tz="UTC")),
        "variant": pc.take(pa.array(["blue", "green"]), pa.array((rng.random(n) < 0.1).astype(np.int8))),
        "version": pa.array(np.full(n, VERSION, dtype=object), pa.string()),
        "score": pa.array(rng.beta(2, 8, n)),
        "latency_ms": pa.array(rng.gamma(2.0, 1.5, n)),
        "error": pa.array(np.zeros(n, dtype=bool)),
        "targeted": pa.array(rng.random(n) < 0.02),
        "shadow": pa.array(np.zeros(n, dtype=bool)),
        "request_id": hex_strings(rng, n),
        "row": pa.array(np.zeros(n, dtype=np.int64)),
        deid.ADMISSION_PSEUDONYM: hex_strings(rng, n),
        deid.PATIENT_PSEUDONYM: hex_strings(rng, n),
        deid.AGE_90_PLUS: None,  # below, from age
        deid.ZIP3: pc.cast(pa.array(rng.integers(100, 1000, n)), pa.string()),
        deid.ADMISSION_YEAR: pa.array(np.full(n, day.year, dtype=np.int64)),
    }
    for name in c.FEATURES:
        kind = c.COLUMN_TYPES[name]
        if name == "age":
            age = np.clip(rng.normal(64, 16, n).round(), 18, 104).astype(np.int64)
            cols[deid.AGE_90_PLUS] = pa.array(age >= deid.AGE_CAP)
            cols[name] = pa.array(np.minimum(age, deid.AGE_CAP))
        elif kind == "int":
            lo, hi = c.NUMERIC_RANGES.get(name, (0, 50))
            cols[name] = pa.array(np.clip(rng.poisson(max(1.0, (hi - lo) / 10), n) + lo, lo, hi).astype(np.int64))
        elif kind == "float":
            lo, hi = c.NUMERIC_RANGES.get(name, (0.0, 1.0))
            mid, sd = (lo + hi) / 2, (hi - lo) / 12
            cols[name] = pa.array(np.clip(rng.normal(mid + shift * sd, sd, n), lo, hi).round(2))
        elif kind == "string":
            cols[name] = _choice(rng, c.CATEGORIES.get(name, ("a", "b", "c")), n)
        elif kind == "bool":
            cols[name] = pa.array(rng.random(n) < 0.3)
    if cols[deid.AGE_90_PLUS] is None:
        cols[deid.AGE_90_PLUS] = pa.nulls(n, pa.bool_())
    arrays = [cols[f.name] if f.name in cols else pa.nulls(n, f.type) for f in schema]
    return pa.Table.from_arrays([a.cast(f.type) for a, f in zip(arrays, schema)], schema=schema)
