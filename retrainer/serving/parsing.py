"""Request bodies, parsed with limits: JSON or CSV instances for `/invocations` and the admin
route's body. Every refusal is a `BadRequest` with an HTTP status and a one-line message (deep
nesting also logs one line); nothing here raises anything else for bad input.

The request contract lives here too: `validate_records` checks parsed instances against
`schema` (fields, types, ranges, `MAX_STRING_CHARS`) and `coerce_csv_records` types CSV cells;
both return one-line messages instead of raising."""
from __future__ import annotations

import csv
import io
import json
import logging
import math
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from .. import schema as S
from .state import DEFAULT_REASON, MAX_REASON_CHARS

log = logging.getLogger(__name__)

ACTOR_HEADER = "X-Retrainer-Actor"
ACTOR_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")

# Fields a request may carry besides the features: identifiers and keys (used for routing and the
# de-identified capture, never by the model) and the admission time.
# The request boundary: any string field is at most MAX_STRING_CHARS characters; a numeric feature
# lies in its contract range (`schema.NUMERIC_RANGES`; integer features also within int64), so
# nothing a request carries can fail the capture's cast to the store's types.
MAX_STRING_CHARS = 256
_INT64_MIN, _INT64_MAX = -(2 ** 63), 2 ** 63 - 1


@dataclass(frozen=True)
class Fields:
    """What a request may carry for one model's contract."""
    optional: tuple[str, ...]  # identifiers, keys and the timestamp: routing and capture, never the model
    allowed: frozenset[str]
    numeric: frozenset[str]
    boolean: frozenset[str]
    categorical: frozenset[str]
    ranges: dict[str, tuple[float, float]]


_FIELDS: dict[int, tuple[Any, Fields]] = {}


def fields() -> Fields:
    """The active model's request fields (one per contract, built once)."""
    c = S.contract()
    got = _FIELDS.get(id(c))
    if got is not None and got[0] is c:
        return got[1]
    optional = tuple(dict.fromkeys((*c.KEYS, *c.IDENTIFIERS, c.TIMESTAMP)))
    ranges = {col: (max(lo, _INT64_MIN), min(hi, _INT64_MAX)) if col in c.INTEGER_FEATURES else (lo, hi)
              for col, (lo, hi) in c.NUMERIC_RANGES.items()}
    f = Fields(optional, frozenset(c.FEATURES) | frozenset(optional), frozenset(c.NUMERIC_FEATURES),
               frozenset(c.BOOLEAN_FEATURES), frozenset(c.CATEGORICAL_FEATURES), ranges)
    _FIELDS[id(c)] = (c, f)
    return f


def __getattr__(name: str):  # the old constants, for the active model
    if name == "OPTIONAL_FIELDS":
        return fields().optional
    if name == "ALLOWED_FIELDS":
        return fields().allowed
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class BadRequest(Exception):
    """A request the app refuses: the HTTP status and a one-line message. `records`: the parsed,
    invalid instances when the body parsed into a list (None otherwise), so the refusal can be
    routed and captured as error rows."""

    def __init__(self, status: int, message: str, records: list | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.records = records


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
        raise BadRequest(413 if err.startswith("too many instances") else 422 if "instance " in err else 400, err,
                         records if isinstance(records, list) else None)
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


# ---------------------------------------------------------------------------------------------
# Request validation

def _short(value: Any, limit: int = 40) -> str:
    """A short one-line rendering of a request value (containers by type and size only: their repr
    could be huge or deeply nested)."""
    if isinstance(value, (dict, list, tuple)):
        return f"a {type(value).__name__} of {len(value)} item(s)"
    if isinstance(value, str) and len(value) > limit:
        value = value[:limit]
    shown = repr(value) if not isinstance(value, int) or abs(value) < 10 ** 30 else "a huge integer"
    return shown if len(shown) <= limit else shown[:limit - 3] + "..."


def _type_error(i: int, col: str, value: Any, expected: str) -> str:
    return f"instance {i}: field {_short(col)} must be {expected}, got {_short(value)}"


def validate_records(records: Any, max_instances: int) -> str | None:
    """None if `records` is a valid list of instances, else a one-line message fit for a 4xx.

    Rules: a non-empty list of at most `max_instances` objects; every feature of `schema.FEATURES`
    present (its value may be null: the model treats it as missing); no field outside the features,
    identifiers/keys and `admission_ts`; numerics are JSON numbers (not booleans, not NaN/inf),
    booleans are true/false (or 0/1), categoricals are strings (an unseen category is allowed and
    scored as missing, like the pipeline does), identifiers are strings or integers.
    Every number lies in its contract range (`fields().ranges`: `schema.NUMERIC_RANGES`, integer features
    within int64), every string (identifiers and categories included) has at most MAX_STRING_CHARS
    characters, and identifiers given as integers fit in int64.
    """
    if not isinstance(records, list):
        return "'instances' must be a list of objects"
    if not records:
        return "no instances: send at least one"
    if len(records) > max_instances:
        return f"too many instances: {len(records)} > {max_instances} per request"
    f = fields()
    for i, rec in enumerate(records):
        if not isinstance(rec, Mapping):
            return f"instance {i} must be an object of column -> value, got {type(rec).__name__}"
        unknown = [k for k in rec if k not in f.allowed]
        if unknown:
            shown = ", ".join(str(k)[:40] for k in sorted(unknown, key=str)[:5])
            return (f"instance {i}: unknown field(s): {shown}"
                    f"{' ...' if len(unknown) > 5 else ''}")
        missing = [c for c in S.FEATURES if c not in rec]
        if missing:
            return (f"instance {i}: missing required field(s): {', '.join(missing[:5])}"
                    f"{' ...' if len(missing) > 5 else ''}")
        for col, value in rec.items():
            if value is None:
                continue
            if col in f.numeric:
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    return _type_error(i, col, value, "a number")
                if isinstance(value, float) and not math.isfinite(value):
                    return _type_error(i, col, value, "a finite number")
                lo, hi = f.ranges[col]
                if not lo <= value <= hi:
                    return _type_error(i, col, value, f"a number in [{lo:g}, {hi:g}]")
            elif col in f.boolean:
                if not (isinstance(value, bool) or (isinstance(value, int) and value in (0, 1))):
                    return _type_error(i, col, value, "true or false")
            elif col in f.categorical:
                if not isinstance(value, str):
                    return _type_error(i, col, value, "a string")
                if len(value) > MAX_STRING_CHARS:
                    return f"instance {i}: field {col!r} is longer than {MAX_STRING_CHARS} characters"
            elif isinstance(value, bool) or not isinstance(value, (str, int)):
                return _type_error(i, col, value, "a string")
            elif isinstance(value, str):
                if len(value) > MAX_STRING_CHARS:
                    return f"instance {i}: field {col!r} is longer than {MAX_STRING_CHARS} characters"
            elif not _INT64_MIN <= value <= _INT64_MAX:
                return _type_error(i, col, value, "a string or an integer within int64")
    return None


_TRUE = frozenset({"true", "1", "t", "yes", "y"})
_FALSE = frozenset({"false", "0", "f", "no", "n"})


def coerce_csv_records(header: Sequence[str], rows: Iterable[Sequence[str]]) -> tuple[list[dict], str | None]:
    """Turn CSV text cells into typed records (empty cell -> null). Returns (records, error)."""
    header = [h.strip() for h in header]
    f = fields()
    if len(set(header)) != len(header):
        return [], "CSV header repeats a column name"
    records = []
    for i, row in enumerate(rows):
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        if len(row) != len(header):
            return [], f"CSV row {i + 1} has {len(row)} cells, the header has {len(header)}"
        rec: dict[str, Any] = {}
        for col, cell in zip(header, row):
            cell = cell.strip()
            if cell == "" or cell.lower() in ("na", "nan", "null", "none"):
                rec[col] = None
            elif col in f.numeric:
                try:
                    v = float(cell)
                except ValueError:
                    return [], _type_error(i, col, cell, "a number")
                if not math.isfinite(v):
                    return [], _type_error(i, col, cell, "a finite number")
                rec[col] = v
            elif col in f.boolean:
                low = cell.lower()
                if low in _TRUE:
                    rec[col] = True
                elif low in _FALSE:
                    rec[col] = False
                else:
                    return [], _type_error(i, col, cell, "true or false")
            else:
                rec[col] = cell
        records.append(rec)
    return records, None
