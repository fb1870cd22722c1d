"""Power, said up front: how many matured labelled rows the non-inferiority rule needs, and when
the traffic and the label delay will supply them.

The rule promotes iff the lower bound of the two-sided 95% interval of Δ = AUC_c - AUC_p exceeds
-δ, a one-sided test at α = 0.025. For a paired comparison the variance of Δ̂ shrinks as 1/N, so
the observed standard error `se_ref` on `n_ref` rows (the registration comparison) gives the
variance per row V = se_ref² · n_ref, and the rows the test needs to promote a candidate whose
true Δ is `true_delta` (0: as good as production) with probability `power` are

    N = V · (z_{1-α} + z_{power})² / (δ + true_delta)².

`power_statement` turns N into the plan's day-0 statement: the rows the registration month
already supplies, the rows live shadow traffic adds per day (predictions per day x shadow
coverage x labelled share), the date the last needed label matures (labels mature `label_delay`
after their prediction), and whether that is before the plan's maximum duration.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from scipy.stats import norm

from .rule import MIN_NEGATIVES, MIN_POSITIVES

DEFAULT_ALPHA = 0.025
DEFAULT_POWER = 0.8


def required_labels(se_ref: float, n_ref: int, margin: float, alpha: float = DEFAULT_ALPHA,
                    power: float = DEFAULT_POWER, true_delta: float = 0.0) -> int:
    """Labelled rows a paired non-inferiority test with margin `margin` (δ) needs to promote a
    candidate with true Δ = `true_delta` with probability `power` at one-sided level `alpha`,
    from the standard error `se_ref` of Δ observed on `n_ref` rows."""
    if not se_ref > 0 or not math.isfinite(se_ref):
        raise ValueError(f"se_ref must be a finite number > 0, got {se_ref}")
    if int(n_ref) != n_ref or n_ref < 1:
        raise ValueError(f"n_ref must be a whole number >= 1, got {n_ref}")
    if not margin > 0:
        raise ValueError(f"margin must be > 0, got {margin}")
    if not 0 < alpha < 0.5:
        raise ValueError(f"alpha must be in (0, 0.5), got {alpha}")
    if not 0 < power < 1:
        raise ValueError(f"power must be in (0, 1), got {power}")
    effect = margin + true_delta
    if not effect > 0:
        raise ValueError(f"margin + true_delta must be > 0 (a candidate worse than the margin can never be "
                         f"shown non-inferior), got {effect:g}")
    v = se_ref ** 2 * n_ref
    z = norm.ppf(1 - alpha) + norm.ppf(power)
    return max(1, math.ceil(v * z ** 2 / effect ** 2))


def _duration(td: timedelta) -> str:
    s = td.total_seconds()
    if s >= 7 * 86400:
        return f"{s / 86400:g} days"
    if s % 3600 == 0:
        return f"{s / 3600:g} h"
    return f"{s / 60:g} min"


@dataclass(frozen=True)
class PowerStatement:
    """The rows the rule needs, the rows there are, and when the rest will exist."""

    needed_rows: int
    have_rows: int
    rows_per_day: float
    label_delay: timedelta
    max_duration: timedelta
    start: datetime
    ready_at: datetime | None  # when the needed rows will have matured labels; None: never
    decidable_before_max: bool
    margin: float
    alpha: float
    power: float
    se_ref: float
    n_ref: int
    text: str

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["label_delay"] = self.label_delay.total_seconds()
        d["max_duration"] = self.max_duration.total_seconds()
        d["start"] = self.start.isoformat()
        d["ready_at"] = self.ready_at.isoformat() if self.ready_at else None
        return d


def power_statement(se_ref: float, n_ref: int, margin: float, *, start: datetime, label_delay: timedelta,
                    max_duration: timedelta, predictions_per_day: float, shadow_coverage: float = 1.0,
                    labelled_share: float = 1.0, have_rows: int = 0,
                    have_source: str = "the registration month", prevalence: float | None = None,
                    alpha: float = DEFAULT_ALPHA, power: float = DEFAULT_POWER,
                    min_positives: int = MIN_POSITIVES, min_negatives: int = MIN_NEGATIVES) -> PowerStatement:
    """The day-0 statement of a canary plan.

    `se_ref`/`n_ref`: the paired comparison's standard error and rows (the registration
    comparison on the newest matured month). `have_rows`: labelled rows already usable (that
    comparison's rows). Live traffic supplies `predictions_per_day x shadow_coverage x
    labelled_share` matured rows per day, each `label_delay` after its prediction. With a
    `prevalence`, the rows needed are at least those that give `min_positives` positives and
    `min_negatives` negatives."""
    if label_delay < timedelta(0):
        raise ValueError("label_delay must be >= 0")
    if max_duration <= timedelta(0):
        raise ValueError("max_duration must be > 0")
    if predictions_per_day < 0:
        raise ValueError("predictions_per_day must be >= 0")
    for name, v in (("shadow_coverage", shadow_coverage), ("labelled_share", labelled_share)):
        if not 0 <= v <= 1:
            raise ValueError(f"{name} must be in [0, 1], got {v}")
    if have_rows < 0:
        raise ValueError("have_rows must be >= 0")
    needed = required_labels(se_ref, n_ref, margin, alpha, power)
    if prevalence is not None:
        if not 0 < prevalence < 1:
            raise ValueError(f"prevalence must be in (0, 1), got {prevalence}")
        needed = max(needed, math.ceil(min_positives / prevalence), math.ceil(min_negatives / (1 - prevalence)))
    rows_per_day = predictions_per_day * shadow_coverage * labelled_share
    missing = max(0, needed - have_rows)
    if missing == 0:
        ready_at: datetime | None = start
    elif rows_per_day > 0:
        ready_at = start + timedelta(days=missing / rows_per_day) + label_delay
    else:
        ready_at = None
    end = start + max_duration
    decidable = ready_at is not None and ready_at <= end
    head = (f"the rule needs {needed:,} matured labelled rows for margin {margin:g} at one-sided α {alpha:g} "
            f"and {power:.0%} power; {have_source} supplies {have_rows:,}")
    if missing == 0:
        text = f"{head}: enough, the plan can decide at its first check"
    else:
        live = (f"live traffic at {rows_per_day:,.0f} rows/day with a label delay of {_duration(label_delay)} "
                + (f"supplies the rest by {ready_at:%Y-%m-%d %H:%M}" if ready_at else "never supplies the rest"))
        if decidable:
            text = f"{head}; {live}, within the plan's maximum of {_duration(max_duration)}"
        else:
            text = (f"{head}; {live}; the plan's maximum of {_duration(max_duration)} cannot decide on live labels, "
                    f"so it decides on {have_source} (inconclusive unless that evidence decides) and re-checks in "
                    f"the deferred verdict")
    return PowerStatement(needed, int(have_rows), rows_per_day, label_delay, max_duration, start, ready_at,
                          decidable, margin, alpha, power, se_ref, int(n_ref), text)
