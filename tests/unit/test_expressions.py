"""The spec's expression language: parse errors name the position, and evaluation agrees with
DuckDB (the SQL dialect the language follows) on generated, well-typed expressions."""

from __future__ import annotations

import contextlib
import math
import os

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlops_tasks.data.expressions import ExpressionError, parse

duckdb = pytest.importorskip("duckdb", reason="duckdb (a test dependency) is not installed")

FRAME = pd.DataFrame(
    {
        "i": pd.array([3, -7, 0, None, 12, 5], dtype="Int64"),
        "f": [1.5, -0.25, np.nan, 2.0, 1e6, -3.75],
        "s": ["MALE", "female", None, "", "O'Neil", "x y"],
        "t": pd.to_datetime(
            [
                "2024-01-07 10:30",
                "2023-12-31 23:59",
                None,
                "2024-02-29 00:00",
                "2020-06-15 06:00",
                "2024-03-01 12:00",
            ]
        ),
        "b": pd.array([True, False, None, True, False, True], dtype="boolean"),
        "Mixed Case": [1, 2, 3, 4, 5, 6],
    }
)


def duck(expression: str, frame: pd.DataFrame = FRAME) -> list[object]:
    con = duckdb.connect()
    con.register("rows", frame)
    return [r[0] for r in con.execute(f"SELECT {expression} FROM rows").fetchall()]


def ours(expression: str, frame: pd.DataFrame = FRAME) -> list[object]:
    return list(parse(expression).evaluate(frame))


def same(a: object, b: object) -> bool:
    def null(x: object) -> bool:
        return x is None or x is pd.NA or (isinstance(x, float) and math.isnan(x))

    if null(a) or null(b):
        return null(a) and null(b)
    if isinstance(a, bool | np.bool_) or isinstance(b, bool | np.bool_):
        return bool(a) == bool(b)
    if isinstance(a, int | float | np.number) and isinstance(b, int | float | np.number):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-9)
    if isinstance(b, pd.Timestamp | np.datetime64):
        return pd.Timestamp(a) == pd.Timestamp(b)
    return a == b


# --- generated expressions, by type ---------------------------------------------------------

# a fraction is a DOUBLE here; DuckDB reads a bare `0.5` as a DECIMAL (see the module docs)
NUM_LEAVES = st.sampled_from(["i", "f", '"Mixed Case"', "2", "0.5::DOUBLE", "-3", "NULL"])
STR_LEAVES = st.sampled_from(["s", "'MALE'", "'a''b'", "''", "NULL"])
TIME_LEAVES = st.sampled_from(["t", "TIMESTAMP '2024-01-01 00:00:00'"])


def num(depth: int = 3) -> st.SearchStrategy[str]:
    if depth == 0:
        return NUM_LEAVES
    sub = num(depth - 1)
    return st.one_of(
        NUM_LEAVES,
        st.tuples(sub, st.sampled_from(["+", "-", "*"]), sub).map(
            lambda t: f"({t[0]} {t[1]} {t[2]})"
        ),
        # divisors kept away from zero: DuckDB gives inf where the spec language gives NULL
        st.tuples(sub, st.sampled_from(["/", "%"]), sub).map(
            lambda t: f"({t[0]} {t[1]} (abs({t[2]}) + 1))"
        ),
        sub.map(lambda e: f"abs({e})"),
        sub.map(lambda e: f"-({e})"),
        sub.map(lambda e: f"round({e}, 1)"),
        sub.map(lambda e: f"floor({e})"),
        sub.map(lambda e: f"coalesce({e}, 0)"),
        st.tuples(sub, sub).map(lambda t: f"greatest({t[0]}, {t[1]})"),
        st.tuples(sub, sub).map(lambda t: f"least({t[0]}, {t[1]})"),
        st.tuples(boolean(depth - 1), sub, sub).map(
            lambda t: f"CASE WHEN {t[0]} THEN {t[1]} ELSE {t[2]} END"
        ),
        text(depth - 1).map(lambda e: f"length({e})"),
        TIME_LEAVES.map(lambda e: f"dayofweek({e})"),
        TIME_LEAVES.map(lambda e: f"isodow({e})"),
        TIME_LEAVES.map(lambda e: f"month({e})"),
        TIME_LEAVES.map(lambda e: f"year({e})"),
        TIME_LEAVES.map(lambda e: f"hour({e})"),
        # BIGINT: DuckDB's INTEGER is 32 bits, the spec language's integers are all 64
        sub.map(lambda e: f"CAST({e} AS BIGINT)"),
    )


def text(depth: int = 3) -> st.SearchStrategy[str]:
    if depth == 0:
        return STR_LEAVES
    sub = text(depth - 1)
    return st.one_of(
        STR_LEAVES,
        st.tuples(sub, sub).map(lambda t: f"({t[0]} || {t[1]})"),
        st.tuples(sub, sub).map(lambda t: f"concat({t[0]}, '-', {t[1]})"),
        sub.map(lambda e: f"lower({e})"),
        sub.map(lambda e: f"upper({e})"),
        sub.map(lambda e: f"substr({e}, 2, 3)"),
        sub.map(lambda e: f"coalesce({e}, 'none')"),
        st.sampled_from(["i", '"Mixed Case"']).map(lambda e: f"CAST({e} AS VARCHAR)"),
        st.tuples(boolean(depth - 1), sub, sub).map(
            lambda t: f"CASE WHEN {t[0]} THEN {t[1]} ELSE {t[2]} END"
        ),
    )


def boolean(depth: int = 3) -> st.SearchStrategy[str]:
    leaves = st.sampled_from(["b", "TRUE", "FALSE", "NULL"])
    if depth == 0:
        return leaves
    sub = boolean(depth - 1)
    n, s = num(depth - 1), text(depth - 1)
    comparison = st.sampled_from(["=", "<>", "<", "<=", ">", ">="])
    return st.one_of(
        leaves,
        st.tuples(n, comparison, n).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        st.tuples(s, comparison, s).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        st.tuples(TIME_LEAVES, comparison).map(lambda t: f"({t[0]} {t[1]} '2024-01-01')"),
        st.tuples(sub, st.sampled_from(["AND", "OR"]), sub).map(
            lambda t: f"({t[0]} {t[1]} {t[2]})"
        ),
        sub.map(lambda e: f"NOT ({e})"),
        n.map(lambda e: f"({e}) IS NULL"),
        s.map(lambda e: f"({e}) IS NOT NULL"),
        st.tuples(n, n, n).map(lambda t: f"({t[0]}) BETWEEN ({t[1]}) AND ({t[2]})"),
        n.map(lambda e: f"({e}) IN (3, 1.5, NULL)"),
        n.map(lambda e: f"({e}) NOT IN (3, 12)"),
        s.map(lambda e: f"({e}) LIKE '%a%'"),
        s.map(lambda e: f"({e}) ILIKE 'm_le'"),
    )


def agree(expression: str) -> None:
    try:
        expected = duck(expression)
    except duckdb.Error:  # e.g. an integer overflow DuckDB refuses: ours must refuse too
        with pytest.raises(ExpressionError):
            ours(expression)
        return
    got = ours(expression)
    assert len(got) == len(expected)
    for row, (a, b) in enumerate(zip(got, expected, strict=True)):
        assert same(a, b), f"{expression}: row {row}: ours {a!r}, DuckDB {b!r}"


# CI runs the same 150 examples each time; EXPRESSION_EXAMPLES=5000 searches further, at random
_SETTINGS = settings(
    max_examples=int(os.environ.get("EXPRESSION_EXAMPLES", "150")),
    deadline=None,
    derandomize="EXPRESSION_EXAMPLES" not in os.environ,
    suppress_health_check=[HealthCheck.too_slow],
)


@_SETTINGS
@given(num(2))
def test_numeric_expressions_agree_with_duckdb(expression: str) -> None:
    agree(expression)


@_SETTINGS
@given(text(2))
def test_text_expressions_agree_with_duckdb(expression: str) -> None:
    agree(expression)


@_SETTINGS
@given(boolean(2))
def test_boolean_expressions_agree_with_duckdb(expression: str) -> None:
    agree(expression)


@pytest.mark.parametrize(
    "expression",
    [
        "dayofweek(t)",
        "isodow(t) * 10 + quarter(t)",
        "dayofyear(t)",
        "week(t)",
        "minute(t) + second(t)",
        "date_diff('day', TIMESTAMP '2024-01-01', t)",
        "date_diff('hour', t, TIMESTAMP '2024-03-01 00:00:00')",
        "epoch(t)",
        "CASE s WHEN 'MALE' THEN 1 WHEN 'female' THEN 2 END",
        "s || '-' || CAST(i AS VARCHAR)",
        "CAST(f AS VARCHAR)",
        "CAST(b AS VARCHAR)",
        "TRY_CAST(s AS INTEGER)",
        "CAST('12' AS INTEGER) + i",
        "CAST(f AS INTEGER)",
        "replace(s, 'a', 'A')",
        "starts_with(s, 'fe')",
        "contains(s, ' ')",
        "trim('  x  ')",
        "nullif(i, 3)",
        "power(f, 2)",
        "sqrt(abs(f))",
        "exp(0.5) + log10(100) + ln(2.0)",
        "sign(f)",
        "ceil(f)",
        "i // 2",
        "i % 5",
        "f % 2",
        "substr(s, -3, 2)",
        "substr(s, 0, 2)",
        "mixed case IS NULL".replace("mixed case", '"Mixed Case"'),
        "t >= '2024-01-01' AND b",
        "i BETWEEN 0 AND 5",
    ],
)
def test_functions_agree_with_duckdb(expression: str) -> None:
    agree(expression)


@pytest.mark.parametrize(
    ("expression", "position", "message"),
    [
        ("arr_delay >", 12, "expected a value"),
        ("(a + b", 7, "expected ')'"),
        ("a + b)", 6, "unexpected ')'"),
        ("dayofwek(t)", 1, "did you mean 'dayofweek'"),
        ("round(f, 1, 2)", 1, "takes 1 to 2 argument(s), got 3"),
        ("x ; DROP TABLE y", 3, "unexpected ';'"),
        ("'open", 1, "unterminated quote"),
        ('"open', 1, "unterminated quote"),
        ("CAST(a AS BLOB)", 11, "unknown type"),
        ("a IS 3", 6, "NULL after IS"),
        ("a LIKE b", 8, "needs a quoted pattern"),
        ("CASE END", 6, "at least one WHEN"),
        ("CASE WHEN a THEN 1", 19, "END closing CASE"),
        ("", None, "empty"),
        ("read_csv('/etc/passwd')", 1, "unknown function 'read_csv'"),
        ("(SELECT 1)", 2, "queries and subqueries are not part of an expression"),
        ("a FROM b", 3, "unexpected 'FROM'"),
        ("99999999999999999999", 1, "too large"),
    ],
)
def test_parse_errors_name_the_position(
    expression: str, position: int | None, message: str
) -> None:
    with pytest.raises(ExpressionError) as err:
        parse(expression)
    assert err.value.position == position
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("nope + 1", "no column 'nope' in the rows"),
        ("s + 1", "'+' needs a number, got text"),
        ("i > 'x'", "cannot compare a number with text"),
        ("CASE WHEN b THEN 1 ELSE 'x' END", "CASE branches give different types"),
        ("CAST(s AS INTEGER)", "cannot CAST 'MALE' to a number"),
        ("NOT i", "NOT needs a boolean, got a number"),
        ("9223372036854775807 + i", "integer overflow"),
        ("i AND b", "AND needs a boolean"),
    ],
)
def test_evaluation_errors_name_what_is_wrong(expression: str, message: str) -> None:
    with pytest.raises(ExpressionError) as err:
        ours(expression)
    assert message in str(err.value)


def test_null_instead_of_an_error_or_an_infinity_for_odd_rows() -> None:
    # where DuckDB would give inf or stop the query, one odd row is a missing value
    assert [None if pd.isna(v) else v for v in ours("f / (i - 3)")] == [
        None,
        0.025,
        None,
        None,
        1e6 / 9,
        -3.75 / 2,
    ]
    assert pd.isna(ours("ln(i)")[1]) and pd.isna(ours("sqrt(i)")[1])


def test_columns_lists_what_an_expression_reads() -> None:
    e = parse("CASE WHEN \"Date Egg\" > '2008-01-01' THEN Sex ELSE lower(island) || Sex END")
    assert e.columns == ["Date Egg", "Sex", "island"]


def test_bare_names_match_case_insensitively_unless_ambiguous() -> None:
    frame = pd.DataFrame({"Sex": ["M"], "sex": ["F"], "Island": ["Biscoe"]})
    assert ours("island", frame) == ["Biscoe"]
    assert ours('"sex"', frame) == ["F"]
    assert ours("Sex", frame) == ["M"]
    with pytest.raises(ExpressionError, match=r"matches .* apart from case"):
        ours("SEX", frame)


@given(st.text(max_size=200))
@settings(max_examples=300, deadline=None)
def test_any_text_parses_or_fails_with_an_expression_error(text: str) -> None:
    try:
        e = parse(text)
    except ExpressionError as err:
        assert err.position is None or 1 <= err.position <= len(text) + 1
        return
    with contextlib.suppress(ExpressionError):
        e.evaluate(FRAME)


def test_deep_and_long_expressions_are_refused_not_crashed() -> None:
    with pytest.raises(ExpressionError, match="nested more than"):
        parse("(" * 500 + "1" + ")" * 500)
    with pytest.raises(ExpressionError, match="nested more than"):
        parse("NOT " * 500 + "TRUE")
    with pytest.raises(ExpressionError, match="nested more than"):
        parse("-" * 500 + "1")
    with pytest.raises(ExpressionError, match="longer than"):
        parse("1 + " * 2000 + "1")
    with pytest.raises(ExpressionError, match="more than 1000 terms"):
        parse("+".join(["1"] * 1200))


def _spec_with(field: str, text: str) -> str:
    import yaml

    from tests.conftest import REPO

    doc = yaml.safe_load((REPO / "dags" / "specs" / "credit_default.yaml").read_text())
    if field == "derive":
        doc["data"]["derive"] = {"extra": text}
    elif field == "scope":
        doc["data"]["scope"] = text
    else:
        doc["target"] = {"expr": text, "name": "derived"}
    return yaml.safe_dump(doc)


@given(st.sampled_from(["derive", "scope", "target"]), st.text(max_size=120))
@settings(max_examples=150, deadline=None, derandomize=True)
def test_any_expression_in_a_spec_loads_or_is_a_spec_error(field: str, text: str) -> None:
    from mlops_tasks.errors import SpecError
    from mlops_tasks.specs import parse_spec

    try:
        parse_spec(_spec_with(field, text), "fuzz.yaml")
    except SpecError as err:
        assert "fuzz.yaml" in str(err)


@given(
    st.sampled_from(
        ["i + 1", "s || 'x'", "dayofweek(t)", "CAST(s AS INTEGER)", "i > f", "b AND i"]
    ),
    st.lists(
        st.one_of(
            st.none(),
            st.integers(-5, 5),
            st.floats(allow_nan=True),
            st.text(max_size=5),
            st.booleans(),
        ),
        min_size=1,
        max_size=6,
    ),
)
@settings(max_examples=150, deadline=None, derandomize=True)
def test_a_batch_of_any_values_is_shaped_or_is_a_shape_error(
    expression: str, values: list[object]
) -> None:
    """Whatever a batch holds in the columns an expression reads (mixed types, NaN, text where
    a number was expected), evaluating it gives values or an error naming the expression."""
    frame = pd.DataFrame(
        {name: pd.Series(values, dtype=object) for name in ("i", "f", "s", "t", "b")}
    )
    try:
        out = parse(expression).evaluate(frame)
    except ExpressionError:
        return
    assert len(out) == len(values)
