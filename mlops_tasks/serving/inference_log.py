"""The service's inference log: a bounded buffer flushed to `inference/` in the background.

Predictions are appended to a bounded in-memory buffer and flushed by a background thread, so
a slow or failing store never fails or slows a prediction: when the buffer is full the oldest
rows are dropped and counted. A row that cannot be written at all is dropped and counted on its
own, never holding back the rows around it. What is buffered is flushed on shutdown.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from mlops_tasks.data.traffic import INFERENCE, encode_parts
from mlops_tasks.storage import ArtifactStore

log = logging.getLogger(__name__)


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
            parts, bad = encode_parts(INFERENCE, rows)
            if bad:
                first = str(bad[0].get("request_id")).encode("utf-8", "replace")
                log.error(
                    "inference log: dropped %d row(s) that cannot be written as Parquet "
                    "(first: request %s)",
                    len(bad),
                    first,
                )
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
