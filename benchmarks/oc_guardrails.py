"""Operating characteristics of the error-rate guardrail, old and new, by simulation.

A 72 h canary is checked every 6 h: K = 12 checks, each on the cumulative requests so far (the
canary's N requests arrive evenly, so check k sees round(N k / 12) of them). Each request fails
independently with the canary's true error rate. The canary is rolled back at the first check
that fires, and not checked after that.

* **old rule** (before issue 10): roll back iff the observed error rate > limit at any check;
* **new rule**: `retrainer.evidence.error_rate_guardrail(errors, n, limit, checks=12)`: roll back
  iff the Clopper-Pearson lower bound at level 1 - 0.05/12 > limit at any check.

Limit 1%; true error rates 0.25%, 0.5%, 1%, 2%, 3%; N = 1,000 and 10,000 requests over the canary.
Target: a 0.5%-error canary is rolled back less than 5% of the time.

`run()` returns table rows; `python benchmarks/oc_guardrails.py [reps]` prints the table
(2,000 reps: under a minute).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from retrainer.evidence import error_rate_guardrail  # noqa: E402

LIMIT = 0.01
CHECKS = 12  # 72 h, checked every 6 h
RATES = (0.0025, 0.005, 0.01, 0.02, 0.03)
SIZES = (1000, 10000)


def checkpoints(n_total: int, checks: int = CHECKS) -> np.ndarray:
    """Cumulative requests seen at each check."""
    return np.round(n_total * np.arange(1, checks + 1) / checks).astype(int)


def one_canary(rng: np.random.Generator, n_total: int, rate: float) -> tuple[bool, bool]:
    """(old rule rolled back, new rule rolled back) for one simulated canary."""
    cum_n = checkpoints(n_total)
    increments = np.diff(np.r_[0, cum_n])
    cum_err = np.cumsum(rng.binomial(increments, rate))
    old = bool((cum_err / np.maximum(cum_n, 1) > LIMIT).any())
    new = False
    for errors, n in zip(cum_err, cum_n):
        if error_rate_guardrail(int(errors), int(n), LIMIT, checks=CHECKS).fired:
            new = True
            break  # a rolled-back canary is not checked again
    return old, new


def run(reps: int = 2000, seed: int = 0) -> list[dict]:
    """P(rollback) of the old and the new rule per true error rate and canary size."""
    rng = np.random.default_rng(seed)
    rows = []
    for n_total in SIZES:
        for rate in RATES:
            old = new = 0
            for _ in range(reps):
                o, w = one_canary(rng, n_total, rate)
                old += o
                new += w
            rows.append(dict(requests=n_total, true_rate=rate, limit=LIMIT, checks=CHECKS, reps=reps,
                             p_rollback_old=old / reps, p_rollback_new=new / reps))
    return rows


def table(rows: list[dict]) -> str:
    out = [f"error-rate guardrail, limit {LIMIT:.0%}, {CHECKS} checks over 72 h (cumulative requests), "
           f"{rows[0]['reps']:,} reps",
           "| requests | true error rate | P(rollback) old: rate > limit at any check "
           "| P(rollback) new: CP lower bound (1 - 0.05/12) > limit |",
           "|---:|---:|---:|---:|"]
    for r in rows:
        out.append(f"| {r['requests']:,} | {r['true_rate']:.2%} | {r['p_rollback_old']:.1%} | "
                   f"{r['p_rollback_new']:.1%} |")
    return "\n".join(out)


def main() -> None:
    reps = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    t0 = time.perf_counter()
    rows = run(reps)
    print(table(rows))
    target = next(r for r in rows if r["true_rate"] == 0.005 and r["requests"] == SIZES[0])
    print(f"\ntarget: a 0.5%-error canary is rolled back < 5% of the time at limit 1%: "
          f"{max(r['p_rollback_new'] for r in rows if r['true_rate'] == 0.005):.1%} (worst size) "
          f"{'met' if all(r['p_rollback_new'] < 0.05 for r in rows if r['true_rate'] == 0.005) else 'NOT met'}"
          f"; old rule at 1,000 requests: {target['p_rollback_old']:.1%}")
    print(f"({time.perf_counter() - t0:.1f} s)")


if __name__ == "__main__":
    main()
