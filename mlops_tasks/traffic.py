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

from mlops_tasks.storage import ArtifactStore

if TYPE_CHECKING:
    import pandas as pd

INFERENCE = "inference"
FEEDBACK = "feedback"


def _part_key(prefix: str, model: str, day: date) -> str:
    stamp = datetime.now(UTC).strftime("%H%M%S%f")
    return f"{prefix}/{model}/dt={day.isoformat()}/part-{stamp}-{uuid.uuid4().hex[:8]}.parquet"


def write_parts(store: ArtifactStore, prefix: str, rows: list[dict[str, Any]]) -> None:
    """Write rows (each with `model` and a tz-aware `ts`) as one part per model and day."""
    import pandas as pd

    frame = pd.DataFrame(rows)
    for (model, day), part in frame.groupby(["model", frame["ts"].dt.date]):
        buf = io.BytesIO()
        part.reset_index(drop=True).to_parquet(buf, index=False)
        store.put_if_absent(_part_key(prefix, str(model), day), buf.getvalue())  # type: ignore[arg-type]


def write_feedback(store: ArtifactStore, model: str, labels: list[dict[str, Any]]) -> int:
    """Store delayed labels: rows of {request_id, row, label}."""
    now = datetime.now(UTC)
    rows = [
        {
            "model": model,
            "request_id": str(x["request_id"]),
            "row": int(x.get("row", 0)),
            "label": x["label"],
            "ts": now,
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
        labels[["request_id", "row", "label"]], on=["request_id", "row"], how="left"
    )
    return joined.rename(columns={"label": target})
