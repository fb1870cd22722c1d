"""The endpoint's security contract: what serving refuses to start with, and how a request's rows
are conformed before they are handed to capture.

Start-up (`check_serving_settings`, called by `create_app` and `serve`): an admin token is required,
at least `MIN_TOKEN_BYTES` bytes long and not the old default "change-me"; otherwise ConfigError
(one line, the CLI exits 2). The host is loopback unless configured explicitly; a non-loopback
host is named in the refusal and warned about at start (`exposure_warning`).

Capture (`CategoryConformer`): only the contract's category values (`schema.CATEGORIES`) are ever
written to the prediction store; any other value of a categorical field becomes null before the
row is queued, and is counted (never logged: it may be free text). Numeric ranges and string
lengths are checked at the request boundary by `parsing.validate_records`.
"""
from __future__ import annotations

import ipaddress
import threading
from typing import Any, Sequence

from .. import schema as S
from ..errors import ConfigError

MIN_TOKEN_BYTES = 32
OLD_DEFAULT_TOKENS = frozenset({"change-me"})
TOKEN_HINT = ("set RETRAINER_SERVING__ADMIN_TOKEN (or serving.admin_token) to a random string of at least "
              f"{MIN_TOKEN_BYTES} bytes, e.g. python -c \"import secrets; print(secrets.token_urlsafe(32))\"")
TARGETED = "targeted"  # the capture column marking requests that chose their variant by header


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1)."""
    host = (host or "").strip().strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def token_problem(token: str | None) -> str | None:
    """Why `token` cannot protect the admin route, or None if it can."""
    if token is None or not token.strip():
        return "serving has no admin token" if token is None else "the admin token is empty"
    if token.strip() in OLD_DEFAULT_TOKENS:
        return f"the admin token is the old default {token.strip()!r}"
    n = len(token.encode())
    if n < MIN_TOKEN_BYTES:
        return f"the admin token is too short ({n} bytes, at least {MIN_TOKEN_BYTES} needed)"
    return None


def admin_token(serving) -> str | None:
    """The configured token as a string (None when unset)."""
    secret = serving.admin_token
    return None if secret is None else secret.get_secret_value()


def check_serving_settings(serving, host: str | None = None) -> None:
    """ConfigError (one line) unless the admin token is strong; `host`: the address actually bound
    (default `serving.host`), named in the refusal when it is not loopback."""
    problem = token_problem(admin_token(serving))
    if problem is None:
        return
    host = serving.host if host is None else host
    where = "" if is_loopback(host) else (f"; host {host!r} is not loopback, so the admin route would be "
                                          "reachable from the network")
    raise ConfigError(f"refusing to serve: {problem}{where}; {TOKEN_HINT}")


def exposure_warning(host: str, port: int) -> str | None:
    """A one-line warning when the endpoint listens beyond this machine, else None."""
    if is_loopback(host):
        return None
    return (f"listening on {host}:{port}, reachable beyond this machine (serving.host was set explicitly); "
            "the endpoint has no TLS: put it behind a TLS proxy and firewall it")


class CategoryConformer:
    """Nulls categorical values outside `schema.CATEGORIES` in request records (in place) and counts
    them per field. Thread safe counters; the values themselves are never kept or logged."""

    def __init__(self, categories: dict[str, Sequence[str]] | None = None):
        cats = S.CATEGORIES if categories is None else categories
        self._allowed = tuple((col, frozenset(values)) for col, values in cats.items())
        self._lock = threading.Lock()
        self.nulled: dict[str, int] = {col: 0 for col, _ in self._allowed}

    def conform(self, records: list[dict[str, Any]]) -> int:
        """Null unknown category values in `records` (in place); returns how many were nulled."""
        bad: list[str] | None = None
        for rec in records:
            for col, allowed in self._allowed:
                v = rec.get(col)
                if v is not None and v not in allowed:
                    rec[col] = None
                    if bad is None:
                        bad = []
                    bad.append(col)
        if not bad:
            return 0
        with self._lock:
            for col in bad:
                self.nulled[col] += 1
        return len(bad)

    @property
    def total(self) -> int:
        """Values nulled so far, all fields."""
        with self._lock:
            return sum(self.nulled.values())

    def stats(self) -> dict[str, Any]:
        """{"unknown_category_values_nulled": total, "by_field": {field: n}}."""
        with self._lock:
            by_field = {k: v for k, v in self.nulled.items() if v}
        return {"unknown_category_values_nulled": sum(by_field.values()), "by_field": by_field}
