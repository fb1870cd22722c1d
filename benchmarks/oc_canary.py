"""Operating characteristics of the canary's AUC rule, old and new, by simulation.

The model of the data (production AUC 0.78, prevalence 15%): each admission has an outcome y and
two scores, production = a_p * y + e_p and candidate = a_c * y + e_c, with e_p, e_c standard
normal and correlated (rho 0.6: the two models read the same patient), so AUC = Phi(a / sqrt(2)).
A true ΔAUC is set by choosing a_c.

* **old rule** (before issue 10): the routed arms are scored unpaired (10% of traffic to the
  candidate: `n_labels` production and `n_labels / 10` candidate labels); promote iff
  AUC_c >= AUC_p - 0.02 on the point estimates.
* **new rule**: `retrainer.evidence.compare_paired` on `n_labels` rows both models scored (the
  registration month, pooled with matured shadow rows): promote iff the lower bound of the 95%
  interval of Δ > -0.02, roll back iff the upper bound < -0.02, else inconclusive.

`run()` returns table rows; `plot(rows, path)` draws P(promote) against the true ΔAUC.
"""
from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import norm, rankdata

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from retrainer.evidence import compare_paired  # noqa: E402

PROD_AUC = 0.78
PREVALENCE = 0.15
RHO = 0.6
TOLERANCE = 0.02
DELTAS = (-0.05, -0.04, -0.03, -0.02, -0.01, 0.0, 0.01, 0.02)
OLD_SIZES = ((2000, 200), (20000, 2000))  # (production labels, candidate labels): 10% canary
NEW_SIZES = (2000, 5000)  # paired labelled rows


def _shift(auc: float) -> float:
    return math.sqrt(2) * norm.ppf(auc)


def draw(rng: np.random.Generator, n: int, delta: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    y = (rng.random(n) < PREVALENCE).astype(int)
    z1, z2 = rng.standard_normal(n), rng.standard_normal(n)
    e_p = z1
    e_c = RHO * z1 + math.sqrt(1 - RHO ** 2) * z2
    return y, _shift(PROD_AUC) * y + e_p, _shift(PROD_AUC + delta) * y + e_c


def _auc(y: np.ndarray, s: np.ndarray) -> float:
    m = int(y.sum())
    n = len(y) - m
    r = rankdata(s)
    return float((r[y == 1].sum() - m * (m + 1) / 2) / (m * n))


def old_rule(rng, n_prod: int, n_cand: int, delta: float) -> str:
    yp, sp, _ = draw(rng, n_prod, delta)
    yc, _, sc = draw(rng, n_cand, delta)
    return "promote" if _auc(yc, sc) >= _auc(yp, sp) - TOLERANCE - 1e-9 else "rollback"


def new_rule(rng, n: int, delta: float) -> str:
    y, sp, sc = draw(rng, n, delta)
    return compare_paired(y, sp, sc, tolerance=TOLERANCE).verdict


def run(reps: int = 1000, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for delta in DELTAS:
        for n_prod, n_cand in OLD_SIZES:
            out = [old_rule(rng, n_prod, n_cand, delta) for _ in range(reps)]
            rows.append({"rule": "old: unpaired point estimate", "labels": f"{n_prod:,}/{n_cand:,}",
                         "true_delta": delta, "p_promote": out.count("promote") / reps,
                         "p_rollback": out.count("rollback") / reps, "p_inconclusive": 0.0, "reps": reps})
        for n in NEW_SIZES:
            out = [new_rule(rng, n, delta) for _ in range(reps)]
            rows.append({"rule": "new: paired non-inferiority", "labels": f"{n:,} paired",
                         "true_delta": delta, "p_promote": out.count("promote") / reps,
                         "p_rollback": out.count("rollback") / reps,
                         "p_inconclusive": out.count("inconclusive") / reps, "reps": reps})
    return rows


def plot(rows: list[dict], path: Path) -> Path:
    import matplotlib  # noqa: PLC0415 - heavy: matplotlib, only when plotting

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415 - heavy: matplotlib

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    series: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for r in rows:
        series.setdefault((r["rule"], r["labels"]), []).append((r["true_delta"], r["p_promote"]))
    for (rule, labels), pts in series.items():
        pts.sort()
        style = "--" if rule.startswith("old") else "-"
        ax.plot([p[0] for p in pts], [p[1] for p in pts], style, marker="o", ms=3,
                label=f"{rule} ({labels} labels)")
    ax.axvline(-TOLERANCE, color="grey", lw=0.8)
    ax.axhline(0.05, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("true ΔAUC (candidate - production)")
    ax.set_ylabel("P(promote)")
    ax.set_title("Canary rule: P(promote) against the true ΔAUC (tolerance 0.02)")
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def main() -> None:
    reps = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    t0 = time.perf_counter()
    rows = run(reps)
    for r in rows:
        print(f"{r['rule']:<30} {r['labels']:<14} Δ {r['true_delta']:+.2f}  P(promote) {r['p_promote']:.3f}  "
              f"P(rollback) {r['p_rollback']:.3f}  P(inconclusive) {r['p_inconclusive']:.3f}")
    print(f"{time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
