"""Reading tables from store URIs and content-addressed snapshots."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest

from mlops_tasks.data import synthetic
from mlops_tasks.data.datasets import (
    batch_dates,
    content_hash,
    load_snapshot,
    read_window,
    snapshot,
    snapshot_metadata,
)
from mlops_tasks.errors import DataError
from mlops_tasks.storage import ArtifactStore


def test_read_batches_in_date_order_with_window(store: ArtifactStore) -> None:
    synthetic.write_batches(
        "store://d/b", start=date(2026, 3, 1), days=4, rows_per_day=50, store=store
    )
    assert batch_dates("store://d/b", store) == [date(2026, 3, d) for d in (1, 2, 3, 4)]
    window = read_window("store://d/b", store, end=date(2026, 3, 3), days=2)
    df, uris = window.frame, window.uris
    assert len(df) == 100 and len(uris) == 2
    assert (window.start, window.end) == (date(2026, 3, 2), date(2026, 3, 3))
    assert uris[0].endswith("dt=2026-03-02/part-0.parquet")
    assert df["event_time"].is_monotonic_increasing


def test_read_single_csv_and_parquet(store: ArtifactStore) -> None:
    frame = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})
    store.put_bytes("t/one.csv", frame.to_csv(index=False).encode())
    store.put_bytes("t/one.parquet", frame.to_parquet(index=False))
    for name in ("one.csv", "one.parquet"):
        df = read_window(f"store://t/{name}", store).frame
        pd.testing.assert_frame_equal(df, frame)


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        pytest.param(
            "store://nothing/here", "no such table and no dt=YYYY-MM-DD batches", id="empty-prefix"
        ),
        pytest.param("store://t/missing.parquet", "no such table", id="missing-file"),
        pytest.param("store://t/bad.parquet", "cannot read table", id="corrupt-file"),
        pytest.param("store://t/x.json", "unsupported table format", id="json"),
    ],
)
def test_read_errors_name_the_uri(store: ArtifactStore, uri: str, message: str) -> None:
    store.put_bytes("t/bad.parquet", b"not parquet at all")
    store.put_bytes("t/x.json", b"{}")
    with pytest.raises(DataError, match=message):
        read_window(uri, store)


def test_snapshot_is_content_addressed_and_idempotent(store: ArtifactStore) -> None:
    df = synthetic.demo_rows(200)
    a = snapshot(df, ["s1"], store)
    b = snapshot(df.copy(), ["s2"], store)
    assert a.hash == b.hash == content_hash(df)
    assert a.uri.endswith(f"datasets/{a.hash}/data.parquet")
    pd.testing.assert_frame_equal(load_snapshot(a.hash, store), df)
    meta = snapshot_metadata(a.hash, store)
    assert meta["rows"] == 200 and meta["sources"] == ["s1"]  # first writer wins, never rewritten
    changed = df.copy()
    changed.loc[0, "income"] += 1
    assert snapshot(changed, ["s3"], store).hash != a.hash


def test_snapshot_of_a_window_in_which_a_batch_retyped_a_column(store: ArtifactStore) -> None:
    """Numbers in old batches and text in a new one: frozen as text, for validation to report."""
    good = synthetic.demo_rows(50)
    broken = synthetic.generate_day(date(2026, 1, 2), 50, "quality_break")
    snap = snapshot(pd.concat([good, broken], ignore_index=True), ["s"], store)
    back = load_snapshot(snap.hash, store)
    assert content_hash(back) == snap.hash  # the address still names the stored rows
    assert back["credit_score"].tolist() == [
        *(str(v) for v in good["credit_score"]),
        *broken["credit_score"],
    ]
    assert back["tenure_months"].isna().sum() == 50  # the dropped column stays missing
    assert back["income"].dtype == "float64"


def test_missing_snapshot_is_a_clear_error(store: ArtifactStore) -> None:
    with pytest.raises(DataError, match=r"dataset snapshot a{64} not found"):
        load_snapshot("a" * 64, store)
    with pytest.raises(DataError, match="invalid dataset hash"):
        load_snapshot("../etc", store)


def test_synthetic_batches_are_deterministic() -> None:
    a = synthetic.generate_day(date(2026, 5, 1), 300, "covariate_shift")
    b = synthetic.generate_day(date(2026, 5, 1), 300, "covariate_shift")
    pd.testing.assert_frame_equal(a, b)
    assert content_hash(a) != content_hash(synthetic.generate_day(date(2026, 5, 2), 300))


def test_schema_conflicts_name_the_odd_batch(store: ArtifactStore) -> None:
    synthetic.write_batches(
        "store://d/b", start=date(2026, 3, 1), days=3, rows_per_day=30, store=store
    )
    synthetic.write_batches(
        "store://d/b",
        start=date(2026, 3, 4),
        days=1,
        rows_per_day=30,
        scenario="quality_break",
        store=store,
    )
    window = read_window("store://d/b", store)
    df, uris, conflicts = window.frame, window.uris, window.conflicts
    assert len(df) == 120 and len(uris) == 4
    by_column = {c["column"]: c["message"] for c in conflicts}
    assert by_column == {
        "credit_score": "column 'credit_score' is numeric in 3 batch(es) but text in "
        "dt=2026-03-04/part-0.parquet",
        "tenure_months": "column 'tenure_months' is numeric in 3 batch(es) but missing from "
        "dt=2026-03-04/part-0.parquet",
    }
    clean = read_window("store://d/b", store, end=date(2026, 3, 3)).conflicts
    assert clean == []


def test_time_zones_are_converted_to_utc_with_a_note() -> None:
    """Batches in different zones concatenate to mixed objects that sort wrongly; they become
    naive UTC, and the note says so (a run logs it and the snapshot keeps it)."""
    from mlops_tasks.data.datasets import normalize_time

    berlin = pd.DataFrame({"t": pd.to_datetime(["2026-03-01 10:00"]).tz_localize("Europe/Berlin")})
    utc = pd.DataFrame({"t": pd.to_datetime(["2026-03-01 09:30"]).tz_localize("UTC")})
    mixed = pd.concat([berlin, utc], ignore_index=True)
    assert mixed["t"].dtype == object
    out, note = normalize_time(mixed, "t")
    assert out["t"].tolist() == [pd.Timestamp("2026-03-01 09:00"), pd.Timestamp("2026-03-01 09:30")]
    assert note is not None and "Europe/Berlin" in note and "UTC" in note
    out, note = normalize_time(berlin, "t")
    assert str(out["t"].dtype) == "datetime64[ns]" and "Europe/Berlin" in str(note)
    naive = pd.DataFrame({"t": pd.to_datetime(["2026-03-01 09:30"])})
    assert normalize_time(naive, "t") == (naive, None)
    garbage = pd.DataFrame({"t": ["yesterday", "soon"]})
    assert normalize_time(garbage, "t")[1] is None  # left for validation to report
