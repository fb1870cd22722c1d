"""Data drift: Population Stability Index (PSI) of every feature against a stored reference profile.

How it works
------------
A `ReferenceProfile` is fitted once per model version from its training data and saved as JSON
(`to_dict`/`from_dict`, `save`/`load`). Monitoring then reads only the current window, which may
be a DataFrame, a Parquet file or a folder of Parquet files; files are streamed one row group at a
time and only bin counts are kept, so memory stays flat however many rows the window has.

Modules, one concern each:
- `psi`: the arithmetic (the project's binning and PSI definition, floors, the noise floor, bin
  counting of one column);
- `sources`: DataFrame / Parquet file / Parquet folder sources, streamed by row group;
- `profile`: `FeatureProfile`, `ReferenceProfile` (fit, save/load, count, score) and
  `fit_reference_profile` for a new model version;
- `report`: `FeatureDrift`, `DriftReport`, their text/Markdown/JSON renderings and `drift_report`.

Plain Python: this package must never import prefect.
"""
from __future__ import annotations

from .profile import PROFILE_FORMAT, FeatureProfile, ReferenceProfile, compare, fit_reference_profile
from .psi import FLOOR, noise_floor, psi_from_counts
from .report import DRIFT, FEATURE, OK, SCORE, TOO_SMALL, DriftReport, FeatureDrift, drift_report, format_report
from .sources import CATEGORICAL, NUMERIC, Data, PathLike

__all__ = [
    "FLOOR", "FeatureProfile", "ReferenceProfile", "FeatureDrift", "DriftReport",
    "drift_report", "format_report", "psi_from_counts", "fit_reference_profile",
    "noise_floor", "compare", "PROFILE_FORMAT", "NUMERIC", "CATEGORICAL", "FEATURE", "SCORE",
    "OK", "DRIFT", "TOO_SMALL", "Data", "PathLike",
]
