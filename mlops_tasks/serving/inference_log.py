"""Inference log and delayed labels, as Parquet parts under `inference/` and `feedback/`.

Predictions are appended to a bounded in-memory buffer and flushed by a background thread, so
a slow or failing store never fails or slows a prediction: when the buffer is full the oldest
rows are dropped and counted. A row that cannot be written at all is dropped and counted on its
own, never holding back the rows around it. What is buffered is flushed on shutdown.
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
    parts, bad = _encode_parts(prefix, rows)
    if bad:  # all or nothing here: the caller (feedback) answers for the rows it sent
        raise ValueError(f"{len(bad)} of {len(rows)} row(s) cannot be written as Parquet")
    for key, data, _ in parts:
        store.put_if_absent(key, data)


def _encode(rows: list[dict[str, Any]]) -> bytes:
    import pandas as pd

    buf = io.BytesIO()
    pd.DataFrame(rows).to_parquet(buf, index=False)
    return buf.getvalue()


def _encode_parts(
    prefix: str, rows: list[dict[str, Any]]
) -> tuple[list[tuple[str, bytes, list[dict[str, Any]]]], list[dict[str, Any]]]:
    """Rows as Parquet parts, one per (model, day) in the usual case, and the rows that cannot
    be encoded at all. A group that fails to encode is split in halves until every row is in
    a part or isolated as bad, so one bad row (text with a lone surrogate, a value of the wrong
    type) costs only itself, never the rows around it."""
    groups: dict[tuple[str, date], list[dict[str, Any]]] = {}
    bad: list[dict[str, Any]] = []
    for row in rows:
        try:
            ts, model = row["ts"], str(row["model"])
            model.encode("utf-8")  # it names the part's folder
            key = (model, ts.date() if ts.tzinfo is None else ts.astimezone(UTC).date())
        except Exception:  # no usable model name or timestamp: nowhere to put it
            bad.append(row)
            continue
        groups.setdefault(key, []).append(row)
    parts: list[tuple[str, bytes, list[dict[str, Any]]]] = []

    def encode(group: list[dict[str, Any]], model: str, day: date) -> None:
        try:
            parts.append((_part_key(prefix, model, day), _encode(group), group))
        except Exception:
            if len(group) == 1:
                bad.extend(group)
                return
            half = len(group) // 2
            encode(group[:half], model, day)
            encode(group[half:], model, day)

    for (model, day), group in groups.items():
        encode(group, model, day)
    return parts, bad


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
        on_reject: Callable[[int], None] | None = None,
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
        self._on_reject = on_reject or (lambda n: None)
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
        """Write everything buffered. Rows that cannot be encoded are dropped, counted
        (`on_reject`) and logged, so they never block the others; rows of a part the store
        failed to take go back to the buffer's front, to be retried."""
        with self._flush_lock:
            with self._lock:
                rows = list(self._buf)
                self._buf.clear()
            if not rows:
                return 0
            parts, bad = _encode_parts("inference", rows)
            if bad:
                log.error("inference log: dropped %d row(s) that cannot be written as Parquet "
                          "(first: request %s)", len(bad),
                          str(bad[0].get("request_id")).encode("utf-8", "replace"))  # fmt: skip
                self._on_reject(len(bad))
            written = 0
            failed: list[dict[str, Any]] = []
            error: Exception | None = None
            for key, data, part in parts:
                try:
                    self.store.put_if_absent(key, data)
                except Exception as err:  # the store is down: keep the rows (bounded), retry
                    failed += part
                    error = err
                else:
                    written += len(part)
            if failed:
                log.warning("inference log flush of %d rows failed: %s", len(failed), error)
                with self._lock:
                    self._buf.extendleft(reversed(failed))
                    overflow = len(self._buf) - self._max
                    for _ in range(max(0, overflow)):
                        self._buf.popleft()
                if overflow > 0:
                    self._on_drop(overflow)
                self._on_flush(len(failed), False)
            if written:
                self._on_flush(written, True)
            return written

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
    extra = ("overwrite", "client", "version")  # what the service records about who labelled
    rows = [{"model": model, "request_id": str(x["request_id"]), "row": int(x.get("row", 0)),
             "label": x["label"], "ts": now, **{k: x[k] for k in extra if k in x}}
            for x in labels]  # fmt: skip
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
