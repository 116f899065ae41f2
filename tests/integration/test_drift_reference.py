"""What a drift check compares with (`drift.reference`), on a public table nobody here wrote.

ISLP's Bikeshare table (hourly rentals in Washington DC in 2011; `tests/realdata.py`) is
written to a store as daily batches, a model is trained on February, and summer weeks are
checked against each kind of reference. Against the winter training snapshot a summer week
always drifts (temperature, the season code); against the week before it, or the four weeks
before it, a steady summer week does not.

The spec judges drift on the scale of a season: the numbers by normed Wasserstein distance (a
shift of one reference standard deviation drifts), the categories by Jensen-Shannon distance
0.2, a quarter of the columns. Evidently's default tests (p-values on 168 hourly rows) flag the
ordinary change of weather from one week to the next whatever the reference, since rows an hour
apart are not independent samples; those thresholds say nothing about the choice of reference.

The table holds one year, so `same_period_last_year` is checked on a synthetic second year:
2011's rows dated 53 weeks later (weekdays kept), so a week of "2012" holds the 2011 week
before the one it is compared with. One batch of the reference windows is broken on purpose (its
temperatures out of the declared range) to show that quarantined batches stay out.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import pandas as pd
import pytest

from mlops_tasks.data import datasets, windows
from mlops_tasks.flow.flows import CURRENT, DECIDE, DEPLOY, DRIFT, REFERENCE, FlowRun
from mlops_tasks.monitor import drift, policy
from mlops_tasks.records import Reference
from mlops_tasks.registry import Registry
from mlops_tasks.specs import ModelSpec, parse_spec
from mlops_tasks.storage import LocalStore
from tests import realdata
from tests.flowkit import context, monitor, retrain

pytestmark = pytest.mark.slow

MODEL = "bikeshare"
#: Drift on the scale of a season (see the module's docstring), the same for every reference.
SEASONAL = """\
  drift_share: 0.25
  method: jensenshannon
  threshold: 0.2
  overrides:
    temp: {method: wasserstein, threshold: 1.0}
    hum: {method: wasserstein, threshold: 1.0}
    windspeed: {method: wasserstein, threshold: 1.0}
"""
#: The synthetic second year: 2011's rows 53 weeks later.
SHIFT = timedelta(weeks=53)
#: The batch broken on purpose: inside the reference windows of the August checks.
BROKEN = date(2011, 8, 3)


def spec_for(reference: str) -> ModelSpec:
    text = realdata.spec_text().replace("  drift_share: 0.3\n", SEASONAL)
    return parse_spec(
        text.replace("  window_days: 7\n", f"  window_days: 7\n  reference: {reference}\n")
    )


def end_of(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, 23, 59, 59, tzinfo=UTC)


def put_batch(store: LocalStore, day: date, rows: pd.DataFrame) -> None:
    buf = io.BytesIO()
    rows.reset_index(drop=True).to_parquet(buf, index=False)
    store.put_bytes(f"{realdata.PREFIX}/dt={day.isoformat()}/part.parquet", buf.getvalue())


@dataclass
class Checks:
    store: LocalStore
    runs: dict[str, FlowRun]


@pytest.fixture(scope="module")
def checks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Checks]:
    """February batches (training), July to September 2011, a synthetic August 2012; v1 trained
    on February; one monitor run per case."""
    from threadpoolctl import threadpool_limits

    store = LocalStore(tmp_path_factory.mktemp("reference") / "store")
    realdata.write_batches(store, start=date(2011, 2, 1), end=date(2011, 2, 28))
    realdata.write_batches(store, start=date(2011, 7, 1), end=date(2011, 9, 10))
    table = realdata.load()
    days = table["timestamp"].dt.date
    broken = table[days == BROKEN].assign(temp=5.0)
    put_batch(store, BROKEN, broken)
    for day in pd.date_range("2012-08-05", "2012-08-25").date:
        rows = table[days == day - SHIFT]
        put_batch(store, day, rows.assign(timestamp=rows["timestamp"] + SHIFT))
    cases = {
        "training": ("training", date(2011, 8, 14)),
        "previous_window": ("previous_window", date(2011, 8, 14)),
        "rolling": ("{rolling: 28}", date(2011, 8, 28)),
        "last_year": ("same_period_last_year", date(2012, 8, 18)),
        "no_last_year": ("same_period_last_year", date(2011, 8, 14)),
    }
    with pytest.MonkeyPatch.context() as patch, threadpool_limits(1):
        patch.delenv("MLOPS_SERVING_URL", raising=False)
        trained = retrain(spec_for("training"), store, as_of=end_of(date(2011, 2, 28)))
        assert trained.status == "success", trained.message
        assert trained[DEPLOY].version == 1
        runs = {
            name: monitor(spec_for(reference), store, run_id=f"monitor-{name}", as_of=end_of(day))
            for name, (reference, day) in cases.items()
        }
    yield Checks(store, runs)


def stored_check(checks: Checks, name: str) -> dict:
    """The monitoring check the run `name` recorded."""
    check_id = checks.runs[name][DECIDE].check_id
    (doc,) = [c for c in policy.history(checks.store, MODEL) if c["check_id"] == check_id]
    return doc


def test_a_summer_week_drifts_against_the_winter_training_snapshot(checks: Checks) -> None:
    run = checks.runs["training"]
    reference, result = run[REFERENCE], run[DRIFT]
    production = Registry(checks.store).production(MODEL)
    assert production is not None
    assert (reference.kind, reference.hash) == ("training", production.dataset.train)
    assert (reference.start, reference.end) == (None, None)
    assert result.data.drift_detected
    assert {"temp", "season"} <= set(result.data.drifted_columns)
    doc = stored_check(checks, "training")
    assert (doc["reference_kind"], doc["reference_hash"]) == ("training", reference.hash)


@pytest.mark.parametrize(
    ("name", "start", "end", "current"),
    [
        pytest.param(
            "previous_window",
            "2011-08-01",
            "2011-08-07",
            ("2011-08-08", "2011-08-14"),
            id="previous-window",
        ),
        pytest.param(
            "rolling", "2011-07-25", "2011-08-21", ("2011-08-22", "2011-08-28"), id="rolling-28"
        ),
        pytest.param(
            "last_year",
            "2011-08-14",
            "2011-08-20",
            ("2012-08-12", "2012-08-18"),
            id="same-period-last-year",
        ),
    ],
)
def test_a_steady_summer_week_does_not_drift_against_a_recent_window(
    checks: Checks, name: str, start: str, end: str, current: tuple[str, str]
) -> None:
    run = checks.runs[name]
    reference, result, window = run[REFERENCE], run[DRIFT], run[CURRENT]
    assert (window.start, window.end) == current
    # Before the current window, never after the check; the same columns judged.
    assert (reference.start, reference.end) == (start, end)
    assert reference.end < window.start
    assert not result.data.drift_detected, result.data.drifted_columns
    assert len(result.data.columns) == 7
    assert result.data_not_checked is None
    # The reference is the source's batches of those days, without the quarantined one.
    first, last = date.fromisoformat(start), date.fromisoformat(end)
    day = realdata.load()["timestamp"].dt.date
    expected = int((day.between(first, last) & (day != BROKEN)).sum())
    assert reference.rows == result.reference_rows == expected
    frame = datasets.load_snapshot(reference.hash, checks.store)
    assert len(frame) == expected
    assert frame["timestamp"].dt.date.between(first, last).all()
    assert frame["temp"].le(1).all()  # the broken batch stayed out
    # Recorded with its kind, hash and days, in the check and in the report.
    doc = stored_check(checks, name)
    kind = {"rolling": "rolling", "last_year": "same_period_last_year"}.get(name, name)
    assert (doc["reference_kind"], doc["reference_hash"]) == (kind, reference.hash)
    assert (doc["reference_start"], doc["reference_end"]) == (start, end)
    report = result.report_uri.removeprefix(checks.store.uri + "/")
    assert (
        checks.store.get_json(report.replace(".html", ".json"))["reference_hash"] == reference.hash
    )
    assert f"{kind}: the batches from {start} to {end}" in checks.store.get_bytes(report).decode()


def test_a_reference_window_is_frozen_like_any_other_window(checks: Checks) -> None:
    """The previous window of the check as of 14 August is the current window a check as of 7
    August reads: the same rows, so the same content-addressed snapshot."""
    reference = checks.runs["previous_window"][REFERENCE]
    ctx = context(
        spec_for("previous_window"), checks.store, "monitor", as_of=end_of(date(2011, 8, 7))
    )
    week = windows.batch_window(ctx, 7)
    assert (week.start, week.end) == (reference.start, reference.end)
    assert week.hash == reference.hash
    assert week.quarantined and week.quarantined[0].endswith(f"dt={BROKEN}/part.parquet")


def test_the_same_year_window_drifts_against_the_training_snapshot(checks: Checks) -> None:
    """The synthetic summer week that last year's reference calls steady is a drifted one for
    the winter training snapshot: the reference, not the data, makes the difference."""
    run = checks.runs["last_year"]
    production = Registry(checks.store).production(MODEL)
    assert production is not None
    training = Reference(production.version, production.dataset.train, production.metrics)
    spec = spec_for("training")
    result = drift.detect_drift(spec, training, run[CURRENT].hash, "check-training", checks.store)
    assert result.data.drift_detected and "season" in result.data.drifted_columns


def test_a_reference_window_too_small_is_not_judged(checks: Checks) -> None:
    """The data starts in 2011: a year before August 2011 there is nothing to compare with."""
    run = checks.runs["no_last_year"]
    reference, result = run[REFERENCE], run[DRIFT]
    assert (reference.start, reference.end, reference.rows) == ("2010-08-09", "2010-08-15", 0)
    assert result.data_not_checked == (
        "the reference window (same_period_last_year, 2010-08-09 to 2010-08-15) has 0 rows, "
        "fewer than drift.min_rows (100)"
    )
    assert not result.data.drift_detected and result.data.columns == ()
    assert result.traffic is None
    # Performance drift is still judged against production's holdout: the winter model does
    # badly in August, whatever the reference.
    assert result.performance is not None and result.performance.baseline is not None
    doc = stored_check(checks, "no_last_year")
    assert f"data drift: not checked ({result.data_not_checked})" in doc["reasons"]
    assert doc["reference_kind"] == "same_period_last_year"
    assert datasets.load_snapshot(doc["reference_hash"], checks.store).empty
