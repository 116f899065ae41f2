"""Read tables from store URIs and freeze them into immutable, content-addressed snapshots."""

from __future__ import annotations

import hashlib
import io
import logging
import re
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

from mlops_tasks.errors import DataError, NotFoundError
from mlops_tasks.storage import ArtifactStore, encode_json, open_store, resolve

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


def batch_dates(uri: str, store: ArtifactStore | None = None) -> list[date]:
    """The dates of the `dt=YYYY-MM-DD` batches under a prefix URI, ascending."""
    st, key = resolve(uri, store)
    dates = {m.group(1) for k in st.list_keys(key.rstrip("/") + "/") if (m := _BATCH.search(k))}
    return sorted(date.fromisoformat(d) for d in dates)


def _read_frames(
    uri: str, store: ArtifactStore | None, start: date | None, end: date | None
) -> tuple[list[pd.DataFrame], list[str]]:
    st, key = resolve(uri, store)
    if key.endswith((".parquet", ".csv")) or st.exists(key):
        try:
            return [_read_bytes(st.get_bytes(key), key)], [st.uri_for(key)]
        except NotFoundError:
            raise DataError(f"{uri}: no such table", uri=uri) from None
    parts = []
    for k in st.list_keys(key.rstrip("/") + "/"):
        m = _BATCH.search(k)
        if not m:
            continue
        d = date.fromisoformat(m.group(1))
        if (start and d < start) or (end and d > end):
            continue
        parts.append((d, k))
    if not parts:
        window = f" between {start} and {end}" if start or end else ""
        raise DataError(f"{uri}: no dt=YYYY-MM-DD batches found{window}", uri=uri)
    parts.sort()
    return [_read_bytes(st.get_bytes(k), k) for _, k in parts], [st.uri_for(k) for _, k in parts]


def read_table(
    uri: str,
    store: ArtifactStore | None = None,
    start: date | None = None,
    end: date | None = None,
) -> tuple[pd.DataFrame, list[str]]:
    """Read a table (a .parquet/.csv object, or a prefix of dated batches).

    For a prefix, batches with `start <= dt <= end` are concatenated in date order and a `dt`
    partition is not added as a column. Returns the frame and the URIs actually read.
    """
    df, uris, _ = read_batches(uri, store, start, end)
    return df, uris


def read_batches(
    uri: str,
    store: ArtifactStore | None = None,
    start: date | None = None,
    end: date | None = None,
) -> tuple[pd.DataFrame, list[str], list[dict[str, Any]]]:
    """Like `read_table`, and also the schema conflicts between the batches read."""
    import pandas as pd

    frames, uris = _read_frames(uri, store, start, end)
    names = ["/".join(u.rsplit("/", 2)[-2:]) for u in uris]
    conflicts = schema_conflicts(frames, names) if len(frames) > 1 else []
    return pd.concat(frames, ignore_index=True), uris, conflicts


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
        conflicts.append({"column": col, "usual": usual, "odd": odd,
                          "message": f"column {col!r} is {usual} in {len(kinds[usual])} "
                                     f"batch(es) but {detail}"})  # fmt: skip
    return conflicts


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
    store: ArtifactStore | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Freeze `df` at `datasets/<sha256>/`; idempotent (an existing snapshot is reused).

    Returns small JSON: hash, uri, rows, columns.
    """
    st = store or open_store()
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
    if not st.exists(f"{base}/metadata.json"):
        buf = io.BytesIO()
        df.to_parquet(buf, index=False)
        st.put_if_absent(f"{base}/data.parquet", buf.getvalue())
        # metadata.json is written last: its presence marks a complete snapshot.
        st.put_if_absent(f"{base}/metadata.json", encode_json(meta))
        log.info("snapshot %s: %d rows from %d source(s)", digest[:12], len(df), len(sources))
    return {
        "hash": digest,
        "uri": st.uri_for(f"{base}/data.parquet"),
        "rows": len(df),
        "columns": meta["columns"],
    }


def load_snapshot(digest: str, store: ArtifactStore | None = None) -> pd.DataFrame:
    """Read a snapshot back; DataError if it is missing or incomplete."""
    st = store or open_store()
    if not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise DataError(f"invalid dataset hash {digest!r}", hash=digest)
    if not st.exists(f"datasets/{digest}/metadata.json"):
        raise DataError(f"dataset snapshot {digest} not found in {st.uri}", hash=digest)
    return _read_bytes(st.get_bytes(f"datasets/{digest}/data.parquet"), "data.parquet")


def snapshot_metadata(digest: str, store: ArtifactStore | None = None) -> dict[str, Any]:
    st = store or open_store()
    meta: dict[str, Any] = st.get_json(f"datasets/{digest}/metadata.json")
    return meta
