"""PSI drift statistics: correctness against a direct reading of the spec, streaming, profiles."""
from __future__ import annotations

import json
import math
from collections import Counter

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from scipy.stats import chi2

from retrainer.datagen import GenerationSpec, generate
from retrainer.dataio import load_batch
from retrainer.drift import (
    FLOOR,
    DriftReport,
    FeatureProfile,
    ReferenceProfile,
    compare,
    drift_report,
    fit_reference_profile,
    format_report,
    psi_from_counts,
)
from retrainer.errors import DataError
from retrainer.settings import DriftSettings, Settings

SMALL = DriftSettings(min_window=1)


# ---- the spec, written as plainly as possible ----------------------------------------------


def _naive_numeric_keys(ref, n_bins=10):
    ref = np.asarray(ref, dtype=float)
    q = [k / n_bins for k in range(1, n_bins)]
    edges = sorted(set(np.quantile(ref[~np.isnan(ref)], q).tolist()))

    def bin_of(v):
        if v is None or math.isnan(v):
            return "missing"
        for i, e in enumerate(edges):
            if v <= e:  # right-closed: a value equal to an edge is in the lower bin
                return i
        return len(edges)

    return list(range(len(edges) + 1)) + ["missing"], bin_of


def _naive_categorical_keys(ref):
    seen = sorted({str(v) for v in ref if not pd.isna(v)})

    def bin_of(v):
        if pd.isna(v):
            return "missing"
        return str(v) if str(v) in seen else "unseen"

    return seen + ["unseen", "missing"], bin_of


def _naive_groups(keys, ref_counts, m, categorical):
    """Sparse-bin merging as the spec says it: expected current count m * r_k below 5 merges.
    Numeric: in order, a sparse run joins the next bin, a sparse tail the previous group.
    Categorical: sparse categories, "unseen" and a sparse "missing" pool into "other"; while
    "other" is sparse the smallest remaining category (first in order on ties) joins it."""
    n = sum(ref_counts[k] for k in keys)
    exp = {k: m * ref_counts[k] / n for k in keys}
    if not categorical:
        groups, run = [], []
        for k in keys:
            run.append(k)
            if sum(exp[j] for j in run) >= 5:
                groups.append(run)
                run = []
        if run:
            if groups:
                groups[-1] += run
            else:
                groups.append(run)
        return groups
    keep = [k for k in keys if k != "unseen" and exp[k] >= 5]
    other = [k for k in keys if k not in keep]
    while sum(exp[k] for k in other) < 5 and keep:
        smallest = min(keep, key=lambda k: (exp[k], keys.index(k)))
        keep.remove(smallest)
        other.append(smallest)
    return [[k] for k in keep] + ([other] if other else [])


def naive_psi(ref, cur, categorical=False, n_bins=10):
    keys, bin_of = _naive_categorical_keys(ref) if categorical else _naive_numeric_keys(ref, n_bins)
    ref_counts, cur_counts = Counter(bin_of(v) for v in ref), Counter(bin_of(v) for v in cur)
    groups = _naive_groups(keys, ref_counts, len(cur), categorical)

    def shares(counts, total):
        out = []
        for g in groups:
            c = sum(counts[k] for k in g)
            out.append(c / total if c else 1e-4)
        return out

    r, c = shares(ref_counts, len(ref)), shares(cur_counts, len(cur))
    return sum((ci - ri) * math.log(ci / ri) for ri, ci in zip(r, c))


def _psi_of(ref, cur, dtype=None, n_bins=10):
    ref_df = pd.DataFrame({"x": pd.Series(ref, dtype=dtype)})
    cur_df = pd.DataFrame({"x": pd.Series(cur, dtype=dtype)})
    return ReferenceProfile.fit(ref_df, n_bins=n_bins).score(cur_df, SMALL)["x"]


# ---- binning and PSI arithmetic -------------------------------------------------------------


def test_value_equal_to_an_edge_falls_in_the_lower_bin():
    ref = np.arange(0.0, 101.0)
    prof = ReferenceProfile.fit(pd.DataFrame({"x": ref}))
    edges = np.array(prof["x"].edges)
    assert np.array_equal(edges, np.quantile(ref, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]))
    counts = prof["x"].count(pd.Series(edges))
    assert counts.tolist() == [1] * 9 + [0, 0]  # edge k lands in bin k (lower), none on top
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.choice(edges, 500), rng.uniform(-10, 110, 500), [-np.inf, np.inf]])
    expected = np.bincount(np.searchsorted(edges, x, side="left"), minlength=len(edges) + 1)
    assert prof["x"].count(pd.Series(x)).tolist() == expected.tolist() + [0]
    cur = np.concatenate([edges, edges, [50.5, 200.0]])
    assert _psi_of(ref, cur).psi == pytest.approx(naive_psi(ref, cur), rel=1e-12)


def test_duplicate_edges_are_merged():
    ref = np.array([0.0] * 60 + [1.0] * 20 + list(range(2, 22)), dtype=float)
    prof = ReferenceProfile.fit(pd.DataFrame({"x": ref}))
    edges = prof["x"].edges
    assert list(edges) == sorted(set(edges)) and len(edges) < 9
    assert edges[0] == 0.0 and 1.0 in edges
    assert len(prof["x"].counts) == len(edges) + 2
    cur = np.array([0.0] * 30 + [1.0] * 40 + [5.0] * 20 + [30.0] * 10)
    res = _psi_of(ref, cur)
    assert res.psi == pytest.approx(naive_psi(ref, cur), rel=1e-12)


def test_unseen_categories_get_one_bin():
    ref = ["a"] * 50 + ["b"] * 30 + ["c"] * 20
    cur = ["a"] * 40 + ["b"] * 30 + ["d"] * 20 + ["e"] * 10
    res = _psi_of(ref, cur, dtype="string")
    assert res.kind == "categorical"
    assert res.labels == ("a", "b", "c", "<unseen>", "<missing>")
    assert res.cur_counts == (40, 30, 0, 30, 0)
    assert res.psi == pytest.approx(naive_psi(ref, cur, categorical=True), rel=1e-12)


def test_missing_values_form_their_own_bin_on_both_sides():
    rng = np.random.default_rng(2)
    ref = rng.normal(size=400)
    ref[rng.random(400) < 0.1] = np.nan
    cur = rng.normal(0.3, 1, 300)
    cur[rng.random(300) < 0.3] = np.nan
    res = _psi_of(ref, cur)
    assert res.ref_counts[-1] == np.isnan(ref).sum() and res.cur_counts[-1] == np.isnan(cur).sum()
    assert res.psi == pytest.approx(naive_psi(ref, cur), rel=1e-12)

    ref_c = ["x", None, "y", "y", None, "x", "z"] * 20
    cur_c = ["x", None, None, None, "y", "w"] * 20
    res_c = _psi_of(ref_c, cur_c, dtype="string")
    assert res_c.ref_counts[-1] == 40 and res_c.cur_counts[-1] == 60
    assert res_c.psi == pytest.approx(naive_psi(ref_c, cur_c, categorical=True), rel=1e-12)


def test_empty_bin_share_is_floored_without_renormalising():
    r, c = np.array([0.5, 0.5]), np.array([1.0, FLOOR])
    expected = float(np.sum((c - r) * np.log(c / r)))
    assert psi_from_counts([5, 5], [10, 0]) == pytest.approx(expected, rel=1e-15)
    renormalised = c / c.sum()
    unfloored = float(np.sum((renormalised - r) * np.log(renormalised / r)))
    assert psi_from_counts([5, 5], [10, 0]) != pytest.approx(unfloored, rel=1e-9)
    # both empty: both floored, contributes nothing
    assert psi_from_counts([5, 5, 0], [5, 5, 0]) == 0.0


def test_bool_and_integer_features():
    ref = pd.DataFrame({"flag": [True, False, True, True] * 50, "n": np.arange(200) % 7})
    cur = pd.DataFrame({"flag": [True, False, False, False] * 50, "n": pd.Series(np.arange(200) % 5, dtype="Int64")})
    rep = ReferenceProfile.fit(ref).score(cur, SMALL)
    assert rep["flag"].kind == "categorical" and rep["flag"].labels[:2] == ("False", "True")
    assert rep["flag"].psi == pytest.approx(naive_psi(ref["flag"], cur["flag"], categorical=True), rel=1e-12)
    assert rep["n"].kind == "numeric"
    assert rep["n"].psi == pytest.approx(naive_psi(ref["n"].to_numpy(float), cur["n"].to_numpy(float)), rel=1e-12)


# ---- statuses and noise floor ---------------------------------------------------------------


def _normal_frames(n_ref, n_cur, shift=0.0, seed=0):
    rng = np.random.default_rng(seed)
    ref = pd.DataFrame({"a": rng.normal(size=n_ref), "b": rng.exponential(size=n_ref)})
    cur = pd.DataFrame({"a": rng.normal(shift, 1, n_cur), "b": rng.exponential(size=n_cur)})
    return ref, cur


def test_identical_distributions_are_ok():
    ref, cur = _normal_frames(20_000, 5_000)
    prof = ReferenceProfile.fit(ref)
    assert all(r.psi == 0.0 for r in prof.score(ref))  # the very same data
    rep = prof.score(cur)
    assert [r.status for r in rep] == ["ok", "ok"]
    assert all(r.psi < 3 * r.noise_floor for r in rep)
    assert rep.drifted() == [] and not rep.drift_detected


def test_shifted_distribution_drifts():
    ref, cur = _normal_frames(20_000, 5_000, shift=1.0)
    rep = ReferenceProfile.fit(ref).score(cur)
    assert rep["a"].psi > 0.2 and rep["a"].status == "drift"
    assert rep["b"].status == "ok"
    assert [r.feature for r in rep.drifted()] == ["a"] and rep.drift_detected
    assert rep.top(1)[0].feature == "a"
    assert rep.drifted(threshold=10.0) == []


def test_tiny_window_is_too_small_to_tell():
    ref, cur = _normal_frames(20_000, 100, shift=2.0)
    rep = ReferenceProfile.fit(ref).score(cur, DriftSettings(min_window=500))
    assert rep["a"].psi > 0.2
    assert {r.status for r in rep} == {"too_small"}
    assert rep.drifted() == [] and not rep.drift_detected
    assert "too small" in format_report(rep)
    assert [r.feature for r in rep.drifted(min_window=50)] == ["a"]


def test_noise_floor_matches_chi_square_formula():
    ref, cur = _normal_frames(3_000, 700)
    ref.loc[:29, "a"] = np.nan  # missing bin used on the reference side only (expected 7 rows: kept)
    for q in (0.95, 0.99):
        rep = ReferenceProfile.fit(ref).score(cur, DriftSettings(noise_quantile=q))
        r = rep["a"]
        assert r.bins == 11  # 10 quantile bins + the missing bin
        assert r.n_ref == 3_000 and r.n_cur == 700
        assert r.noise_floor == pytest.approx(chi2.ppf(q, 10) * (3_000 + 700) / (3_000 * 700), rel=1e-12)
        assert rep["b"].bins == 10  # no missing anywhere: bin merged into the last interval
    # 10 missing reference rows: expected 700 * 10/3000 = 2.3 < 5 current rows, merged away
    ref.loc[10:29, "a"] = 0.0
    assert ReferenceProfile.fit(ref).score(cur)["a"].bins == 10
    # a single-valued feature uses one bin: PSI is 0 and so is the floor
    one = pd.DataFrame({"c": np.ones(600)})
    r = ReferenceProfile.fit(one).score(one)["c"]
    assert (r.bins, r.psi, r.noise_floor, r.status) == (1, 0.0, 0.0, "ok")


def test_extra_stats():
    ref, cur = _normal_frames(5_000, 5_000, shift=0.5)
    ref["k"] = pd.Series(np.where(np.arange(5_000) % 3, "u", "v"), dtype="string")
    cur["k"] = ref["k"]
    rep = ReferenceProfile.fit(ref).score(cur, DriftSettings(extra_stats=True))
    assert 0.1 < rep["a"].ks < 0.3 and 0 < rep["a"].js < 1
    assert rep["k"].ks is None and rep["k"].js == pytest.approx(0.0, abs=1e-9)
    assert "ks" in json.loads(rep.to_json())[0]
    assert ReferenceProfile.fit(ref).score(cur)["a"].ks is None


# ---- streaming, serialisation, sources -------------------------------------------------------


def _mixed_frame(n, seed, shift=0.0):
    rng = np.random.default_rng(seed)
    x = rng.normal(shift, 1, n)
    x[rng.random(n) < 0.05] = np.nan
    return pd.DataFrame({
        "x": x,
        "i": rng.poisson(3 + shift, n).astype(np.int64),
        "c": pd.Series(rng.choice(["p", "q", "r", "s"], n, p=[0.4, 0.3, 0.2, 0.1]), dtype="string"),
        "flag": rng.random(n) < 0.3,
        "score": rng.random(n) ** (1 + shift),
        "readmitted_30d": rng.integers(0, 2, n),
    })


def test_streaming_parquet_equals_in_memory(tmp_path):
    ref, cur = _mixed_frame(4_000, 1), _mixed_frame(5_000, 2, shift=0.3)
    cur.loc[cur.index[:7], "c"] = pd.NA
    cur.loc[cur.index[7:20], "c"] = "unseen-value"
    prof = ReferenceProfile.fit(ref)
    assert [f.name for f in prof.features] == ["x", "i", "c", "flag", "score"]  # label excluded
    assert prof["score"].role == "score"
    path = tmp_path / "cur.parquet"
    cur.to_parquet(path, row_group_size=700)
    assert pq.ParquetFile(path).num_row_groups == 8
    folder = tmp_path / "window"
    folder.mkdir()
    cur.iloc[:1234].to_parquet(folder / "part-0.parquet", row_group_size=500)
    cur.iloc[1234:].to_parquet(folder / "part-1.parquet", row_group_size=999)
    expected = prof.score(cur).to_records(detail=True)
    assert prof.score(path).to_records(detail=True) == expected
    assert prof.score(folder).to_records(detail=True) == expected
    assert prof.score(str(path)).to_records(detail=True) == expected
    # the reference itself can be read from Parquet too
    ref_path = tmp_path / "ref.parquet"
    ref.to_parquet(ref_path, row_group_size=1000)
    assert ReferenceProfile.fit(ref_path).to_dict() == prof.to_dict()


def test_profile_round_trips(tmp_path):
    ref, cur = _mixed_frame(3_000, 3), _mixed_frame(3_000, 4, shift=0.5)
    ref.loc[0, "x"] = np.inf
    prof = ReferenceProfile.fit(ref, meta={"model": "readmission-30d", "version": "1.2.0"})
    d = json.loads(json.dumps(prof.to_dict(), allow_nan=False))
    again = ReferenceProfile.from_dict(d)
    assert again == prof
    saved = ReferenceProfile.load(prof.save(tmp_path / "profiles" / "v1.json"))
    assert saved == prof and saved.meta["version"] == "1.2.0"
    assert saved.score(cur).to_records(detail=True) == prof.score(cur).to_records(detail=True)
    assert prof.n_rows == 3_000
    # an explicit feature list, and infinite edges survive JSON
    inf_prof = ReferenceProfile.fit(pd.DataFrame({"v": [-np.inf] * 50 + [1.0] * 50}), features=["v"])
    assert inf_prof["v"].edges == (-np.inf, 1.0)
    assert ReferenceProfile.from_dict(json.loads(json.dumps(inf_prof.to_dict(), allow_nan=False))) == inf_prof


def test_score_column_only_when_present_in_both():
    ref, cur = _mixed_frame(2_000, 5), _mixed_frame(2_000, 6)
    prof = ReferenceProfile.fit(ref)
    assert "score" in [r.feature for r in prof.score(cur)]
    rep = prof.score(cur.drop(columns=["score"]))
    assert "score" not in [r.feature for r in rep] and len(rep) == 4
    no_score = ReferenceProfile.fit(ref, score_column=None)
    assert "score" in [f.name for f in no_score.features] and no_score["score"].role == "feature"


def test_report_outputs(tmp_path):
    ref, cur = _mixed_frame(4_000, 7), _mixed_frame(4_000, 8, shift=1.0)
    prof = ReferenceProfile.fit(ref)
    path = prof.save(tmp_path / "profile.json")
    cur_path = tmp_path / "cur.parquet"
    cur.to_parquet(cur_path)
    settings = DriftSettings(min_window=100)
    rep = drift_report(path, cur_path, settings)
    assert isinstance(rep, DriftReport)
    assert rep.to_records() == drift_report(ref, cur, settings).to_records()
    assert rep.to_records() == drift_report(prof, cur, settings).to_records()
    records = json.loads(rep.to_json())
    assert len(records) == 5
    for rec in records:
        assert {"feature", "psi", "bins", "n_ref", "n_cur", "noise_floor", "status"} <= set(rec)
    md = rep.to_markdown()
    assert "| feature | PSI |" in md and "**drift**" in md and "score (score)" in md
    text = format_report(rep)
    assert text.splitlines()[0] == rep.summary() and "x" in text
    assert text.index(rep.top(1)[0].feature) < text.index(rep.top(5)[-1].feature)


# ---- synthetic readmission data --------------------------------------------------------------


@pytest.fixture(scope="module")
def months(tmp_path_factory):
    out = tmp_path_factory.mktemp("months")
    return generate(out, GenerationSpec(months=3, rows_per_month=5000, drift_from=3))


def test_datagen_drift_is_flagged(months):
    prof = ReferenceProfile.fit(months[0])
    assert "patient_id" not in [f.name for f in prof.features]
    assert "admission_ts" not in [f.name for f in prof.features]
    steady = prof.score(months[1])
    assert steady.drifted() == [] and steady.drifted(threshold=0.05) == []
    assert all(r.psi < 4 * r.noise_floor for r in steady)

    drifted = prof.score(months[2])
    assert drifted.drift_detected
    assert {"charlson_index", "n_comorbidities"} <= {r.feature for r in drifted.drifted()}
    # the shifted features, at a lower threshold: age, creatinine, admission type, length of stay
    flagged = {r.feature for r in drifted.drifted(threshold=0.05)}
    assert {"age", "creatinine_mg_dl", "admission_type", "charlson_index", "length_of_stay_days"} <= flagged
    # features the generator does not shift stay quiet
    for name in ("sex", "sodium_mmol_l", "bmi", "primary_diagnosis_group", "followup_scheduled"):
        assert drifted[name].status == "ok" and drifted[name].psi < 0.02, name


# ---- bad inputs ------------------------------------------------------------------------------


def test_bad_inputs_raise_data_error(tmp_path):
    ref = _mixed_frame(1_000, 9)
    prof = ReferenceProfile.fit(ref)
    (tmp_path / "empty").mkdir()
    (tmp_path / "junk.parquet").write_text("not parquet")
    cases = [
        lambda: prof.score(tmp_path / "nope.parquet"),
        lambda: prof.score(tmp_path / "empty"),
        lambda: prof.score(tmp_path / "junk.parquet"),
        lambda: prof.score(ref.drop(columns=["x", "c"])),
        lambda: prof.score(ref.assign(x="text")),
        lambda: prof.score(ref.iloc[:0]),
        lambda: ReferenceProfile.load(tmp_path / "missing.json"),
        lambda: ReferenceProfile.from_dict({"format": "something-else"}),
        lambda: ReferenceProfile.fit(ref, features=["x", "nope"]),
        lambda: ReferenceProfile.fit(ref.iloc[:0]),
        lambda: drift_report(tmp_path / "nope", ref),
        lambda: prof.score(42),
    ]
    for case in cases:
        with pytest.raises(DataError) as info:
            case()
        assert "\n" not in str(info.value) and str(info.value)
    with pytest.raises(DataError, match="lacks 2 feature"):
        prof.score(ref.drop(columns=["x", "c"]))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataError, match="cannot read drift profile"):
        ReferenceProfile.load(tmp_path / "bad.json")
    part = tmp_path / "parts"
    part.mkdir()
    ref.to_parquet(part / "a.parquet")
    ref.drop(columns=["i"]).to_parquet(part / "b.parquet")
    with pytest.raises(DataError, match="lacks 1 feature"):
        prof.score(part)


# ---- sparse-bin merging, p-value and the family-wise floor ------------------------------------


def _numeric_profile(counts, edges):
    return FeatureProfile("x", "numeric", tuple(counts), edges=tuple(edges))


def test_bins_with_expected_count_just_below_5_are_merged_and_just_above_kept():
    # reference: 1% of rows in the first bin, 99% in the second, no missing
    prof = _numeric_profile([100, 9_900, 0], [0.0])
    keep = compare(prof, np.array([5, 495, 0]), SMALL)  # m = 500: expected 5.0 in bin 0 -> kept
    merged = compare(prof, np.array([5, 494, 0]), SMALL)  # m = 499: expected 4.99 -> merged
    assert keep.merged == ((0,), (1, 2)) and keep.bins == 2  # the empty missing bin joins the last
    assert merged.merged == ((0, 1, 2),) and merged.bins == 1 and merged.psi == 0.0
    # categorical: a category expected below 5 pools with "unseen" into "other"
    cat = FeatureProfile("c", "categorical", (4_000, 4_000, 1_990, 10, 0, 0), categories=("a", "b", "c", "d"))
    r = compare(cat, np.array([200, 200, 95, 0, 5, 0]), SMALL)  # m = 500: d expects 0.5, c 99.5
    assert r.merged == ((0,), (1,), (2, 3, 4, 5))
    ref_m = np.array([4_000, 4_000, 2_000]) / 10_000
    cur_m = np.array([200, 200, 100]) / 500
    assert r.psi == pytest.approx(float(np.sum((cur_m - ref_m) * np.log(cur_m / ref_m))), rel=1e-12)


def test_p_value_and_family_wise_floor_follow_the_chi_square_formula():
    ref, cur = _normal_frames(3_000, 700, shift=0.1)
    rep = ReferenceProfile.fit(ref).score(cur, DriftSettings(alpha=0.05))
    r = rep["a"]
    k = r.n_ref * r.n_cur / (r.n_ref + r.n_cur)
    assert r.family == 2 and r.bins == 10
    assert r.p_value == pytest.approx(chi2.sf(r.psi * k, r.bins - 1), rel=1e-9)
    assert r.family_floor == pytest.approx(chi2.ppf(1 - 0.05 / 2, r.bins - 1) / k, rel=1e-9)
    assert r.above_family_floor == (r.psi > r.family_floor)
    d = r.to_dict()
    assert {"p_value", "family_floor", "above_family_floor"} <= set(d)
    assert "family-wise floor" in rep.to_markdown() and "p-value" in format_report(rep)


def test_psi_just_above_and_just_below_the_family_wise_floor():
    """With a low psi_threshold the family-wise floor decides: PSI a hair above it drifts, below not."""
    prof = _numeric_profile([5_000, 5_000, 0], [0.0])
    cur = np.array([560, 440, 0])  # PSI ~0.0144 on 1,000 rows
    base = compare(prof, cur, DriftSettings(psi_threshold=1e-6, min_window=1), family=30)
    floor, psi = base.family_floor, base.psi
    assert floor == pytest.approx(chi2.ppf(1 - 0.05 / 30, 1) * (10_000 + 1_000) / (10_000 * 1_000), rel=1e-12)
    # pick alphas that put the floor just below / just above this PSI
    k = 10_000 * 1_000 / 11_000
    a_below = 30 * chi2.sf(psi * k * 0.999, 1)  # floor = 0.999 * psi
    a_above = 30 * chi2.sf(psi * k * 1.001, 1)  # floor = 1.001 * psi
    hit = compare(prof, cur, DriftSettings(psi_threshold=1e-6, min_window=1, alpha=a_below), family=30)
    miss = compare(prof, cur, DriftSettings(psi_threshold=1e-6, min_window=1, alpha=a_above), family=30)
    assert hit.family_floor < psi < miss.family_floor
    assert hit.status == "drift" and hit.above_family_floor
    assert miss.status == "ok" and not miss.above_family_floor
    # and psi_threshold still applies when it is the larger bar
    assert compare(prof, cur, DriftSettings(psi_threshold=0.2, min_window=1, alpha=a_below), family=30).status == "ok"


def test_reference_score_profile_is_fitted_on_validation_rows(tmp_path):

    class Model:  # a transparent "model": the score is the row's age, so the rows used are visible
        def predict(self, frame):
            return frame["age"].to_numpy(dtype=float) / 100

    df = load_batch(generate(tmp_path, GenerationSpec(months=1, rows_per_month=5_000, seed=2))[0])
    train, validation = df.iloc[:4_000], df.iloc[4_000:5_000]
    prof = fit_reference_profile(Model(), train, validation, Settings())
    score = prof["score"]
    assert score.role == "score" and score.n == 1_000  # validation rows only
    assert prof["age"].n == 5_000  # features: training and validation rows
    expected = np.quantile(validation["age"].to_numpy(dtype=float) / 100, np.arange(1, 10) / 10)
    assert np.allclose(score.edges, np.unique(expected))
    assert prof.meta["score_profiled_on"] == "validation"
    with pytest.raises(DataError, match="validation"):
        fit_reference_profile(Model(), train, validation.iloc[:0], Settings())
