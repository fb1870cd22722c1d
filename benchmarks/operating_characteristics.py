"""Operating characteristics of every automatic decision, by simulation (issue 10, section 5).

Each rule is simulated over a grid of true effects and sample sizes by calling the project's own
decision code, and the probabilities of each outcome are printed as markdown tables:

* the canary's AUC rule, old and new (`oc_canary`), with a plot of P(promote) against the true
  ΔAUC at two label counts;
* the registration gate, old and new (`oc_gate`);
* the performance, concept-drift and data-drift triggers over 30 daily runs (`oc_triggers`);
* the error-rate guardrail over a 72-hour canary's checks (`oc_guardrails`).

    .venv/bin/python benchmarks/operating_characteristics.py [--reps N] [--plot docs/img/oc-canary.png]

The README's "Operating characteristics" section holds the tables and the plot of a run with the
default repetitions. Nothing here is timed.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import oc_canary  # noqa: E402

SECTIONS = [("Canary AUC rule", "oc_canary"), ("Registration gate", "oc_gate"),
            ("Retraining triggers (no change and real change)", "oc_triggers"),
            ("Error-rate guardrail", "oc_guardrails")]


def markdown(rows: list[dict]) -> str:
    if not rows:
        return "(no rows)"
    cols = list(rows[0])
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        out.append("| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in r.values()) + " |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=None, help="repetitions per cell (default: each module's)")
    ap.add_argument("--plot", default="docs/img/oc-canary.png")
    ap.add_argument("--only", default=None, help="one module, e.g. oc_gate")
    a = ap.parse_args()
    for title, name in SECTIONS:
        if a.only and a.only != name:
            continue
        module = __import__(name)
        t0 = time.perf_counter()
        rows = module.run(**({"reps": a.reps} if a.reps else {}))
        print(f"\n### {title}\n\n{markdown(rows)}\n\n({name}: {time.perf_counter() - t0:.0f} s)")
        if name == "oc_canary" and a.plot:
            print(f"plot: {oc_canary.plot(rows, Path(a.plot))}")


if __name__ == "__main__":
    main()
