"""Data validation: the Great Expectations suite built from the spec, its evidence and errors."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from mlops_tasks.data import synthetic
from mlops_tasks.data.validation import learned_expectations, validate
from mlops_tasks.errors import DataValidationError, SpecError
from mlops_tasks.specs import ModelSpec, load_spec
from mlops_tasks.storage import ArtifactStore, LocalStore

SPEC_DIR = Path(__file__).resolve().parents[2] / "dags" / "specs"
ROWS = 1500


def variant(spec: ModelSpec, **sections: dict[str, Any]) -> ModelSpec:
    """A copy of `spec` with some keys of some sections replaced (validated again)."""
    data = spec.model_dump(mode="json")
    for name, values in sections.items():
        data[name] = {**data[name], **values}
    return ModelSpec.model_validate(data)


def key_of(store: ArtifactStore, uri: str) -> str:
    assert uri.startswith(store.uri + "/"), f"{uri} is not in {store.uri}"
    return uri.removeprefix(store.uri + "/")


def _no_nan(token: str) -> float:
    raise AssertionError(f"report JSON holds a non-standard constant {token}")


@pytest.fixture(scope="module")
def spec() -> ModelSpec:
    return load_spec(SPEC_DIR / "credit_default.yaml")


@pytest.fixture(scope="module")
def evidence_store(tmp_path_factory: pytest.TempPathFactory) -> LocalStore:
    """One local store for the module: validation reports land here."""
    return LocalStore(tmp_path_factory.mktemp("validation"))


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    """Stands in for the production model's training snapshot."""
    return synthetic.generate_day(date(2026, 3, 1), ROWS)


@pytest.fixture(scope="module")
def broken() -> pd.DataFrame:
    return synthetic.generate_day(date(2026, 3, 2), ROWS, "quality_break")


@pytest.fixture(scope="module")
def broken_error(
    spec: ModelSpec, evidence_store: LocalStore, reference: pd.DataFrame, broken: pd.DataFrame
) -> DataValidationError:
    with pytest.raises(
        DataValidationError,
        match=r"credit_default: data validation failed \(\d+ of \d+ expectations\)",
    ) as info:
        validate(
            spec, broken, "run-broken", reference=reference, store=evidence_store, dataset_hash="ab"
        )
    return info.value


@pytest.mark.parametrize(
    "with_reference",
    [
        pytest.param(True, id="ranges-and-categories-learned-from-reference"),
        pytest.param(False, id="schema-and-spec-only"),
    ],
)
def test_stable_demo_data_passes_the_suite(
    spec: ModelSpec, evidence_store: LocalStore, reference: pd.DataFrame, with_reference: bool
) -> None:
    current = synthetic.generate_day(date(2026, 3, 3), ROWS)
    ref = reference if with_reference else None
    res = validate(
        spec, current, f"run-stable-{with_reference}", reference=ref, store=evidence_store
    )
    stats = res.statistics
    assert res.success is True and res.rows == ROWS
    assert stats["evaluated_expectations"] == stats["successful_expectations"]
    # Every model column is checked for existence, at least.
    assert stats["evaluated_expectations"] > len(spec.columns)
    assert evidence_store.exists(key_of(evidence_store, res.report_uri))


def test_reference_adds_learned_range_and_category_warnings(
    spec: ModelSpec, evidence_store: LocalStore, reference: pd.DataFrame
) -> None:
    """What production's data looked like warns, never blocks: a new category and values far
    outside the learned ranges pass, listed as warnings in the report."""
    without_explicit_range = [c for c in spec.features.numeric if c not in spec.validation.ranges]
    learned = learned_expectations(spec, reference)
    assert len(learned) == len(without_explicit_range) + len(spec.features.categorical)
    current = synthetic.generate_day(date(2026, 3, 3), ROWS)
    current.loc[current.index[:100], "region"] = "atlantis"
    current["income"] = current["income"] * 10
    res = validate(spec, current, "run-learned", reference=reference, store=evidence_store)
    assert res.success and res.warnings == 2
    report = evidence_store.get_json(
        key_of(evidence_store, res.report_uri).removesuffix(".html") + ".json"
    )
    assert {(w["column"], w["expectation"]) for w in report["warnings"]} == {
        ("region", "expect_column_values_to_be_in_set"),
        ("income", "expect_column_values_to_be_between"),
    }
    assert "atlantis" in str(report["warnings"])


def _count(column: str, bad: Callable[[pd.Series], pd.Series]) -> Callable[[pd.DataFrame], int]:
    return lambda df: int(bad(df[column]).sum())


DEFECTS = [
    pytest.param(
        "expect_column_values_to_not_be_null",
        "income",
        _count("income", pd.Series.isna),
        lambda e: e is None,
        id="nulls-in-income",
    ),
    pytest.param(
        "expect_column_values_to_be_between",
        "age",
        _count("age", lambda s: (s < 18) | (s > 100)),
        lambda e: e in (-4.0, 212.0),
        id="age-out-of-range",
    ),
    pytest.param(
        "expect_column_values_to_be_in_type_list",
        "credit_score",
        len,
        lambda e: isinstance(e, str) and e.endswith(" pts"),
        id="retyped-credit-score",
    ),
    pytest.param(
        "expect_column_to_exist",
        "tenure_months",
        None,
        None,
        id="dropped-tenure-months",
    ),
]


@pytest.mark.parametrize(("expectation", "column", "expected_count", "is_example"), DEFECTS)
def test_each_quality_break_defect_is_reported(
    broken_error: DataValidationError,
    broken: pd.DataFrame,
    expectation: str,
    column: str,
    expected_count: Callable[[pd.DataFrame], int] | None,
    is_example: Callable[[Any], bool] | None,
) -> None:
    found = [
        f
        for f in broken_error.context["failed"]
        if f["expectation"] == expectation and f["column"] == column
    ]
    assert len(found) == 1, f"no {expectation} failure on {column}: {broken_error}"
    failure = found[0]
    if expected_count is None:
        assert failure["unexpected_count"] is None
        return
    assert failure["unexpected_count"] == expected_count(broken) > 0
    assert failure["examples"], "a failure must show example values"
    assert all(is_example(e) for e in failure["examples"]), failure["examples"]
    assert f"{expectation} on column {column!r}: {failure['unexpected_count']} unexpected" in str(
        broken_error
    )


def test_null_share_is_judged_against_max_null_fraction(
    spec: ModelSpec, broken_error: DataValidationError
) -> None:
    (nulls,) = [
        f
        for f in broken_error.context["failed"]
        if f["expectation"] == "expect_column_values_to_not_be_null" and f["column"] == "income"
    ]
    assert nulls["kwargs"]["mostly"] == pytest.approx(1 - spec.validation.max_null_fraction)
    assert nulls["unexpected_percent"] > 100 * spec.validation.max_null_fraction


def test_only_broken_columns_fail(broken_error: DataValidationError) -> None:
    failed = {f["column"] for f in broken_error.context["failed"]}
    # region holds a category production never saw: a warning, not a failure
    assert failed == {"income", "age", "credit_score", "tenure_months"}


def test_error_lists_failed_expectations_and_report(
    evidence_store: LocalStore, broken_error: DataValidationError
) -> None:
    message = str(broken_error)
    failures = broken_error.context["failed"]
    assert f"({len(failures)} of " in message
    for f in failures:
        assert f"  - {f['expectation']} on column {f['column']!r}" in message
    uri = broken_error.context["report_uri"]
    assert uri.endswith("reports/credit_default/run-broken/validation.html")
    assert message.splitlines()[1] == f"Report: {uri}"  # the evidence first, then the list


def test_json_and_html_reports_hold_the_evidence(
    evidence_store: LocalStore, broken_error: DataValidationError
) -> None:
    html_key = key_of(evidence_store, broken_error.context["report_uri"])
    json_key = html_key.removesuffix(".html") + ".json"
    report = json.loads(evidence_store.get_bytes(json_key), parse_constant=_no_nan)
    assert report["success"] is False
    assert report["run_id"] == "run-broken" and report["dataset_hash"] == "ab"
    assert report["rows"] == ROWS
    assert report["failed"] == broken_error.context["failed"]
    assert report["reference"] == "warnings learned from the production training snapshot"
    assert [w["column"] for w in report["warnings"]] == ["region"]
    page = evidence_store.get_bytes(html_key).decode()
    assert "credit_default: data validation FAILED" in page
    for column in ("income", "age", "region", "credit_score", "tenure_months"):
        assert column in page
    assert "atlantis" in page


def test_extra_spec_expectations_apply(spec: ModelSpec, evidence_store: LocalStore) -> None:
    extras = [
        *(e.model_dump() for e in spec.validation.expectations),
        {
            "type": "expect_column_mean_to_be_between",
            "kwargs": {"column": "income", "max_value": 1000},
        },
    ]
    strict = variant(spec, validation={"expectations": extras})
    df = synthetic.generate_day(date(2026, 3, 3), ROWS)
    df.loc[1, "customer_id"] = df.loc[0, "customer_id"]  # a duplicate key
    df.loc[2, "customer_id"] = "customer-2"  # does not match the spec's regex
    with pytest.raises(DataValidationError, match="expect_column_mean_to_be_between") as info:
        validate(strict, df, "run-extras", store=evidence_store)
    failed = {(f["expectation"], f["column"]): f for f in info.value.context["failed"]}
    assert set(failed) == {
        ("expect_column_values_to_be_unique", "customer_id"),
        ("expect_column_values_to_match_regex", "customer_id"),
        ("expect_column_mean_to_be_between", "income"),
    }
    assert failed["expect_column_values_to_be_unique", "customer_id"]["unexpected_count"] == 2
    assert failed["expect_column_values_to_match_regex", "customer_id"]["examples"] == [
        "customer-2"
    ]
    assert failed["expect_column_mean_to_be_between", "income"]["observed_value"] > 1000


@pytest.mark.parametrize(
    ("expectation", "message"),
    [
        pytest.param(
            {"type": "expect_column_values_to_be_purple", "kwargs": {"column": "age"}},
            "expect_column_values_to_be_purple not found",
            id="unknown-expectation",
        ),
        pytest.param(
            {"type": "expect_column_values_to_be_unique", "kwargs": {}},
            "column\n  field required",
            id="missing-kwarg",
        ),
        pytest.param(
            {
                "type": "expect_column_values_to_be_unique",
                "kwargs": {"column": "age", "colour": "purple"},
            },
            "colour\n  extra fields not permitted",
            id="unknown-kwarg",
        ),
    ],
)
def test_bad_extra_expectation_raises_spec_error_naming_the_field(
    spec: ModelSpec, evidence_store: LocalStore, expectation: dict[str, Any], message: str
) -> None:
    first = spec.validation.expectations[0].model_dump()
    bad = variant(spec, validation={"expectations": [first, expectation]})
    with pytest.raises(SpecError, match=r"validation\.expectations\.1 \(expect_") as info:
        validate(bad, synthetic.demo_rows(600), "run-bad-spec", store=evidence_store)
    assert info.value.context["field"] == "validation.expectations.1"
    assert message in str(info.value)
    assert not evidence_store.exists("reports/credit_default/run-bad-spec/validation.json")
