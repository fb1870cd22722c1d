"""`retrainer compare SCORES`: compare two models' scores on labelled rows with the rule the canary
and the registration gate decide by (`retrainer.evidence.compare_paired` / `compare_unpaired`).

A Parquet file (or folder) in one of two forms:

* **paired** (both models scored the same rows): columns `label`, `score_production`,
  `score_candidate`, optionally `pseudonym`;
* **unpaired** (each row scored by one arm): columns `variant` (`production` / `candidate`),
  `score`, `label`, optionally `pseudonym`.

Paired DeLong, unpaired DeLong, or a bootstrap clustered on the pseudonym when one repeats. Prints
Δ = AUC(candidate) - AUC(production), its interval, positives and negatives per arm, the method and
the decision. Exit code 0 whatever the decision; a bad file or option is one line `error: ...` and
exit code 2. No Prefect.
"""
from __future__ import annotations

import argparse

from retrainer.errors import ConfigError, DataError

from .common import print_json

PAIRED = ("label", "score_production", "score_candidate")
UNPAIRED = ("variant", "score", "label")
ARMS = ("production", "candidate")
DEFAULT_TOLERANCE = 0.02


def _form(columns) -> str:
    cols = set(columns)
    if {"score_production", "score_candidate"} & cols:
        form, need = "paired", PAIRED
    elif {"variant", "score"} & cols:
        form, need = "unpaired", UNPAIRED
    else:
        raise DataError(f"missing columns: expected paired ({', '.join(PAIRED)}) or unpaired "
                        f"({', '.join(UNPAIRED)}); found {', '.join(map(str, columns)) or 'none'}")
    missing = [c for c in need if c not in cols]
    if missing:
        raise DataError(f"missing column{'s' if len(missing) > 1 else ''} {', '.join(missing)} for the {form} form "
                        f"({', '.join(need)})")
    return form


def _numeric(df, col: str):
    import numpy as np  # noqa: PLC0415 - heavy: numpy
    import pandas as pd  # noqa: PLC0415 - heavy: pandas

    s = df[col]
    if not (pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s)):
        raise DataError(f"column {col} is not numeric (dtype {s.dtype})")
    return np.asarray(s.astype(float), dtype=float)


def _labels(df):
    import numpy as np  # noqa: PLC0415 - heavy: numpy

    y = _numeric(df, "label")
    missing = int(np.isnan(y).sum())
    if missing:
        raise DataError(f"column label: {missing} labels are missing (NaN)")
    bad = ~np.isin(y, (0.0, 1.0))
    if bad.any():
        found = ", ".join(f"{v:g}" for v in np.unique(y[bad])[:5])
        raise DataError(f"column label: labels must be 0 or 1; {int(bad.sum())} rows have {found}")
    return y.astype(int)


def _scores(df, col: str):
    import numpy as np  # noqa: PLC0415 - heavy: numpy

    s = _numeric(df, col)
    bad = ~np.isfinite(s)
    if bad.any():
        raise DataError(f"column {col}: {int(bad.sum())} scores are NaN or infinite")
    return s


def _both_classes(y, where: str) -> None:
    pos = int(y.sum())
    if pos == 0 or pos == len(y):
        raise DataError(f"{where}: one class only ({len(y):,} rows, all labelled {1 if pos else 0}); an AUC needs "
                        "positives and negatives")


def _pseudonyms(df):
    if "pseudonym" not in df.columns:
        return None
    return df["pseudonym"].to_numpy(dtype=object)


def compare_frame(df, *, tolerance: float = DEFAULT_TOLERANCE, level: float = 0.95, source: str = "compare",
                  min_positives: int = 100, min_negatives: int = 100):
    """Validate a scores frame in the paired or unpaired form and apply the canary's rule. Raises
    DataError with one line on anything malformed. Returns `retrainer.evidence.Evidence`."""
    from retrainer.evidence import compare_paired, compare_unpaired  # noqa: PLC0415 - heavy: scipy

    if len(df) == 0:
        raise DataError("no rows")
    form = _form(list(df.columns))
    y = _labels(df)
    clusters = _pseudonyms(df)
    if form == "paired":
        sp, sc = _scores(df, "score_production"), _scores(df, "score_candidate")
        _both_classes(y, "label")
        return compare_paired(y, sp, sc, tolerance=tolerance, source=source, level=level, clusters=clusters,
                              min_positives=min_positives, min_negatives=min_negatives)
    s = _scores(df, "score")
    variant = df["variant"].astype("string").str.strip()
    if variant.isna().any():
        raise DataError(f"column variant: {int(variant.isna().sum())} rows have no variant")
    unknown = sorted(set(variant) - set(ARMS))
    if unknown:
        shown = ", ".join(repr(u) for u in unknown[:5]) + (" ..." if len(unknown) > 5 else "")
        raise DataError(f"column variant: unknown variant names {shown} (expected production or candidate)")
    arms = {}
    for arm in ARMS:
        mask = (variant == arm).to_numpy()
        if not mask.any():
            raise DataError(f"column variant: no rows for {arm}")
        _both_classes(y[mask], f"{arm} rows")
        arms[arm] = (y[mask], s[mask], clusters[mask] if clusters is not None else None)
    (yc, sc, cc), (yp, sp, cp) = arms["candidate"], arms["production"]
    return compare_unpaired(yc, sc, yp, sp, tolerance=tolerance, source=source, level=level,
                            clusters_candidate=cc, clusters_production=cp, min_positives=min_positives,
                            min_negatives=min_negatives)


def _text(e) -> list[str]:
    lines = [f"method: {e.method or 'none'} ({'paired: same rows' if e.paired else 'unpaired: one arm per row'})"]
    arms = ((("both arms (same rows)", e.candidate),) if e.paired
            else (("candidate", e.candidate), ("production", e.production)))
    for name, c in arms:
        lines.append(f"{name}: {c.n:,} rows, {c.positives:,} positives, {c.negatives:,} negatives")
    if e.delta is not None:
        lines.append(f"AUC: production {e.auc_production:.4f}, candidate {e.auc_candidate:.4f}")
        lines.append(f"ΔAUC (candidate - production): {e.delta:+.4f}, {e.level:.0%} interval "
                     f"[{e.low:+.4f}, {e.high:+.4f}]")
    lines.append(f"rule: promote iff lower bound > -{e.tolerance:g}; rollback iff upper bound < -{e.tolerance:g}; "
                 "otherwise inconclusive")
    lines.append(f"decision: {e.verdict}")
    lines.append(f"reason: {e.reason}")
    return lines


def cmd_compare(a) -> int:
    """Compare the scores in `a.scores`; exit 0 whatever the decision."""
    from retrainer.dataio import read_parquet  # noqa: PLC0415 - heavy: pandas

    if not a.tolerance >= 0:
        raise ConfigError(f"--tolerance must be >= 0, got {a.tolerance}")
    if not 0 < a.level < 1:
        raise ConfigError(f"--level must be in (0, 1), got {a.level}")
    if a.min_positives < 1 or a.min_negatives < 1:
        raise ConfigError("--min-positives and --min-negatives must be >= 1")
    df = read_parquet(a.scores)
    evidence = compare_frame(df, tolerance=a.tolerance, level=a.level, source=f"compare {a.scores}",
                             min_positives=a.min_positives, min_negatives=a.min_negatives)
    if a.json:
        print_json(evidence.to_dict())
    else:
        print("\n".join(_text(evidence)))
    return 0


def add_compare(sub) -> None:
    """`retrainer compare SCORES [--tolerance 0.02] [--level 0.95] [--json]`."""
    c = sub.add_parser(
        "compare", help="compare two models' scores on labelled rows with the canary's non-inferiority rule",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Compare a candidate's scores with production's on labelled rows, with the rule the canary "
                    "and the registration gate decide by:\n"
                    "  promote iff the lower bound of the interval of ΔAUC > -tolerance,\n"
                    "  rollback iff the upper bound < -tolerance, otherwise inconclusive\n"
                    "(at least --min-positives positives and --min-negatives negatives per arm).\n\n"
                    "SCORES is a Parquet file (or folder) in one of two forms:\n"
                    "  paired:   label, score_production, score_candidate [, pseudonym]   (paired DeLong)\n"
                    "  unpaired: variant (production|candidate), score, label [, pseudonym]   (unpaired DeLong)\n"
                    "A pseudonym that repeats switches to a bootstrap clustered on the pseudonym.",
        epilog="exit status: 0 for any decision (promote, rollback or inconclusive: read the decision line or "
               "the JSON's verdict); 2 for a bad file or option (one line `error: ...`).")
    c.add_argument("scores", metavar="SCORES", help="Parquet file or folder of labelled scores")
    c.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                   help=f"non-inferiority margin δ on ΔAUC (default {DEFAULT_TOLERANCE})")
    c.add_argument("--level", type=float, default=0.95, help="two-sided interval level (default 0.95)")
    c.add_argument("--min-positives", type=int, default=100, help="positives needed per arm (default 100)")
    c.add_argument("--min-negatives", type=int, default=100, help="negatives needed per arm (default 100)")
    c.add_argument("--json", action="store_true", help="print the evidence as JSON (Evidence.to_dict())")
    c.set_defaults(func=cmd_compare)
