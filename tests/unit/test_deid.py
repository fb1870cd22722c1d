"""De-identification: keyed pseudonyms, dropped identifiers, Safe Harbor coarsening."""
from __future__ import annotations

import hashlib
import hmac
import pickle
import re
import time

import numpy as np
import pandas as pd
import pytest

from retrainer import datagen, deid
from retrainer import schema as S
from retrainer.errors import ConfigError

KEY = b"test-key-0123456789abcdef"
OTHER_KEY = b"another-key-0123456789abcdef"
HEX32 = re.compile(r"^[0-9a-f]{32}$")
ALLOWED = set(deid.PSEUDONYM_COLUMNS) | set(S.FEATURES) | set(deid.DERIVED_COLUMNS) | {S.LABEL}


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> pd.DataFrame:
    out = tmp_path_factory.mktemp("data")
    paths = datagen.generate(out, datagen.GenerationSpec(months=2, rows_per_month=150, seed=3))
    return pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)


@pytest.fixture
def ps() -> deid.Pseudonymizer:
    return deid.Pseudonymizer(KEY)


def raw_values(frame: pd.DataFrame) -> set[str]:
    """Every direct-identifier value of `frame`, as strings (DOBs in a few common formats)."""
    values: set[str] = set()
    for col in ("patient_id", "mrn", "patient_name", "street_address", "zip_code", "phone", "email",
                S.ADMISSION_ID):
        if col in frame.columns:
            values.update(frame[col].dropna().astype(str))
    if "date_of_birth" in frame.columns:
        dob = pd.to_datetime(frame["date_of_birth"]).dropna()
        for fmt in ("%Y-%m-%d", "%m/%d/%Y", "%Y%m%d", "%d.%m.%Y"):
            values.update(dob.dt.strftime(fmt))
    return values


# -- pseudonyms -------------------------------------------------------------------------------------

def test_pseudonyms_are_keyed_hmac_sha256_stable_and_key_dependent(ps):
    ids = pd.Series(["P1", "P2", "P1", None, " P2 "], dtype="string")
    first = ps.pseudonymize(ids, "patient_id")
    again = deid.Pseudonymizer(KEY).pseudonymize(ids, "patient_id")
    other = deid.Pseudonymizer(OTHER_KEY).pseudonymize(ids, "patient_id")
    assert first.tolist() == again.tolist()
    assert first[0] == first[2] and first[1] == first[4]  # same id, same pseudonym (whitespace ignored)
    assert first[0] != first[1]
    assert pd.isna(first[3]) and pd.isna(other[3])
    assert all(a != b for a, b in zip(first.dropna(), other.dropna()))
    assert all(HEX32.match(v) for v in first.dropna())
    expected = hmac.new(KEY, b"patient_id\0P1", hashlib.sha256).hexdigest()[:32]
    assert first[0] == expected == ps.pseudonym("P1", "patient_id")
    # a patient id and an admission id that are equal strings do not collide
    assert ps.pseudonym("X1", "patient_id") != ps.pseudonym("X1", "admission_id")


def test_long_key_follows_hmac_rfc():
    long_key = bytes(range(100))
    assert deid.Pseudonymizer(long_key).pseudonym("A1", "admission_id") == \
        hmac.new(long_key, b"admission_id\0A1", hashlib.sha256).hexdigest()[:32]


def test_pseudonymize_100k_values_under_a_second(ps):
    values = pd.Series([f"P{i:08d}" for i in range(100_000)])
    ps.pseudonymize(values[:1000], "patient_id")  # warm up
    t0 = time.perf_counter()
    out = ps.pseudonymize(values, "patient_id")
    assert time.perf_counter() - t0 < 1.0
    assert out.nunique() == 100_000 and out.index.equals(values.index)


def test_key_never_exposed(ps):
    assert KEY.decode() not in repr(ps) and KEY.decode() not in str(vars(ps))
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(ps)
    assert ps.fingerprint != deid.Pseudonymizer(OTHER_KEY).fingerprint


@pytest.mark.parametrize("value", [None, "", "   ", "short-key"])
def test_missing_empty_or_short_env_key_is_a_config_error(monkeypatch, value):
    if value is None:
        monkeypatch.delenv("RT_TEST_KEY", raising=False)
    else:
        monkeypatch.setenv("RT_TEST_KEY", value)
    with pytest.raises(ConfigError) as err:
        deid.pseudonymizer_from_env("RT_TEST_KEY")
    message = str(err.value)
    assert "RT_TEST_KEY" in message and "\n" not in message
    if value and value.strip():
        assert value not in message


def test_env_key_works_and_ignores_surrounding_whitespace(monkeypatch, ps):
    monkeypatch.setenv("RT_TEST_KEY", KEY.decode() + "\n")
    from_env = deid.pseudonymizer_from_env("RT_TEST_KEY")
    assert from_env.pseudonym("A1", "admission_id") == ps.pseudonym("A1", "admission_id")


def test_short_key_in_constructor_is_a_config_error():
    with pytest.raises(ConfigError, match="too short"):
        deid.Pseudonymizer(b"x" * 15)
    assert deid.Pseudonymizer("s" * 16).pseudonym("a", "d")  # str keys (Prefect Secret.get()) work


# -- deidentify ---------------------------------------------------------------------------------------

def test_deidentify_keeps_features_and_pseudonymises_keys(raw, ps):
    out = deid.deidentify(raw, ps)
    assert set(out.columns) <= ALLOWED
    assert set(S.FEATURES) <= set(out.columns)
    assert len(out) == len(raw)
    assert out[deid.ADMISSION_PSEUDONYM].tolist() == ps.pseudonymize(raw[S.ADMISSION_ID], "admission_id").tolist()
    assert out[deid.PATIENT_PSEUDONYM].tolist() == ps.pseudonymize(raw["patient_id"], "patient_id").tolist()
    for col in S.FEATURES:
        if col != "age":
            pd.testing.assert_series_equal(out[col], raw[col], check_names=False)
    unchanged = raw["age"] <= 89
    assert (out.loc[unchanged, "age"] == raw.loc[unchanged, "age"]).all()
    assert out["age"].dtype == raw["age"].dtype
    assert (out[deid.ADMISSION_YEAR] == 2024).all()
    assert not any(pd.api.types.is_datetime64_any_dtype(out[c]) for c in out.columns)


def test_no_raw_identifier_value_survives(raw, ps):
    extra = raw.assign(
        ssn="123-45-6789", fax="555-000-1111", account_number="ACC-998877", device_id="DEV-12345",
        url="https://patients.example.org/p/1", ip_address="10.1.2.3", city="Springfield",
        notes="Seen by Dr. Who", discharge_date=raw[S.TIMESTAMP], **{"Health Plan ID": "HP-77"},
    )
    out = deid.deidentify(extra, ps)
    assert set(out.columns) <= ALLOWED
    secrets = raw_values(raw) | {"123-45-6789", "555-000-1111", "ACC-998877", "DEV-12345", "10.1.2.3",
                                 "https://patients.example.org/p/1", "Springfield", "Seen by Dr. Who", "HP-77"}
    cells = {str(v) for col in out.columns for v in out[col].dropna().unique()}
    assert not cells & secrets
    text = "\n".join(str(v) for col in out.columns if col not in deid.PSEUDONYM_COLUMNS
                     for v in out[col].dropna().unique())
    assert not [s for s in secrets if len(s) >= 6 and s in text]


def test_deidentify_does_not_modify_its_input(raw, ps):
    before = raw.copy()
    deid.deidentify(raw, ps)
    pd.testing.assert_frame_equal(raw, before)


def test_ages_over_89_are_one_category(ps):
    frame = pd.DataFrame({"age": [30, 89, 90, 95, 104]})
    out = deid.deidentify(frame, ps)
    assert out["age"].tolist() == [30, 89, 90, 90, 90]
    assert out["age_90_plus"].tolist() == [False, False, True, True, True]
    floats = deid.deidentify(pd.DataFrame({"age": [89.0, 89.5, np.nan]}), ps)
    assert floats["age"].iloc[:2].tolist() == [89.0, 90.0] and np.isnan(floats["age"].iloc[2])
    assert floats["age_90_plus"].tolist() == [False, True, False]


def test_zip_codes_reduced_to_three_digits_with_restricted_areas_zeroed(ps):
    zips = pd.Series(["03601", "12345", "12345-6789", "99999", "abc", None, "1234"], dtype="string")
    out = deid.deidentify(pd.DataFrame({"zip_code": zips}), ps)
    assert out["zip3"].tolist()[:4] == ["000", "123", "123", "999"]
    assert out["zip3"].iloc[4:].isna().all()
    for prefix in deid.RESTRICTED_ZIP3:
        assert deid.coarsen_zip(pd.Series([prefix + "42"])).tolist() == ["000"]
    # a numeric column lost its leading zero on the way in
    assert deid.coarsen_zip(pd.Series([3601, 5912, 12345])).tolist() == ["000", "000", "123"]
    assert "zip_code" not in out.columns


def test_partial_frames_and_aliases(ps):
    features_only = pd.DataFrame({"age": [70], "sex": ["F"], "mrn": ["MRN1"], "patient_name": ["Ava Kim"]})
    out = deid.deidentify(features_only, ps)
    assert list(out.columns) == ["admission_pseudonym", "patient_pseudonym", "age", "sex", "age_90_plus"]
    assert out[list(deid.PSEUDONYM_COLUMNS)].isna().all().all()
    aliased = deid.deidentify(pd.DataFrame({"Encounter ID": ["A1"], "subject_id": ["P1"]}), ps)
    assert aliased[deid.ADMISSION_PSEUDONYM][0] == ps.pseudonym("A1", "admission_id")
    assert aliased[deid.PATIENT_PSEUDONYM][0] == ps.pseudonym("P1", "patient_id")
    assert deid.deidentify(pd.DataFrame(), ps).empty


def test_keep_allows_safe_extras_but_refuses_identifiers(ps):
    frame = pd.DataFrame({"ward": ["W1"], "ssn": ["123-45-6789"], "age": [50]})
    assert deid.deidentify(frame, ps, keep=["ward"])["ward"].tolist() == ["W1"]
    with pytest.raises(ValueError, match="ssn"):
        deid.deidentify(frame, ps, keep=["ssn"])
    with pytest.raises(ValueError, match="not in the frame"):
        deid.deidentify(frame, ps, keep=["bed"])
