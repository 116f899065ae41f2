"""Exact drift scores without Evidently: the per-column test Evidently 0.7 would run, vectorised.

Evidently's `ValueDrift` spends most of its time outside the test itself (pandas apply loops,
histograms and correlations for its widgets, a report object per column). This module computes
the same score and decision with numpy/scipy on the full data:

* the same test, chosen as `evidently.legacy.calculations.stattests.registry.get_stattest` does:
  by column type, the number of distinct values in both windows, and the reference size (K-S or
  chi-square/Z at 1000 rows or fewer, Wasserstein or Jensen-Shannon above);
* the same cleaning (infinities become missing, missing values are dropped per window), the same
  frequencies (Evidently's `value_counts` semantics, bins from the combined windows' Sturges
  edges, the same zero filling for PSI and KL), the same thresholds and `drifted` rules;
* values that agree with Evidently's to floating-point summation order (tests compare to 1e-9).

Windows of a million rows are reduced before the expensive step: low-cardinality columns to
their distinct values and counts (one hash pass), continuous ones to sorted arrays from which
the Wasserstein distance is read off the two quantile functions. `score_column` returns None for
a case it does not implement (an unknown or custom method, a type the method does not accept,
non-numeric values in a numerical column): the caller then asks Evidently, which gives the same
answer or the same error as before.
"""

from __future__ import annotations

import math
import operator
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

Kind = Literal["numerical", "categorical"]
NUMERICAL: Kind = "numerical"
CATEGORICAL: Kind = "categorical"

#: Evidently's reference-size switch between small-sample tests and distances.
SMALL_REFERENCE = 1000
#: Values sampled from the start of a window to guess its cardinality (only the speed depends
#: on the guess: both paths are exact).
_SAMPLE = 20_000


@dataclass(frozen=True)
class ColumnScore:
    """One column's drift, as `drift.column_drift` reports it."""

    column: str
    method: str
    threshold: float
    score: float
    drifted: bool


class _Numeric:
    """A numerical column's two windows, finite values only, with lazily derived forms."""

    def __init__(self, reference: np.ndarray, current: np.ndarray) -> None:
        self.ref = reference
        self.cur = current

    @property
    def n_ref(self) -> int:
        return int(self.ref.size)

    @property
    def n_cur(self) -> int:
        return int(self.cur.size)

    @cached_property
    def counts(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Sorted distinct values of both windows and each window's count of each."""
        kr, cr = _value_counts(self.ref)
        kc, cc = _value_counts(self.cur)
        self._first_seen = (kr, kc)
        keys = np.union1d(kr, kc)
        a = np.zeros(keys.size, dtype=np.int64)
        b = np.zeros(keys.size, dtype=np.int64)
        a[np.searchsorted(keys, kr)] = cr
        b[np.searchsorted(keys, kc)] = cc
        return keys, a, b

    def evidently_counts(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-value counts of both windows, in the order Evidently sums over values."""
        keys, a, b = self.counts
        kr, kc = self._first_seen
        order = np.searchsorted(keys, _evidently_keys(kr.tolist(), kc.tolist()))
        return a[order], b[order]

    @cached_property
    def low_cardinality(self) -> bool:
        """Whether counting distinct values is cheaper than sorting (judged on a sample)."""
        sample = np.concatenate([self.ref[:_SAMPLE], self.cur[:_SAMPLE]])
        return bool(np.unique(sample).size * 4 <= sample.size)

    def distinct_exceeds(self, k: int, reference_only: bool = False) -> bool:
        """Whether the windows (or the reference alone) hold more than `k` distinct values."""
        sample = (
            self.ref[:_SAMPLE]
            if reference_only
            else np.concatenate([self.ref[:_SAMPLE], self.cur[:_SAMPLE]])
        )
        if np.unique(sample).size > k:
            return True
        _, a, b = self.counts
        return int(np.count_nonzero(a if reference_only else a + b)) > k

    def sorted_windows(self) -> tuple[np.ndarray, np.ndarray]:
        return np.sort(self.ref), np.sort(self.cur)


class _Categorical:
    """A categorical column's two windows as counts per distinct value."""

    def __init__(self, reference: pd.Series, current: pd.Series) -> None:
        ref = _category_counts(reference)
        cur = _category_counts(current)
        self.keys: list[Any] = _evidently_keys(list(ref), list(cur))
        self.a = np.array([ref.get(k, 0) for k in self.keys], dtype=np.int64)
        self.b = np.array([cur.get(k, 0) for k in self.keys], dtype=np.int64)
        self.n_ref = int(self.a.sum())
        self.n_cur = int(self.b.sum())


def _evidently_keys(reference: list[Any], current: list[Any]) -> list[Any]:
    """The distinct values in the order Evidently sums over them (`list(set | set)` of values
    in order of first appearance): the same order gives bit-identical sums, which matters where
    a distance is a small difference of nearly equal sums (Hellinger)."""
    return list(set(reference) | set(current))


def _value_counts(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct values and counts in one hash pass (no sort of the window)."""
    import pandas as pd

    counts = pd.Series(values, copy=False).value_counts(sort=False, dropna=True)
    return counts.index.to_numpy(dtype=np.float64), counts.to_numpy(dtype=np.int64)


def _category_counts(series: pd.Series) -> dict[object, int]:
    """Evidently's frequencies: `value_counts` after infinities and missing values are dropped."""
    counts = series.value_counts(sort=False, dropna=True)
    return {
        k: int(v)
        for k, v in zip(counts.index.tolist(), counts.tolist(), strict=True)
        if v and not (isinstance(k, float) and math.isinf(k))
    }


def _finite(series: pd.Series) -> np.ndarray | None:
    """The finite values of a numeric column as float64, or None for non-numeric data."""
    import pandas as pd

    if not pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
        return None
    values = series.to_numpy(dtype=np.float64, na_value=np.nan)
    keep = np.isfinite(values)
    return values if keep.all() else values[keep]


# ---------------------------------------------------------------------------------------------
# The tests, each as Evidently computes it
# ---------------------------------------------------------------------------------------------


def _discrete(col: _Numeric | _Categorical) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(col, _Numeric):
        return col.evidently_counts()
    return col.a, col.b


def _chisquare(col: _Numeric | _Categorical) -> float:
    from scipy.stats import chisquare

    a, b = _discrete(col)
    k_norm = col.n_cur / col.n_ref
    return float(chisquare(b, a * k_norm)[1])


def _z(col: _Numeric | _Categorical) -> float:
    from scipy.stats import norm

    if isinstance(col, _Numeric):
        keys, a, b = col.counts
        first = 0  # keys are sorted
    else:
        keys, a, b = np.array(col.keys, dtype=object), col.a, col.b
        first = col.keys.index(sorted(col.keys)[0])  # mixed types raise TypeError
    ref_keys, cur_keys = keys[a > 0], keys[b > 0]
    if ref_keys.size == 1 and cur_keys.size == 1 and ref_keys[0] == cur_keys[0]:
        return 1.0
    n1, n2 = col.n_ref, col.n_cur
    p1 = float(n1 - a[first]) / n1
    p2 = float(n2 - b[first]) / n2
    p = float(p1 * n1 + p2 * n2) / (n1 + n2)
    z = (p1 - p2) / np.sqrt(p * (1 - p) * (1.0 / n1 + 1.0 / n2))
    return float(2 * (1 - norm.cdf(np.abs(z))))


def _ks(col: _Numeric | _Categorical) -> float:
    from scipy.stats import ks_2samp

    assert isinstance(col, _Numeric)
    return float(ks_2samp(col.ref, col.cur)[1])


def _t_test(col: _Numeric | _Categorical) -> float:
    from scipy.stats import ttest_ind

    assert isinstance(col, _Numeric)
    return float(ttest_ind(col.ref, col.cur)[1])


def _energy(col: _Numeric | _Categorical) -> float:
    from scipy.stats import energy_distance

    assert isinstance(col, _Numeric)
    if col.low_cardinality:
        keys, a, b = col.counts
        return float(energy_distance(keys, keys, a, b))
    return float(energy_distance(col.ref, col.cur))


def _wasserstein(col: _Numeric | _Categorical) -> float:
    """`scipy.stats.wasserstein_distance` over the reference's standard deviation (>= 0.001)."""
    assert isinstance(col, _Numeric)
    norm = max(float(np.std(col.ref)), 0.001)
    return _w1(col) / norm


def _w1(col: _Numeric) -> float:
    n, m = col.n_ref, col.n_cur
    if col.low_cardinality:
        # The integral of |F - G| over the distinct values: the CDFs only step there.
        keys, a, b = col.counts
        gap = np.abs(np.cumsum(a)[:-1] / n - np.cumsum(b)[:-1] / m)
        return float(np.dot(gap, np.diff(keys)))
    # The same integral as the area between the quantile functions: on the grid of breakpoints
    # i/n and j/m (integers over n*m), both quantile functions are constant between breakpoints.
    rs, cs = col.sorted_windows()
    if n == m:
        return float(np.abs(rs - cs).mean())
    breaks = np.concatenate([np.arange(n, dtype=np.int64) * m, np.arange(m, dtype=np.int64) * n])
    breaks.sort(kind="stable")  # two sorted runs: a merge
    breaks = breaks[np.concatenate([[True], breaks[1:] != breaks[:-1]])]
    widths = np.diff(breaks, append=np.int64(n) * m)
    return float(np.dot(np.abs(rs[breaks // m] - cs[breaks // n]), widths) / (float(n) * m))


def _sturges_edges(lo: float, hi: float, size: int) -> np.ndarray:
    """`np.histogram_bin_edges(a, bins="sturges")` for data of this min, max and size."""
    width = (hi - lo) / (np.log2(size) + 1.0)
    first, last = (lo - 0.5, hi + 0.5) if lo == hi else (lo, hi)
    bins = int(np.ceil((last - first) / width)) if width else 1
    return np.linspace(first, last, bins + 1, endpoint=True)


def _hist(values: np.ndarray, edges: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """`np.histogram(values, edges)[0]`: [e_i, e_i+1) bins, the last one closed."""
    nbins = edges.size - 1
    idx = np.searchsorted(edges, values, side="right") - 1
    idx[idx == nbins] = nbins - 1  # the right edge belongs to the last bin
    inside = (idx >= 0) & (values <= edges[-1])
    return np.bincount(
        idx[inside], weights=None if weights is None else weights[inside], minlength=nbins
    )


def _binned(col: _Numeric | _Categorical, fill_zeroes: bool) -> tuple[np.ndarray, np.ndarray]:
    """Evidently's `get_binned_data` (n=30 is unused by it): shares per bin or per value."""
    if isinstance(col, _Numeric) and col.distinct_exceeds(20, reference_only=True):
        lo = min(float(col.ref.min()), float(col.cur.min()))
        hi = max(float(col.ref.max()), float(col.cur.max()))
        edges = _sturges_edges(lo, hi, col.n_ref + col.n_cur)
        if col.low_cardinality:
            keys, a, b = col.counts
            ref_hist = _hist(keys, edges, a.astype(np.float64))
            cur_hist = _hist(keys, edges, b.astype(np.float64))
        else:
            ref_hist, cur_hist = _hist(col.ref, edges), _hist(col.cur, edges)
        ref_pct = ref_hist / col.n_ref
        cur_pct = cur_hist / col.n_cur
    else:
        a, b = _discrete(col)
        ref_pct, cur_pct = a / col.n_ref, b / col.n_cur
    if fill_zeroes:
        for pct in (ref_pct, cur_pct):
            smallest = pct[pct != 0].min()
            np.place(pct, pct == 0, smallest / 10**6 if smallest <= 0.0001 else 0.0001)
    return ref_pct, cur_pct


def _psi(col: _Numeric | _Categorical) -> float:
    ref, cur = _binned(col, fill_zeroes=True)
    return float(np.sum((ref - cur) * np.log(ref / cur)))


def _kl_div(col: _Numeric | _Categorical) -> float:
    from scipy.stats import entropy

    ref, cur = _binned(col, fill_zeroes=True)
    return float(entropy(ref, cur))


def _jensenshannon(col: _Numeric | _Categorical) -> float:
    from scipy.spatial.distance import jensenshannon

    ref, cur = _binned(col, fill_zeroes=False)
    return float(jensenshannon(ref, cur))


def _hellinger(col: _Numeric | _Categorical) -> float:
    total = 0.0
    if isinstance(col, _Categorical):
        for p1, p2 in zip(col.a / col.n_ref, col.b / col.n_cur, strict=True):
            total += math.sqrt(float(p1) * float(p2))
    else:
        keys, a, b = col.counts
        edges = _sturges_edges(float(keys[0]), float(keys[-1]), keys.size)
        width = np.diff(edges)
        h1 = _hist(keys, edges, a.astype(np.float64))
        h2 = _hist(keys, edges, b.astype(np.float64))
        h1, h2 = h1 / width / h1.sum(), h2 / width / h2.sum()
        bin_width = (max(edges) - min(edges)) / (len(edges) - 1)
        for p1, p2 in zip(h1, h2, strict=True):
            total += math.sqrt(float(p1) * float(p2)) * bin_width
    return math.sqrt(1 - float(np.clip(total, 0, 1)))


@dataclass(frozen=True)
class Method:
    """A drift method as Evidently registers it: name, display name, types, default, rule."""

    name: str
    display_name: str
    kinds: tuple[Kind, ...]
    default_threshold: float
    drifted: Callable[[float, float], bool]
    score: Callable[[_Numeric | _Categorical], float]


_BOTH = (NUMERICAL, CATEGORICAL)
METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("ks", "K-S p_value", (NUMERICAL,), 0.05, operator.le, _ks),
        Method("chisquare", "chi-square p_value", (CATEGORICAL,), 0.05, operator.lt, _chisquare),
        Method("z", "Z-test p_value", (CATEGORICAL,), 0.05, operator.lt, _z),
        Method("t_test", "t_test", (NUMERICAL,), 0.05, operator.lt, _t_test),
        Method("jensenshannon", "Jensen-Shannon distance", _BOTH, 0.1, operator.ge, _jensenshannon),
        Method(
            "wasserstein",
            "Wasserstein distance (normed)",
            (NUMERICAL,),
            0.1,
            operator.ge,
            _wasserstein,
        ),
        Method("psi", "PSI", _BOTH, 0.1, operator.ge, _psi),
        Method("kl_div", "Kullback-Leibler divergence", _BOTH, 0.1, operator.ge, _kl_div),
        Method("hellinger", "Hellinger distance", _BOTH, 0.1, operator.ge, _hellinger),
        Method("ed", "Energy-distance", (NUMERICAL,), 0.1, operator.gt, _energy),
    )
}


def _default_method(col: _Numeric | _Categorical) -> Method:
    """Evidently's `_get_default_stattest` for numerical and categorical columns."""
    if isinstance(col, _Categorical):
        n_values = len(col.keys)
        if col.n_ref <= SMALL_REFERENCE:
            return METHODS["chisquare" if n_values > 2 else "z"]
        return METHODS["jensenshannon"]
    if col.n_ref <= SMALL_REFERENCE:
        if col.distinct_exceeds(5):
            return METHODS["ks"]
        return METHODS["chisquare" if col.distinct_exceeds(2) else "z"]
    return METHODS["wasserstein" if col.distinct_exceeds(5) else "jensenshannon"]


def score_column(
    column: str,
    reference: pd.Series,
    current: pd.Series,
    kind: Kind,
    method: str | None = None,
    threshold: float | None = None,
) -> ColumnScore | None:
    """The column's drift as Evidently's `ValueDrift(column, method, threshold)` reports it.

    Returns None where Evidently must decide (a method not implemented here or not valid for
    the column's type, non-numeric values in a numerical column). Raises ValueError, as
    Evidently does, when a window has no usable value.
    """
    chosen = METHODS.get(method) if method is not None else None
    if method is not None and (chosen is None or kind not in chosen.kinds):
        return None
    col: _Numeric | _Categorical
    if kind == NUMERICAL:
        ref, cur = _finite(reference), _finite(current)
        if ref is None or cur is None:
            return None
        col = _Numeric(ref, cur)
    else:
        col = _Categorical(reference, current)
    for window, size in (("reference", col.n_ref), ("current", col.n_cur)):
        if size == 0:
            raise ValueError(
                f"An empty column '{column}' was provided for drift calculation in the "
                f"{window} dataset."
            )
    if chosen is None:
        chosen = _default_method(col)
    actual = chosen.default_threshold if threshold is None else float(threshold)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # constant windows divide by zero
            score = chosen.score(col)
    except TypeError:  # categories that do not sort (Z-test): Evidently decides, or fails
        return None
    return ColumnScore(
        column=column,
        method=method if method is not None else chosen.display_name,
        threshold=actual,
        score=score,
        drifted=bool(chosen.drifted(score, actual)),
    )
