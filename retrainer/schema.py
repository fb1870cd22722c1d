"""The readmission data contract: which columns exist, which are identifiers, which are features.

Every other module (generator, validation, training, de-identification, drift) reads the column
lists from here, so the contract lives in one place.
"""
from __future__ import annotations

import hashlib
import json

LABEL = "readmitted_30d"
ADMISSION_ID = "admission_id"
TIMESTAMP = "admission_ts"

# Direct identifiers a real hospital extract carries. They never reach the model, and never reach
# the monitoring store in clear (see retrainer.deid).
IDENTIFIERS: tuple[str, ...] = (
    "patient_id",
    "mrn",
    "patient_name",
    "date_of_birth",
    "street_address",
    "zip_code",
    "phone",
    "email",
)

# Keys that are not features but are needed to join records (pseudonymised before storage).
KEYS: tuple[str, ...] = (ADMISSION_ID, "patient_id")

CATEGORIES: dict[str, tuple[str, ...]] = {
    "sex": ("F", "M"),
    "admission_type": ("Emergency", "Urgent", "Elective", "Trauma"),
    "discharge_disposition": ("Home", "HomeHealth", "SNF", "Rehab", "AMA", "Hospice"),
    "primary_diagnosis_group": (
        "HeartFailure", "COPD", "Pneumonia", "Sepsis", "Diabetes",
        "Renal", "Stroke", "Orthopedic", "GI", "Other",
    ),
    "insurance": ("Medicare", "Medicaid", "Private", "SelfPay", "Other"),
}

# Numeric features with their plausible ranges (used by the generator and the GX suite).
NUMERIC_RANGES: dict[str, tuple[float, float]] = {
    "age": (18, 110),
    "length_of_stay_days": (0, 365),
    "prior_admissions_12m": (0, 50),
    "ed_visits_6m": (0, 50),
    "charlson_index": (0, 30),
    "n_comorbidities": (0, 30),
    "n_procedures": (0, 40),
    "n_medications": (0, 80),
    "n_new_medications": (0, 40),
    "hemoglobin_g_dl": (3, 25),
    "sodium_mmol_l": (100, 180),
    "creatinine_mg_dl": (0.1, 20),
    "glucose_mg_dl": (20, 1500),
    "wbc_k_ul": (0.1, 200),
    "albumin_g_dl": (0.5, 7),
    "bun_mg_dl": (1, 250),
    "bmi": (10, 90),
    "systolic_bp": (50, 260),
}

# Integer-valued numeric features (stored as int64; the rest are float64).
INTEGER_FEATURES: tuple[str, ...] = (
    "age", "prior_admissions_12m", "ed_visits_6m", "charlson_index", "n_comorbidities",
    "n_procedures", "n_medications", "n_new_medications",
)

BOOLEAN_FEATURES: tuple[str, ...] = (
    "diabetes", "chf", "ckd", "copd", "icu_stay", "followup_scheduled", "lives_alone",
)

# Lab values that are legitimately missing for part of the population (not-null uses `mostly`).
NULLABLE_FEATURES: tuple[str, ...] = ("albumin_g_dl", "bmi", "glucose_mg_dl")

CATEGORICAL_FEATURES: tuple[str, ...] = tuple(CATEGORIES)
NUMERIC_FEATURES: tuple[str, ...] = tuple(NUMERIC_RANGES)
FEATURES: tuple[str, ...] = NUMERIC_FEATURES + CATEGORICAL_FEATURES + BOOLEAN_FEATURES

# Columns the model needs at scoring time (what a caller must send, identifiers aside).
SCORING_COLUMNS: tuple[str, ...] = FEATURES

# Every column of a training batch, with its pandas dtype kind.
COLUMN_TYPES: dict[str, str] = {
    ADMISSION_ID: "string",
    TIMESTAMP: "datetime",
    **{c: "string" for c in IDENTIFIERS if c != "date_of_birth"},
    "date_of_birth": "datetime",
    **{c: "int" if c in INTEGER_FEATURES else "float" for c in NUMERIC_FEATURES},
    **{c: "string" for c in CATEGORICAL_FEATURES},
    **{c: "bool" for c in BOOLEAN_FEATURES},
    LABEL: "int",
}
REQUIRED_COLUMNS: tuple[str, ...] = tuple(COLUMN_TYPES)

SLICES: dict[str, str] = {"sex": "sex", "age_band": "age"}
AGE_BANDS: tuple[tuple[int, int, str], ...] = (
    (0, 45, "18-44"), (45, 65, "45-64"), (65, 80, "65-79"), (80, 200, "80+"),
)


def age_band(age):
    """Vectorised age band labels for a pandas Series of ages."""
    import pandas as pd  # noqa: PLC0415 - heavy: pandas; schema is otherwise light

    bins = [b[0] for b in AGE_BANDS] + [AGE_BANDS[-1][1]]
    return pd.cut(age, bins=bins, right=False, labels=[b[2] for b in AGE_BANDS]).astype("string")


def feature_schema(features: tuple[str, ...] = FEATURES) -> dict[str, str]:
    """The model's input schema: feature name -> type kind. Its hash decides MAJOR bumps."""
    return {f: COLUMN_TYPES[f] for f in features}


def schema_hash(schema: dict[str, str]) -> str:
    blob = json.dumps(schema, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
