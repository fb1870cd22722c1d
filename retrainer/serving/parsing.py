"""Request bodies, parsed with limits: JSON or CSV instances for `/invocations` and the admin
route's body. Every refusal is a `BadRequest` with an HTTP status and a one-line message (deep
nesting also logs one line); nothing here raises anything else for bad input."""
from __future__ import annotations

import csv
import io
import json
import logging
import re
from typing import Any

from ..scoring import coerce_csv_records, validate_records
from .state import DEFAULT_REASON, MAX_REASON_CHARS

log = logging.getLogger(__name__)

ACTOR_HEADER = "X-Retrainer-Actor"
ACTOR_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


class BadRequest(Exception):
    """A request the app refuses: the HTTP status and a one-line message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def loads(body: bytes) -> Any:
    """JSON from a request body; BadRequest 400 (one line, one log line for nesting) otherwise."""
    try:
        return json.loads(body, parse_constant=_reject_constant)
    except RecursionError:
        log.warning("refused a %d-byte JSON body nested too deeply", len(body))
        raise BadRequest(400, "body is not acceptable JSON: nested too deeply") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadRequest(400, f"body is not valid JSON: {str(exc).splitlines()[0]}") from None


def parse_body(body: bytes, content_type: str, max_instances: int) -> list[dict]:
    ctype = content_type.split(";")[0].strip().lower()
    if ctype in ("", "application/json", "application/jsonlines+json"):
        data = loads(body)
        if not isinstance(data, dict):
            raise BadRequest(400, 'JSON body must be an object: {"instances": [{column: value, ...}]}')
        extra = [k for k in data if k != "instances"]
        if extra:
            raise BadRequest(400, f"unknown top-level field(s): {', '.join(map(str, extra[:5]))}; "
                                  'expected {"instances": [...]}')
        if "instances" not in data:
            raise BadRequest(400, 'JSON body needs "instances": [{column: value, ...}]')
        records = data["instances"]
    elif ctype in ("text/csv", "application/csv"):
        try:
            text = body.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise BadRequest(400, "CSV body is not UTF-8") from None
        try:
            rows = list(csv.reader(io.StringIO(text), strict=True))
        except csv.Error as exc:
            raise BadRequest(400, f"malformed CSV: {exc}") from None
        if not rows or not any(c.strip() for c in rows[0]):
            raise BadRequest(400, "CSV body needs a header row of column names")
        records, err = coerce_csv_records(rows[0], rows[1:])
        if err:
            raise BadRequest(400, err)
    else:
        raise BadRequest(415, f"unsupported content type {ctype!r}: use application/json or text/csv")
    err = validate_records(records, max_instances)
    if err:
        raise BadRequest(413 if err.startswith("too many instances") else 422 if "instance " in err else 400, err)
    return records


def _reject_constant(name: str):
    raise ValueError(f"{name} is not a valid JSON number")


def admin_request(data: Any) -> tuple[Any, str, bool]:
    """(variants, reason, force) from an admin body: a list, or {"variants", "reason", "force"}.
    ValueError (one line) when malformed."""
    if not isinstance(data, dict):
        return data, DEFAULT_REASON, False
    extra = sorted(str(k)[:40] for k in data if k not in ("variants", "reason", "force"))
    if extra:
        raise ValueError(f"unknown field(s) {', '.join(extra[:5])}; expected variants, reason, force")
    if "variants" not in data:
        raise ValueError('expected {"variants": [{variant, version, weight}, ...]}')
    force = data.get("force", False)
    if not isinstance(force, bool):
        raise ValueError("force must be true or false")
    reason = data.get("reason", DEFAULT_REASON)
    if not isinstance(reason, str) or not reason.strip() or len(reason) > MAX_REASON_CHARS \
            or not reason.isprintable():
        raise ValueError(f"reason must be one non-empty line of at most {MAX_REASON_CHARS} characters")
    return data["variants"], reason.strip(), force


