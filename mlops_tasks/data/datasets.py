"""Read tables from store URIs and freeze them into immutable, content-addressed snapshots."""

from __future__ import annotations

import hashlib
import io
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from mlops_tasks.errors import DataError, NotFoundError
from mlops_tasks.records import SnapshotRef
from mlops_tasks.storage import ArtifactStore, encode_json, resolve

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

_BATCH = re.compile(r"(?:^|/)dt=(\d{4}-\d{2}-\d{2})/[^/]+\.(parquet|csv)$")


def _read_bytes(data: bytes, key: str) -> pd.DataFrame:
    import pandas as pd

    try:
        if key.endswith(".csv"):
            return pd.read_csv(io.BytesIO(data))
        if key.endswith(".parquet"):
            return pd.read_parquet(io.BytesIO(data))
    except Exception as err:  # pandas/pyarrow raise many types for corrupt files
        raise DataError(f"{key}: cannot read table: {err}", key=key) from err
    raise DataError(f"{key}: unsupported table format (use .parquet or .csv)", key=key)


def read_table_bytes(data: bytes, name: str) -> pd.DataFrame:
    """A .csv or .parquet table from its bytes; DataError naming `name` when it is neither."""
    return _read_bytes(data, name)


def list_batches(uri: str, store: ArtifactStore) -> tuple[ArtifactStore, list[tuple[date, str]]]:
    """The `dt=YYYY-MM-DD` batch files under a prefix URI as (date, key), ascending; one list
    call. A URI naming a single table gives no batches."""
    st, key = resolve(uri, store)
    if key.endswith((".parquet", ".csv")):
        return st, []
    parts = [
        (date.fromisoformat(m.group(1)), k)
        for k in st.list_keys(key.rstrip("/") + "/")
        if (m := _BATCH.search(k))
    ]
    return st, sorted(parts)


def batch_dates(uri: str, store: ArtifactStore) -> list[date]:
    """The dates of the `dt=YYYY-MM-DD` batches under a prefix URI, ascending."""
    return sorted({d for d, _ in list_batches(uri, store)[1]})


@dataclass(frozen=True)
class Window:
    """A window of data read from a source: the rows, where they came from, and the schema
    conflicts between its batches."""

    frame: pd.DataFrame
    uris: list[str]
    conflicts: list[dict[str, Any]]
    start: date | None
    end: date | None
    #: Batches `admit` refused, by URI.
    excluded: list[str] = field(default_factory=list)


#: Decides whether a batch (its date, URI, bytes and rows) may enter a window: the rows it
#: enters with (e.g. with derived columns), or None to leave it out.
Admit = Callable[[date, str, bytes, "pd.DataFrame"], "pd.DataFrame | None"]


def window_end(dates: list[date], end: date | None) -> date | None:
    """The last day of a window of batches up to `end`: the newest of `dates` on or before it
    (None: there is none)."""
    return max((d for d in dates if end is None or d <= end), default=None)


def read_window(
    uri: str,
    store: ArtifactStore,
    end: date | None = None,
    days: int | None = None,
    admit: Admit | None = None,
    start: date | None = None,
) -> Window:
    """The last `days` days of batches up to `end` (default: the newest batch), or the whole
    table when `uri` names one. Batches are concatenated in date order; those `admit` refuses
    (e.g. quarantined ones) are left out and listed in `excluded`.

    With `start` (which needs `end`), exactly the batches dated `start` to `end` instead, the
    way a drift reference window is read: there may be none (or none admitted), and then the
    window has no rows and no columns."""
    import pandas as pd

    if start is not None and end is None:
        raise ValueError("read_window: a window from `start` needs its `end`")
    exact = start is not None
    st, batches = list_batches(uri, store)
    if not batches:
        _, key = resolve(uri, store)
        if exact and not key.endswith((".parquet", ".csv")):
            return Window(pd.DataFrame(), [], [], start, end)
        try:
            frame = _read_bytes(st.get_bytes(key), key)
        except NotFoundError:
            raise DataError(f"{uri}: no such table and no dt=YYYY-MM-DD batches", uri=uri) from None
        return Window(frame, [st.uri_for(key)], [], None, None)
    if exact:
        first, last = start, end
    else:
        newest = window_end([d for d, _ in batches], end)
        if newest is None:
            raise DataError(f"{uri}: no dt=YYYY-MM-DD batches on or before {end}", uri=uri)
        first, last = (newest - timedelta(days=days - 1) if days else None), newest
    assert last is not None
    chosen = [(d, k) for d, k in batches if d <= last and (first is None or d >= first)]
    frames, uris, excluded = [], [], []
    for d, k in chosen:
        data = st.get_bytes(k)
        frame = _read_bytes(data, k)
        if admit is not None:
            admitted = admit(d, st.uri_for(k), data, frame)
            if admitted is None:
                excluded.append(st.uri_for(k))
                continue
            frame = admitted
        frames.append(frame)
        uris.append(st.uri_for(k))
    if not frames and exact:
        return Window(pd.DataFrame(), [], [], first, last, excluded)
    if not frames:
        raise DataError(
            f"{uri}: all {len(chosen)} batch(es) from {chosen[0][0]} to {last} are quarantined "
            "(`mlops quarantine MODEL` lists them)",
            uri=uri,
        )
    names = ["/".join(u.rsplit("/", 2)[-2:]) for u in uris]
    conflicts = schema_conflicts(frames, names) if len(frames) > 1 else []
    frame = pd.concat(frames, ignore_index=True)
    return Window(frame, uris, conflicts, first, last, excluded)


def _kind(dtype: Any) -> str:
    import pandas as pd

    if pd.api.types.is_bool_dtype(dtype) or pd.api.types.is_numeric_dtype(dtype):
        return "numeric"
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return "datetime"
    return "text"


def schema_conflicts(frames: list[pd.DataFrame], names: list[str]) -> list[dict[str, Any]]:
    """Columns whose presence or kind (numeric/text/datetime) differs between batches.

    Each conflict names the column and the odd batches, so a person can find the bad file
    instead of reading thousands of "unexpected" values in the concatenated window.
    """
    columns: dict[str, dict[str, list[str]]] = {}
    for frame, name in zip(frames, names, strict=True):
        for col in frame.columns:
            columns.setdefault(str(col), {}).setdefault(_kind(frame[col].dtype), []).append(name)
        for col in set(columns) - {str(c) for c in frame.columns}:
            columns[col].setdefault("missing", []).append(name)
    for kinds in columns.values():  # batches read before the column first appeared
        seen = {n for group in kinds.values() for n in group}
        absent = [n for n in names if n not in seen]
        if absent:
            kinds.setdefault("missing", []).extend(absent)
    conflicts = []
    for col, kinds in sorted(columns.items()):
        if len(kinds) < 2:
            continue
        usual = max(kinds, key=lambda k: len(kinds[k]))
        odd = {k: v for k, v in kinds.items() if k != usual}
        detail = "; ".join(
            f"{'missing from' if k == 'missing' else k + ' in'} {', '.join(v[:3])}"
            + (f" and {len(v) - 3} more" if len(v) > 3 else "")
            for k, v in odd.items()
        )
        message = f"column {col!r} is {usual} in {len(kinds[usual])} batch(es) but {detail}"
        conflicts.append({"column": col, "usual": usual, "odd": odd, "message": message})
    return conflicts


def normalize_time(frame: pd.DataFrame, column: str | None) -> tuple[pd.DataFrame, str | None]:
    """The time column as naive UTC timestamps, and a note when that changed anything.

    Batches written in different zones (or one zone-aware batch among naive ones) concatenate
    to a column of mixed objects that sorts wrongly or not at all; converting every value to
    UTC keeps the time split and the windows right, and the note says what was converted.
    Text that does not parse as a time is left for validation to report.
    """
    import pandas as pd

    if not column or column not in frame.columns:
        return frame, None
    values = frame[column]
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        zone = str(values.dt.tz)
        frame = frame.assign(**{column: values.dt.tz_convert("UTC").dt.tz_localize(None)})
        return frame, f"{column}: timestamps in {zone} converted to naive UTC"
    if values.dtype != object:
        return frame, None
    zones = {str(getattr(v, "tzinfo", None)) for v in values.dropna().head(10_000)}
    try:
        parsed = pd.to_datetime(values, utc=True, format="ISO8601")
    except (ValueError, TypeError):
        return frame, None
    frame = frame.assign(**{column: parsed.dt.tz_localize(None)})
    if zones == {"None"}:
        return frame, f"{column}: text timestamps parsed as UTC"
    found = ", ".join(sorted(zones))[:200]
    return frame, f"{column}: timestamps in several zones ({found}) converted to naive UTC"


def content_hash(df: pd.DataFrame) -> str:
    """SHA-256 over column names, dtypes and row values: the same rows give the same hash."""
    import pandas as pd

    h = hashlib.sha256()
    h.update(encode_json([[str(c), str(t)] for c, t in df.dtypes.items()]))
    h.update(pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes())
    return h.hexdigest()


def _parquet_safe(df: pd.DataFrame) -> pd.DataFrame:
    """Object columns mixing types Parquet cannot store together (numbers in older batches,
    text in a batch that retyped the column) become text, so the window is still snapshotted
    and validation can report the retyped column instead of the writer crashing."""
    import pyarrow as pa

    for col in df.columns[df.dtypes == "object"]:
        try:
            pa.array(df[col], from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            df[col] = df[col].where(df[col].isna(), df[col].astype(str))
    return df


def snapshot(
    df: pd.DataFrame,
    sources: list[str],
    store: ArtifactStore,
    source: str = "batches",
    **extra: Any,
) -> SnapshotRef:
    """Freeze `df` at `datasets/<sha256>/`; idempotent (an existing snapshot is reused)."""
    df = _parquet_safe(df.reset_index(drop=True))
    digest = content_hash(df)
    base = f"datasets/{digest}"
    meta = {
        "hash": digest,
        "rows": len(df),
        "columns": list(map(str, df.columns)),
        "dtypes": {str(c): str(t) for c, t in df.dtypes.items()},
        "sources": sources,
        "created_at": datetime.now(UTC).isoformat(),
        **extra,
    }
    if not store.exists(f"{base}/metadata.json"):
        buf = io.BytesIO()
        df.to_parquet(buf, index=False)
        store.put_if_absent(f"{base}/data.parquet", buf.getvalue())
        # metadata.json is written last: its presence marks a complete snapshot.
        store.put_if_absent(f"{base}/metadata.json", encode_json(meta))
        log.info("snapshot %s: %d rows from %d source(s)", digest[:12], len(df), len(sources))
    return SnapshotRef(
        hash=digest,
        uri=store.uri_for(f"{base}/data.parquet"),
        rows=len(df),
        sources=len(sources),
        source=source,  # type: ignore[arg-type]
    )


def load_snapshot(digest: str, store: ArtifactStore) -> pd.DataFrame:
    """Read a snapshot back; DataError if it is missing or incomplete."""
    if not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise DataError(f"invalid dataset hash {digest!r}", hash=digest)
    try:
        data = store.get_bytes(f"datasets/{digest}/data.parquet")
    except NotFoundError:
        raise DataError(
            f"dataset snapshot {digest} not found in {store.uri}", hash=digest
        ) from None
    return _read_bytes(data, "data.parquet")


def load_snapshots(digests: list[str], store: ArtifactStore) -> dict[str, pd.DataFrame]:
    """Several snapshots by hash, each read once even when named twice (e.g. a window that is
    identical to the reference)."""
    return {d: load_snapshot(d, store) for d in dict.fromkeys(digests)}


def snapshot_metadata(digest: str, store: ArtifactStore) -> dict[str, Any]:
    meta: dict[str, Any] = store.get_json(f"datasets/{digest}/metadata.json")
    return meta
