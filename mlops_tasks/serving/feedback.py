"""Feedback tied to the predictions it labels.

The rule (the service's contract for `POST /v1/models/{name}/feedback`):

- A label is accepted only for a request id this service instance served for that model and
  still holds in its index of recent requests: the newest `MLOPS_SERVING_FEEDBACK_WINDOW`
  request ids (default 200,000), kept in memory (with `--workers N`, in one SQLite file that
  every worker of the service shares: `SharedRequestIndex`). An id it does not hold (never
  served, served for another model, older than the window, from before a restart, or from
  another replica) is refused with 404; labels for those go through the operator's path,
  `mlops feedback import`.
- `row` must be a row of that request (0 <= row < the request's number of records): 422.
- The label must be the caller's to give: a request made by another client (another bearer
  token) is refused with 403. Without `MLOPS_SERVING_API_TOKEN` every caller is `anonymous`.
- The label must fit the model: for classification one of the classes the serving model was
  trained on (`classes_`), for regression a finite number (422). Labels are stored with the
  class's own type, so a model's labels are of one type.
- A second label for the same (request id, row) needs `"overwrite": true` (409 otherwise); the
  stored feedback row carries `overwrite` and the `client` that sent it.
- A batch is all or nothing: if any item is refused, nothing is written, and the answer lists
  the refused items (at most 20). Its status is the first of 422, 404, 403, 409 that applies.
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_WINDOW = 200_000
STATUS_ORDER = (422, 404, 403, 409)


@dataclass(slots=True)
class Served:
    """One served request, as feedback needs it (`classes`: the serving model's `classes_`
    for classification, None for regression; `labelled`: rows with a label, once there is one)."""

    model: str
    version: int
    rows: int
    client: str
    classes: Any = None
    labelled: set[int] | None = None


@dataclass
class Refusal:
    status: int
    index: int
    type: str
    msg: str
    loc: tuple[str, ...] = ()
    input: Any = None

    def error(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "loc": ["body", "labels", self.index, *self.loc],
            "msg": self.msg,
            "input": self.input,
        }


class RequestIndex:
    """The newest `capacity` request ids, with their rows, client and labelled rows."""

    def __init__(self, capacity: int = DEFAULT_WINDOW) -> None:
        self.capacity = capacity
        self._served: OrderedDict[str, Served] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._served)

    def add(self, request_id: str, served: Served) -> None:
        with self._lock:
            self._served[request_id] = served
            while len(self._served) > self.capacity:
                self._served.popitem(last=False)

    def claim(
        self, model: str, client: str, items: list[dict[str, Any]]
    ) -> tuple[list[dict[str, Any]], list[Refusal], set[tuple[str, int]]]:
        """Check every item and, when all pass, mark their rows labelled (atomically).

        Returns the rows to store (label in the model's type, `overwrite`, `client` and the
        serving `version` added), the refusals, and the (request id, row) pairs newly marked
        (to `release` if the write fails). Nothing is marked when anything is refused."""
        with self._lock:
            accepted, refusals, newly = check_items(
                model, client, items, self._served.get, self.capacity
            )
            if refusals:
                return [], refusals, set()
            for rid, row in newly:
                served = self._served[rid]
                if served.labelled is None:
                    served.labelled = set()
                served.labelled.add(row)
        return accepted, refusals, newly

    def release(self, newly: set[tuple[str, int]]) -> None:
        """Undo `claim`'s marks after the labels could not be written."""
        with self._lock:
            for rid, row in newly:
                served = self._served.get(rid)
                if served is not None and served.labelled:
                    served.labelled.discard(row)


def check_items(
    model: str,
    client: str,
    items: list[dict[str, Any]],
    lookup: Callable[[str], Served | None],
    capacity: int,
) -> tuple[list[dict[str, Any]], list[Refusal], set[tuple[str, int]]]:
    """The feedback rule applied to `items`, reading served requests through `lookup`:
    (accepted rows, refusals, (request id, row) pairs to mark labelled). Marks nothing."""
    accepted: list[dict[str, Any]] = []
    refusals: list[Refusal] = []
    newly: set[tuple[str, int]] = set()
    for i, item in enumerate(items):
        rid, row = item["request_id"], item["row"]
        served = lookup(rid)
        if served is None or served.model != model:
            refusals.append(
                Refusal(
                    404,
                    i,
                    "unknown_request_id",
                    f"request id not served for {model} by this service (it keeps the "
                    f"newest {capacity} request ids; older labels go "
                    "through `mlops feedback import`)",
                    ("request_id",),
                    rid,
                )
            )
            continue
        if served.client != client:
            refusals.append(
                Refusal(
                    403,
                    i,
                    "not_your_request",
                    "request id was served to another client; only it may label it",
                    ("request_id",),
                    rid,
                )
            )
            continue
        if row >= served.rows:
            refusals.append(
                Refusal(
                    422,
                    i,
                    "row_out_of_range",
                    f"request {rid} has {served.rows} row(s): row should be below that",
                    ("row",),
                    row,
                )
            )
            continue
        label, problem = check_label(item["label"], served.classes)
        if problem:
            refusals.append(Refusal(422, i, "label_invalid", problem, ("label",), item["label"]))
            continue
        key = (rid, row)
        again = row in (served.labelled or ()) or key in newly
        if again and not item.get("overwrite"):
            refusals.append(
                Refusal(
                    409,
                    i,
                    "already_labelled",
                    f"row {row} of request {rid} already has a label: send "
                    '"overwrite": true to replace it',
                    ("overwrite",),
                    False,
                )
            )
            continue
        if not again:
            newly.add(key)
        accepted.append(
            {
                "request_id": rid,
                "row": row,
                "label": label,
                "overwrite": bool(item.get("overwrite")),
                "client": client,
                "version": served.version,
            }
        )
    return accepted, refusals, newly


def check_label(label: Any, classes: Any) -> tuple[Any, str | None]:
    """The label in the model's own type, or why it does not fit the model."""
    if isinstance(label, bool):
        return None, "label should be a number or text, not a boolean"
    if classes is None:  # regression: finite numbers
        if isinstance(label, str):
            return None, "label should be a number: the model is a regression"
        try:
            value = float(label)
        except OverflowError:
            return None, "label should be a finite number"
        if not math.isfinite(value):
            return None, "label should be a finite number"
        return value, None
    for cls in classes:
        plain = cls.item() if hasattr(cls, "item") else cls
        if isinstance(plain, str) != isinstance(label, str):
            continue
        if isinstance(plain, float) and isinstance(label, int | float) and plain == label:
            return plain, None
        if isinstance(plain, int) and isinstance(label, int | float) and plain == label:
            return plain, None
        if isinstance(plain, str) and plain == label:
            return plain, None
    shown = [c.item() if hasattr(c, "item") else c for c in list(classes)[:20]]
    return None, f"label should be one of the model's classes {shown}"


def refusal_status(refusals: list[Refusal]) -> int:
    codes = {r.status for r in refusals}
    return next(s for s in STATUS_ORDER if s in codes)


class SharedRequestIndex(RequestIndex):
    """`RequestIndex` shared by the worker processes of one service, in a SQLite file.

    With `mlops serve --workers N` a label may reach another worker than the prediction it
    labels; every worker records what it serves here and checks feedback here, under the same
    rule. A claim is one write transaction, so two workers cannot both accept a first label
    for the same row. Served requests are kept newest first up to `capacity`, as in memory."""

    TRIM_EVERY = 1_000  # inserts between trims of the oldest ids

    def __init__(self, path: Path, capacity: int = DEFAULT_WINDOW) -> None:
        super().__init__(capacity)
        self._db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=OFF")  # the index is the service's memory, not a log
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS served (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
            "id TEXT UNIQUE, model TEXT, version INTEGER, rows INTEGER, client TEXT, "
            "labelled TEXT)"
        )
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS classes (model TEXT, version INTEGER, classes TEXT, "
            "PRIMARY KEY (model, version))"
        )
        self._known: set[tuple[str, int]] = set()
        self._added = 0

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM served").fetchone()[0])

    def add(self, request_id: str, served: Served) -> None:
        with self._lock:
            key = (served.model, served.version)
            if key not in self._known:
                classes = None if served.classes is None else json.dumps(_plain(served.classes))
                self._db.execute("INSERT OR IGNORE INTO classes VALUES (?, ?, ?)", (*key, classes))
                self._known.add(key)
            self._db.execute(
                "INSERT INTO served (id, model, version, rows, client) VALUES (?, ?, ?, ?, ?)",
                (request_id, served.model, served.version, served.rows, served.client),
            )
            self._added += 1
            if self._added % self.TRIM_EVERY == 0:
                self._db.execute(
                    "DELETE FROM served WHERE seq <= (SELECT max(seq) FROM served) - ?",
                    (self.capacity,),
                )

    def claim(
        self, model: str, client: str, items: list[dict[str, Any]]
    ) -> tuple[list[dict[str, Any]], list[Refusal], set[tuple[str, int]]]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")  # one claim at a time across the workers
            try:
                served = self._fetch({item["request_id"] for item in items})
                accepted, refusals, newly = check_items(
                    model, client, items, served.get, self.capacity
                )
                if not refusals:
                    self._mark(served, newly, add=True)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return ([], refusals, set()) if refusals else (accepted, refusals, newly)

    def release(self, newly: set[tuple[str, int]]) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._mark(self._fetch({rid for rid, _ in newly}), newly, add=False)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def _fetch(self, ids: set[str]) -> dict[str, Served]:
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        rows = self._db.execute(
            "SELECT s.id, s.model, s.version, s.rows, s.client, s.labelled, c.classes "
            "FROM served s LEFT JOIN classes c ON c.model = s.model AND c.version = s.version "
            f"WHERE s.id IN ({marks})",
            tuple(ids),
        ).fetchall()
        return {
            rid: Served(
                model,
                version,
                n,
                client,
                None if classes is None else json.loads(classes),
                None if labelled is None else set(json.loads(labelled)),
            )
            for rid, model, version, n, client, labelled, classes in rows
        }

    def _mark(self, served: dict[str, Served], pairs: set[tuple[str, int]], add: bool) -> None:
        touched: set[str] = set()
        for rid, row in pairs:
            entry = served.get(rid)
            if entry is None:
                continue
            entry.labelled = entry.labelled or set()
            (entry.labelled.add if add else entry.labelled.discard)(row)
            touched.add(rid)
        for rid in touched:
            self._db.execute(
                "UPDATE served SET labelled = ? WHERE id = ?",
                (json.dumps(sorted(served[rid].labelled or ())), rid),
            )


def _plain(classes: Any) -> list[Any]:
    return [c.item() if hasattr(c, "item") else c for c in classes]
