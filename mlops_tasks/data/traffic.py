"""Logged prediction traffic and delayed labels, as Parquet parts in the store.

    inference/<model>/dt=YYYY-MM-DD/part-<time>-<id>.parquet   one row per scored record
    feedback/<model>/dt=YYYY-MM-DD/part-<time>-<id>.parquet    {request_id, row, label, ts}

The prediction service appends (through its buffered `InferenceLog`); the monitor reads the
window back joined with the labels that arrived. Parts are immutable: written once, never
rewritten.
"""

from __future__ import annotations

import io
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from mlops_tasks.errors import DataError
from mlops_tasks.specs import LABEL_COLUMN
from mlops_tasks.storage import ArtifactStore

if TYPE_CHECKING:
    import pandas as pd

INFERENCE = "inference"
FEEDBACK = "feedback"


def _part_key(prefix: str, model: str, day: date) -> str:
    stamp = datetime.now(UTC).strftime("%H%M%S%f")
    return f"{prefix}/{model}/dt={day.isoformat()}/part-{stamp}-{uuid.uuid4().hex[:8]}.parquet"


def _encode(rows: list[dict[str, Any]]) -> bytes:
    import pandas as pd

    buf = io.BytesIO()
    pd.DataFrame(rows).to_parquet(buf, index=False)
    return buf.getvalue()


Part = tuple[str, bytes, list[dict[str, Any]]]


def encode_parts(
    prefix: str, rows: list[dict[str, Any]]
) -> tuple[list[Part], list[dict[str, Any]]]:
    """Rows as Parquet parts (key, bytes, rows), one per (model, day) in the usual case, and
    the rows that cannot be encoded at all. A group that fails to encode is split in halves
    until every row is in a part or isolated as bad, so one bad row (text with a lone
    surrogate, a value of the wrong type) costs only itself, never the rows around it."""
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
    parts: list[Part] = []

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


def write_parts(store: ArtifactStore, prefix: str, rows: list[dict[str, Any]]) -> None:
    """Write rows (each with `model` and a tz-aware `ts`) as parts; all or nothing: the caller
    answers for the rows it was given."""
    parts, bad = encode_parts(prefix, rows)
    if bad:
        raise DataError(f"{len(bad)} of {len(rows)} row(s) cannot be written as Parquet")
    for key, data, _ in parts:
        store.put_if_absent(key, data)


def write_feedback(store: ArtifactStore, model: str, labels: list[dict[str, Any]]) -> int:
    """Store delayed labels: rows of {request_id, row, label}, and, from the service, who
    labelled (`client`), the version that predicted and whether it overwrote a label."""
    now = datetime.now(UTC)
    extra = ("overwrite", "client", "version")
    rows = [
        {
            "model": model,
            "request_id": str(x["request_id"]),
            "row": int(x.get("row", 0)),
            "label": x["label"],
            "ts": now,
            **{k: x[k] for k in extra if k in x},
        }
        for x in labels
    ]
    if rows:
        write_parts(store, FEEDBACK, rows)
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


def read_traffic(
    store: ArtifactStore,
    model: str,
    days: int,
    target: str | None = None,
    as_of: datetime | None = None,
) -> pd.DataFrame:
    """The last `days` of logged predictions up to `as_of`, joined with their labels (as
    `target`, when given)."""
    end = (as_of or datetime.now(UTC)).date()
    since = end - timedelta(days=days - 1)
    logged = _read_parts(store, INFERENCE, model, since)
    if logged.empty or target is None:
        return logged
    labels = _read_parts(store, FEEDBACK, model, since - timedelta(days=30))
    if labels.empty:
        return logged
    labels = labels.drop_duplicates(["request_id", "row"], keep="last")
    joined = logged.merge(
        labels[["request_id", "row", LABEL_COLUMN]], on=["request_id", "row"], how="left"
    )
    return joined.rename(columns={LABEL_COLUMN: target})
