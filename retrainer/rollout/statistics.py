"""The canary's unpaired interval in the dict form its decisions and reports carry.

The statistics themselves live in `retrainer.evidence` (DeLong paired and unpaired, clustered
bootstrap, the non-inferiority rule); this module adapts the unpaired arm comparison to the
labelled-predictions frame of the prediction store.
"""
from __future__ import annotations

from .. import schema as S
from ..evidence.auc import delong_auc_variance, unpaired_delong

__all__ = ["auc_difference_ci", "ci_from_labelled", "delong_auc_variance", "score_shift"]


def auc_difference_ci(y_cand, s_cand, y_prod, s_prod, level: float = 0.95) -> dict[str, float] | None:
    """Unpaired DeLong interval of AUC(candidate) - AUC(production) (`evidence.unpaired_delong`):
    {"diff", "low", "high", "se", "auc_candidate", "auc_production", "level"}, or None when either
    arm lacks positives or negatives."""
    d = unpaired_delong(y_cand, s_cand, y_prod, s_prod, level)
    if d is None:
        return None
    return {"diff": d.delta, "low": d.low, "high": d.high, "se": d.se, "auc_candidate": d.auc_candidate,
            "auc_production": d.auc_production, "level": level}


def ci_from_labelled(frame, candidate: str = "green", production: str = "blue",
                     level: float = 0.95) -> dict[str, float] | None:
    """`auc_difference_ci` from a labelled-predictions frame (`PredictionStore.labelled()`:
    columns variant, score, readmitted_30d)."""
    c = frame[frame["variant"] == candidate]
    p = frame[frame["variant"] == production]
    return auc_difference_ci(c[S.LABEL].to_numpy(), c["score"].to_numpy(dtype=float),
                             p[S.LABEL].to_numpy(), p["score"].to_numpy(dtype=float), level)


def score_shift(candidate_scores, production_scores, bins: int = 10) -> dict | None:
    """The shift between the two models' live score distributions (a regression canary's
    distributional evidence, never a promotion reason): two-sample Kolmogorov-Smirnov statistic and
    p-value and the PSI over production's deciles, with n per arm; None when an arm has fewer than
    two finite scores."""
    import numpy as np  # noqa: PLC0415 - heavy: numpy
    from scipy.stats import ks_2samp  # noqa: PLC0415 - heavy: scipy

    from ..drift.psi import numeric_counts, psi_from_counts, quantile_edges  # noqa: PLC0415 - heavy: pyarrow

    c = np.asarray(candidate_scores, dtype=float)
    p = np.asarray(production_scores, dtype=float)
    c, p = c[np.isfinite(c)], p[np.isfinite(p)]
    if len(c) < 2 or len(p) < 2:
        return None
    ks = ks_2samp(c, p)
    edges = quantile_edges(p, np.linspace(0, 1, bins + 1)[1:-1])  # production's deciles, as drift bins them
    psi = psi_from_counts(numeric_counts(p, edges), numeric_counts(c, edges))
    return {"ks": float(ks.statistic), "ks_p": float(ks.pvalue), "psi": psi, "n_candidate": int(len(c)),
            "n_production": int(len(p))}
