"""What the worker processes of one `mlops serve --workers N` share.

uvicorn starts N processes that accept on one socket; a request, a scrape or a reload reaches
any one of them. Each worker loads the models and polls the production aliases itself (a hot
swap needs no coordination: every worker swaps between its own requests). Three things must
still look like one service, and go through files in one directory that `serve` makes:

- `/metrics`: each worker writes a snapshot of its metrics (`metrics-PID.json`) every second
  and when it stops; the worker that answers a scrape adds its live figures to the others'
  snapshots. Counters and the latency histogram are sums over the workers (a stopped
  worker's last figures stay in the sum, so counters never go backwards); gauges are a state of
  one process and carry a `worker` label. Another worker's figures are at most a second old.
  (Prometheus' own multiprocess mode does the same with memory-mapped files; the service keeps
  its dependency-free metrics and this one-file-per-worker exchange.)
- `/admin/reload`: the worker that gets it bumps a generation number (`reload`) and reloads;
  every other worker sees the new number within `WATCH_SECONDS`, reloads too and records it
  (`worker-PID.json`); the answer waits until every live worker has, so once it returns every
  worker serves the new version (deploy verification relies on that).
- feedback: the index of served requests is one SQLite file (`feedback.SharedRequestIndex`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from mlops_tasks.serving.metrics import Metrics

log = logging.getLogger(__name__)

WATCH_SECONDS = 0.1  # how often a worker looks for a reload another worker started
SNAPSHOT_SECONDS = 1.0  # how often a worker shares its metrics
RELOAD_WAIT_SECONDS = 60.0  # how long a reload waits for the other workers


class Workers:
    """One worker's side of the shared directory `root`."""

    def __init__(
        self,
        root: Path,
        metrics: Metrics,
        refresh: Callable[[], dict[str, Any]],
        status: Callable[[], tuple[bool, dict[str, Any]]],
    ) -> None:
        self.root = Path(root)
        self.pid = os.getpid()
        self.metrics = metrics
        self._refresh = refresh
        self._status = status
        self._seen = self._generation()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="workers", daemon=True)

    @property
    def index_path(self) -> Path:
        return self.root / "requests.sqlite"

    def start(self) -> None:
        self._ack(self._seen)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._write(f"metrics-{self.pid}.json", self.metrics.snapshot())
        with contextlib.suppress(OSError):
            (self.root / f"worker-{self.pid}.json").unlink()

    # metrics ---------------------------------------------------------------------------
    def render_metrics(self) -> str:
        """Every worker's metrics as one exposition (see the module docstring)."""
        own = self.metrics.snapshot()
        self._write(f"metrics-{self.pid}.json", own)
        merged = self.metrics.empty_copy()
        for path in sorted(self.root.glob("metrics-*.json")):
            pid = int(path.stem.split("-", 1)[1])
            snap = own if pid == self.pid else _read(path)
            if snap is None:
                continue
            if pid != self.pid and not _alive(pid):
                snap = {**snap, "gauges": {}}  # a stopped worker has no state, only its counts
            merged.absorb(snap, worker=str(pid))
        return merged.render()

    # reload ----------------------------------------------------------------------------
    def reload_all(self) -> dict[str, Any]:
        """Reload here and make every other live worker reload; wait until they have."""
        with self._locked():
            generation = self._generation() + 1
            self._write("reload", {"generation": generation})
        self._seen = generation
        changes = self._refresh()
        self._ack(generation)
        deadline = time.monotonic() + RELOAD_WAIT_SECONDS
        while True:
            workers = self._workers()
            late = [pid for pid, w in workers.items() if w.get("generation", 0) < generation]
            if not late or time.monotonic() > deadline:
                break
            time.sleep(WATCH_SECONDS / 2)
        ready = all(w.get("ready") for w in workers.values()) and not late
        for pid in late:
            workers[pid] = {**workers[pid], "ready": False, "error": "did not reload in time"}
        _, models = self._status()
        return {
            "changes": changes,
            "ready": ready,
            "models": models,
            "workers": {str(pid): w for pid, w in sorted(workers.items())},
        }

    def _run(self) -> None:
        last_snapshot = 0.0
        while not self._stop.wait(WATCH_SECONDS):
            try:
                generation = self._generation()
                if generation > self._seen:
                    self._seen = generation
                    self._refresh()
                    self._ack(generation)
                if time.monotonic() - last_snapshot >= SNAPSHOT_SECONDS:
                    self._write(f"metrics-{self.pid}.json", self.metrics.snapshot())
                    last_snapshot = time.monotonic()
            except Exception:  # keep watching whatever one round hit
                log.exception("worker %d: shared state round failed", self.pid)

    def _ack(self, generation: int) -> None:
        ready, models = self._status()
        doc = {"generation": generation, "ready": ready, "models": models}
        self._write(f"worker-{self.pid}.json", doc)

    def _workers(self) -> dict[int, dict[str, Any]]:
        out: dict[int, dict[str, Any]] = {}
        for path in self.root.glob("worker-*.json"):
            pid = int(path.stem.split("-", 1)[1])
            doc = _read(path)
            if doc is not None and (pid == self.pid or _alive(pid)):
                out[pid] = doc
        return out

    def _generation(self) -> int:
        doc = _read(self.root / "reload")
        return int(doc["generation"]) if doc else 0

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with (self.root / "reload.lock").open("a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _write(self, name: str, doc: Any) -> None:
        """Atomic: readers see the old file or the new one, never half of one."""
        tmp = self.root / f".{name}.{self.pid}.tmp"
        tmp.write_text(json.dumps(doc))
        tmp.replace(self.root / name)


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
