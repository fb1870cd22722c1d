"""PSI arithmetic and the bin counting it rests on (the project's PSI definition).

Binning
- Numeric features: edges are the reference quantiles at k/n_bins, k = 1..n_bins-1
  (`numpy.quantile`, default linear method, missing values ignored), duplicate edges merged.
  Bins are right-closed, (-inf, e1], (e1, e2], ..., (ek, +inf): a value equal to an edge falls
  in the lower bin, as `numpy.searchsorted(edges, x, side="left")` assigns it.
- Categorical features (string, category, bool or object dtype): one bin per reference category
  (compared as `str(value)`, so True -> "True") plus one bin for categories never seen in the
  reference.
- Missing values (NaN/None/NA) form their own, last, bin on both sides.

Sparse bins are merged before PSI is computed (`merge_sparse_bins`): a bin whose expected count
in the current window, m * r_k (m current rows, r_k the bin's reference share), is below 5 is
merged into a neighbour. Numeric: the bins are taken in order (intervals, then missing) and a
sparse bin joins the next one (the last sparse run joins the previous group). Categorical: sparse
categories, the "unseen" bin and a sparse missing bin are pooled into one "other" bin; while
"other" is still sparse the next smallest category joins it. Without this, a bin that holds a
handful of expected rows swings PSI (and its chi-square approximation) on noise alone.

PSI of the merged bins: shares are count / rows; a share of 0 becomes 1e-4 (nothing is
renormalised) and PSI = sum((cur - ref) * ln(cur / ref)).

Noise: under no drift PSI * n*m/(n+m) is approximately chi-square(B-1), B the number of merged
bins, so
- the p-value of a PSI is chi2.sf(PSI * n*m/(n+m), B-1) (`psi_p_value`);
- the value sampling noise alone exceeds with probability 1 - q is
  chi2.ppf(q, B-1) * (n+m)/(n*m) (`noise_floor`);
- the family-wise floor over F features compared is the same with q = 1 - alpha/F
  (`noise_floor(B, n, m, 1 - alpha / F)`): with no drift, the chance that ANY of the F features
  exceeds its floor is at most about alpha (Bonferroni).

Speed (1M rows x 50 float64 columns, this 2-core machine; benchmarks/bench_psi.py): a numeric
column is counted with one vectorised compare-and-count pass per edge (cumulative counts
#(x <= e_k), then differences), about ten times faster than `searchsorted` + `bincount`.

Columns reach these helpers as pandas Series or pyarrow (Chunked)Arrays; both look the same
from here on.
"""
from __future__ import annotations

from typing import Any, Iterable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from scipy.spatial.distance import jensenshannon
from scipy.special import chdtrc, chdtri

FLOOR = 1e-4
MIN_EXPECTED = 5.0  # a bin expected to hold fewer current rows than this is merged into a neighbour
_CHUNK = 1 << 20  # rows per counting pass over an in-memory column (bounds the temporaries)


def psi_from_counts(ref_counts, cur_counts) -> float:
    """PSI of two count vectors over the same bins: shares, 0 -> 1e-4, no renormalisation."""
    ref = np.asarray(ref_counts, dtype=np.float64)
    cur = np.asarray(cur_counts, dtype=np.float64)
    r = floored(ref / ref.sum())
    c = floored(cur / cur.sum())
    return float(np.sum((c - r) * np.log(c / r)))


def floored(shares: np.ndarray) -> np.ndarray:
    """`shares` with every 0 replaced by FLOOR (the others untouched: no renormalisation)."""
    return np.where(shares == 0, FLOOR, shares)


def noise_floor(bins_used: int, n_ref: int, n_cur: int, quantile: float) -> float:
    """PSI that sampling noise alone exceeds with probability 1 - quantile, for samples of
    n_ref and n_cur rows spread over `bins_used` bins (0.0 for a single bin)."""
    if bins_used <= 1:
        return 0.0  # one bin: both distributions are that bin, PSI is exactly 0
    # chdtri(df, p) is chi2.ppf(1 - p, df) (scipy.special: ~40x faster than scipy.stats)
    return float(chdtri(bins_used - 1, 1.0 - quantile) * (n_ref + n_cur) / (n_ref * n_cur))


def psi_p_value(psi: float, bins_used: int, n_ref: int, n_cur: int) -> float:
    """P(chi-square(B-1) >= PSI * n*m/(n+m)): how often sampling noise alone gives a PSI this
    large (1.0 for a single bin)."""
    if bins_used <= 1:
        return 1.0
    return float(chdtrc(bins_used - 1, psi * n_ref * n_cur / (n_ref + n_cur)))


def merge_sparse_bins(ref_counts, cur_counts, ordered: bool, n_categories: int = 0,
                      min_expected: float = MIN_EXPECTED) -> list[list[int]]:
    """Groups of bin indices such that every group's expected current count m * r_k (m the
    current rows, r_k the group's reference share) is at least `min_expected` (unless only one
    group is left).

    ordered=True (numeric layout: intervals, then missing): bins are taken in order, a sparse
    run joins the next bin and a sparse tail joins the previous group. ordered=False
    (categorical layout: `n_categories` categories, then unseen, then missing): the sparse
    categories, unseen and a sparse missing bin are pooled into one "other" group (listed last);
    while it is still sparse, the smallest remaining category joins it.
    """
    ref = np.asarray(ref_counts, dtype=np.float64)
    m = float(np.asarray(cur_counts, dtype=np.float64).sum())
    n = float(ref.sum())
    expected = m * ref / n if n > 0 else np.zeros_like(ref)
    k = len(ref)
    if ordered:
        groups: list[list[int]] = []
        run: list[int] = []
        acc = 0.0
        for i in range(k):
            run.append(i)
            acc += expected[i]
            if acc >= min_expected:
                groups.append(run)
                run, acc = [], 0.0
        if run:
            if groups:
                groups[-1].extend(run)
            else:
                groups.append(run)
        return groups
    cats = list(range(n_categories)) + [k - 1]  # the missing bin is treated as a category
    keep = [i for i in cats if expected[i] >= min_expected]
    other = [i for i in range(k) if i not in keep]
    acc = float(sum(expected[i] for i in other))
    keep.sort(key=lambda i: (expected[i], i))
    while other and acc < min_expected and keep:
        i = keep.pop(0)
        other.append(i)
        acc += expected[i]
    keep.sort()
    groups = [[i] for i in keep]
    if other:
        groups.append(sorted(other))
    return groups


def merged_counts(counts, groups: list[list[int]]) -> np.ndarray:
    """`counts` summed over each group of `merge_sparse_bins`."""
    c = np.asarray(counts, dtype=np.float64)
    return np.array([c[g].sum() for g in groups], dtype=np.float64)


def quantile_edges(values: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Merged reference quantiles of the non-missing `values` at `q`. numpy's linear
    interpolation between two equal infinite values gives NaN; there the (equal) lower order
    statistic is used instead."""
    if not len(values):
        return np.empty(0)
    with np.errstate(invalid="ignore"):
        edges = np.quantile(values, q)
    if np.isnan(edges).any():
        edges = np.where(np.isnan(edges), np.quantile(values, q, method="lower"), edges)
    return np.unique(edges)


def as_float(col) -> np.ndarray:
    """A contiguous float64 array with NaN for missing values, from a Series or Arrow array."""
    if isinstance(col, pd.Series):
        dt = col.dtype
        if dt == np.float64:
            arr = col.to_numpy()
        elif isinstance(dt, np.dtype):
            arr = col.to_numpy().astype(np.float64)
        else:  # nullable extension dtypes (Int64, Float64, pyarrow-backed)
            arr = col.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        if pa.types.is_null(col.type):
            return np.full(len(col), np.nan)
        arr = col.to_numpy(zero_copy_only=False)
        if arr.dtype != np.float64:
            arr = arr.astype(np.float64)
    return np.ascontiguousarray(arr)


def category_counts(col) -> tuple[dict[str, int], int]:
    """(non-missing value -> count, missing count) of a Series or Arrow array, values compared
    as str(value)."""
    if isinstance(col, pd.Series):
        missing = int(col.isna().sum())
        vc = col.value_counts(dropna=True, sort=False)
        return _merge_str_keys(zip(vc.index.tolist(), vc.to_numpy().tolist())), missing
    if pa.types.is_null(col.type):
        return {}, len(col)
    if pa.types.is_dictionary(col.type):
        col = col.cast(col.type.value_type)
    vc = pc.value_counts(col)
    keys = vc.field("values").to_pylist()
    counts = vc.field("counts").to_pylist()
    return _merge_str_keys((k, c) for k, c in zip(keys, counts) if k is not None), col.null_count


def _merge_str_keys(pairs: Iterable[tuple[Any, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for k, c in pairs:
        if c:
            key = str(k)
            out[key] = out.get(key, 0) + int(c)
    return out


def numeric_counts(x: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts of float64 `x` over len(edges)+1 right-closed interval bins, then the missing bin.

    Cumulative counts #(x <= e_k) in one vectorised pass per edge, then differences: with
    strictly increasing edges this is exactly searchsorted(edges, x, "left") + bincount, about
    ten times faster. NaN compares false everywhere and is counted on its own.
    """
    k = len(edges)
    out = np.zeros(k + 2, dtype=np.int64)
    cum = np.zeros(k + 2, dtype=np.int64)
    for start in range(0, len(x), _CHUNK):
        xc = x[start:start + _CHUNK]
        n_nan = int(np.count_nonzero(np.isnan(xc)))
        for i in range(k):
            cum[i + 1] = np.count_nonzero(xc <= edges[i])
        cum[k + 1] = len(xc) - n_nan
        out[:k + 1] += np.diff(cum)
        out[k + 1] += n_nan
    return out


def js_distance(ref_counts: np.ndarray, cur_counts: np.ndarray) -> float:
    """Jensen-Shannon distance (scipy, base 2) of two count vectors over the same bins, unfloored."""
    return float(jensenshannon(ref_counts / ref_counts.sum(), cur_counts / cur_counts.sum(), base=2))


def binned_ks(ref_counts: np.ndarray, cur_counts: np.ndarray) -> float | None:
    """Largest gap between the two cumulative distributions at the reference edges, over the
    interval bins (the last, missing, bin left out); None when either side has no such row.
    The raw reference values are not kept, so this is a lower bound of the exact two-sample KS."""
    ref, cur = ref_counts[:-1], cur_counts[:-1]
    if not (ref.sum() > 0 and cur.sum() > 0):
        return None
    return float(np.max(np.abs(np.cumsum(ref) / ref.sum() - np.cumsum(cur) / cur.sum())))
