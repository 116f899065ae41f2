"""The serving fast path: a loaded model's preprocessing compiled once into plain arrays.

`modelling.build_pipeline` makes every model the same shape: a `ColumnTransformer` with a
numeric branch (median `SimpleImputer`, `StandardScaler`) and a categorical branch (constant
`SimpleImputer`, `OneHotEncoder(handle_unknown="ignore")`), then the estimator. Run on a 1-row
request, that pipeline spends 10x more time building and checking DataFrames than the estimator
spends scoring. `compile_model` reads the fitted constants out once per loaded version (fill
values, means and scales, one lookup dict per categorical feature) and `Compiled.encode` turns
request rows straight into the float64 matrix the estimator was fitted on: the same numbers,
bit for bit, as the pipeline's own transform (tests/serving/test_compiled.py proves it on
generated rows for every estimator family). The estimator then scores that matrix.

Anything the compiler does not recognise (another pipeline shape, an imputer that dropped an
all-empty feature, an encoder with infrequent categories or `drop`) is not compiled: the version
is served by its full pipeline, as before, and the service logs that once when it loads it.

`RowChecks` does the same for the data checks of `profile.FeatureChecks`: the same flags and
counts, computed from the request rows instead of a DataFrame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlops_tasks.data.profile import RANGE, UNSEEN, DataIssues, FeatureChecks
from mlops_tasks.model.modelling import canonical_label
from mlops_tasks.specs import ModelSpec

MISSING = "__missing__"  # the categorical imputer's fill value in `build_pipeline`


class NotCompiled(Exception):
    """Why a fitted model cannot be compiled (it is then served by its pipeline)."""


@dataclass(frozen=True)
class Compiled:
    """A fitted pipeline's preprocessing as constants, and its final estimator."""

    numeric: tuple[str, ...]
    fill: np.ndarray  # the numeric imputer's medians
    mean: np.ndarray | None
    scale: np.ndarray | None
    categorical: tuple[str, ...]
    lookup: tuple[dict[str, int], ...]  # per categorical feature: category -> output column
    missing: tuple[int | None, ...]  # per categorical feature: the column of a null, if any
    width: int
    estimator: Any

    def encode(self, rows: list[dict[str, Any]]) -> np.ndarray:
        """Validated request rows (numbers or None, text or None) as the estimator's input."""
        n = len(rows)
        out = np.zeros((n, self.width), dtype=np.float64)
        k = len(self.numeric)
        if k:
            # None becomes NaN in a float array, as in `records_frame`.
            num = np.array([[r[c] for c in self.numeric] for r in rows], dtype=np.float64)
            gaps = np.isnan(num)
            if gaps.any():
                num = np.where(gaps, self.fill, num)
            if self.mean is not None:
                num -= self.mean
            if self.scale is not None:
                num /= self.scale
            out[:, :k] = num
        for c, lookup, missing in zip(self.categorical, self.lookup, self.missing, strict=True):
            for i, r in enumerate(rows):
                v = r[c]
                if type(v) is not str:
                    v = None if v is None else canonical_label(v)
                    if v is None or (isinstance(v, float) and math.isnan(v)):
                        if missing is not None:
                            out[i, missing] = 1.0
                        continue
                j = lookup.get(v)
                if j is not None:
                    out[i, j] = 1.0
        return out


def compile_model(spec: ModelSpec, model: Any) -> Compiled:
    """`model`'s preprocessing as a `Compiled`, or NotCompiled saying what is not covered."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    if not isinstance(model, Pipeline) or len(model.steps) != 2:
        raise NotCompiled("not a preprocess + estimator pipeline")
    pre, estimator = model.steps[0][1], model.steps[1][1]
    if type(pre) is not ColumnTransformer:
        raise NotCompiled("its first step is not a ColumnTransformer")
    if getattr(pre, "sparse_output_", False) or getattr(pre, "_sparse_output", False):
        raise NotCompiled("the transformer output is sparse")
    branches = [(name, t, list(cols)) for name, t, cols in pre.transformers_]
    used = [b for b in branches if not (b[1] == "drop" or len(b[2]) == 0)]
    if [b[0] for b in used] != _expected_branches(spec):
        raise NotCompiled(f"unexpected branches {[b[0] for b in used]}")
    numeric: tuple[str, ...] = ()
    categorical: tuple[str, ...] = ()
    fill = np.zeros(0)
    mean = scale = None
    lookup: list[dict[str, int]] = []
    missing: list[int | None] = []
    width = 0
    for name, branch, cols in used:
        if not isinstance(branch, Pipeline) or len(branch.steps) != 2:
            raise NotCompiled(f"branch {name!r} is not an imputer + one step pipeline")
        imputer, last = branch.steps[0][1], branch.steps[1][1]
        if type(imputer) is not SimpleImputer or imputer.add_indicator:
            raise NotCompiled(f"branch {name!r}: not a plain SimpleImputer")
        if not _nan_marks_missing(imputer.missing_values):
            raise NotCompiled(f"branch {name!r}: missing values are not NaN")
        if name == "numeric":
            if cols != list(spec.features.numeric) or type(last) is not StandardScaler:
                raise NotCompiled("numeric branch: unexpected columns or scaler")
            stats = np.asarray(imputer.statistics_, dtype=np.float64)
            if stats.shape != (len(cols),) or not np.isfinite(stats).all():
                raise NotCompiled("numeric imputer has an empty feature (dropped column)")
            numeric, fill = tuple(cols), stats
            # `with_mean=False` still fits `mean_` (for `var_`) but does not subtract it
            centred = last.with_mean and last.mean_ is not None
            mean = np.asarray(last.mean_, dtype=np.float64) if centred else None
            scale = None if last.scale_ is None else np.asarray(last.scale_, dtype=np.float64)
            if last.n_features_in_ != len(cols):
                raise NotCompiled("scaler width differs")
            width += len(cols)
        else:
            if cols != list(spec.features.categorical) or type(last) is not OneHotEncoder:
                raise NotCompiled("categorical branch: unexpected columns or encoder")
            if imputer.strategy != "constant" or imputer.fill_value != MISSING:
                raise NotCompiled("categorical imputer does not fill with the missing marker")
            if last.handle_unknown != "ignore" or last.drop_idx_ is not None:
                raise NotCompiled("encoder does not ignore unknown categories or drops one")
            if getattr(last, "_infrequent_enabled", False):
                raise NotCompiled("encoder groups infrequent categories")
            if last.dtype is not np.float64 and last.dtype != np.float64:
                raise NotCompiled("encoder output is not float64")
            categorical = tuple(cols)
            for cats in last.categories_:
                if not all(type(c) is str for c in cats):
                    raise NotCompiled("encoder categories are not all text")
                positions = {c: width + j for j, c in enumerate(cats)}
                lookup.append(positions)
                missing.append(positions.get(MISSING))
                width += len(cats)
    if width != getattr(estimator, "n_features_in_", width):
        raise NotCompiled("estimator width differs from the encoded width")
    return Compiled(
        numeric, fill, mean, scale, categorical, tuple(lookup), tuple(missing), width, estimator
    )


def _expected_branches(spec: ModelSpec) -> list[str]:
    return (["numeric"] if spec.features.numeric else []) + (
        ["categorical"] if spec.features.categorical else []
    )


def _nan_marks_missing(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


class RowChecks:
    """`FeatureChecks.check` on request rows: the same `DataIssues`, no DataFrame."""

    def __init__(self, checks: FeatureChecks) -> None:
        self.ranged = checks.ranged
        self.low = checks.low
        self.high = checks.high
        self.categories = tuple(checks.categories.items())
        # flag names in FeatureChecks' order: ranges first, then categories
        self.labels = [f"{RANGE}:{f}" for f in self.ranged] + [
            f"{UNSEEN}:{f}" for f, _ in self.categories
        ]

    def check(self, rows: list[dict[str, Any]]) -> DataIssues:
        n = len(rows)
        parts: list[np.ndarray] = []
        if self.ranged:
            values = np.array([[r[f] for f in self.ranged] for r in rows], dtype=np.float64)
            with np.errstate(invalid="ignore"):  # NaN (a null) compares False
                parts.append((values < self.low) | (values > self.high))
        for f, known in self.categories:
            unknown = np.zeros((n, 1), dtype=bool)
            for i, r in enumerate(rows):
                v = r[f]
                if v is None:
                    continue
                if type(v) is not str:
                    v = canonical_label(v)
                    if isinstance(v, float) and math.isnan(v):
                        continue
                if v not in known:
                    unknown[i, 0] = True
            parts.append(unknown)
        if not parts:
            return DataIssues()
        flagged = np.hstack(parts)
        if not flagged.any():
            return DataIssues()
        counts = flagged.sum(axis=0).tolist()
        unseen: dict[str, int] = {}
        out_of_range: dict[str, int] = {}
        for label, count in zip(self.labels, counts, strict=True):
            if count:
                kind, feature = label.split(":", 1)
                (unseen if kind == UNSEEN else out_of_range)[feature] = int(count)
        flags = {
            int(i): tuple(label for label, hit in zip(self.labels, flagged[i], strict=True) if hit)
            for i in np.flatnonzero(flagged.any(axis=1))
        }
        return DataIssues(unseen, out_of_range, flags)
