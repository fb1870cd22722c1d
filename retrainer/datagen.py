"""Synthetic 30-day readmission data: one Parquet file per month, deterministic for a seed.

The label follows a logistic model of clinically plausible risk factors, so a gradient-boosting
model reaches an AUC around 0.75-0.80. From `drift_from` on, some feature distributions shift
(older, sicker, more emergency admissions) and the label relationship changes (follow-up no longer
protects, creatinine matters more), which drives both data drift and concept drift. At 5,000 rows a
month the drift moves at least three features above PSI 0.20 against the earlier months (charlson
index ~0.36, age ~0.31, comorbidities ~0.28, admission type and insurance ~0.2), so Protocol 24's
"at least 3 features" data-drift trigger fires. Months before `drift_from` do not depend on it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from . import schema as S

_FIRST = ("Ava", "Liam", "Mia", "Noah", "Emma", "Oliver", "Sofia", "Lucas", "Amara", "Mateo",
          "Chloe", "Ethan", "Priya", "Omar", "Hana", "Jonas", "Lea", "Kofi", "Ines", "Yuki")
_LAST = ("Smith", "Garcia", "Nguyen", "Johnson", "Okafor", "Müller", "Rossi", "Kim", "Patel",
         "Cohen", "Silva", "Brown", "Dubois", "Novak", "Haddad", "Larsen", "Tanaka", "Lopez")
_STREETS = ("Oak St", "Maple Ave", "Hospital Rd", "River Ln", "Elm St", "Main St", "Park Blvd")


INTERCEPT = -3.9
SIGNAL = 1.5


@dataclass(frozen=True)
class GenerationSpec:
    months: int = 12
    rows_per_month: int = 5000
    seed: int = 7
    start: str = "2024-01"
    drift_from: int | None = None  # 1-based month index from which drift applies


def _month_frame(rng: np.random.Generator, month_start: pd.Timestamp, n: int, drifted: bool,
                 month_index: int) -> pd.DataFrame:
    shift = 1.0 if drifted else 0.0
    age = np.clip(rng.normal(64 + 9 * shift, 16, n), 18, 104).round().astype(np.int64)
    sex = rng.choice(S.CATEGORIES["sex"], n, p=[0.52, 0.48])
    adm_p = np.array([0.55, 0.2, 0.22, 0.03]) if not drifted else np.array([0.75, 0.12, 0.10, 0.03])
    admission_type = rng.choice(S.CATEGORIES["admission_type"], n, p=adm_p)
    dx = rng.choice(S.CATEGORIES["primary_diagnosis_group"], n,
                    p=[0.14, 0.1, 0.12, 0.08, 0.09, 0.07, 0.07, 0.1, 0.1, 0.13])
    charlson = np.clip(rng.poisson(2.2 + 0.03 * (age - 60) + 0.8 * shift), 0, 30).astype(np.int64)
    n_comorb = np.clip(charlson + rng.poisson(1.0, n), 0, 30).astype(np.int64)
    prior = np.clip(rng.negative_binomial(1.2, 0.55, n) + (charlson > 4), 0, 50).astype(np.int64)
    ed = np.clip(rng.poisson(0.6 + 0.3 * prior), 0, 50).astype(np.int64)
    icu = rng.random(n) < (0.08 + 0.06 * (admission_type == "Trauma") + 0.05 * (dx == "Sepsis"))
    los = np.clip(rng.gamma(2.0, 2.2 + 1.5 * icu + 0.5 * shift, n), 0.25, 120).round(2)
    n_proc = np.clip(rng.poisson(1.2 + 1.5 * icu), 0, 40).astype(np.int64)
    n_med = np.clip(rng.poisson(6 + 0.8 * n_comorb), 0, 80).astype(np.int64)
    n_new_med = np.clip(rng.binomial(n_med, 0.25), 0, 40).astype(np.int64)
    hgb = np.clip(rng.normal(12.8 - 0.3 * (charlson > 3), 1.8, n), 4, 20).round(1)
    sodium = np.clip(rng.normal(138.5, 3.8, n), 110, 170).round(0)
    creat = np.clip(rng.lognormal(0.05 + 0.25 * (dx == "Renal") + 0.15 * shift, 0.45, n), 0.2, 15).round(2)
    glucose = np.clip(rng.lognormal(4.75 + 0.25 * (dx == "Diabetes"), 0.3, n), 40, 1200).round(0)
    wbc = np.clip(rng.lognormal(2.1 + 0.35 * (dx == "Sepsis"), 0.35, n), 0.5, 150).round(1)
    albumin = np.clip(rng.normal(3.6 - 0.3 * (charlson > 4), 0.55, n), 1.0, 5.5).round(1)
    bun = np.clip(rng.lognormal(2.8 + 0.4 * (creat > 1.5), 0.4, n), 2, 200).round(0)
    bmi = np.clip(rng.normal(28.5, 6.0, n), 14, 70).round(1)
    sbp = np.clip(rng.normal(130, 19, n), 70, 230).round(0)
    diabetes = (dx == "Diabetes") | (rng.random(n) < 0.22)
    chf = (dx == "HeartFailure") | (rng.random(n) < 0.1)
    ckd = (creat > 1.8) | (rng.random(n) < 0.05)
    copd = (dx == "COPD") | (rng.random(n) < 0.08)
    insurance = np.where(age >= 65, "Medicare",
                         rng.choice(["Medicaid", "Private", "SelfPay", "Other"], n, p=[0.3, 0.55, 0.1, 0.05]))
    disp_p = np.array([0.58, 0.16, 0.12, 0.08, 0.03, 0.03])
    disposition = rng.choice(S.CATEGORIES["discharge_disposition"], n, p=disp_p)
    followup = rng.random(n) < 0.6
    lives_alone = rng.random(n) < 0.27

    # Risk model: log-odds of readmission within 30 days.
    risk = (0.018 * (age - 64) + 0.22 * prior + 0.12 * ed + 0.09 * charlson
         + 0.04 * los + 0.35 * (admission_type == "Emergency") + 0.5 * chf + 0.3 * copd
         + 0.35 * (disposition == "SNF") + 0.8 * (disposition == "AMA") + 0.4 * (disposition == "Hospice")
         - 0.25 * (hgb - 12.5) / 1.8 + 0.25 * np.log(creat) - 0.25 * (albumin - 3.6) / 0.55
         + 0.04 * n_new_med + 0.25 * lives_alone + 0.25 * (insurance == "Medicaid"))
    if drifted:
        # Concept drift: follow-up no longer protects, renal function matters much more.
        risk = risk + 1.6 * np.log(creat) + 0.9 * (dx == "Pneumonia") + 0.7 * icu - 0.15 * prior - 0.9
    else:
        risk = risk - 0.55 * followup
    z = INTERCEPT + SIGNAL * risk
    label = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(np.int64)

    seconds = rng.integers(0, int((month_start + pd.offsets.MonthBegin(1) - month_start).total_seconds()), n)
    ts = (month_start + pd.to_timedelta(np.sort(seconds), unit="s")).astype("datetime64[us]")
    dob = (ts - pd.to_timedelta((age * 365.25 + rng.integers(0, 365, n)).astype(np.int64), unit="D")).normalize()
    pid_num = rng.integers(10_000_000, 99_999_999, n)
    frame = pd.DataFrame({
        S.ADMISSION_ID: [f"A{month_start:%Y%m}-{i:06d}" for i in range(n)],
        S.TIMESTAMP: ts,
        "patient_id": [f"P{p}" for p in pid_num],
        "mrn": [f"MRN{(p * 7919) % 10**9:09d}" for p in pid_num],
        "patient_name": np.char.add(np.char.add(rng.choice(_FIRST, n).astype(str), " "),
                                    rng.choice(_LAST, n).astype(str)),
        "date_of_birth": dob.astype("datetime64[us]"),
        "street_address": np.char.add(np.char.add(rng.integers(1, 9999, n).astype(str), " "),
                                      rng.choice(_STREETS, n).astype(str)),
        "zip_code": np.char.zfill(rng.integers(1000, 99999, n).astype(str), 5),
        "phone": [f"555-{a:03d}-{b:04d}" for a, b in zip(rng.integers(100, 999, n), rng.integers(0, 9999, n))],
        "email": [f"patient{p}@example.org" for p in pid_num],
        "age": age, "length_of_stay_days": los, "prior_admissions_12m": prior, "ed_visits_6m": ed,
        "charlson_index": charlson, "n_comorbidities": n_comorb, "n_procedures": n_proc,
        "n_medications": n_med, "n_new_medications": n_new_med,
        "hemoglobin_g_dl": hgb, "sodium_mmol_l": sodium.astype(float), "creatinine_mg_dl": creat,
        "glucose_mg_dl": glucose.astype(float), "wbc_k_ul": wbc, "albumin_g_dl": albumin,
        "bun_mg_dl": bun.astype(float), "bmi": bmi, "systolic_bp": sbp.astype(float),
        "sex": sex, "admission_type": admission_type, "discharge_disposition": disposition,
        "primary_diagnosis_group": dx, "insurance": insurance,
        "diabetes": diabetes, "chf": chf, "ckd": ckd, "copd": copd, "icu_stay": icu,
        "followup_scheduled": followup, "lives_alone": lives_alone,
        S.LABEL: label,
    })
    # Realistic missingness in labs that are not always drawn.
    for col, rate in (("albumin_g_dl", 0.18), ("bmi", 0.06), ("glucose_mg_dl", 0.03)):
        frame.loc[rng.random(n) < rate, col] = np.nan
    return conform(frame)


def conform(frame: pd.DataFrame) -> pd.DataFrame:
    """Cast a frame's known columns to the contract's dtypes (strings as pandas string dtype)."""
    casts = {}
    for col, kind in S.COLUMN_TYPES.items():
        if col not in frame.columns:
            continue
        if kind == "string":
            casts[col] = "string"
        elif kind == "float":
            casts[col] = "float64"
        elif kind == "bool":
            casts[col] = "bool"
    return frame.astype(casts)


def generate(out: str | Path, spec: GenerationSpec) -> list[Path]:
    """Write `spec.months` monthly Parquet files under `out`; returns their paths in time order."""
    if spec.months < 1:
        raise ValueError("--months must be at least 1")
    if spec.rows_per_month < 1:
        raise ValueError("--rows-per-month must be at least 1")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start = pd.Timestamp(spec.start + "-01")
    paths = []
    for i in range(spec.months):
        month_start = start + pd.DateOffset(months=i)
        # One independent stream per month: month k is the same whatever `months` is.
        rng = np.random.default_rng([spec.seed, i])
        drifted = spec.drift_from is not None and (i + 1) >= spec.drift_from
        frame = _month_frame(rng, month_start, spec.rows_per_month, drifted, i)
        path = out / f"admissions_{month_start:%Y_%m}.parquet"
        frame.to_parquet(path, index=False, row_group_size=min(100_000, max(1, len(frame))))
        paths.append(path)
    return paths


def generate_model_data(out: str | Path, *, periods: int = 12, rows_per_period: int = 5000, seed: int = 7,
                        start: str = "2024-01", drift_from: int | None = None) -> list[Path]:
    """The readmission spec's `data.generator`: `generate` under the generic keyword names every
    model's generator takes (a period is a month here)."""
    return generate(out, GenerationSpec(months=periods, rows_per_month=rows_per_period, seed=seed,
                                        start=str(start)[:7], drift_from=drift_from))


def generate_for_model(model: str, out: str | Path, **kw) -> list[Path]:
    """Synthetic data for `model` from its spec's `data.generator` ("module:function", called with
    out, periods, rows_per_period, seed, drift_from, start), with that model active."""
    from .spec import SpecError, load_spec, resolve_entry_point, using  # noqa: PLC0415 - cycle: spec -> settings

    spec = load_spec(model)
    if not spec.data.generator:
        raise SpecError(f"model {model!r} has no data.generator in its spec: bring your own data "
                        f"(retrainer --model {model} retrain --data DIR)")
    fn = resolve_entry_point(spec.data.generator, "data generator")
    with using(model):
        return fn(out, **{k: v for k, v in kw.items() if v is not None})
