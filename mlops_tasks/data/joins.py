"""Point-in-time (as-of) joins: each row of the model's batches gets the newest row of
another batched table with the same keys at or before the row's time, never a later one.

A spec declares them under `data.joins`:

    data:
      source: store://flights/batches
      time_column: time_hour             # the rows' time: required with joins
      joins:
        - source: store://weather/batches  # dt=YYYY-MM-DD batches (or one table)
          keys: [origin]                 # or {left: airport, right: origin}
          time_key: time_hour            # the other table's time column
          tolerance: 3h                  # s m h d w; null: however old
          columns: [temp, visib, precip] # what each row gets ...
          prefix: wx_                    # ... named wx_temp, wx_visib, wx_precip
          at_serving: lookup             # or `request`: callers send wx_* themselves

The order is fixed: joins first, on the batches' own columns (keys and `data.time_column`
cannot be derived), then `data.derive` (a derived column may use joined ones), then the
target and the scope (`mlops_tasks.data.rows`). A row matches when its keys are equal to a
row of the other table and that row's time is at or before the row's time, by at most
`tolerance`; of several, the newest (the last one read, for equal times). A row without a
match (an unknown key, nothing recent enough, no time) gets nulls in the joined columns and
is counted; the contract's null rules then apply to those columns as to any other feature.

Reading: a run reads the other table as of its `as_of` (only batches dated on or before it,
so a replay never sees later data), keeps the keys, the time and the joined columns, and
freezes them as a snapshot of their own. Its hash goes into the window snapshot's metadata and
the version's lineage (`DatasetLineage.joins`), and into the key a batch's contract verdict is
stored under, so a batch is judged again once the other table has moved on.

Serving (`at_serving: lookup`): a loaded version keeps an `AsOfTable` built from its pinned
snapshot: the rows grouped by key, each group's times sorted, so a request row costs a dict
lookup and a binary search. A request carries the keys and the time column instead of the
joined columns; a row without a match is scored with nulls there and flagged `join:<name>` in
its data issues (never refused). Batches and requests go through the same `AsOfTable.match`.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np

from mlops_tasks.data import datasets
from mlops_tasks.errors import DataError

if TYPE_CHECKING:
    import pandas as pd

    from mlops_tasks.specs import JoinSpec, ModelSpec
    from mlops_tasks.storage import ArtifactStore

log = logging.getLogger(__name__)

#: The int64 that stands for "no time" (numpy's NaT).
NO_TIME = np.iinfo(np.int64).min
#: The flag a request row gets for a join it found no row of, e.g. `join:weather`.
FLAG = "join"


def instants(values: Any) -> np.ndarray:
    """Times as int64 nanoseconds of UTC (naive times are UTC), NO_TIME where a value is
    missing or is not a time. One parser for batches and requests."""
    import pandas as pd

    series = values if isinstance(values, pd.Series) else pd.Series(values, dtype=object)
    if pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(series.dtype):
        return np.full(len(series), NO_TIME, dtype=np.int64)  # a number is not a time
    parsed = pd.to_datetime(series, utc=True, format="ISO8601", errors="coerce")
    out: np.ndarray = parsed.dt.tz_localize(None).to_numpy("datetime64[ns]").view(np.int64)
    return out


#: ISO 8601 text a request's time usually is: read by `datetime.fromisoformat` exactly as
#: pandas reads it (a test checks), a hundred times faster for one value than pandas.
_ISO = re.compile(
    r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?)?(?:Z|[+-]\d{2}:\d{2})?"
)
_EPOCH = datetime(1970, 1, 1)
_MICROSECOND = timedelta(microseconds=1)


def request_instants(values: list[Any]) -> np.ndarray:
    """`instants` of a request's few values: ISO text (or null) parsed without pandas, any
    other value by `instants` itself."""
    out = np.empty(len(values), dtype=np.int64)
    for i, value in enumerate(values):
        if value is None:
            out[i] = NO_TIME
            continue
        if not isinstance(value, str) or not _ISO.fullmatch(value):
            return instants(values)
        try:
            at = datetime.fromisoformat(value)
        except ValueError:  # 2013-02-30, 25:00: not a time, for pandas too
            out[i] = NO_TIME
            continue
        if at.tzinfo is not None:
            at = at.astimezone(UTC).replace(tzinfo=None)
        out[i] = (at - _EPOCH) // _MICROSECOND * 1_000
    return out


class AsOfTable:
    """One joined table, indexed for as-of matching: by key, each key's times ascending."""

    def __init__(self, join: JoinSpec, frame: pd.DataFrame, digest: str, index: int = 0) -> None:
        self.join = join
        #: The join's place in `data.joins`, for error fields.
        self.field = f"data.joins.{index}"
        self.hash = digest
        self.rows = len(frame)
        self.name = str(join.name)
        self.outputs = join.outputs
        self._tolerance = (
            None if join.tolerance_seconds is None else np.int64(join.tolerance_seconds * 10**9)
        )
        times = instants(frame[join.time_key])
        keep = times != NO_TIME
        for k in join.right_keys:
            keep &= frame[k].notna().to_numpy()
        rows = np.flatnonzero(keep)
        self._index: dict[tuple[Any, ...], tuple[np.ndarray, np.ndarray]] = {}
        if len(rows):
            # stable: of equal times the last row read wins, whatever the key's order
            rows = rows[np.argsort(times[rows], kind="stable")]
            key_values = [frame[k].to_numpy(dtype=object)[rows].tolist() for k in join.right_keys]
            groups: dict[tuple[Any, ...], list[int]] = {}
            for i, key in enumerate(zip(*key_values, strict=True)):
                groups.setdefault(key, []).append(i)
            for key, members in groups.items():
                at = rows[members]
                self._index[key] = (times[at], at)
        #: The joined values by column, as plain Python values (a missing one: None).
        self._values = {
            out: [_plain(v) for v in frame[column].tolist()]
            for out, column in zip(self.outputs, join.columns, strict=True)
        }
        self._columns = {
            out: frame[column] for out, column in zip(self.outputs, join.columns, strict=True)
        }

    def match(self, keys: Sequence[tuple[Any, ...]], times: np.ndarray) -> np.ndarray:
        """For each row (its key tuple and `instants` time), the position of its match in
        the table, or -1: the newest row with that key at or before the time, within the
        tolerance."""
        out = np.full(len(keys), -1, dtype=np.int64)
        groups: dict[tuple[Any, ...], list[int]] = {}
        for i, key in enumerate(keys):
            groups.setdefault(key, []).append(i)
        for key, members in groups.items():
            try:
                found = self._index.get(key)
            except TypeError:  # an unhashable value cannot be a key of the table
                found = None
            if found is None:
                continue
            table_times, positions = found
            at = np.asarray(members)
            t = times[at]
            j = np.searchsorted(table_times, t, side="right") - 1
            ok = (t != NO_TIME) & (j >= 0)
            if self._tolerance is not None:
                ok &= t - table_times[np.maximum(j, 0)] <= self._tolerance
            out[at[ok]] = positions[j[ok]]
        return out

    def enrich(self, frame: pd.DataFrame, time_column: str) -> tuple[pd.DataFrame, int]:
        """`frame` (a batch that has the keys and `time_column`, and none of the joined
        columns: `rows.shape` checks) with the joined columns added, and how many rows found
        no match."""
        import pandas as pd

        columns = [frame[k].to_numpy(dtype=object).tolist() for k in self.join.left_keys]
        keys = list(zip(*columns, strict=True))
        positions = self.match(keys, instants(frame[time_column]))
        found = positions >= 0
        added = {}
        for out, column in self._columns.items():
            if len(column):
                values = column.iloc[np.maximum(positions, 0)].reset_index(drop=True)
                if not found.all():
                    values = values.where(found)
            else:  # an empty table: every row unmatched
                values = pd.Series(np.nan, index=range(len(frame)))
            values.index = frame.index
            added[out] = values
        return frame.assign(**added), int((~found).sum())

    def enrich_records(
        self, records: list[dict[str, Any]], time_column: str
    ) -> tuple[list[dict[str, Any]], list[int]]:
        """Request rows with the joined columns added, and the rows that found no match."""
        keys = [tuple(r.get(k) for k in self.join.left_keys) for r in records]
        positions = self.match(keys, request_instants([r.get(time_column) for r in records]))
        values = self._values
        out = [
            {**r, **{c: values[c][p] if p >= 0 else None for c in self.outputs}}
            for r, p in zip(records, positions.tolist(), strict=True)
        ]
        return out, [i for i, p in enumerate(positions.tolist()) if p < 0]


def _plain(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value


def _projection(join: JoinSpec, frame: pd.DataFrame, source: str, index: int) -> pd.DataFrame:
    wanted = list(dict.fromkeys([*join.right_keys, join.time_key, *join.columns]))
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        field = f"data.joins.{index}." + (
            "columns" if all(c in join.columns for c in missing) else "keys"
        )
        raise DataError(
            f"{source}: {field}: the joined table has no column(s) {missing}",
            field=field,
            uri=source,
        )
    return frame[wanted].reset_index(drop=True)


def load(
    spec: ModelSpec, store: ArtifactStore, as_of: date | None
) -> tuple[tuple[AsOfTable, ...], dict[str, str]]:
    """The spec's joined tables as of `as_of` (their batches dated on or before it; None: all),
    each frozen as a snapshot, and their hashes by join name (for lineage)."""
    tables = []
    for i, join in enumerate(spec.data.joins):
        window = datasets.read_window(join.source, store, end=as_of)
        frame = _projection(join, window.frame, join.source, i)
        snap = datasets.snapshot(
            frame,
            window.uris,
            store,
            "table",
            model=spec.name,
            join=join.name,
            as_of=as_of.isoformat() if as_of else None,
        )
        log.info("%s: join %s: %d rows as of %s", spec.name, join.name, len(frame), as_of)
        tables.append(AsOfTable(join, frame, snap.hash, i))
    return tuple(tables), {t.name: t.hash for t in tables}


def pinned(spec: ModelSpec, store: ArtifactStore, hashes: dict[str, str]) -> tuple[AsOfTable, ...]:
    """The lookup joins' tables as a version pinned them (`DatasetLineage.joins`): what the
    service enriches requests from."""
    tables = []
    for i, join in enumerate(spec.data.joins):
        if join.at_serving != "lookup":
            continue
        digest = hashes.get(str(join.name))
        if digest is None:
            raise DataError(
                f"{spec.name}: data.joins.{i} ({join.name}): the version has no pinned "
                "snapshot of this table (trained before the join was declared?)",
                field=f"data.joins.{i}",
            )
        frame = _projection(join, datasets.load_snapshot(digest, store), join.source, i)
        tables.append(AsOfTable(join, frame, digest, i))
    return tuple(tables)


def enrich_records(
    tables: Sequence[AsOfTable], records: list[dict[str, Any]], time_column: str
) -> tuple[list[dict[str, Any]], dict[int, tuple[str, ...]]]:
    """Request rows with every lookup join applied, and each unmatched row's flags."""
    flags: dict[int, tuple[str, ...]] = {}
    for table in tables:
        records, missed = table.enrich_records(records, time_column)
        for i in missed:
            flags[i] = (*flags.get(i, ()), f"{FLAG}:{table.name}")
    return records, flags
