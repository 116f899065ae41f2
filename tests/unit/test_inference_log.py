"""The inference log: a failing store never blocks predictions; the buffer stays bounded and
is written out once the store is back, at the latest on shutdown."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from mlops_tasks.data.traffic import read_traffic, write_feedback
from mlops_tasks.serving.inference_log import InferenceLog
from mlops_tasks.storage import LocalStore


def rows(n: int, start: int = 0) -> list[dict]:
    now = datetime.now(UTC)
    return [
        {
            "model": "m",
            "request_id": f"r{start + i}",
            "row": 0,
            "ts": now,
            "version": 1,
            "x": float(i),
            "prediction": i % 2,
        }
        for i in range(n)
    ]


def test_failing_store_keeps_a_bounded_buffer_then_flushes(tmp_path: Path) -> None:
    root = tmp_path / "store"
    root.mkdir()
    (root / "inference").write_text("a file where the log's directory should be")
    store = LocalStore(root)
    dropped: list[int] = []
    failures: list[int] = []
    log = InferenceLog(
        store,
        max_rows=500,
        flush_rows=100,
        on_drop=dropped.append,
        on_flush=lambda n, ok: None if ok else failures.append(n),
    )
    for i in range(12):  # appends succeed although every write would fail: they never do I/O
        log.append(rows(100, start=i * 100))
    assert log.buffered == 500  # bounded: the oldest rows were dropped, not the process
    assert sum(dropped) == 700
    assert log.flush() == 0  # what the background writer does: fail, keep the rows
    assert failures == [500] and log.buffered == 500
    (root / "inference").unlink()  # the store comes back
    log.close()  # shutdown writes what is buffered
    logged = read_traffic(store, "m", days=1)
    assert len(logged) == 500
    assert set(logged["request_id"]) == {f"r{i}" for i in range(700, 1200)}  # the newest kept


def test_labels_join_their_predictions(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    log = InferenceLog(store, flush_seconds=60)
    log.append(rows(10))
    log.close()
    write_feedback(
        store,
        "m",
        [
            {"request_id": "r3", "row": 0, "label": 1},
            {"request_id": "r4", "label": 0},
            {"request_id": "r4", "label": 1},
        ],
    )
    joined = read_traffic(store, "m", days=1, target="y").set_index("request_id")
    assert joined.loc["r3", "y"] == 1
    assert joined.loc["r4", "y"] == 1  # a corrected label replaces the earlier one
    assert joined["y"].notna().sum() == 2
