"""Feedback tied to the predictions it labels.

The rule (the service's contract for `POST /v1/models/{name}/feedback`):

- A label is accepted only for a request id this service instance served for that model and
  still holds in its index of recent requests: the newest `MLOPS_SERVING_FEEDBACK_WINDOW`
  request ids (default 200,000), kept in memory. An id it does not hold (never served, served
  for another model, older than the window, from before a restart, or from another replica) is
  refused with 404; labels for those go through the operator's path, `mlops feedback import`.
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

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass
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
        accepted: list[dict[str, Any]] = []
        refusals: list[Refusal] = []
        newly: set[tuple[str, int]] = set()
        with self._lock:
            for i, item in enumerate(items):
                rid, row = item["request_id"], item["row"]
                served = self._served.get(rid)
                if served is None or served.model != model:
                    refusals.append(
                        Refusal(
                            404,
                            i,
                            "unknown_request_id",
                            f"request id not served for {model} by this service (it keeps the "
                            f"newest {self.capacity} request ids in memory; older labels go "
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
                    refusals.append(
                        Refusal(422, i, "label_invalid", problem, ("label",), item["label"])
                    )
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
