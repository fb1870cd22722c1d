"""Operating characteristics of the canary's matured-label verdict for a regression model.

A canary routes different leads to each arm, so the comparison is unpaired: Δ = Spearman(candidate
arm) - Spearman(production arm), Zou's interval for independent correlations (Fisher z,
Bonett-Wright variances (1 + r²/2)/(n - 3) per arm), promote iff the lower bound > -margin
(lead-scoring: 0.02), roll back iff the upper bound < -margin, else inconclusive (never promotes).
Data: a latent L ~ N(0, 1) per lead, the label L cut into 1..5, each model reads L + sigma * e.
Production's true Spearman is 0.60; the candidate is equal (Δ = 0) or worse by 2x the margin
(Δ = -0.04); true values measured on 400,000 rows.

Baseline: the naive rule (promote iff r_c >= r_p - margin on point estimates, no interval).
Reported per arm size: false promote (worse candidate promoted), false rollback and promote rate
(equal models). `python benchmarks/oc_canary_regression.py [reps]` (default 400).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from retrainer.evidence.correlation import compare_spearman_unpaired  # noqa: E402

MARGIN = 0.02
CUTS = np.array([-1.2, -0.4, 0.4, 1.2])


def _labels(latent):
    return 1 + np.searchsorted(CUTS, latent)


def _true_rho(sigma, rng, n=400_000):
    latent = rng.normal(size=n)
    return spearmanr(_labels(latent), latent + sigma * rng.normal(size=n))[0]


def _sigma_for(target, rng):
    lo, hi = 0.01, 5.0
    for _ in range(30):
        mid = (lo + hi) / 2
        if _true_rho(mid, rng, 100_000) > target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def _arm(rng, n, sigma):
    latent = rng.normal(size=n)
    return _labels(latent).astype(float), latent + sigma * rng.normal(size=n)


def main(reps: int = 400) -> None:
    rng = np.random.default_rng(12)
    t0 = time.perf_counter()
    s_p = _sigma_for(0.60, rng)
    s_w = _sigma_for(0.60 - 2 * MARGIN, rng)
    print(f"true Spearman: production {_true_rho(s_p, rng):.4f}, worse candidate {_true_rho(s_w, rng):.4f}; "
          f"margin {MARGIN}, {reps} canaries per cell")
    print(f"{'rows/arm':>9} {'case':>6} | {'rule promote':>12} {'rollback':>8} {'inconcl':>8} | {'naive promote':>13}")
    for n in (500, 2_000, 8_000, 20_000):
        for case, s_c in (("equal", s_p), ("worse", s_w)):
            counts = {"promote": 0, "rollback": 0, "inconclusive": 0}
            naive = 0
            for _ in range(reps):
                yc, sc = _arm(rng, n, s_c)
                yp, sp = _arm(rng, n, s_p)
                e = compare_spearman_unpaired(yc, sc, yp, sp, tolerance=MARGIN, min_rows=200)
                counts[e.verdict] += 1
                naive += spearmanr(yc, sc)[0] >= spearmanr(yp, sp)[0] - MARGIN
            r = {k: v / reps for k, v in counts.items()}
            print(f"{n:>9,} {case:>6} | {r['promote']:>12.3f} {r['rollback']:>8.3f} {r['inconclusive']:>8.3f} | "
                  f"{naive / reps:>13.3f}")
    print(f"({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 400)
