"""Operating characteristics of the paired Spearman non-inferiority rule, by simulation.

The lead-scoring gate (`models/lead-scoring.yaml`: tolerance 0.02) promotes a candidate iff the
lower bound of the 95% interval of Δ = Spearman(candidate) - Spearman(production), both scored on
the same test rows, is above -0.02. The model of the data: a latent L ~ N(0, 1) per lead, the label
is L cut into the scores 1..5 (ties, as the real labels), each model reads L with its own noise,

    score_k = L + sigma_k * e_k,

so the two scores are correlated through L as two models of the same leads are. Production's
Spearman is 0.60; the candidate's sigma gives a true Δ of 0 (equal models) or -0.04 (worse by twice
the tolerance). True Spearman values are measured once on 400,000 rows.

Rules on the same simulated test sets:

* **naive** (the baseline): eligible iff r_c >= r_p - 0.02 on the point estimates (no interval);
* **Zou**: `retrainer.evidence.correlation.compare_spearman_paired` (Zou 2007 overlapping
  correlations, Bonett-Wright variances), eligible iff its verdict is promote (>= 200 rows);
* **bootstrap**: the same with method="bootstrap" (row resampling, `N_BOOT` resamples; fewer
  simulated sets, it is slower).

Reported: false reject rate (equal models not promoted), false accept rate (the worse candidate
promoted), coverage of the 95% interval of Δ, and the ratios of each rule's rates to the naive
rule's. `python benchmarks/oc_spearman.py [reps] [boot_reps]` (defaults 1000 and 150: 165 s
on one core).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from retrainer.evidence.correlation import compare_spearman_paired  # noqa: E402

TOLERANCE = 0.02
PROD_RHO = 0.60
SIZES = (300, 1000, 3000)
N_BOOT = 200
CUTS = np.array([-1.2, -0.4, 0.4, 1.2])  # L into the scores 1..5


def _label(latent: np.ndarray) -> np.ndarray:
    return 1.0 + np.searchsorted(CUTS, latent)


def draw(rng: np.random.Generator, n: int, sigma_p: float, sigma_c: float):
    latent = rng.standard_normal(n)
    y = _label(latent)
    return y, latent + sigma_p * rng.standard_normal(n), latent + sigma_c * rng.standard_normal(n)


def true_rho(sigma: float, n: int = 400_000, seed: int = 99) -> float:
    rng = np.random.default_rng(seed)
    latent = rng.standard_normal(n)
    return float(spearmanr(_label(latent), latent + sigma * rng.standard_normal(n)).statistic)


def sigma_for(rho: float) -> float:
    """The model noise giving a true Spearman `rho` against the 1..5 labels (bisection)."""
    lo, hi = 0.01, 5.0
    for _ in range(30):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if true_rho(mid) > rho else (lo, mid)
    return (lo + hi) / 2


def cell(n: int, sigma_p: float, sigma_c: float, true_delta: float, reps: int, boot_reps: int, seed: int):
    rng = np.random.default_rng(seed)
    naive, zou, boot, cov_z, cov_b = [], [], [], [], []
    for i in range(reps):
        y, sp, sc = draw(rng, n, sigma_p, sigma_c)
        rc, rp = spearmanr(y, sc).statistic, spearmanr(y, sp).statistic
        naive.append(rc >= rp - TOLERANCE)
        e = compare_spearman_paired(y, sp, sc, tolerance=TOLERANCE, method="zou")
        zou.append(e.verdict == "promote")
        cov_z.append(e.low <= true_delta <= e.high)
        if i < boot_reps:
            b = compare_spearman_paired(y, sp, sc, tolerance=TOLERANCE, method="bootstrap", n_boot=N_BOOT, seed=i)
            boot.append(b.verdict == "promote")
            cov_b.append(b.low <= true_delta <= b.high)
    m = lambda v: float(np.mean(v))  # noqa: E731
    return {"naive": m(naive), "zou": m(zou), "boot": m(boot), "cov_zou": m(cov_z), "cov_boot": m(cov_b)}


def _ratio(a: float, b: float) -> str:
    return "-" if b == 0 else f"{a / b:.2f}x"


def main(reps: int = 1000, boot_reps: int = 150) -> None:
    t0 = time.perf_counter()
    sigma_p = sigma_for(PROD_RHO)
    scenarios = {"equal (Δ=0)": sigma_p, "worse (Δ=-0.04)": sigma_for(PROD_RHO - 2 * TOLERANCE)}
    rho_p = true_rho(sigma_p)
    print(f"production Spearman {rho_p:.4f} (sigma {sigma_p:.3f}); tolerance {TOLERANCE}; "
          f"{reps} test sets per cell (bootstrap: {boot_reps}, {N_BOOT} resamples)")
    print(f"{'scenario':<17}{'n':>6} | {'naive':>6} {'Zou':>6} {'boot':>6} | {'Zou/naive':>9} {'boot/naive':>10}"
          f" | {'cover Zou':>9} {'cover boot':>10}")
    for name, sigma_c in scenarios.items():
        true_delta = true_rho(sigma_c) - rho_p
        what = "false reject" if "equal" in name else "false accept"
        for k, n in enumerate(SIZES):
            r = cell(n, sigma_p, sigma_c, true_delta, reps, boot_reps, seed=1000 * k + (0 if "equal" in name else 7))
            rate = (lambda v: 1 - v) if "equal" in name else (lambda v: v)
            a, z, b = rate(r["naive"]), rate(r["zou"]), rate(r["boot"])
            print(f"{name:<17}{n:>6} | {a:6.3f} {z:6.3f} {b:6.3f} | {_ratio(z, a):>9} {_ratio(b, a):>10}"
                  f" | {r['cov_zou']:9.3f} {r['cov_boot']:10.3f}   ({what}; true Δ {true_delta:+.4f})")
    print(f"{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
