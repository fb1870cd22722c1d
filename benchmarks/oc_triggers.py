"""Operating characteristics of the retraining triggers, by simulation (issue 10, section 4/5).

For each trigger: with no change, P(the trigger fires at least once over 30 daily monitor runs),
and under a real effect, P(fire) on one run and over 30 runs. Every decision is taken by the
project's own evaluators (`evaluate_performance`, `evaluate_concept_drift`,
`evaluate_data_drift` on a real `DriftReport` built by `drift.profile.compare`) with the default
trigger settings of `triggers.yaml`; only the data are simulated.

Daily runs are simulated honestly, as a rolling stream: every replicate draws a stream of days
(rows per day fixed, labels Bernoulli(prevalence)); each daily run looks back over the windows
the trigger reads, so consecutive runs share rows exactly as they do in production.

- Performance: binormal scores with true AUC 0.72 (healthy; threshold 0.70) or 0.65, prevalence
  0.15, about 200 or 1,000 labels a week (29 or 143 a day), three weekly windows, runs on days
  21..50. Each window's AUC and DeLong SE come from `triggers.auc_window`.
- Concept drift: the registered test AUC 0.78 is measured (DeLong) on a 5,000-row test set
  (drawn per replicate); live windows are the last 30 days at 7 labels a day (210 labels), with
  true AUC 0.78 (no change) or 0.70 (a drop of 0.08).
- Data drift: 30 continuous features, a 20,000-row reference profile with decile bins, daily
  24-hour windows of 500 or 5,000 rows; no drift, or a 0.5 SD shift in 3 features. The
  reference bins are the reference sample's deciles; the true probability mass between the
  deciles of a continuous feature is Dirichlet-distributed (uniform spacings), so a window
  counted into them is a multinomial draw of those masses (shifted through the normal CDF for
  drifted features). This is exact in distribution and avoids sorting 600,000 values per
  replicate; each run then goes through the real `compare` / `DriftReport` / evaluator.

Cost: every replicate is 30 daily runs (30 x 3 windows' DeLong for performance, 30 x 30 feature
comparisons for drift), so to stay near two minutes on two cores the label-based rows use
reps // 4 replicates and the drift rows reps // 20 (each at least 1; shown in the `reps` column).
With the default reps=2000: 500 and 100, Monte Carlo SE about 0.01-0.02 at the probabilities seen.

Usage: `.venv/bin/python benchmarks/oc_triggers.py [reps] [seed]` prints the table.
"""
from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import norm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from retrainer import triggers as T  # noqa: E402
from retrainer.drift import DriftReport, FeatureProfile, compare  # noqa: E402
from retrainer.settings import DriftSettings  # noqa: E402

PREVALENCE = 0.15
RUNS = 30


def _trigger(entry: dict):
    return T.parse_triggers({"retraining_triggers": [entry]}).retraining_triggers[0]


PERF = _trigger({"name": "performance", "type": "performance_degradation", "priority": 2})
CONCEPT = _trigger({"name": "concept", "type": "concept_drift", "priority": 3})
DRIFT = _trigger({"name": "data-drift", "type": "data_drift", "priority": 1})


def _scores(rng: np.random.Generator, y: np.ndarray, auc: float) -> np.ndarray:
    """Binormal scores with the given AUC: negatives N(0, 1), positives N(d, 1), d = sqrt(2) Phi^-1(AUC)."""
    d = math.sqrt(2.0) * norm.ppf(auc)
    return rng.normal(size=len(y)) + d * y


def _day_stream(rng, days: int, per_day: int, auc: float) -> tuple[list[np.ndarray], list[np.ndarray]]:
    ys = [(rng.random(per_day) < PREVALENCE).astype(int) for _ in range(days)]
    return ys, [_scores(rng, y, auc) for y in ys]


def _window(ys, ss, a: int, b: int) -> T.WindowAUC:
    return T.auc_window(np.concatenate(ys[a:b]), np.concatenate(ss[a:b]), a, b)


def simulate_performance(rng, reps: int, per_week: int, auc: float) -> dict:
    per_day = int(round(per_week / 7))
    k, w = PERF.consecutive_windows, 7
    first = k * w  # the first run needs k full windows
    days = first + RUNS - 1
    fired_any = fired_runs = small_runs = 0
    for _ in range(reps):
        ys, ss = _day_stream(rng, days, per_day, auc)
        by_end = {e: _window(ys, ss, e - w, e) for e in range(w, days + 1)}  # each window computed once
        hit = False
        for r in range(first, days + 1):
            ev = T.evaluate_performance(PERF, [by_end[r - (k - i - 1) * w] for i in range(k)])
            fired_runs += ev.fired
            small_runs += ev.too_small
            hit |= ev.fired
        fired_any += hit
    return {"trigger": "performance", "labels_per_window": per_day * 7, "true": f"AUC {auc:.2f}",
            "reps": reps, "p_fire_per_run": fired_runs / (reps * RUNS),
            "p_fire_30_runs": fired_any / reps, "p_too_small": small_runs / (reps * RUNS)}


def simulate_concept(rng, reps: int, per_day: int, ref_auc: float, live_auc: float, test_rows: int = 5000) -> dict:
    span = 30
    days = span + RUNS - 1
    fired_any = fired_runs = small_runs = 0
    for _ in range(reps):
        yt = (rng.random(test_rows) < PREVALENCE).astype(int)
        registered = T.auc_window(yt, _scores(rng, yt, ref_auc), 0, 1)
        ys, ss = _day_stream(rng, days, per_day, live_auc)
        hit = False
        for r in range(span, days + 1):
            ev = T.evaluate_concept_drift(CONCEPT, _window(ys, ss, r - span, r), registered.auc, "sim",
                                          reference_se=registered.se)
            fired_runs += ev.fired
            small_runs += ev.too_small
            hit |= ev.fired
        fired_any += hit
    return {"trigger": "concept_drift", "labels_per_window": per_day * span,
            "true": f"drop {ref_auc - live_auc:.2f}", "reps": reps, "p_fire_per_run": fired_runs / (reps * RUNS),
            "p_fire_30_runs": fired_any / reps, "p_too_small": small_runs / (reps * RUNS)}


def simulate_drift(rng, reps: int, rows: int, shifted: int = 0, shift_sd: float = 0.5,
                   features: int = 30, n_ref: int = 20_000, n_bins: int = 10) -> dict:
    settings = DriftSettings(psi_threshold=DRIFT.psi_threshold, min_window=DRIFT.min_window,
                             features_required=DRIFT.min_features)
    per_bin = n_ref // n_bins
    ref_counts = tuple([per_bin] * n_bins + [0])  # the sample deciles split the reference evenly; no missing
    fired_any = fired_runs = 0
    for _ in range(reps):
        masses = rng.dirichlet(np.full(n_bins, float(per_bin)), size=features)  # true mass between deciles
        edges = norm.ppf(np.clip(np.cumsum(masses, axis=1)[:, :-1], 1e-12, 1 - 1e-12))
        profiles = [FeatureProfile(f"f{j:02d}", "numeric", ref_counts, edges=tuple(edges[j]))
                    for j in range(features)]
        probs = masses.copy()
        for j in range(shifted):  # drifted features: the window's values move by shift_sd
            cdf = norm.cdf(edges[j] - shift_sd)
            probs[j] = np.diff(np.concatenate([[0.0], cdf, [1.0]]))
        hit = False
        for _run in range(RUNS):
            results = []
            for j, f in enumerate(profiles):
                cur = np.append(rng.multinomial(rows, probs[j]), 0)
                results.append(compare(f, cur, settings, features))
            report = DriftReport(results, threshold=settings.psi_threshold, min_window=settings.min_window,
                                 features_required=settings.features_required, alpha=settings.alpha)
            ev = T.evaluate_data_drift(DRIFT, report)
            fired_runs += ev.fired
            hit |= ev.fired
        fired_any += hit
    true = "no drift" if not shifted else f"{shift_sd:g} SD shift in {shifted} features"
    return {"trigger": "data_drift", "labels_per_window": rows, "true": true, "reps": reps,
            "p_fire_per_run": fired_runs / (reps * RUNS), "p_fire_30_runs": fired_any / reps, "p_too_small": 0.0}


def run(reps: int = 2000, seed: int = 0) -> list[dict]:
    """Table rows (dicts): trigger, labels_per_window (rows for data drift), true state, reps,
    P(fire) per run, P(fire at least once over 30 daily runs), share of runs too small to tell."""
    rng = np.random.default_rng(seed)
    auc_reps, drift_reps = max(1, reps // 4), max(1, reps // 20)
    rows = []
    for per_week in (200, 1000):
        for auc in (0.72, 0.65):
            rows.append(simulate_performance(rng, auc_reps, per_week, auc))
    for live in (0.78, 0.70):
        rows.append(simulate_concept(rng, auc_reps, 7, 0.78, live))
    for n in (500, 5000):
        for shifted in (0, 3):
            rows.append(simulate_drift(rng, drift_reps, n, shifted))
    return rows


def format_rows(rows: list[dict]) -> str:
    head = f"{'trigger':<14} {'n/window':>8}  {'true state':<28} {'reps':>5} {'P(fire)/run':>11} " \
           f"{'P(fire) 30 runs':>15} {'too small':>9}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['trigger']:<14} {r['labels_per_window']:>8}  {r['true']:<28} {r['reps']:>5} "
                     f"{r['p_fire_per_run']:>11.3f} {r['p_fire_30_runs']:>15.3f} {r['p_too_small']:>9.2f}")
    return "\n".join(lines)


if __name__ == "__main__":
    reps = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    seed = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    t0 = time.perf_counter()
    table = run(reps, seed)
    print(format_rows(table))
    print(f"\nreps={reps} (label triggers {max(1, reps // 4)}, data drift {max(1, reps // 20)} replicates), "
          f"{time.perf_counter() - t0:.0f} s")
