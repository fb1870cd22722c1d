"""Operating characteristics of the registration gate, old and new, by simulation.

Both models are scored on the same test month. The model of the data (production AUC 0.78,
prevalence 15%) is binormal with a **shared latent**: each admission has an outcome y and a latent
risk L = MU * y + z (z standard normal), which both models read; each model adds its own noise,

    score_k = L + sigma_k * e_k,    AUC_k = Phi(MU / sqrt(2 (1 + sigma_k^2))),

so a model's signal strength (its noise sigma_k) is chosen to give the wanted AUC, and a true
ΔAUC is set by the candidate's sigma. The two scores are correlated through L (0.5 at equal AUCs),
as two models of the same patients are.

* **old rule** (before issue 10): eligible iff AUC_c >= AUC_p - 0.02 on the point estimates of
  the shared test set (no interval);
* **new rule**: the real gate, `retrainer.evaluation.promotion_gate` with its default settings
  (non-inferiority) on `retrainer.evidence.compare_paired`: eligible iff AUC_c >= 0.70 and the
  lower bound of the 95% paired DeLong interval of Δ > -0.02 (at least 100 positives and
  negatives).

Both rules judge the same simulated test sets. `run()` returns table rows with the realised mean
AUCs; `python benchmarks/oc_gate.py [reps]` prints the table (1,000 reps: about half a minute).
"""
from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import norm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from retrainer.evaluation import promotion_gate  # noqa: E402
from retrainer.evidence import compare_paired  # noqa: E402
from retrainer.settings import GateSettings  # noqa: E402

PROD_AUC = 0.78
PREVALENCE = 0.15
MAX_AUC_DROP = 0.02
DELTAS = (-0.05, -0.03, -0.02, -0.01, 0.0, 0.02)
SIZES = (1000, 5000)
# Class separation of the shared latent: production's own noise is then 1 (sigma_p = 1).
MU = 2 * norm.ppf(PROD_AUC)


def sigma_for(auc: float) -> float:
    """The model noise that gives `auc` on the shared latent."""
    s2 = (MU / (math.sqrt(2) * norm.ppf(auc))) ** 2 - 1
    if s2 < 0:
        raise ValueError(f"AUC {auc} is above what the shared latent allows ({norm.cdf(MU / math.sqrt(2)):.3f})")
    return math.sqrt(s2)


def draw(rng: np.random.Generator, n: int, delta: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels, production scores and candidate scores of one simulated test set."""
    y = (rng.random(n) < PREVALENCE).astype(int)
    latent = MU * y + rng.standard_normal(n)
    s_p = latent + sigma_for(PROD_AUC) * rng.standard_normal(n)
    s_c = latent + sigma_for(PROD_AUC + delta) * rng.standard_normal(n)
    return y, s_p, s_c


def old_rule(auc_c: float, auc_p: float) -> bool:
    return auc_c >= auc_p - MAX_AUC_DROP - 1e-12


def one_test_set(rng: np.random.Generator, n: int, delta: float, gate: GateSettings) -> tuple[bool, bool, float, float]:
    """(old eligible, new eligible, AUC_c, AUC_p) on one simulated test set."""
    y, s_p, s_c = draw(rng, n, delta)
    ev = compare_paired(y, s_p, s_c, tolerance=gate.max_auc_drop, level=gate.level, source="simulated test month",
                        min_positives=gate.min_positives, min_negatives=gate.min_negatives)
    decision = promotion_gate({"auc": ev.auc_candidate}, {"auc": ev.auc_production}, gate, ev)
    return old_rule(ev.auc_candidate, ev.auc_production), decision.eligible, ev.auc_candidate, ev.auc_production


def run(reps: int = 1000, seed: int = 0) -> list[dict]:
    """P(eligible) of the old and the new rule per test-set size and true ΔAUC."""
    rng = np.random.default_rng(seed)
    gate = GateSettings()
    rows = []
    for n in SIZES:
        for delta in DELTAS:
            sims = [one_test_set(rng, n, delta, gate) for _ in range(reps)]
            old, new, auc_c, auc_p = (np.array(col, dtype=float) for col in zip(*sims))
            rows.append({"test_rows": n, "true_delta": delta, "auc_production": round(float(auc_p.mean()), 4),
                         "auc_candidate": round(float(auc_c.mean()), 4),
                         "realised_delta": round(float((auc_c - auc_p).mean()), 4),
                         "p_eligible_old": float(old.mean()), "p_eligible_new": float(new.mean()), "reps": reps})
    return rows


def table(rows: list[dict]) -> str:
    """The rows as a Markdown table."""
    out = ["| test rows | true ΔAUC | mean AUC prod / cand (realised Δ) | P(eligible) old point rule | "
           "P(eligible) paired gate |", "|---:|---:|---|---:|---:|"]
    for r in rows:
        out.append(f"| {r['test_rows']:,} | {r['true_delta']:+.2f} | {r['auc_production']:.3f} / "
                   f"{r['auc_candidate']:.3f} ({r['realised_delta']:+.3f}) | {r['p_eligible_old']:.3f} | "
                   f"{r['p_eligible_new']:.3f} |")
    return "\n".join(out)


def main() -> None:
    reps = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    t0 = time.perf_counter()
    rows = run(reps)
    print(table(rows))
    worst = max(r["p_eligible_new"] for r in rows if r["true_delta"] <= -0.03)
    print(f"\n{reps} reps per cell; a candidate 0.03 or more worse passes the paired gate at most "
          f"{worst:.1%} of the time (target < 5%); {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
