"""`drift.reference`: which days a reference window covers, what a check does when it is too
small to judge, and how the policy reads such a check."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from mlops_tasks.data import datasets, synthetic, windows
from mlops_tasks.monitor import drift, policy
from mlops_tasks.records import DataDrift, DriftResult, MonitoringCheck, PerformanceDrift, Reference
from mlops_tasks.specs import ModelSpec, load_spec
from mlops_tasks.storage import LocalStore
from tests.flowkit import context

SPEC = load_spec(Path(__file__).resolve().parents[2] / "dags" / "specs" / "credit_default.yaml")
SOURCE = "demo/customers/batches"


def with_drift(**drift_keys: object) -> ModelSpec:
    data = SPEC.model_dump(mode="json")
    data["drift"] |= drift_keys
    return ModelSpec.model_validate(data)


@pytest.mark.parametrize(
    ("reference", "window_days", "span"),
    [
        pytest.param("previous_window", 2, (date(2026, 3, 7), date(2026, 3, 8)), id="previous"),
        pytest.param("previous_window", 7, (date(2026, 3, 2), date(2026, 3, 8)), id="previous-7"),
        pytest.param({"rolling": 30}, 2, (date(2026, 2, 7), date(2026, 3, 8)), id="rolling-30"),
        # 52 weeks: Monday 9 March 2026 meets Monday 10 March 2025.
        pytest.param(
            "same_period_last_year", 2, (date(2025, 3, 10), date(2025, 3, 11)), id="last-year"
        ),
    ],
)
def test_the_reference_window_lies_before_the_current_one(
    reference: object, window_days: int, span: tuple[date, date]
) -> None:
    spec = with_drift(reference=reference, window_days=window_days)
    first, last = date(2026, 3, 9), date(2026, 3, 10)
    assert windows.reference_span(spec.drift, first, last) == span
    assert span[1] < first
    if reference == "same_period_last_year":
        assert span[0].weekday() == first.weekday()


def test_the_current_window_ends_at_the_newest_batch_the_check_can_see(tmp_path: Path) -> None:
    """Batches that stopped two days before the check, and one dated after it: the current
    window (and so the reference before it) follows the batches, never the future."""
    store = LocalStore(tmp_path / "store")
    for day in ("2026-03-01", "2026-03-05", "2026-03-06", "2026-03-12"):
        store.put_bytes(f"{SOURCE}/dt={day}/part.parquet", b"")
    as_of = datetime(2026, 3, 8, 12, tzinfo=UTC)
    spec = with_drift(reference="previous_window", window_days=2, current_source="batches")
    ctx = context(spec, store, "monitor", as_of=as_of)
    assert windows.current_span(ctx) == (date(2026, 3, 5), date(2026, 3, 6))
    traffic = context(with_drift(current_source="inference"), store, "monitor", as_of=as_of)
    assert windows.current_span(traffic) == (date(2026, 3, 7), date(2026, 3, 8))


def test_an_exact_range_may_hold_no_batch(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    store.put_bytes(f"{SOURCE}/dt=2026-03-05/part.csv", b"a\n1\n")
    for uri in (f"store://{SOURCE}", "store://nothing/here"):
        window = datasets.read_window(
            uri, store, start=date(2025, 3, 1), end=date(2025, 3, 2), days=None
        )
        assert window.frame.empty and window.uris == []
        assert (window.start, window.end) == (date(2025, 3, 1), date(2025, 3, 2))


def test_a_too_small_reference_is_not_read_and_judges_no_data_drift(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    current = datasets.snapshot(synthetic.demo_rows(600, seed=2), ["current"], store)
    # Its snapshot is never read: a hash of nothing in the store.
    small = Reference(1, "f" * 64, {}, "rolling", "2026-02-01", "2026-03-02", rows=12)
    result = drift.detect_drift(SPEC, small, current.hash, "run-small", store)
    assert result.data_not_checked == (
        "the reference window (rolling, 2026-02-01 to 2026-03-02) has 12 rows, fewer than "
        "drift.min_rows (500)"
    )
    assert result.data.columns == () and not result.data.drift_detected
    assert (result.reference_kind, result.reference_hash, result.reference_rows) == (
        "rolling",
        "f" * 64,
        12,
    )
    assert result.performance is not None  # judged against the holdout, not the window
    page = store.get_bytes(result.report_uri.removeprefix(store.uri + "/")).decode()
    assert "no drift (data drift not checked)" in page
    assert "not checked: the reference window (rolling" in page
    # The training snapshot is judged whatever its size.
    assert drift.reference_too_small(SPEC, replace(small, kind="training")) is None


def found(not_checked: str | None, perf_drift: bool, kind: str = "previous_window") -> DriftResult:
    return DriftResult(
        reference_version=3,
        reference_hash="0" * 64,
        current_hash="1" * 64,
        reference_rows=12 if not_checked else 5000,
        current_rows=3000,
        data=drift.unchecked_drift(SPEC)
        if not_checked
        else DataDrift((), ("age", "income"), 0.5, 0.25, True),
        performance=PerformanceDrift(perf_drift, "roc_auc", 400, "performance: roc_auc 0.61"),
        report_uri="s3://r/drift.html",
        reference_kind=kind,  # type: ignore[arg-type]
        data_not_checked=not_checked,
    )


AT = datetime(2026, 3, 10, 12, tzinfo=UTC)
SMALL = "the reference window (previous_window, 2026-03-07 to 2026-03-08) has 12 rows"


def test_the_policy_says_a_check_was_not_judged() -> None:
    spec = with_drift(cooldown_hours=0.0)
    decision = policy.apply_policy(spec, found(SMALL, False), [], None, AT, "mon-1")
    assert decision.decision == policy.NO_RETRAIN
    assert decision.reasons[0] == f"not checked: {SMALL}"
    assert f"data drift: not checked ({SMALL})" in decision.reasons
    # Performance drift does not need the reference window: it still asks for a retrain.
    decision = policy.apply_policy(spec, found(SMALL, True), [], None, AT, "mon-2")
    assert decision.decision == policy.RETRAIN
    assert decision.evidence == ("performance",)


def test_another_reference_kind_starts_a_new_streak() -> None:
    spec = with_drift(consecutive_checks=2, cooldown_hours=0.0)
    earlier = MonitoringCheck(
        "no_retrain",
        "2026-03-10T11:00:00+00:00",
        drift_detected=True,
        current_rows=3000,
        reference_version=3,
        reference_kind="training",
    )
    drifted = found(None, False)
    assert policy.apply_policy(spec, drifted, [earlier], None, AT, "m").streak == 1
    same = replace(earlier, reference_kind="previous_window")
    assert policy.apply_policy(spec, drifted, [same], None, AT, "m").streak == 2


def test_a_stored_check_names_its_reference(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    result = replace(found(None, False), reference_start="2026-03-07", reference_end="2026-03-08")
    decision = policy.apply_policy(SPEC, result, [], None, AT, "mon-3")
    record = policy.record_check(store, SPEC.name, decision, result)
    assert {k: v for k, v in record.items() if k.startswith("reference_")} == {
        "reference_version": 3,
        "reference_kind": "previous_window",
        "reference_hash": "0" * 64,
        "reference_start": "2026-03-07",
        "reference_end": "2026-03-08",
    }
    (stored,) = policy.checks(store, SPEC.name)
    assert stored.reference_kind == "previous_window"
