"""Fast scoring for serving: JSON records straight to a numpy matrix, and a compiled forest.

`LoadedModel.predict` goes through pandas and two ColumnTransformers (the pipeline's own and the
one HistGradientBoostingClassifier keeps internally for its categorical features): ~8 ms for one
row. A serving endpoint scores one row per request, so `FastScorer`:

1. converts records (dicts keyed by the contract's column names, identifiers allowed and ignored)
   to a float64 matrix in the pipeline's column order, with categoricals mapped to their codes
   through the *fitted* encoder's fixed category lists (unknown or missing -> NaN, exactly as the
   pipeline's `OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=nan)` does),
   booleans to 0/1 and numerics to float (None -> NaN);
2. scores that matrix with the fitted HistGradientBoostingClassifier's trees. For small batches
   (<= `SMALL_BATCH` rows) the trees are "compiled" once into flat numpy arrays and evaluated for
   all trees at once (every node's decision in one vectorised step, then each tree walked from
   its root through the successor array), which costs ~50 microseconds for one row instead of
   ~1 ms for the per-tree Cython calls. Larger batches call the classifier's own
   `predict_proba` on the matrix (after the same object-dtype conversion the pipeline performs),
   whose per-call overhead (~3 ms) is then small per row.

The compiled path mirrors sklearn's `_predict_one_from_raw_data` (NaN follows the node's missing
direction; a categorical value goes left if in the node's left bitset, right if a known category,
otherwise it is treated as missing; numeric `x <= threshold` goes left). `from_model` checks the
compiled path against `pipeline.predict_proba` on probe rows (all categories, NaNs, an unseen
category) and falls back to the classifier path if anything differs, so a change in scikit-learn's
private tree layout degrades speed, never correctness.

Request records are checked before they get here, at the endpoint's boundary
(`serving.parsing.validate_records`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from . import schema as S

SMALL_BATCH = 16


# ---------------------------------------------------------------------------------------------
# Compiled forest

@dataclass(frozen=True)
class _Forest:
    """All trees' nodes in flat arrays (global node ids); leaves point to themselves."""
    feature: np.ndarray      # int64: column of the request matrix the node tests
    threshold: np.ndarray    # float64
    missing_left: np.ndarray  # bool
    left: np.ndarray         # int64
    right: np.ndarray        # int64
    value: np.ndarray        # float64 (leaf values; 0 elsewhere)
    roots: np.ndarray        # int64, one per tree in order
    cat_nodes: np.ndarray    # int64 ids of categorical split nodes
    cat_left: np.ndarray     # uint64 bitmask per categorical node: bit k set = code k goes left;
    #                          bit MISSING_SLOT: where missing/unknown codes go
    cat_ncodes: np.ndarray   # float64: number of valid codes of the node's feature
    depth: int               # deepest leaf: steps from a root to any leaf
    baseline: float

    MISSING_SLOT = 63

    def raw(self, X: np.ndarray) -> np.ndarray:
        """Raw scores (log-odds). Every node's decision is computed at once, then each tree is
        walked from its root `depth` times through the per-node successor array."""
        single = X.shape[0] == 1
        x = X[0].take(self.feature) if single else X.take(self.feature, axis=1)
        dec = x <= self.threshold                    # NaN compares False ...
        nan = np.isnan(x)
        if nan.any():
            dec = np.where(nan, self.missing_left, dec)  # ... and follows the missing direction
        if len(self.cat_nodes):
            codes = x[..., self.cat_nodes]
            with np.errstate(invalid="ignore"):
                ok = (codes >= 0) & (codes < self.cat_ncodes)
            slot = np.where(ok, codes, self.MISSING_SLOT).astype(np.uint64)
            dec[..., self.cat_nodes] = ((self.cat_left >> slot) & np.uint64(1)).astype(bool)
        nxt = np.where(dec, self.left, self.right)
        if single:
            idx = self.roots
            for _ in range(self.depth):
                idx = nxt[idx]
            return self.baseline + np.array([self.value[idx].sum()])
        idx = np.broadcast_to(self.roots, (X.shape[0], len(self.roots)))
        for _ in range(self.depth):
            idx = np.take_along_axis(nxt, idx, axis=1)
        return self.baseline + self.value[idx].sum(axis=1)


def _in_bitset(bitsets: np.ndarray, row: int, value: int) -> bool:
    return bool((int(bitsets[row, value // 32]) >> (value % 32)) & 1)


def _compile_forest(clf, column_of_inner: np.ndarray, outer_to_inner: dict[int, np.ndarray]) -> _Forest:
    """Flatten a fitted binary HistGradientBoostingClassifier. `column_of_inner[j]` is the request
    matrix column of the classifier's internal feature j; `outer_to_inner[j]` maps the request's
    category code (index) to the classifier's internal code (NaN when unseen in training)."""
    if clf.n_trees_per_iteration_ != 1:
        raise ValueError("only binary classifiers are compiled")
    known_bitsets, f_idx_map = clf._bin_mapper.make_known_categories_bitsets()
    feats, thr, mleft, left, right, value, roots = [], [], [], [], [], [], []
    cat_nodes, cat_masks, cat_n = [], [], []
    if any(len(v) >= _Forest.MISSING_SLOT for v in outer_to_inner.values()):
        raise ValueError("too many categories for the compiled path")
    offset = 0
    max_depth = 0
    for (pred,) in clf._predictors:
        nodes = pred.nodes
        n = len(nodes)
        ids = np.arange(n, dtype=np.int64) + offset
        is_leaf = nodes["is_leaf"].astype(bool)
        feat_inner = nodes["feature_idx"].astype(np.int64)
        feats.append(np.where(is_leaf, 0, column_of_inner[np.where(is_leaf, 0, feat_inner)]))
        thr.append(nodes["num_threshold"].astype(np.float64))
        mleft.append(nodes["missing_go_to_left"].astype(bool))
        left.append(np.where(is_leaf, ids, nodes["left"].astype(np.int64) + offset))
        right.append(np.where(is_leaf, ids, nodes["right"].astype(np.int64) + offset))
        value.append(np.where(is_leaf, nodes["value"], 0.0))
        roots.append(offset)
        max_depth = max(max_depth, int(nodes["depth"].max()))
        for k in np.flatnonzero(nodes["is_categorical"].astype(bool) & ~is_leaf):
            node = nodes[k]
            fi = int(node["feature_idx"])
            mapping = outer_to_inner[fi]
            miss = bool(node["missing_go_to_left"])
            mask = (1 << _Forest.MISSING_SLOT) if miss else 0  # unknown / missing
            for outer, inner in enumerate(mapping):
                if np.isnan(inner) or inner < 0:
                    goes_left = miss
                elif _in_bitset(pred.raw_left_cat_bitsets, int(node["bitset_idx"]), int(inner)):
                    goes_left = True
                elif _in_bitset(known_bitsets, int(f_idx_map[fi]), int(inner)):
                    goes_left = False
                else:  # a category the classifier never saw: treated as missing
                    goes_left = miss
                if goes_left:
                    mask |= 1 << outer
            cat_nodes.append(offset + int(k))
            cat_masks.append(mask)
            cat_n.append(len(mapping))
        offset += n
    return _Forest(
        feature=np.concatenate(feats), threshold=np.concatenate(thr), missing_left=np.concatenate(mleft),
        left=np.concatenate(left), right=np.concatenate(right), value=np.concatenate(value),
        roots=np.asarray(roots, dtype=np.int64), cat_nodes=np.asarray(cat_nodes, dtype=np.int64),
        cat_left=np.asarray(cat_masks, dtype=np.uint64),
        cat_ncodes=np.asarray(cat_n, dtype=np.float64), depth=max_depth,
        baseline=float(np.asarray(clf._baseline_prediction).ravel()[0]))


def _expit(x: np.ndarray) -> np.ndarray:
    from scipy.special import expit  # noqa: PLC0415 - heavy: scipy

    return expit(x)


# ---------------------------------------------------------------------------------------------
# The scorer

class FastScorer:
    """Scores request records with a fitted training pipeline, without pandas.

    `columns`: the pipeline's column order (what `matrix` produces). `categories[col]`: the fixed
    category list of each categorical column (code = index). `mode`: "compiled" (numpy forest for
    small batches) or "sklearn" (classifier only).
    """

    def __init__(self, pipeline, *, verify: bool = True, task: str = "binary_classification", contract=None):
        self.pipeline = pipeline
        self.task = task
        con = contract if contract is not None else S.contract()
        self._numeric, self._bool = frozenset(con.NUMERIC_FEATURES), frozenset(con.BOOLEAN_FEATURES)
        pre = pipeline.steps[0][1]
        clf = pipeline.steps[-1][1]
        self.classifier = clf
        if not hasattr(pre, "transformers_"):
            raise TypeError("the pipeline does not start with a fitted ColumnTransformer")
        columns: list[str] = []
        categories: dict[str, tuple[str, ...]] = {}
        for name, trans, cols in pre.transformers_:
            if name == "remainder" or trans == "drop":
                continue
            cols = list(cols)
            if hasattr(trans, "categories_"):
                for c, cats in zip(cols, trans.categories_):
                    categories[c] = tuple(str(v) for v in cats)
            columns.extend(cols)
        unknown = [col for col in columns if col not in con.FEATURES]
        if unknown:
            raise ValueError(f"pipeline uses columns outside the contract: {unknown}")
        self.columns: tuple[str, ...] = tuple(columns)
        self.categories = categories
        self._index = {c: i for i, c in enumerate(columns)}
        self._cat_maps = {c: {v: float(k) for k, v in enumerate(cats)} for c, cats in categories.items()}
        self._plan = [(self._index[col], col, "cat" if col in categories else "bool" if col in self._bool else "num")
                      for col in columns]
        self._forest: _Forest | None = None
        self.mode = "sklearn"
        if task == "binary_classification":  # only a HistGradientBoosting classifier compiles
            try:
                self._forest = self._compile()
                self.mode = "compiled"
            except (AttributeError, KeyError, ValueError, TypeError, IndexError):
                self._forest = None
        if verify and self._forest is not None and not self.self_check():
            self._forest, self.mode = None, "sklearn"

    @property
    def compiled(self) -> bool:
        """True when small batches run on the compiled numpy forest (the HGB classifier)."""
        return self.mode == "compiled"

    @classmethod
    def from_model(cls, loaded_model, *, verify: bool = True):
        """From a `training.LoadedModel`: a FastScorer for a built-in pipeline (compiled for the
        HistGradientBoosting classifier, the pipeline's own model on a numpy matrix otherwise), or a
        `PipelineScorer` (pandas, the model's own `predict`) for anything else."""
        from .spec import contract  # noqa: PLC0415 - cycle: spec -> settings

        task = getattr(loaded_model, "task", "binary_classification")
        name = getattr(loaded_model, "model_name", None)
        c = contract(name) if name else S.contract()
        try:
            return cls(loaded_model.pipeline, verify=verify, task=task, contract=c)
        except (AttributeError, TypeError, ValueError, IndexError):
            return PipelineScorer(loaded_model)

    # -- conversion -------------------------------------------------------------------------
    def matrix(self, records: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """float64 matrix (rows, len(columns)) in the pipeline's column order.

        Categoricals -> code in the fitted category list (unknown, missing -> NaN); booleans ->
        0/1; numerics -> float; None -> NaN. Identifiers and other extra keys are ignored.
        """
        n = len(records)
        X = np.empty((n, len(self.columns)), dtype=np.float64)
        nan = math.nan
        cat_maps = self._cat_maps
        for r, rec in enumerate(records):
            row = X[r]
            for j, col, kind in self._plan:
                v = rec.get(col)
                if v is None:
                    row[j] = nan
                elif kind == "cat":
                    row[j] = cat_maps[col].get(v, nan) if isinstance(v, str) else nan
                else:
                    row[j] = float(v)
        return X

    # -- scoring ----------------------------------------------------------------------------
    def predict_matrix(self, X: np.ndarray) -> np.ndarray:
        """Positive-class probabilities (a classifier) or predictions for a matrix made by `matrix`."""
        if self.task != "binary_classification":
            return np.asarray(self.classifier.predict(X), dtype=np.float64).reshape(-1)
        if self._forest is not None and X.shape[0] <= SMALL_BATCH:
            return _expit(self._forest.raw(X))
        return self._sklearn_proba(X)

    def predict(self, records: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Scores for request records (validated by `serving.parsing.validate_records`)."""
        return self.predict_matrix(self.matrix(records))

    def _sklearn_proba(self, X: np.ndarray) -> np.ndarray:
        # The classifier was fitted on the ColumnTransformer's output, an object array (float
        # category codes next to ints and bools), and keeps an encoder fitted on that: hand it the
        # same kind of array.
        obj = X.astype(object)
        return self.classifier.predict_proba(obj)[:, 1]

    def _compile(self) -> _Forest:
        clf = self.classifier
        n = len(self.columns)
        inner_pre = getattr(clf, "_preprocessor", None)
        if inner_pre is None:
            column_of_inner = np.arange(n)
            outer_to_inner = {}
            for c, cats in self.categories.items():  # codes used as-is by the classifier
                outer_to_inner[self._index[c]] = np.arange(len(cats), dtype=np.float64)
        else:
            mask = np.asarray(clf.is_categorical_, dtype=bool)
            column_of_inner = np.concatenate([np.flatnonzero(mask), np.flatnonzero(~mask)])
            encoder = inner_pre.named_transformers_["encoder"]
            outer_to_inner = {}
            for inner_j, (outer_j, known) in enumerate(zip(np.flatnonzero(mask), encoder.categories_)):
                col = self.columns[outer_j]
                ncodes = len(self.categories.get(col, ()))
                lookup = {}
                for k, v in enumerate(known):
                    try:
                        fv = float(v)
                    except (TypeError, ValueError):
                        continue
                    if not math.isnan(fv):
                        lookup[fv] = float(k)
                outer_to_inner[inner_j] = np.array([lookup.get(float(o), np.nan) for o in range(ncodes)])
        return _compile_forest(clf, column_of_inner, outer_to_inner)

    def probe_records(self) -> list[dict[str, Any]]:
        """Rows exercising every category, NaN in every column, and an unseen category."""
        base = {c: 1.0 for c in self.columns}
        for c in self._bool:
            base[c] = True
        rows = []
        longest = max((len(v) for v in self.categories.values()), default=1)
        for k in range(longest + 1):
            rec = dict(base)
            for c, cats in self.categories.items():
                rec[c] = cats[k % len(cats)] if k < longest else "__unseen__"
            for m, c in enumerate(self.columns):
                if c in self._numeric:
                    rec[c] = float((k * 7 + m * 3) % 50)
            rows.append(rec)
        for c in self.columns:
            rec = dict(rows[0])
            rec[c] = None
            rows.append(rec)
        return rows

    def self_check(self, records: Sequence[Mapping[str, Any]] | None = None) -> bool:
        """True if the compiled path agrees with the classifier on `records` (default: probes)."""
        if self._forest is None:
            return True
        X = self.matrix(records if records is not None else self.probe_records())
        fast = np.concatenate([_expit(self._forest.raw(X[i:i + SMALL_BATCH]))
                               for i in range(0, len(X), SMALL_BATCH)])
        return bool(np.allclose(fast, self._sklearn_proba(X), rtol=1e-9, atol=1e-12))


class PipelineScorer:
    """The fallback for a model FastScorer cannot take apart (a custom entry point's pipeline):
    request records become a DataFrame and the model's own `LoadedModel.predict` scores them.
    Slower (pandas per request; `benchmarks/bench_serving.py` measures it), never different."""

    mode = "pipeline"
    compiled = False

    def __init__(self, loaded_model):
        from .spec import contract  # noqa: PLC0415 - cycle

        self.model = loaded_model
        self.pipeline = loaded_model.pipeline
        self.columns = contract(loaded_model.model_name).FEATURES

    def predict(self, records: Sequence[Mapping[str, Any]]) -> np.ndarray:
        import pandas as pd  # noqa: PLC0415 - heavy: pandas

        frame = pd.DataFrame.from_records(list(records), columns=list(self.columns))
        return self.model.predict(frame)

    def self_check(self, records=None) -> bool:
        return True
