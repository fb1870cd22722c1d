"""What the model-spec layer costs the readmission retrain at 1M rows.

    .venv/bin/python benchmarks/bench_spec_overhead.py [--rows 1000000] [--repeats 3] [--baseline 6f50339]

Baseline (named "pre-spec"): the same retrain at the commit before model specs existed (default
6f50339, checked out into a temporary git worktree), where the readmission contract was Python
constants. Both sides run `benchmarks/bench_retrain.py`'s `plain()` - the retrain flow's domain
steps in the flow's order, without Prefect - of their own tree, in a fresh process each (warmed
on a small batch first, so imports are not counted), on the same generated data, each into a fresh
home, alternating which side goes first. Printed: per-stage medians of both sides, and the ratio
spec/pre-spec of the total. Target: the spec layer adds under 2%.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RUNNER = r"""
import json, runpy, sys
from pathlib import Path
tree, warm, data, home = sys.argv[1:5]
sys.path.insert(0, tree)
ns = runpy.run_path(f"{tree}/benchmarks/bench_retrain.py", run_name="bench")
ns["plain"](Path(warm), Path(home + "-warm"))
wall, stages = ns["plain"](Path(data), Path(home))
import retrainer
print("RESULT " + json.dumps({"wall": wall, "stages": stages, "package": retrainer.__path__[0]}))
"""


def run_side(tree: Path, warm: Path, data: Path, home: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree), "PREFECT_LOGGING_LEVEL": "WARNING"}
    env.pop("RETRAINER_MODEL_NAME", None)
    out = subprocess.run([sys.executable, "-c", RUNNER, str(tree), str(warm), str(data), str(home)],
                         cwd=tree, env=env, capture_output=True, text=True, timeout=3600)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if out.returncode != 0 or line is None:
        raise SystemExit(f"{tree.name}: failed: {out.stderr.strip().splitlines()[-1:] or out.stdout[-300:]}")
    result = json.loads(line[len("RESULT "):])
    if not Path(result["package"]).resolve().is_relative_to(tree.resolve()):
        raise SystemExit(f"{tree.name}: ran {result['package']}, not its own tree's code")
    return result


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--months", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--baseline", default="6f50339", help="the pre-spec commit")
    a = ap.parse_args()

    sys.path.insert(0, str(REPO))
    from retrainer.datagen import GenerationSpec, generate

    root = Path(tempfile.mkdtemp(prefix="bench-spec-"))
    base = root / "pre-spec"
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-q", str(base), a.baseline], check=True)
    try:
        generate(root / "warm", GenerationSpec(months=a.months, rows_per_month=700, seed=1))
        generate(root / "data", GenerationSpec(months=a.months, rows_per_month=a.rows // a.months, seed=5))
        sides = {"spec": REPO, "pre-spec": base}
        runs: dict[str, list[dict]] = {k: [] for k in sides}
        for i in range(a.repeats):
            order = list(sides) if i % 2 == 0 else list(reversed(sides))
            for name in order:
                r = run_side(sides[name], root / "warm", root / "data", root / f"home-{name}-{i}")
                runs[name].append(r)
                shutil.rmtree(root / f"home-{name}-{i}", ignore_errors=True)
                shutil.rmtree(root / f"home-{name}-{i}-warm", ignore_errors=True)
            sw, bw = runs["spec"][-1]["wall"], runs["pre-spec"][-1]["wall"]
            print(f"repeat {i + 1} ({order[0]} first): spec {sw:.2f} s, pre-spec {bw:.2f} s, ratio {sw / bw:.3f}")
        med = statistics.median
        print(f"\n== readmission retrain, {a.rows:,} rows, {a.repeats} repeats (medians) ==")
        print(f"{'stage':<19}{'pre-spec s':>12}{'spec s':>10}{'ratio':>8}")
        for stage in runs["spec"][0]["stages"]:
            b = med([r["stages"][stage] for r in runs["pre-spec"]])
            s = med([r["stages"][stage] for r in runs["spec"]])
            print(f"{stage:<19}{b:>12.2f}{s:>10.2f}{(s / b if b else float('nan')):>8.3f}")
        b, s = med([r["wall"] for r in runs["pre-spec"]]), med([r["wall"] for r in runs["spec"]])
        ratios = [x["wall"] / y["wall"] for x, y in zip(runs["spec"], runs["pre-spec"])]
        print(f"{'total (wall)':<19}{b:>12.2f}{s:>10.2f}{s / b:>8.3f}")
        print(f"spec layer: {s / b - 1:+.1%} of the pre-spec retrain (median of per-repeat ratios {med(ratios):.3f}, "
              f"range {min(ratios):.3f}-{max(ratios):.3f}); target under +2%")
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(base)], check=False)
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
