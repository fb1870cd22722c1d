"""De-identification of admission records before anything is stored for monitoring.

What `deidentify` does (HIPAA Safe Harbor, 45 CFR 164.514(b)(2)):

* **Allow-list, not block-list.** The output holds only columns known to be safe: the model
  features (`schema.FEATURES`), the label if present, a few derived coarse columns and the two key
  pseudonyms. Every other column is dropped, so names, MRNs, SSNs, phone/fax numbers, e-mail and
  street addresses, city/county, account / health-plan / licence / device / vehicle numbers, URLs,
  IP addresses, photos, free text and any column we never heard of never pass through, whatever
  the caller names them. `IDENTIFIER_ALIASES` lists the common names only to refuse them in `keep`.
* **Keys are pseudonymised.** `patient_id` and `admission_id` (or a common alias such as
  `subject_id`, `encounter_id`) become `patient_pseudonym` / `admission_pseudonym`: keyed
  HMAC-SHA256, so the same id always maps to the same pseudonym under one key (labels arriving
  later can be joined to predictions), nobody without the key can recompute or test a guess, and a
  different key gives unrelated pseudonyms. Each key kind is hashed in its own domain, so a patient
  id and an admission id that happen to be equal strings get different pseudonyms. The output is
  the first 32 hex characters (128 bits) of the MAC: collisions are negligible at any hospital's
  volume. Caveat: 45 CFR 164.514(c) wants a re-identification code that is *not derived* from
  the identifier; a keyed MAC is derived from it. We accept that because without the key the
  pseudonym can neither be reversed nor confirmed by hashing a guess, and the key is never stored
  with the data: it is read from an environment variable (`RETRAINER_PSEUDONYM_KEY`, set from
  the host's secret store) and never written anywhere. Rotating the key breaks the joins
  between old and new rows; `Pseudonymizer.fingerprint` tells keys apart without revealing them.
* **Ages over 89 are aggregated** into one category: `age` is capped at 90 and `age_90_plus`
  flags the capped rows. The date of birth is dropped outright (age already carries the signal,
  and even its year is identifying for the over-89s).
* **ZIP codes** become `zip3` (first three digits); the three-digit areas with fewer than 20,000
  people (`RESTRICTED_ZIP3`, from the HHS guidance, 2000 Census) become "000". Unparseable ZIPs
  become null.
* **Dates**: every date directly related to the patient is removed except the year. The admission
  timestamp becomes `admission_year`; birth, discharge, death and any other date column is
  dropped (the allow-list does it).

Because of the prediction time and the keyed (derived) pseudonyms, the prediction store is
best described as a pseudonymised *Limited Data Set*, not a strict Safe Harbor data set: the store
adds the prediction time (`ts`, UTC) and partitions by its day, because monitoring windows and the
canary need it, and a prediction made at discharge is close to a date of the stay. Keep the store
behind the same access controls as other PHI-adjacent data.
"""
from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable

import numpy as np
import pandas as pd

from . import schema as S
from .errors import ConfigError

MIN_KEY_BYTES = 16
PSEUDONYM_HEX_CHARS = 32  # 128 bits of HMAC-SHA256

PATIENT_PSEUDONYM = "patient_pseudonym"
ADMISSION_PSEUDONYM = "admission_pseudonym"
AGE_90_PLUS = "age_90_plus"
ZIP3 = "zip3"
ADMISSION_YEAR = "admission_year"
PSEUDONYM_COLUMNS: tuple[str, ...] = (ADMISSION_PSEUDONYM, PATIENT_PSEUDONYM)
DERIVED_COLUMNS: tuple[str, ...] = (AGE_90_PLUS, ZIP3, ADMISSION_YEAR)

AGE_CAP = 90
# Three-digit ZIP areas with fewer than 20,000 inhabitants (HHS Safe Harbor guidance).
RESTRICTED_ZIP3: frozenset[str] = frozenset({
    "036", "059", "063", "102", "203", "556", "692", "790", "821", "823", "830", "831",
    "878", "879", "884", "890", "893",
})

# Accepted names (after normalisation: lower case, non-alphanumerics -> "_") for the join keys of
# the readmission contract; another model's keys are its spec's `columns.id` and `columns.entity`.
_ROW_ALIASES_RA = ("admission_id", "encounter_id", "visit_id", "hadm_id", "admission_number")
_ENTITY_ALIASES_RA = ("patient_id", "subject_id", "person_id", "patient_number")
_ZIP_ALIASES = ("zip_code", "zip", "zipcode", "postal_code", "postcode", "zip5")
_TS_ALIASES_RA = ("admission_ts", "admission_date", "admit_date", "admission_time", "admittime")


def row_domain() -> str:
    """The hashing domain of the row id's pseudonym: the active model's id column (readmission:
    admission_id). Capture and label ingestion use the same, so labels join predictions."""
    return S.ADMISSION_ID


def entity_domain() -> str:
    """The hashing domain of the entity's pseudonym (readmission: patient_id)."""
    return S.ENTITY or "entity"


def _key_aliases() -> dict[str, tuple[str, ...]]:
    """Pseudonym column -> accepted source names, for the active model: its id and entity columns
    (with the readmission aliases when they are readmission's)."""
    row, entity = S.ADMISSION_ID, S.ENTITY
    return {
        ADMISSION_PSEUDONYM: (row, *(a for a in _ROW_ALIASES_RA if a != row and row == "admission_id")),
        PATIENT_PSEUDONYM: (() if not entity else
                            (entity, *(a for a in _ENTITY_ALIASES_RA if a != entity and entity == "patient_id"))),
    }


def _ts_aliases() -> tuple[str, ...]:
    ts = S.TIMESTAMP
    return (ts, *(a for a in _TS_ALIASES_RA if a != ts and ts == "admission_ts"))


# Names of the Safe Harbor identifiers as they commonly appear in extracts. The allow-list already
# drops them; this list makes `keep=` refuse them, and documents what we had in mind.
_SAFE_HARBOR_NAMES: frozenset[str] = frozenset({
    *_ROW_ALIASES_RA, *_ENTITY_ALIASES_RA, *_ZIP_ALIASES, *_TS_ALIASES_RA,
    # (A) names
    "name", "full_name", "first_name", "last_name", "given_name", "family_name", "surname",
    "middle_name", "maiden_name", "patient_name", "next_of_kin", "emergency_contact",
    # (B) geography below state
    "address", "street", "street_address", "address_line1", "address_line2", "address1", "address2",
    "city", "county", "precinct", "geocode", "latitude", "longitude", "lat", "lon", "lng",
    # (C) dates
    "date_of_birth", "dob", "birth_date", "birthdate", "birth_year", "discharge_date", "discharge_ts",
    "death_date", "date_of_death", "dod",
    # (D-E) phone, fax
    "phone", "phone_number", "telephone", "mobile", "cell", "fax", "fax_number",
    # (F) e-mail
    "email", "email_address", "e_mail",
    # (G) SSN
    "ssn", "social_security_number", "social_security", "sin", "national_id",
    # (H-I) MRN, health plan, account numbers
    "mrn", "medical_record_number", "health_plan_id", "member_id", "beneficiary_id",
    "insurance_id", "policy_number", "account_number", "account_id", "billing_account",
    # (J-L) licence, vehicle, device numbers
    "license_number", "licence_number", "drivers_license", "certificate_number", "vin",
    "license_plate", "vehicle_id", "device_id", "device_serial", "serial_number", "udi",
    # (M-N) URLs, IP addresses
    "url", "web_url", "ip", "ip_address", "ipv4", "ipv6", "mac_address",
    # (O-P) biometrics, photos
    "fingerprint", "voiceprint", "biometric_id", "photo", "photo_url", "image", "face_image",
    # (R) other unique identifiers, free text
    "notes", "clinical_notes", "free_text", "comment", "comments",
})


def identifier_aliases() -> frozenset[str]:
    """Names `keep=` refuses: the common Safe Harbor identifier names plus the active model's
    identifiers, keys and timestamp."""
    return _SAFE_HARBOR_NAMES | {_norm(c) for c in (*S.IDENTIFIERS, *S.KEYS, S.TIMESTAMP)}


def __getattr__(name: str):  # the old constant, for the active model
    if name == "IDENTIFIER_ALIASES":
        return identifier_aliases()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _norm(name) -> str:
    return re.sub(r"[^0-9a-z]+", "_", str(name).strip().lower()).strip("_")


def _key_bytes(key) -> bytes:
    if hasattr(key, "get_secret_value"):  # pydantic SecretStr / SecretBytes
        key = key.get_secret_value()
    if isinstance(key, str):
        key = key.encode("utf-8")
    if not isinstance(key, (bytes, bytearray)):
        raise ConfigError("pseudonym key must be bytes or a string")
    return bytes(key)


class Pseudonymizer:
    """Keyed pseudonyms: HMAC-SHA256(key, domain NUL value), first 32 hex characters.

    Values are stripped strings (`str(v).strip()`), so the id 1234 and " 1234" map like "1234".
    Nulls stay null. The raw key is not kept as an attribute (only the HMAC pad states), it is not
    in `repr`, and the object refuses to be pickled, so it cannot leak into a Prefect result,
    cache or log by accident; pass the environment variable name between processes instead.
    """

    def __init__(self, key: bytes):
        key = _key_bytes(key)
        if len(key) < MIN_KEY_BYTES:
            raise ConfigError(f"pseudonym key is too short: need at least {MIN_KEY_BYTES} bytes")
        # HMAC (RFC 2104) with the pads precomputed once: per value it is then two hash copies,
        # a few times faster than hmac.new() per value. Checked against hmac.new in the tests.
        if len(key) > 64:
            key = hashlib.sha256(key).digest()
        key = key.ljust(64, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))
        self.fingerprint = self._mac(b"retrainer-key-fingerprint")[:12]  # identifies the key, safe to log

    def __repr__(self) -> str:
        return f"Pseudonymizer(fingerprint={self.fingerprint!r})"

    def __reduce__(self):
        raise TypeError("Pseudonymizer holds a secret key and cannot be pickled; "
                        "pass the key's environment variable name instead")

    def _mac(self, message: bytes) -> str:
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.hexdigest()[:PSEUDONYM_HEX_CHARS]

    def pseudonym(self, value, domain: str) -> str | None:
        """The pseudonym of one value in `domain` (e.g. "patient_id"); None for a null value."""
        if value is None or (not isinstance(value, str) and pd.isna(value)):
            return None
        return self._mac(domain.encode() + b"\0" + str(value).strip().encode("utf-8"))

    def pseudonymize(self, values: Iterable, domain: str) -> pd.Series:
        """Pseudonyms for many values (string dtype, nulls kept, same index if a Series).

        Each distinct value is hashed once; about 1 s per million distinct values.
        """
        series = values if isinstance(values, pd.Series) else pd.Series(list(values), dtype=object)
        codes, uniques = pd.factorize(series, use_na_sentinel=True)
        prefix = domain.encode() + b"\0"
        mac = self._mac
        hashed = np.array([mac(prefix + str(u).strip().encode("utf-8")) for u in uniques] + [None],
                          dtype=object)
        # code -1 (null) picks the trailing None
        return pd.Series(hashed[codes], index=series.index, dtype="string")


def pseudonymizer_from_env(var_name: str) -> Pseudonymizer:
    """Build a Pseudonymizer from the key in environment variable `var_name` (whitespace around
    it is ignored, so a key read from a file with a trailing newline works)."""
    value = os.environ.get(var_name, "").strip()
    if not value:
        raise ConfigError(f"pseudonym key missing: set the {var_name} environment variable "
                          f"(at least {MIN_KEY_BYTES} bytes, e.g. the output of `openssl rand -hex 32`)")
    if len(value.encode("utf-8")) < MIN_KEY_BYTES:
        raise ConfigError(f"pseudonym key in {var_name} is too short: need at least {MIN_KEY_BYTES} bytes")
    return Pseudonymizer(value.encode("utf-8"))


def _find(columns_by_norm: dict[str, str], aliases: Iterable[str]) -> str | None:
    for alias in aliases:
        if alias in columns_by_norm:
            return columns_by_norm[alias]
    return None


def coarsen_age(age: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Ages over 89 become 90 (one "90 or older" category); returns (age, age_90_plus flag)."""
    numeric = pd.to_numeric(age, errors="coerce")
    over = (numeric > AGE_CAP - 1).fillna(False).astype(bool)
    capped = age.mask(over, AGE_CAP)
    if pd.api.types.is_integer_dtype(age.dtype):
        capped = capped.astype(age.dtype)
    return capped, over


def coarsen_zip(zips: pd.Series) -> pd.Series:
    """First three digits of a 5-digit ZIP or ZIP+4; restricted areas -> "000"; else null.

    Numeric columns are zero-padded (a CSV reader turns "01234" into 1234)."""
    if pd.api.types.is_numeric_dtype(zips.dtype) and not pd.api.types.is_bool_dtype(zips.dtype):
        num = pd.to_numeric(zips, errors="coerce")
        ok = num.notna() & (num >= 0) & (num <= 99999) & (num == num.round())
        text = pd.Series(pd.NA, index=zips.index, dtype="string")
        text[ok] = num[ok].astype("int64").astype(str).str.zfill(5)
    else:
        text = zips.astype("string").str.strip()
    match = text.str.extract(r"^(\d{3})\d{2}(?:-?\d{4})?$", expand=False).astype("string")
    return match.mask(match.isin(RESTRICTED_ZIP3), "000")


def deidentify(df: pd.DataFrame, pseudonymizer: Pseudonymizer, *, keep: Iterable[str] = ()) -> pd.DataFrame:
    """A de-identified copy of `df` (see the module docstring for the rules).

    Output columns, those whose source is present: `admission_pseudonym`, `patient_pseudonym`
    (always present, null when the key column is absent), the model features (`age` capped),
    `age_90_plus`, `zip3`, `admission_year`, the label, and the `keep` columns. `keep` is for
    extra non-identifying columns; naming a known identifier there raises ValueError.
    """
    if not isinstance(df, pd.DataFrame):
        raise TypeError("deidentify expects a pandas DataFrame")
    keep = list(keep)
    refused = [c for c in keep if _norm(c) in identifier_aliases() or c in PSEUDONYM_COLUMNS]
    if refused:
        raise ValueError(f"refusing to keep identifier column(s): {', '.join(map(str, refused))}")
    missing = [c for c in keep if c not in df.columns]
    if missing:
        raise ValueError(f"keep column(s) not in the frame: {', '.join(map(str, missing))}")

    by_norm: dict[str, str] = {}
    for col in df.columns:
        by_norm.setdefault(_norm(col), col)
    frame = df.reset_index(drop=True)
    out: dict[str, pd.Series] = {}
    domains = {ADMISSION_PSEUDONYM: row_domain(), PATIENT_PSEUDONYM: entity_domain()}
    for target, aliases in _key_aliases().items():
        col = _find(by_norm, aliases)
        if col is None:
            out[target] = pd.Series(pd.NA, index=frame.index, dtype="string")
        else:
            out[target] = pseudonymizer.pseudonymize(frame[col], domains[target])

    for feature in S.FEATURES:
        if feature in frame.columns:
            out[feature] = frame[feature]
    if "age" in out:
        out["age"], out[AGE_90_PLUS] = coarsen_age(out["age"])

    zip_col = _find(by_norm, _ZIP_ALIASES)
    if zip_col is not None:
        out[ZIP3] = coarsen_zip(frame[zip_col])
    ts_col = _find(by_norm, _ts_aliases())
    if ts_col is not None:
        ts = pd.to_datetime(frame[ts_col], errors="coerce", utc=True)
        out[ADMISSION_YEAR] = ts.dt.year.astype("Int64")
    if S.LABEL in frame.columns:
        out[S.LABEL] = frame[S.LABEL]
    for col in keep:
        out.setdefault(col, frame[col])
    return pd.DataFrame(out, index=frame.index)
