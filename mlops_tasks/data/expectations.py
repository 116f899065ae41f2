"""Great Expectations 1.x expectations evaluated directly on a pandas DataFrame, in one pass.

GX validates a batch through a metric graph: every expectation re-derives its column, null mask
and counts, and a suite pays seconds of fixed cost before it looks at the data. The checks the
pipeline uses are simple vectorised pandas operations, so `evaluate` runs them itself, once per
column, with GX's pandas semantics reproduced exactly (read from GX's source):

* map expectations drop nulls first (`isnull`: None, NaN, NaT), count unexpected non-null
  values, report `unexpected_percent` over the non-null count, the first 20 unexpected values in
  row order, and succeed vacuously on an empty or all-null column; `mostly` compares the
  success ratio with GX's own float arithmetic. `expect_column_values_to_not_be_null` counts
  over all rows instead;
* `expect_column_values_to_be_in_type_list` compares the dtype on typed columns (observed value:
  the dtype's scalar type name) and each value's Python type on object columns;
* aggregate expectations (`table_row_count`, column mean/min/max) compare an observed value with
  optional, optionally strict bounds.

An expectation type (or an argument combination, or a dtype) not reproduced here comes back
with `supported=False`; the caller runs GX for it. The oracle test (tests/unit/
test_expectations.py) holds this module to GX's own results.
"""

from __future__ import annotations

import datetime
import math
import numbers
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

#: GX's `partial_unexpected_count` for the SUMMARY result format.
PARTIAL_UNEXPECTED = 20


@dataclass(frozen=True)
class Outcome:
    """One expectation's result, with the fields of GX's SUMMARY result the pipeline reads."""

    type: str
    column: str | None
    success: bool
    unexpected_count: int | None = None
    unexpected_percent: float | None = None
    examples: tuple[Any, ...] = ()
    observed_value: Any = None
    error: str | None = None
    supported: bool = True


class _Unsupported(Exception):
    """This expectation, with these arguments or this data, is left to GX."""


class _Frame:
    """The batch with per-column null masks and non-null values computed once."""

    def __init__(self, df: pd.DataFrame) -> None:
        self.df = df
        self._nonnull: dict[str, pd.Series] = {}

    def nonnull(self, column: str) -> pd.Series:
        """The column's non-null values (GX's `filter_column_isnull`), in row order."""
        if column not in self._nonnull:
            series = self.df[column]
            keep = series.notna().to_numpy()
            self._nonnull[column] = series if keep.all() else series[keep]
        return self._nonnull[column]


def _mostly_success(considered: int, unexpected: int, mostly: float) -> bool:
    """GX's `_mostly_success`, float for float."""
    return (float(considered) - float(unexpected)) / float(considered) >= mostly


def _map_outcome(
    kind: str,
    column: str,
    kwargs: dict[str, Any],
    total: int,
    values: pd.Series,
    expected: Any,
) -> Outcome:
    """A column map expectation's result from the non-null values and their expected mask."""
    nonnull = len(values)
    bad = ~np.asarray(expected, dtype=bool)
    unexpected = int(bad.sum())
    if total == 0 or nonnull == 0:
        success = True
    else:
        success = _mostly_success(nonnull, unexpected, _mostly(kwargs))
    percent = unexpected / nonnull * 100 if total > 0 and nonnull > 0 else None
    first = np.flatnonzero(bad)[:PARTIAL_UNEXPECTED]
    examples = tuple(values.iloc[first]) if first.size else ()
    return Outcome(kind, column, success, unexpected, percent, examples)


def _mostly(kwargs: dict[str, Any]) -> float:
    mostly = kwargs.get("mostly")
    return 1.0 if mostly is None else float(mostly)


def _between(value: Any, kwargs: dict[str, Any]) -> bool:
    lo, hi = kwargs.get("min_value"), kwargs.get("max_value")
    above = lo is None or (value > lo if kwargs.get("strict_min") else value >= lo)
    below = hi is None or (value < hi if kwargs.get("strict_max") else value <= hi)
    return bool(above and below)


def _aggregate_outcome(
    kind: str, column: str | None, value: Any, kwargs: dict[str, Any]
) -> Outcome:
    """GX's `_validate_metric_value_between` for numbers (datetime bounds are left to GX)."""
    import pandas as pd

    for bound in ("min_value", "max_value"):
        if isinstance(kwargs.get(bound), (str, datetime.date)):
            raise _Unsupported
    if value is None or pd.isnull(value):
        return Outcome(kind, column, False, observed_value=None)
    return Outcome(kind, column, _between(value, kwargs), observed_value=value)


# ---------------------------------------------------------------------------------------------
# Expectations
# ---------------------------------------------------------------------------------------------


def _table_row_count_between(frame: _Frame, kind: str, kwargs: dict[str, Any]) -> Outcome:
    return _aggregate_outcome(kind, None, len(frame.df), kwargs)


def _table_row_count_equal(frame: _Frame, kind: str, kwargs: dict[str, Any]) -> Outcome:
    rows = len(frame.df)
    return Outcome(kind, None, rows == kwargs.get("value"), observed_value=rows)


def _table_columns_match_set(frame: _Frame, kind: str, kwargs: dict[str, Any]) -> Outcome:
    expected = set(kwargs.get("column_set") or [])
    actual = {str(c) for c in frame.df.columns}
    observed = sorted(actual)
    exact = kwargs.get("exact_match", True) is not False
    missing = expected - actual
    success = not missing and (not exact or not actual - expected)
    return Outcome(kind, None, success, observed_value=observed)


def _column_to_exist(frame: _Frame, kind: str, kwargs: dict[str, Any]) -> Outcome:
    column = kwargs["column"]
    columns = list(frame.df.columns)
    index = kwargs.get("column_index")
    try:
        success = columns[index] == column if index else column in columns
    except IndexError:
        success = False
    return Outcome(kind, column, success)


def _not_be_null(frame: _Frame, kind: str, kwargs: dict[str, Any]) -> Outcome:
    column = kwargs["column"]
    series = frame.df[column]
    total = len(series)
    null = series.isna().to_numpy()
    unexpected = int(null.sum())
    success = True if total == 0 else (total - unexpected) / total >= _mostly(kwargs)
    percent = unexpected / total * 100 if total > 0 else None
    first = np.flatnonzero(null)[:PARTIAL_UNEXPECTED]
    examples = tuple(series.iloc[first]) if first.size else ()
    return Outcome(kind, column, success, unexpected, percent, examples)


def _type_list_types(type_list: list[str], with_dtypes: bool) -> list[Any]:
    """GX's type resolution (`_validate_pandas` with dtypes, the map metric without)."""
    import pandas as pd
    from pandas.core.dtypes import dtypes as pd_dtypes

    types: list[Any] = []
    for name in type_list:
        try:
            types.append(np.dtype(name).type)
            if with_dtypes:
                types.append(np.dtype(name))
        except TypeError:
            pd_type = getattr(pd, name, None)
            if isinstance(pd_type, type):
                types.append(pd_type)
                if with_dtypes:
                    try:
                        if isinstance(pd_type(), pd.api.extensions.ExtensionDtype):
                            types.append(pd_type())
                    except TypeError:
                        pass
            dtypes_type = getattr(pd_dtypes, name, None)
            if isinstance(dtypes_type, type):
                types.append(dtypes_type)
        types.extend(_NATIVE_TYPES.get(name.lower(), ()))
    return types


_NATIVE_TYPES: dict[str, tuple[type, ...]] = {
    "none": (type(None),),
    "bool": (bool,),
    "int": (int,),
    "long": (int,),
    "float": (float,),
    "bytes": (bytes,),
    "complex": (complex,),
    "str": (str,),
    "string_types": (str,),
    "list": (list,),
    "dict": (dict,),
}


def _in_type_list(frame: _Frame, kind: str, kwargs: dict[str, Any]) -> Outcome:
    import pandas as pd

    column, type_list = kwargs["column"], kwargs.get("type_list")
    dtype = frame.df[column].dtype
    if type_list is None:
        raise _Unsupported
    if dtype.type.__name__ != "object_":
        success = dtype in _type_list_types(type_list, with_dtypes=True)
        return Outcome(kind, column, success, observed_value=dtype.type.__name__)
    types = tuple(_type_list_types(type_list, with_dtypes=False))
    if not types:
        raise _Unsupported  # GX raises "No recognized numpy/python type"
    values = frame.nonnull(column)
    if pd.api.types.infer_dtype(values, skipna=False) == "string" and issubclass(str, types):
        expected: Any = np.ones(len(values), dtype=bool)
    else:
        kinds = values.map(type)
        ok = {t: isinstance(t, type) and issubclass(t, types) for t in kinds.unique()}
        expected = kinds.map(ok).to_numpy(dtype=bool)
    return _map_outcome(kind, column, kwargs, len(frame.df), values, expected)


def _values_between(frame: _Frame, kind: str, kwargs: dict[str, Any]) -> Outcome:
    import pandas as pd
    from dateutil.parser import parse

    column = kwargs["column"]
    lo, hi = kwargs.get("min_value"), kwargs.get("max_value")
    if lo is None and hi is None:
        raise _Unsupported  # GX raises
    if lo is not None and hi is not None and lo > hi:
        raise _Unsupported
    dtype = frame.df[column].dtype
    if dtype in (np.dtype("int64"), np.dtype("float64")):
        if isinstance(lo, (str, datetime.date)) or isinstance(hi, (str, datetime.date)):
            raise _Unsupported
    elif pd.api.types.is_datetime64_ns_dtype(dtype) and not isinstance(dtype, pd.DatetimeTZDtype):
        lo = parse(lo) if isinstance(lo, str) else lo
        hi = parse(hi) if isinstance(hi, str) else hi
        for bound in (lo, hi):
            if bound is not None and (
                not isinstance(bound, datetime.datetime) or bound.tzinfo is not None
            ):
                raise _Unsupported
    else:
        raise _Unsupported  # GX compares value by value in Python
    values = frame.nonnull(column)
    expected = np.ones(len(values), dtype=bool)
    if lo is not None:
        expected &= (values > lo if kwargs.get("strict_min") else values >= lo).to_numpy()
    if hi is not None:
        expected &= (values < hi if kwargs.get("strict_max") else values <= hi).to_numpy()
    return _map_outcome(kind, column, kwargs, len(frame.df), values, expected)


def _in_set(frame: _Frame, kind: str, kwargs: dict[str, Any]) -> Outcome:
    column, value_set = kwargs["column"], kwargs.get("value_set")
    values = frame.nonnull(column)
    expected = np.ones(len(values), dtype=bool) if value_set is None else values.isin(value_set)
    return _map_outcome(kind, column, kwargs, len(frame.df), values, expected)


def _not_in_set(frame: _Frame, kind: str, kwargs: dict[str, Any]) -> Outcome:
    import pandas as pd

    column, value_set = kwargs["column"], kwargs.get("value_set")
    values = frame.nonnull(column)
    if value_set is None:
        expected: Any = np.ones(len(values), dtype=bool)
    elif pd.api.types.is_datetime64_any_dtype(values.dtype):
        raise _Unsupported  # GX parses the set first
    else:
        expected = ~values.isin(value_set)
    return _map_outcome(kind, column, kwargs, len(frame.df), values, expected)


def _unique(frame: _Frame, kind: str, kwargs: dict[str, Any]) -> Outcome:
    column = kwargs["column"]
    values = frame.nonnull(column)
    expected = ~values.duplicated(keep=False)
    return _map_outcome(kind, column, kwargs, len(frame.df), values, expected)


def _regex(negate: bool) -> Callable[[_Frame, str, dict[str, Any]], Outcome]:
    def check(frame: _Frame, kind: str, kwargs: dict[str, Any]) -> Outcome:
        column, regex = kwargs["column"], kwargs.get("regex")
        if not isinstance(regex, str):
            raise _Unsupported
        values = frame.nonnull(column)
        found = values.astype(str).str.contains(regex).to_numpy(dtype=bool)
        return _map_outcome(
            kind, column, kwargs, len(frame.df), values, ~found if negate else found
        )

    return check


def _lengths_between(frame: _Frame, kind: str, kwargs: dict[str, Any]) -> Outcome:
    column = kwargs["column"]
    lo, hi = kwargs.get("min_value"), kwargs.get("max_value")
    if lo is None and hi is None:
        raise _Unsupported
    values = frame.nonnull(column)
    lengths = values.astype(str).str.len()
    expected = np.ones(len(values), dtype=bool)
    if lo is not None:
        expected &= (lengths > lo if kwargs.get("strict_min") else lengths >= lo).to_numpy()
    if hi is not None:
        expected &= (lengths < hi if kwargs.get("strict_max") else lengths <= hi).to_numpy()
    return _map_outcome(kind, column, kwargs, len(frame.df), values, expected)


def _lengths_equal(frame: _Frame, kind: str, kwargs: dict[str, Any]) -> Outcome:
    column = kwargs["column"]
    values = frame.nonnull(column)
    expected = (values.astype(str).str.len() == kwargs.get("value")).to_numpy()
    return _map_outcome(kind, column, kwargs, len(frame.df), values, expected)


def _column_aggregate(stat: str) -> Callable[[_Frame, str, dict[str, Any]], Outcome]:
    def check(frame: _Frame, kind: str, kwargs: dict[str, Any]) -> Outcome:
        import pandas as pd

        column = kwargs["column"]
        series = frame.df[column]
        if not pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
            raise _Unsupported
        if pd.api.types.is_extension_array_dtype(series):
            raise _Unsupported
        value = getattr(series, stat)()
        return _aggregate_outcome(kind, column, value, kwargs)

    return check


CHECKS: dict[str, Callable[[_Frame, str, dict[str, Any]], Outcome]] = {
    "expect_table_row_count_to_be_between": _table_row_count_between,
    "expect_table_row_count_to_equal": _table_row_count_equal,
    "expect_table_columns_to_match_set": _table_columns_match_set,
    "expect_column_to_exist": _column_to_exist,
    "expect_column_values_to_not_be_null": _not_be_null,
    "expect_column_values_to_be_in_type_list": _in_type_list,
    "expect_column_values_to_be_between": _values_between,
    "expect_column_values_to_be_in_set": _in_set,
    "expect_column_values_to_not_be_in_set": _not_in_set,
    "expect_column_values_to_be_unique": _unique,
    "expect_column_values_to_match_regex": _regex(negate=False),
    "expect_column_values_to_not_match_regex": _regex(negate=True),
    "expect_column_value_lengths_to_be_between": _lengths_between,
    "expect_column_value_lengths_to_equal": _lengths_equal,
    "expect_column_mean_to_be_between": _column_aggregate("mean"),
    "expect_column_min_to_be_between": _column_aggregate("min"),
    "expect_column_max_to_be_between": _column_aggregate("max"),
}


def evaluate(df: pd.DataFrame, expectations: list[tuple[str, dict[str, Any]]]) -> list[Outcome]:
    """Each `(type, kwargs)` expectation's outcome on `df`, in order.

    A column the data lacks fails the expectations on it with an error (GX reports a metric
    error there). Anything not reproduced exactly is returned with `supported=False` and
    `success=False`, for the caller to run through GX.
    """
    frame = _Frame(df)
    out = []
    for kind, kwargs in expectations:
        column = kwargs.get("column")
        check = CHECKS.get(kind)
        if check is None:
            out.append(Outcome(kind, column, False, supported=False))
        elif column is not None and kind != "expect_column_to_exist" and column not in df:
            out.append(Outcome(kind, column, False, error=f"column {column!r} is missing"))
        else:
            try:
                out.append(check(frame, kind, kwargs))
            except _Unsupported:
                out.append(Outcome(kind, column, False, supported=False))
    return out


@dataclass(frozen=True)
class Config:
    """An expectation's type and arguments: what GX's `ExpectationConfiguration` holds."""

    type: str
    kwargs: dict[str, Any]


class Expectation:
    """A GX expectation by type and arguments, without importing GX.

    Importing great_expectations costs 3-4 s in a fresh process (every Airflow task is one),
    and the fast path needs only the type and arguments. The GX object is built on first use
    (`to_gx`): when GX validates what the fast path does not reproduce, or details a failure.
    Arguments given as None are left out, as GX's own configuration leaves them out.
    """

    def __init__(self, type: str, **kwargs: Any) -> None:
        self.configuration = Config(type, {k: v for k, v in kwargs.items() if v is not None})
        self._gx: Any = None

    @property
    def expectation_type(self) -> str:
        return self.configuration.type

    def to_gx(self) -> Any:
        if self._gx is None:
            from great_expectations.expectations.expectation_configuration import (
                ExpectationConfiguration,
            )

            config = self.configuration
            self._gx = ExpectationConfiguration(
                type=config.type, kwargs=dict(config.kwargs)
            ).to_domain_obj()
        return self._gx

    def __repr__(self) -> str:
        return f"Expectation({self.configuration.type!r}, {self.configuration.kwargs!r})"


def gx_object(expectation: Any) -> Any:
    """The GX expectation object of an `Expectation` (or of a GX object: itself)."""
    return expectation.to_gx() if isinstance(expectation, Expectation) else expectation


#: Arguments of extra (spec-declared) expectations that `light_extra` checks itself, by type.
_COLUMN_MAP = {"column", "mostly"}
_LIGHT_EXTRAS: dict[str, set[str]] = {
    "expect_column_values_to_be_unique": _COLUMN_MAP,
    "expect_column_values_to_match_regex": _COLUMN_MAP | {"regex"},
    "expect_column_values_to_not_match_regex": _COLUMN_MAP | {"regex"},
    "expect_column_values_to_be_in_set": _COLUMN_MAP | {"value_set"},
    "expect_column_values_to_not_be_in_set": _COLUMN_MAP | {"value_set"},
    "expect_column_values_to_be_between": _COLUMN_MAP
    | {"min_value", "max_value", "strict_min", "strict_max"},
}


def _real(x: Any) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)


def light_extra(kind: str, kwargs: dict[str, Any]) -> Expectation | None:
    """A spec's extra expectation as an `Expectation` when its arguments are plainly valid
    (a conservative subset: the common types, plain values); None leaves it to GX's own
    validation, which is the authority on what exists and what it accepts."""
    allowed = _LIGHT_EXTRAS.get(kind)
    if allowed is None or not set(kwargs) <= allowed:
        return None
    column, mostly = kwargs.get("column"), kwargs.get("mostly", 1.0)
    if not isinstance(column, str) or not column or not _real(mostly) or not 0 <= mostly <= 1:
        return None
    if "regex" in allowed:
        regex = kwargs.get("regex")
        if not isinstance(regex, str):
            return None
        try:
            re.compile(regex)
        except re.error:
            return None
    if "value_set" in allowed:
        values = kwargs.get("value_set")
        plain = (str, int, float)
        if not isinstance(values, list) or not values:
            return None
        if not all(isinstance(v, plain) and not isinstance(v, bool) for v in values):
            return None
        if any(isinstance(v, float) and not math.isfinite(v) for v in values):
            return None
    if "min_value" in allowed:
        lo, hi = kwargs.get("min_value"), kwargs.get("max_value")
        if (lo is None and hi is None) or any(b is not None and not _real(b) for b in (lo, hi)):
            return None
        if lo is not None and hi is not None and lo > hi:
            return None
        if any(not isinstance(kwargs.get(k, False), bool) for k in ("strict_min", "strict_max")):
            return None
    return Expectation(kind, **kwargs)


def _key_value(value: Any) -> Any:
    """Numbers as floats and sequences as lists: GX's configuration stores `1` as `1.0` for
    some arguments, so a key must not tell them apart."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, (list, tuple)):
        return [_key_value(v) for v in value]
    return value


def _no_default(_value: Any) -> bool:
    return False


#: Arguments GX drops from a configuration at their default value.
_KEY_DEFAULTS: dict[str, Callable[[Any], bool]] = {
    "mostly": lambda v: _real(v) and v == 1,
    "strict_min": lambda v: v is False,
    "strict_max": lambda v: v is False,
}


def config_key(config: Any) -> tuple[str, str]:
    """An expectation configuration's identity (type and arguments, without GX's batch id).

    GX returns a suite's results in its own order (expectations whose metrics failed first),
    so results are matched back to expectations by this key. GX's configuration leaves out
    arguments that are None or at their default, and stores some numbers as floats; the key
    does the same, so an `Expectation` and its GX object share a key.
    """
    kwargs = {
        k: _key_value(v)
        for k, v in dict(config.kwargs).items()
        if k != "batch_id" and v is not None and not _KEY_DEFAULTS.get(k, _no_default)(v)
    }
    return config.type, repr(sorted(kwargs.items()))


@dataclass(frozen=True)
class CheckResult:
    """One expectation's result in the shape of GX's `ExpectationValidationResult`."""

    expectation_config: Any
    success: bool
    result: dict[str, Any]
    exception_info: dict[str, Any]


@dataclass(frozen=True)
class SuiteResults:
    """A suite's results in the shape of GX's `ExpectationSuiteValidationResult`."""

    results: list[Any]
    statistics: dict[str, Any]
    success: bool
    gx_evaluated: int


def _as_result(config: Any, outcome: Outcome) -> CheckResult:
    result: dict[str, Any] = {}
    if outcome.unexpected_count is not None:
        result["unexpected_count"] = outcome.unexpected_count
        result["unexpected_percent"] = outcome.unexpected_percent
        result["partial_unexpected_list"] = list(outcome.examples)
    if outcome.observed_value is not None:
        result["observed_value"] = outcome.observed_value
    info = {
        "raised_exception": outcome.error is not None,
        "exception_message": outcome.error,
        "exception_traceback": None,
    }
    return CheckResult(config, outcome.success, result, info)


def check_suite(
    df: pd.DataFrame,
    suite: list[Any],
    run_gx: Callable[[pd.DataFrame, list[Any]], Any],
    detail: bool = False,
) -> SuiteResults:
    """Evaluate expectations (`Expectation`s or GX objects) with `evaluate`; `run_gx` (given
    GX objects) only where GX must decide.

    GX (`run_gx(df, expectations)`, returning its suite result) validates the expectations
    `evaluate` does not reproduce, and, when any expectation failed or `detail` is asked for,
    the failed (or all) ones as well, so a failure's stored evidence is GX's own result.
    """
    configs = [e.configuration for e in suite]
    outcomes = evaluate(df, [(c.type, dict(c.kwargs)) for c in configs])
    failed = any(o.supported and not o.success for o in outcomes)
    to_gx = [
        i for i, o in enumerate(outcomes) if not o.supported or detail or (failed and not o.success)
    ]
    results: list[Any] = [_as_result(c, o) for c, o in zip(configs, outcomes, strict=True)]
    if to_gx:
        objects = [gx_object(suite[i]) for i in to_gx]
        gx = run_gx(df, objects)
        by_key = {config_key(r.expectation_config): r for r in gx.results}
        for i, obj in zip(to_gx, objects, strict=True):
            results[i] = by_key[config_key(obj.configuration)]
    passed = sum(1 for r in results if r.success)
    statistics = {
        "evaluated_expectations": len(results),
        "successful_expectations": passed,
        "unsuccessful_expectations": len(results) - passed,
        "success_percent": passed / len(results) * 100 if results else None,
    }
    return SuiteResults(results, statistics, passed == len(results), len(to_gx))
