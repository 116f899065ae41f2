"""Inference log and delayed labels, as Parquet parts under `inference/` and `feedback/`.

Predictions are appended to a bounded in-memory buffer and flushed by a background thread, so
a slow or failing store never fails or slows a prediction: when the buffer is full the oldest
rows are dropped and counted. What is buffered is flushed on shutdown.
"""

from __future__ import annotations

import io
import logging
import threading
import uuid
from collections import deque
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from mlops_tasks.storage import ArtifactStore

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)


def _part_key(prefix: str, model: str, day: date) -> str:
    stamp = datetime.now(UTC).strftime("%H%M%S%f")
    return f"{prefix}/{model}/dt={day.isoformat()}/part-{stamp}-{uuid.uuid4().hex[:8]}.parquet"


def _write_parts(store: ArtifactStore, prefix: str, rows: list[dict[str, Any]]) -> None:
    import pandas as pd

    frame = pd.DataFrame(rows)
    for (model, day), part in frame.groupby(["model", frame["ts"].dt.date]):
        buf = io.BytesIO()
        part.reset_index(drop=True).to_parquet(buf, index=False)
        store.put_if_absent(_part_key(prefix, str(model), day), buf.getvalue())  # type: ignore[arg-type]


class InferenceLog:
    """Buffered, background-flushed writer of prediction rows."""

    def __init__(
        self,
        store: ArtifactStore,
        max_rows: int = 100_000,
        flush_rows: int = 5_000,
        flush_seconds: float = 5.0,
        on_drop: Callable[[int], None] | None = None,
        on_flush: Callable[[int, bool], None] | None = None,
    ) -> None:
        self.store = store
        self.flush_rows = flush_rows
        self.flush_seconds = flush_seconds
        self._buf: deque[dict[str, Any]] = deque()
        self._max = max_rows
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._flush_lock = threading.Lock()
        self._on_drop = on_drop or (lambda n: None)
        self._on_flush = on_flush or (lambda n, ok: None)
        self._thread = threading.Thread(target=self._run, name="inference-log", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def append(self, rows: list[dict[str, Any]]) -> None:
        """Never blocks on the store; drops the oldest rows beyond the bound."""
        with self._lock:
            self._buf.extend(rows)
            overflow = len(self._buf) - self._max
            for _ in range(max(0, overflow)):
                self._buf.popleft()
            size = len(self._buf)
        if overflow > 0:
            self._on_drop(overflow)
        if size >= self.flush_rows:
            self._wake.set()

    @property
    def buffered(self) -> int:
        with self._lock:
            return len(self._buf)

    def flush(self) -> int:
        """Write everything buffered; on failure the rows go back to the buffer's front."""
        with self._flush_lock:
            with self._lock:
                rows = list(self._buf)
                self._buf.clear()
            if not rows:
                return 0
            try:
                _write_parts(self.store, "inference", rows)
            except Exception as err:  # the store is down: keep the rows (bounded) and retry
                log.warning("inference log flush of %d rows failed: %s", len(rows), err)
                with self._lock:
                    self._buf.extendleft(reversed(rows))
                    overflow = len(self._buf) - self._max
                    for _ in range(max(0, overflow)):
                        self._buf.popleft()
                if overflow > 0:
                    self._on_drop(overflow)
                self._on_flush(len(rows), False)
                return 0
            self._on_flush(len(rows), True)
            return len(rows)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            self.flush()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        self.flush()


def write_feedback(store: ArtifactStore, model: str, labels: list[dict[str, Any]]) -> int:
    """Store delayed labels: rows of {request_id, row, label}."""
    now = datetime.now(UTC)
    rows = [{"model": model, "request_id": str(x["request_id"]), "row": int(x.get("row", 0)),
             "label": x["label"], "ts": now} for x in labels]  # fmt: skip
    if rows:
        _write_parts(store, "feedback", rows)
    return len(rows)


def _read_parts(store: ArtifactStore, prefix: str, model: str, since: date) -> pd.DataFrame:
    import pandas as pd

    frames = []
    for key in store.list_keys(f"{prefix}/{model}/"):
        part = key.split("/")
        if len(part) < 4 or not part[2].startswith("dt="):
            continue
        if date.fromisoformat(part[2][3:]) < since:
            continue
        frames.append(pd.read_parquet(io.BytesIO(store.get_bytes(key))))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def read_inference(
    store: ArtifactStore, model: str, days: int, target: str | None = None
) -> pd.DataFrame:
    """The last `days` of logged predictions, joined with their labels (as `target`)."""
    since = datetime.now(UTC).date() - timedelta(days=days - 1)
    logged = _read_parts(store, "inference", model, since)
    if logged.empty or target is None:
        return logged
    labels = _read_parts(store, "feedback", model, since - timedelta(days=30))
    if labels.empty:
        return logged
    labels = labels.drop_duplicates(["request_id", "row"], keep="last")
    joined = logged.merge(labels[["request_id", "row", "label"]], on=["request_id", "row"],
                          how="left")  # fmt: skip
    return joined.rename(columns={"label": target})
