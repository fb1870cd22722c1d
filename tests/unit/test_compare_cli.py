"""`retrainer compare SCORES` on real Parquet files: the decision, the JSON, and one clear line for
each kind of bad file."""
import json
import subprocess

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

from retrainer.evidence import compare_paired, compare_unpaired
from tests.helpers import BIN, run_cli

pytestmark = pytest.mark.unit

MU = 2 * norm.ppf(0.78)


def _paired(n, sigma_c=1.0, seed=0):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.15).astype(int)
    latent = MU * y + rng.normal(size=n)
    return pd.DataFrame({"label": y, "score_production": latent + rng.normal(size=n),
                         "score_candidate": latent + sigma_c * rng.normal(size=n)})


def _unpaired(n, sigma_c=1.0, seed=0):
    p = _paired(n, sigma_c, seed)
    half = n // 2
    return pd.DataFrame({"variant": ["production"] * half + ["candidate"] * (n - half), "label": p["label"],
                         "score": np.r_[p["score_production"][:half], p["score_candidate"][half:]]})


def _write(tmp_path, df, name="scores.parquet"):
    path = tmp_path / name
    df.to_parquet(path)
    return path


def _console(*args):
    r = subprocess.run([str(BIN / "retrainer"), "compare", *map(str, args)], capture_output=True, text=True,
                       timeout=120)
    return r.returncode, r.stdout, r.stderr


def test_paired_decisions_through_the_console_script(tmp_path):
    good = _write(tmp_path, _paired(6000, sigma_c=0.6), "good.parquet")     # candidate better
    bad = _write(tmp_path, _paired(6000, sigma_c=3.0), "bad.parquet")       # candidate far worse
    code, out, err = _console(good)
    assert code == 0 and err == ""
    assert "method: paired DeLong" in out and "decision: promote" in out
    assert "both arms (same rows): 6,000 rows" in out and "positives" in out and "negatives" in out
    assert "ΔAUC (candidate - production): +" in out and "95% interval" in out
    code, out, _ = _console(bad)
    assert code == 0 and "decision: rollback" in out


def test_json_is_the_evidence_of_the_rule_and_the_tolerance_boundary(tmp_path):
    df = _paired(3000, sigma_c=1.1, seed=3)
    path = _write(tmp_path, df)
    ref = compare_paired(df["label"], df["score_production"], df["score_candidate"], tolerance=0.02)
    code, out, _ = _console(path, "--json")
    assert code == 0
    d = json.loads(out)
    assert d["verdict"] == ref.verdict and d["method"] == "paired DeLong"
    assert d["low"] == pytest.approx(ref.low) and d["high"] == pytest.approx(ref.high)
    assert d["pos_candidate"] == int(df["label"].sum()) and d["n_production"] == 3000
    # the lower bound just above / just below -tolerance
    low = ref.low
    assert low < 0
    code, out = run_cli("compare", str(path), "--json", "--tolerance", f"{-low + 1e-4:.6f}")
    assert code == 0 and json.loads(out)["verdict"] == "promote"
    code, out = run_cli("compare", str(path), "--json", "--tolerance", f"{-low - 1e-4:.6f}")
    verdict = json.loads(out)["verdict"]
    assert code == 0 and verdict == ("inconclusive" if ref.high > low + 1e-4 else "rollback")


def test_level_changes_the_interval(tmp_path):
    path = _write(tmp_path, _paired(3000, seed=4))
    wide = json.loads(run_cli("compare", str(path), "--json")[1])
    narrow = json.loads(run_cli("compare", str(path), "--json", "--level", "0.5")[1])
    assert narrow["high"] - narrow["low"] < wide["high"] - wide["low"] and narrow["level"] == 0.5


def test_inconclusive_with_too_few_positives(tmp_path):
    path = _write(tmp_path, _paired(400, seed=5))  # about 60 positives
    code, out = run_cli("compare", str(path))
    assert code == 0 and "decision: inconclusive" in out and "too few labels" in out


def test_unpaired_form(tmp_path):
    df = _unpaired(8000, sigma_c=3.0, seed=6)
    path = _write(tmp_path, df)
    code, out = run_cli("compare", str(path))
    assert code == 0 and "method: unpaired DeLong" in out and "decision: rollback" in out
    assert "candidate: 4,000 rows" in out and "production: 4,000 rows" in out
    c, p = df[df.variant == "candidate"], df[df.variant == "production"]
    ref = compare_unpaired(c.label, c.score, p.label, p.score, tolerance=0.02)
    d = json.loads(run_cli("compare", str(path), "--json")[1])
    assert d["delta"] == pytest.approx(ref.delta) and d["paired"] is False


@pytest.mark.parametrize("form", ["paired", "unpaired"])
def test_repeated_pseudonyms_use_the_clustered_bootstrap(tmp_path, form):
    df = _paired(1500, seed=7) if form == "paired" else _unpaired(1500, seed=7)
    df["pseudonym"] = [f"p{i // 3}" for i in range(len(df))]  # three rows per patient
    code, out = run_cli("compare", str(_write(tmp_path, df)))
    assert code == 0 and f"method: clustered bootstrap ({form})" in out


def _error(code, out):
    lines = out.strip().splitlines()
    assert code == 2, out
    assert len(lines) == 1 and lines[0].startswith("error: "), out
    assert "Traceback" not in out
    return lines[0]


def test_bad_files_through_the_console_script(tmp_path):
    junk = tmp_path / "junk.parquet"
    junk.write_text("not parquet")
    code, out, err = _console(junk)
    assert out == "" and "not a readable Parquet file" in _error(code, err)
    code, out, err = _console(tmp_path / "missing.parquet")
    assert "no such file" in _error(code, err)


def _bad(kind):
    df = _paired(600, seed=8)
    if kind == "missing":
        return df.drop(columns="score_candidate"), "missing column score_candidate"
    if kind == "neither":
        return df.rename(columns={"score_production": "a", "score_candidate": "b"}), "missing columns: expected"
    if kind == "one_class":
        return df.assign(label=0), "one class only"
    if kind == "nan":
        return df.assign(score_candidate=df.score_candidate.where(df.index != 5)), "1 scores are NaN"
    if kind == "labels":
        return df.assign(label=df.label.where(df.index != 3, 2)), "labels must be 0 or 1"
    if kind == "text_scores":
        return df.assign(score_production=df.score_production.astype(str).where(df.index != 2, "high")), \
            "column score_production is not numeric"
    u = _unpaired(600, seed=8)
    if kind == "variant":
        return u.assign(variant=u.variant.where(u.index != 1, "shadow")), "unknown variant names 'shadow'"
    if kind == "one_arm":
        return u[u.variant == "production"], "no rows for candidate"
    if kind == "arm_one_class":
        return u.assign(label=np.where(u.variant == "candidate", 1, u.label)), "candidate rows: one class only"
    if kind == "empty":
        return u.iloc[:0], "no rows"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["missing", "neither", "one_class", "nan", "labels", "text_scores", "variant",
                                  "one_arm", "arm_one_class", "empty"])
def test_bad_files_give_one_clear_line(tmp_path, kind):
    df, message = _bad(kind)
    line = _error(*run_cli("compare", str(_write(tmp_path, df))))
    assert message in line


@pytest.mark.parametrize("opts,message", [(["--tolerance", "-0.1"], "--tolerance"), (["--level", "1.5"], "--level")])
def test_bad_options(tmp_path, opts, message):
    line = _error(*run_cli("compare", str(_write(tmp_path, _paired(600))), *opts))
    assert message in line
