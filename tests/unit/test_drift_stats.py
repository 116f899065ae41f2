"""`drift_stats` against its oracle: Evidently's own `ValueDrift` on the same windows.

Every case builds one frame pair holding a column per data shape (continuous, heavy ties,
few values, binary, constant, NaN and infinities, integer dtype, unseen categories, integer-
and bool-coded text, raw bools), runs one Evidently report with a `ValueDrift` per column, and
requires the fast path's method, threshold, score (to 1e-9) and decision to match.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

from mlops_tasks.monitor import drift_stats
from mlops_tasks.monitor.drift import _evidently_drift, column_drift

Gen = Callable[[np.random.Generator, int, int], np.ndarray]


def _with_gaps(values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    out = values.astype(np.float64)
    out[rng.random(out.size) < 0.1] = np.nan
    out[rng.random(out.size) < 0.01] = np.inf
    out[rng.random(out.size) < 0.01] = -np.inf
    return out


def _with_none(values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    values[rng.random(values.size) < 0.2] = None
    return values


NUMERIC: dict[str, Gen] = {
    "normal": lambda r, n, w: r.normal(0.25 * w, 1 + 0.1 * w, n),
    "ties": lambda r, n, w: r.integers(0, 8 + 2 * w, n).astype(float),
    "wide_ties": lambda r, n, w: np.round(r.normal(w, 10, n)),
    "few": lambda r, n, w: r.integers(0, 3 + w, n).astype(float),
    "binary": lambda r, n, w: (r.random(n) < 0.3 + 0.2 * w).astype(float),
    "constant": lambda r, n, w: np.full(n, 2.5),
    "shifted_constant": lambda r, n, w: np.full(n, 1.0 + w),
    "int64": lambda r, n, w: r.integers(0, 40 + 5 * w, n),
    "gaps": lambda r, n, w: _with_gaps(r.exponential(1 + w, n), r),
}

CATEGORICAL: dict[str, Gen] = {
    "cat_unseen": lambda r, n, w: r.choice(["a", "b", "c", "d" if w == 0 else "e"], n).astype(
        object
    ),
    "cat_int_text": lambda r, n, w: r.integers(0, 12 + w, n).astype(str).astype(object),
    "cat_bool_text": lambda r, n, w: (r.random(n) < 0.5 + 0.1 * w).astype(str).astype(object),
    "cat_bool": lambda r, n, w: r.random(n) < 0.4 + 0.1 * w,
    "cat_int_codes": lambda r, n, w: r.integers(1, 5 + w, n),
    "cat_missing": lambda r, n, w: _with_none(r.choice(["x", "y", "z"], n).astype(object), r),
    "cat_constant": lambda r, n, w: np.full(n, "same", dtype=object),
    "cat_binary": lambda r, n, w: r.choice(["yes", "no"], n, p=[0.6 - 0.2 * w, 0.4 + 0.2 * w]),
}


def _frames(seed: int, n_ref: int, n_cur: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    ref, cur = {}, {}
    for name, gen in {**NUMERIC, **CATEGORICAL}.items():
        ref[name], cur[name] = gen(rng, n_ref, 0), gen(rng, n_cur, 1)
    return pd.DataFrame(ref), pd.DataFrame(cur)


def _assert_matches(
    ref: pd.DataFrame,
    cur: pd.DataFrame,
    numeric: list[str],
    categorical: list[str],
    method: str | None,
) -> None:
    overrides = {c: {"method": method} for c in [*numeric, *categorical]}
    expected, _ = _evidently_drift(ref, cur, numeric, categorical, overrides)
    for want in expected:
        c = want["column"]
        kind = drift_stats.NUMERICAL if c in numeric else drift_stats.CATEGORICAL
        got = drift_stats.score_column(c, ref[c], cur[c], kind, method)
        assert got is not None, c
        assert (got.method, got.threshold, got.drifted) == (
            want["method"],
            want["threshold"],
            want["drifted"],
        ), c
        assert got.score == pytest.approx(want["score"], rel=1e-9, nan_ok=True), c


SIZES = [
    pytest.param(1, 6, 4, id="tiny"),
    pytest.param(3, 1000, 700, id="reference-1000"),
    pytest.param(4, 1001, 1001, id="reference-1001"),
    pytest.param(5, 2500, 1800, id="large"),
]


@pytest.mark.parametrize(("seed", "n_ref", "n_cur"), SIZES)
def test_default_method_matches_evidently(seed: int, n_ref: int, n_cur: int) -> None:
    """Evidently's own choice by type, distinct values and reference size (1000-row switch)."""
    ref, cur = _frames(seed, n_ref, n_cur)
    _assert_matches(ref, cur, list(NUMERIC), list(CATEGORICAL), None)


#: Shapes that reach every branch of the explicit methods (binned or per value, sorted or
#: counted, NaNs, constants, unseen and non-text categories), kept few: Evidently's own
#: per-column report costs ~70 ms and the whole file should stay well under 20 s.
EXPLICIT = ["normal", "ties", "wide_ties", "constant", "gaps", "int64"]
EXPLICIT_CAT = ["cat_unseen", "cat_int_text", "cat_bool", "cat_missing", "cat_constant"]


@pytest.mark.parametrize(
    ("method", "seed", "n_ref", "n_cur"),
    [
        pytest.param(m, 10 + i, *((60, 45) if i % 2 else (1500, 1100)), id=m)
        for i, m in enumerate(sorted(drift_stats.METHODS))
    ],
)
def test_explicit_method_matches_evidently(method: str, seed: int, n_ref: int, n_cur: int) -> None:
    kinds = drift_stats.METHODS[method].kinds
    numeric = EXPLICIT if drift_stats.NUMERICAL in kinds else []
    categorical = EXPLICIT_CAT if drift_stats.CATEGORICAL in kinds else []
    ref, cur = _frames(seed, n_ref, n_cur)
    _assert_matches(ref, cur, numeric, categorical, method)


def test_threshold_override_and_unknown_method_fall_back_to_evidently() -> None:
    ref, cur = _frames(7, 300, 200)
    rows, _ = column_drift(
        ref,
        cur,
        ["normal", "ties"],
        ["cat_unseen"],
        {"normal": {"method": "anderson", "threshold": 0.2}, "ties": {"threshold": 0.3}},
    )
    expected, _ = _evidently_drift(
        ref,
        cur,
        ["normal", "ties"],
        ["cat_unseen"],
        {"normal": {"method": "anderson", "threshold": 0.2}, "ties": {"threshold": 0.3}},
    )
    assert (
        drift_stats.score_column("normal", ref["normal"], cur["normal"], "numerical", "anderson")
        is None
    )
    assert [r["column"] for r in rows] == ["normal", "ties", "cat_unseen"]
    for got, want in zip(rows, expected, strict=True):
        assert got == {**want, "score": pytest.approx(want["score"], rel=1e-9)}


@pytest.mark.parametrize(
    ("kind", "which"),
    [
        pytest.param("numerical", "reference", id="numeric-reference"),
        pytest.param("categorical", "current", id="categorical-current"),
    ],
)
def test_all_null_window_raises_as_evidently_does(kind: str, which: str) -> None:
    values = (
        np.array([1.0, 2.0, 3.0])
        if kind == "numerical"
        else np.array(["a", "b", "c"], dtype=object)
    )
    empty = (
        pd.Series([np.nan, np.inf, np.nan])
        if kind == "numerical"
        else pd.Series([None, np.nan, None])
    )
    ref, cur = (empty, pd.Series(values)) if which == "reference" else (pd.Series(values), empty)
    message = f"An empty column 'x' was provided for drift calculation in the {which} dataset."
    cols = (["x"], []) if kind == "numerical" else ([], ["x"])
    with pytest.raises(ValueError, match=message):
        _evidently_drift(pd.DataFrame({"x": ref}), pd.DataFrame({"x": cur}), *cols, {})
    with pytest.raises(ValueError, match=message):
        drift_stats.score_column("x", ref, cur, kind)  # type: ignore[arg-type]


def test_page_is_drawn_from_samples_and_says_decisions_use_full_data(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("mlops_tasks.monitor.drift.PAGE_SAMPLE_ROWS", 500)
    ref, cur = _frames(8, 1500, 1200)
    rows, page = column_drift(ref, cur, ["normal"], ["cat_unseen"])
    html = page.get_html_str()
    assert "Drift decisions (full data)" in html
    assert "1,500 reference and 1,200 current rows" in html
    assert "<body><section" in html  # the note opens the page, above Evidently's report
    assert [r["column"] for r in rows] == ["normal", "cat_unseen"]
