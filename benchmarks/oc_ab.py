"""Operating characteristics of the A/B test (`retrainer.rollout.ab.evaluate`), by simulation.

An A/B experiment at a 50/50 split is looked at K = 5 times, at 1/5, 2/5, ... of its final size
(rows per arm); it ends at the first look that decides. Each look calls the project's own
`evaluate` on a prediction-store-like frame, under two rules:

* **Bonferroni** (the A/B test's rule): `looks=5`, each look tests at α/5 = 0.01;
* **naive** (the baseline): every look tests at α = 0.05 as if it were the only one.

With equal arms any winner is false: the false-winner rate over the 5 looks should stay at or
below α = 0.05 under Bonferroni; the naive rule's inflation is printed as a ratio against it.
With a true difference, the power is the chance the right arm wins by the last look.

Data (one model of each metric):

* ``auc``: `oc_canary.draw` (production AUC 0.78, prevalence 15%), each arm its own admissions
  (unpaired DeLong); the candidate's AUC is 0.78 + Δ;
* ``error_rate``: Bernoulli errors, production 2.0%;
* ``latency_ms``: log-normal latencies (median 40 ms, σ 0.5), the candidate's scaled by 1 + Δ.

    .venv/bin/python benchmarks/oc_ab.py [reps]
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from oc_canary import draw  # noqa: E402

from retrainer.rollout.ab import evaluate  # noqa: E402

ALPHA = 0.05
LOOKS = 5
# metric -> (final rows per arm, true difference for the power rows; the candidate is better)
GRID = {
    "auc": ((2000, 8000, 20000), 0.04),
    "error_rate": ((2000, 8000, 20000), -0.004),
    "latency_ms": ((500, 2000, 8000), -0.03),
}
BASE_ERROR = 0.02


def arm(rng: np.random.Generator, metric: str, n: int, delta: float, candidate: bool) -> dict:
    if metric == "auc":
        y, sp, sc = draw(rng, n, delta)
        return {"score": sc if candidate else sp, "readmitted_30d": y, "error": np.zeros(n, bool)}
    if metric == "error_rate":
        rate = BASE_ERROR + (delta if candidate else 0.0)
        return {"error": rng.random(n) < rate}
    lat = 40.0 * np.exp(0.5 * rng.standard_normal(n)) * ((1 + delta) if candidate else 1.0)
    return {"latency_ms": lat, "error": np.zeros(n, bool)}


def experiment(rng: np.random.Generator, metric: str, n: int, delta: float) -> dict[str, str | None]:
    """One experiment: the winner (or None) under each rule, stopping at the first deciding look."""
    c, p = arm(rng, metric, n, delta, True), arm(rng, metric, n, delta, False)
    out: dict[str, str | None] = {"bonferroni": None, "naive": None}
    for k in range(1, LOOKS + 1):
        m = n * k // LOOKS
        window = pd.concat([pd.DataFrame({col: v[:m] for col, v in c.items()}).assign(variant="green"),
                            pd.DataFrame({col: v[:m] for col, v in p.items()}).assign(variant="blue")],
                           ignore_index=True)
        for rule, looks in (("bonferroni", LOOKS), ("naive", 1)):
            if out[rule] is None:
                r = evaluate(window, metric, alpha=ALPHA, looks=looks)
                out[rule] = r.winner
        if out["bonferroni"] is not None and out["naive"] is not None:
            break
    return out


def run(reps: int = 250, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for metric, (sizes, effect) in GRID.items():
        for n in sizes:
            for delta in (0.0, effect):
                res = [experiment(rng, metric, n, delta) for _ in range(reps)]
                for rule in ("bonferroni", "naive"):
                    wins = [r[rule] for r in res]
                    rows.append({"metric": metric, "rows_per_arm": n, "true_difference": delta, "rule": rule,
                                 "looks": LOOKS, "per_look_alpha": ALPHA / LOOKS if rule == "bonferroni" else ALPHA,
                                 "p_candidate_wins": wins.count("candidate") / reps,
                                 "p_production_wins": wins.count("production") / reps,
                                 "p_any_winner": sum(w is not None for w in wins) / reps, "reps": reps})
    return rows


def main() -> None:
    reps = int(sys.argv[1]) if len(sys.argv) > 1 else 250
    t0 = time.perf_counter()
    rows = run(reps)
    print(f"A/B test, {LOOKS} looks, alpha {ALPHA}, {reps} experiments per cell\n")
    print("| metric | rows/arm | true diff | rule | α per look | P(candidate wins) | P(production wins) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['metric']} | {r['rows_per_arm']:,} | {r['true_difference']:+g} | {r['rule']} | "
              f"{r['per_look_alpha']:.3g} | {r['p_candidate_wins']:.3f} | {r['p_production_wins']:.3f} |")
    print("\nfalse-winner rate with equal arms over 5 looks (target <= 0.05), naive / Bonferroni:")
    for metric, (sizes, _) in GRID.items():
        for n in sizes:
            cell = {r["rule"]: r["p_any_winner"] for r in rows
                    if r["metric"] == metric and r["rows_per_arm"] == n and r["true_difference"] == 0.0}
            ratio = cell["naive"] / cell["bonferroni"] if cell["bonferroni"] else float("inf")
            print(f"  {metric:<11} {n:>6,} rows/arm: Bonferroni {cell['bonferroni']:.3f}, naive {cell['naive']:.3f}, "
                  f"ratio {ratio:.1f}x")
    print(f"\n{time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
