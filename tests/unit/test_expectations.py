"""`expectations.evaluate` against its contract: Great Expectations' own results, same batch.

Each case generates a frame (floats with NaN and infinities, int64, int32, bools, strings with
None, mixed Python objects, datetimes with NaT, integer-coded text, nullable integers), runs one
GX suite of good and bad expectations on it, and requires every expectation the fast path
supports to agree with GX on success, unexpected_count, unexpected_percent, the partial
unexpected list (order and size) and the observed value.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest

from mlops_tasks.data import expectations
from mlops_tasks.data.validation import NUMERIC_TYPES, run_suite

TEXT_TYPES = ["object", "str", "string"]

Spec = tuple[str, dict[str, Any]]


def _frame(seed: int, n: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    f = rng.normal(50, 20, n)
    f[rng.random(n) < 0.1] = np.nan
    f[rng.random(n) < 0.02] = np.inf
    mixed = np.array([1, 2.5, "x", None, True, "y"], dtype=object)[rng.integers(0, 6, n)]
    s = rng.choice(np.array(["alpha", "beta", "gamma", "delta_long"], dtype=object), n)
    s[rng.random(n) < 0.15] = None
    dt = pd.Series(pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 400, n), "D"))
    dt = dt.mask(rng.random(n) < 0.1)
    nullable = pd.array(rng.integers(0, 9, n), dtype="Int64")
    nullable[rng.random(n) < 0.1] = pd.NA
    return pd.DataFrame(
        {
            "f": f,
            "i": rng.integers(-5, 100, n),
            "i32": rng.integers(0, 50, n).astype(np.int32),
            "b": rng.random(n) < 0.5,
            "s": s,
            "mixed": mixed,
            "dt": dt,
            "code": rng.integers(0, 12, n).astype(str).astype(object),
            "nullable": nullable,
            "uid": rng.permutation(n * 2)[:n] if seed % 2 else rng.integers(0, n, n),
        }
    )


def _suite(n: int) -> list[Spec]:
    """Good and bad variants of every type the validation suites create, and the common extras."""
    exps: list[Spec] = [
        ("expect_table_row_count_to_be_between", {"min_value": 1, "max_value": 10_000}),
        (
            "expect_table_row_count_to_be_between",
            {"min_value": n, "max_value": n, "strict_max": True},
        ),
        ("expect_table_row_count_to_equal", {"value": n}),
        ("expect_table_columns_to_match_set", {"column_set": ["f", "i"], "exact_match": False}),
        ("expect_table_columns_to_match_set", {"column_set": ["f", "i"]}),
        ("expect_column_to_exist", {"column": "s"}),
        ("expect_column_to_exist", {"column": "nope"}),
        ("expect_column_to_exist", {"column": "i", "column_index": 1}),
    ]
    for col in ["f", "i", "s", "mixed", "dt", "nullable"]:
        exps += [
            ("expect_column_values_to_not_be_null", {"column": col}),
            ("expect_column_values_to_not_be_null", {"column": col, "mostly": 0.88}),
        ]
    for col in ["f", "i", "i32", "b", "s", "mixed", "dt", "code", "nullable"]:
        exps += [
            (
                "expect_column_values_to_be_in_type_list",
                {"column": col, "type_list": NUMERIC_TYPES},
            ),
            ("expect_column_values_to_be_in_type_list", {"column": col, "type_list": TEXT_TYPES}),
            (
                "expect_column_values_to_be_in_type_list",
                {"column": col, "type_list": ["int", "float"]},
            ),
        ]
    for col in ["f", "i", "i32"]:
        exps += [
            (
                "expect_column_values_to_be_between",
                {"column": col, "min_value": 0.0, "max_value": 80.0},
            ),
            (
                "expect_column_values_to_be_between",
                {"column": col, "min_value": -1e9, "max_value": 1e9},
            ),
            (
                "expect_column_values_to_be_between",
                {"column": col, "min_value": 10.0, "strict_min": True, "mostly": 0.7},
            ),
            (
                "expect_column_values_to_be_between",
                {"column": col, "max_value": 60, "strict_max": True},
            ),
            ("expect_column_mean_to_be_between", {"column": col, "min_value": 40, "max_value": 60}),
            ("expect_column_min_to_be_between", {"column": col, "min_value": -5}),
            (
                "expect_column_max_to_be_between",
                {"column": col, "max_value": 99, "strict_max": True},
            ),
        ]
    exps += [
        ("expect_column_values_to_be_between", {"column": "dt", "min_value": "2024-02-01"}),
        (
            "expect_column_values_to_be_between",
            {"column": "dt", "max_value": "2024-09-01T12:00:00"},
        ),
        (
            "expect_column_values_to_be_between",
            {"column": "dt", "min_value": "2023-12-01", "max_value": "2025-06-01"},
        ),
        (
            "expect_column_values_to_be_in_set",
            {"column": "s", "value_set": ["alpha", "beta", "gamma"]},
        ),
        (
            "expect_column_values_to_be_in_set",
            {"column": "code", "value_set": [str(i) for i in range(12)]},
        ),
        ("expect_column_values_to_be_in_set", {"column": "code", "value_set": list(range(12))}),
        ("expect_column_values_to_be_in_set", {"column": "i", "value_set": list(range(0, 100))}),
        ("expect_column_values_to_be_in_set", {"column": "b", "value_set": [True]}),
        (
            "expect_column_values_to_be_in_set",
            {"column": "mixed", "value_set": [1, "x", True], "mostly": 0.5},
        ),
        ("expect_column_values_to_not_be_in_set", {"column": "s", "value_set": ["delta_long"]}),
        ("expect_column_values_to_not_be_in_set", {"column": "i", "value_set": [0, 1, 2]}),
        ("expect_column_values_to_be_unique", {"column": "uid"}),
        ("expect_column_values_to_be_unique", {"column": "s", "mostly": 0.0}),
        ("expect_column_values_to_match_regex", {"column": "s", "regex": "^[a-g]"}),
        ("expect_column_values_to_match_regex", {"column": "code", "regex": r"^\d$"}),
        ("expect_column_values_to_not_match_regex", {"column": "s", "regex": "_"}),
        (
            "expect_column_value_lengths_to_be_between",
            {"column": "s", "min_value": 4, "max_value": 5},
        ),
        ("expect_column_value_lengths_to_be_between", {"column": "code", "max_value": 1}),
        ("expect_column_value_lengths_to_equal", {"column": "s", "value": 5}),
        ("expect_column_values_to_be_in_set", {"column": "missing_col", "value_set": [1]}),
        ("expect_column_values_to_not_be_null", {"column": "missing_col"}),
        ("expect_column_values_to_be_null", {"column": "s"}),  # not reproduced: GX decides
    ]
    return exps


def _objects(specs: list[Spec]) -> list[Any]:
    from great_expectations.expectations.expectation_configuration import (
        ExpectationConfiguration,
    )

    return [ExpectationConfiguration(type=t, kwargs=k).to_domain_obj() for t, k in specs]


def _gx(df: pd.DataFrame, objs: list[Any]) -> list[Any]:
    results = run_suite(df, objs, "oracle").results
    by_key = {expectations.config_key(r.expectation_config): r for r in results}
    return [by_key[expectations.config_key(e.configuration)] for e in objs]


def _missing(x: Any) -> bool:
    return x is None or x is pd.NA or x is pd.NaT or (isinstance(x, float) and math.isnan(x))


def _same(a: Any, b: Any) -> bool:
    """The same value of the same type; missing values only equal the same kind of missing."""
    if _missing(a) or _missing(b):
        return type(a) is type(b) and _missing(a) and _missing(b)
    return type(a) is type(b) and bool(a == b)


def _check(df: pd.DataFrame, specs: list[Spec]) -> int:
    objs = _objects(specs)  # GX's configuration coerces arguments (dates, floats)
    specs = [(e.expectation_type, dict(e.configuration.kwargs)) for e in objs]
    got = expectations.evaluate(df, specs)
    compared = 0
    for (kind, kwargs), mine, theirs in zip(specs, got, _gx(df, objs), strict=True):
        label = f"{kind} {kwargs}"
        assert mine.type == kind, label
        if not mine.supported:
            continue
        compared += 1
        res = theirs.result or {}
        info = theirs.exception_info or {}
        if "raised_exception" in info:
            gx_error = bool(info["raised_exception"])
        else:  # per-metric errors
            gx_error = any(v.get("raised_exception") for v in info.values())
        if mine.error is not None:
            assert gx_error and not theirs.success, label
            continue
        assert not gx_error, label
        assert mine.success == theirs.success, label
        assert mine.unexpected_count == res.get("unexpected_count"), label
        assert _same(mine.unexpected_percent, res.get("unexpected_percent")), label
        partial = res.get("partial_unexpected_list")
        if partial is not None or mine.examples:
            assert len(mine.examples) == len(partial or []), label
            assert all(_same(x, y) for x, y in zip(mine.examples, partial or [], strict=True)), (
                label
            )
        observed = res.get("observed_value")
        assert _same(mine.observed_value, observed), (
            f"{label}: {mine.observed_value!r} {observed!r}"
        )
    return compared


@pytest.mark.parametrize(("seed", "n"), [(1, 200), (2, 57), (3, 1), (4, 3000)])
def test_outcomes_match_great_expectations(seed: int, n: int) -> None:
    df = _frame(seed, n)
    specs = _suite(n)
    assert _check(df, specs) >= len(specs) - 12  # nearly all reproduced, so compared here


def test_empty_frame_and_all_null_columns_match_great_expectations() -> None:
    df = _frame(5, 40).iloc[:0]
    specs = _suite(0)
    _check(df, specs)
    nulls = _frame(6, 30)
    for col in ["f", "s", "mixed", "dt", "nullable"]:
        nulls[col] = None if nulls[col].dtype == object else pd.NA if col == "nullable" else np.nan
    nulls["dt"] = pd.NaT
    _check(nulls, _suite(30))


def test_unsupported_types_are_flagged_not_guessed() -> None:
    out = expectations.evaluate(
        pd.DataFrame({"a": [1]}), [("expect_column_kl_divergence_to_be_less_than", {"column": "a"})]
    )
    assert out == [
        expectations.Outcome(
            "expect_column_kl_divergence_to_be_less_than", "a", False, supported=False
        )
    ]


def _bad_batch(df: pd.DataFrame) -> pd.DataFrame:
    bad = df.copy()
    bad.loc[bad.index[:7], "age"] = -3.0
    bad.loc[bad.index[5:40], "income"] = np.nan
    bad.loc[bad.index[3:9], "region"] = "atlantis"
    bad["num_accounts"] = bad["num_accounts"].astype(object)
    bad.loc[bad.index[2], "num_accounts"] = "many"
    return bad.drop(columns=["channel"])


@pytest.mark.parametrize("bad", [pytest.param(False, id="good"), pytest.param(True, id="bad")])
def test_spec_suite_decisions_and_stored_failures_match_great_expectations(bad: bool) -> None:
    """`run_checks` on the pipeline's own suite: GX's decisions and the same stored failures."""
    from pathlib import Path

    from mlops_tasks.data import synthetic, validation
    from mlops_tasks.specs import find_spec

    spec = find_spec("credit_default", Path(__file__).resolve().parents[2] / "dags" / "specs")
    reference = synthetic.demo_rows(900, seed=1)
    batch = reference.sample(600, random_state=2)  # passes the suite learned from it
    batch = _bad_batch(batch) if bad else batch
    exps = suite(spec, reference)
    fast = validation.run_checks(batch, exps, spec.name)
    slow = validation.run_suite(batch, suite(spec, reference), spec.name)
    assert fast.success == slow.success == (not bad)
    assert fast.gx_evaluated == (fast.statistics["unsuccessful_expectations"] if bad else 0)
    assert dict(fast.statistics) == dict(slow.statistics)
    assert validation._failures(fast, batch) == validation._failures(slow, batch)


def suite(spec: Any, reference: Any) -> list[Any]:
    """The declared contract and what was learned from `reference`, as the pipeline checks a
    retrain window."""
    from mlops_tasks.data import validation

    return validation.declared_expectations(spec) + validation.learned_expectations(spec, reference)


LIGHT_CASES: list[Spec] = [
    ("expect_column_values_to_be_unique", {"column": "id"}),
    ("expect_column_values_to_be_unique", {"column": "id", "mostly": 0.5}),
    ("expect_column_values_to_match_regex", {"column": "id", "regex": "^c[0-9]{8}-[0-9]{6}$"}),
    ("expect_column_values_to_not_match_regex", {"column": "s", "regex": "x", "mostly": 1}),
    ("expect_column_values_to_be_in_set", {"column": "s", "value_set": ["a", 1, 2.5]}),
    ("expect_column_values_to_not_be_in_set", {"column": "s", "value_set": [0]}),
    ("expect_column_values_to_be_between", {"column": "f", "min_value": 1, "max_value": 2}),
    ("expect_column_values_to_be_between", {"column": "f", "max_value": 2.5, "strict_max": True}),
    ("expect_column_values_to_be_between", {"column": "f", "min_value": -3, "mostly": 0.9}),
]
LEFT_TO_GX: list[Spec] = [
    ("expect_column_values_to_be_unique", {"column": "id", "row_condition": "x > 1"}),
    ("expect_column_values_to_be_unique", {"column": ""}),
    ("expect_column_values_to_be_unique", {"column": "id", "mostly": 2}),
    ("expect_column_values_to_match_regex", {"column": "id"}),
    ("expect_column_values_to_match_regex", {"column": "id", "regex": "("}),
    ("expect_column_values_to_be_in_set", {"column": "s", "value_set": []}),
    ("expect_column_values_to_be_in_set", {"column": "s", "value_set": [True]}),
    ("expect_column_values_to_be_between", {"column": "f"}),
    ("expect_column_values_to_be_between", {"column": "f", "min_value": 3, "max_value": 2}),
    ("expect_column_values_to_be_between", {"column": "f", "min_value": "2024-01-01"}),
    ("expect_column_mean_to_be_between", {"column": "f", "min_value": 1}),
    ("expect_nonexistent_expectation", {"column": "f"}),
]


@pytest.mark.parametrize(("kind", "kwargs"), LIGHT_CASES)
def test_light_extras_are_what_gx_builds(kind: str, kwargs: dict[str, Any]) -> None:
    """An extra expectation taken without GX is one GX accepts, with the same identity."""
    light = expectations.light_extra(kind, kwargs)
    assert light is not None
    (gx,) = _objects([(kind, kwargs)])
    assert light.to_gx() == gx
    assert expectations.config_key(light.configuration) == expectations.config_key(gx.configuration)


@pytest.mark.parametrize(("kind", "kwargs"), LEFT_TO_GX)
def test_anything_else_is_left_to_gx(kind: str, kwargs: dict[str, Any]) -> None:
    assert expectations.light_extra(kind, kwargs) is None


def test_the_pipeline_suite_is_built_without_importing_gx() -> None:
    """Every Airflow task is a fresh process: building the suite must not import GX (3-4 s)."""
    import subprocess
    import sys

    probe = (
        "import sys\n"
        "from pathlib import Path\n"
        "from mlops_tasks.specs import load_spec\n"
        "from mlops_tasks.data.validation import declared_expectations\n"
        "for p in sorted(Path('dags/specs').glob('*.yaml')):\n"
        "    declared_expectations(load_spec(p))\n"
        "    declared_expectations(load_spec(p), serving=True)\n"
        "print(sorted(m for m in sys.modules if m.startswith('great_expectations'))[:3])\n"
    )
    root = __import__("pathlib").Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=root, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout
