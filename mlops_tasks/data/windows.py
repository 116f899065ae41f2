"""The data windows a run reads, frozen as snapshots: the batches of the days up to the run's
`as_of` that pass the declared contract (quarantining the rest), the labelled traffic a
retrain may add, the logged traffic a monitor checks, and the window of batches a monitor
compares with when `drift.reference` is not production's training snapshot."""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

from mlops_tasks.data import contracts, datasets, joins, rows
from mlops_tasks.data.traffic import read_traffic
from mlops_tasks.errors import DataError, DataValidationError
from mlops_tasks.records import Reference, SnapshotRef
from mlops_tasks.specs import YEAR_DAYS, DriftSpec, RollingReference

if TYPE_CHECKING:
    import pandas as pd

    from mlops_tasks.flow.context import RunContext

log = logging.getLogger(__name__)


def contract_admit(
    ctx: RunContext,
    verdicts: list[contracts.BatchVerdict],
    shaped: list[rows.Shaped] | None = None,
    joined: tuple[joins.AsOfTable, ...] = (),
) -> datasets.Admit:
    """Admits a batch, as the model sees it (`rows.shape`, with the `joined` tables), when it
    passes the declared contract (checked once per content and joined tables). A batch the
    spec's expressions cannot be evaluated on (a column they use missing, or of another type)
    fails its contract. Each admitted batch's counts of rows left out go to `shaped`."""
    pinned = {t.name: t.hash for t in joined}

    def admit(day: date, uri: str, data: bytes, frame: pd.DataFrame) -> pd.DataFrame | None:
        try:
            batch: rows.Shaped | None = rows.shape(ctx.spec, frame, uri, joined)
            problem = None
        except rows.ShapeError as err:
            batch, problem = None, {"field": err.context.get("field"), "error": err.message}
        verdict = contracts.check_batch(
            ctx.spec,
            ctx.store,
            uri,
            day,
            data,
            batch.frame if batch is not None else frame,
            ctx.run_id,
            problem=problem,
            joined=pinned,
        )
        verdicts.append(verdict)
        if not verdict.admitted or batch is None:
            return None
        if shaped is not None:
            shaped.append(batch)
        return batch.frame

    return admit


def batch_window(ctx: RunContext, days: int | None, feedback: bool = False) -> SnapshotRef:
    """Freeze the batches of the window ending at `as_of`, without quarantined ones, and with
    `feedback`, the labelled traffic of the same days."""
    return _freeze_batches(ctx, days, feedback)


def _freeze_batches(
    ctx: RunContext,
    days: int | None,
    feedback: bool = False,
    span: tuple[date, date] | None = None,
) -> SnapshotRef:
    """`batch_window`, or with `span` exactly the batches of those days (a reference window:
    it may hold none, and a quarantined batch in it is left out whatever
    `validation.on_bad_batch` says, since it was judged as history, not as the new data)."""
    import pandas as pd

    end: date = ctx.as_of.date()
    verdicts: list[contracts.BatchVerdict] = []
    shaped: list[rows.Shaped] = []
    joined, pinned = joins.load(ctx.spec, ctx.store, end)
    window = datasets.read_window(
        ctx.spec.data.source,
        ctx.store,
        end=span[1] if span else end,
        days=days,
        admit=contract_admit(ctx, verdicts, shaped, joined),
        start=span[0] if span else None,
    )
    held = [v for v in verdicts if not v.admitted]
    if held and span is None and ctx.spec.validation.on_bad_batch == "fail":
        raise DataValidationError(
            f"{ctx.model}: {len(held)} batch(es) in the window break the data contract and "
            "validation.on_bad_batch is `fail` (they are quarantined; `mlops quarantine "
            f"{ctx.model}` lists them):\n" + "\n".join(f"  - {v.summary()}" for v in held),
            model=ctx.model,
            batches=[v.uri for v in held],
        )
    for v in held:
        log.warning("%s: left out of the window (quarantined): %s", ctx.model, v.summary())
    frame = window.frame
    if window.end is None:  # one table, not batches: no per-batch contract, shaped here
        table = rows.shape(ctx.spec, frame, window.uris[0], joined)
        shaped.append(table)
        frame = table.frame
    left_out = {
        "rows_read": sum(b.rows_read for b in shaped),
        "out_of_scope": sum(b.out_of_scope for b in shaped),
        "unlabelled": sum(b.unlabelled for b in shaped),
    }
    unmatched = {t.name: sum(b.unmatched.get(t.name, 0) for b in shaped) for t in joined}
    for name, n in unmatched.items():
        if n:
            log.warning(
                "%s: join %s: %d of %d rows found no match (their joined columns are null)",
                ctx.model,
                name,
                n,
                left_out["rows_read"],
            )
    if left_out["out_of_scope"] or left_out["unlabelled"]:
        log.info(
            "%s: of %d rows read, %d are out of scope and %d unlabelled: left out",
            ctx.model,
            left_out["rows_read"],
            left_out["out_of_scope"],
            left_out["unlabelled"],
        )
    frame, note = datasets.normalize_time(frame, ctx.spec.data.time_column)
    if note:
        log.warning("%s: %s", ctx.model, note)
    joined_meta: dict[str, Any] = {"joins": pinned, "join_unmatched": unmatched} if pinned else {}
    traffic = None
    if feedback:
        traffic = labelled_traffic(ctx, days, frame)
        if traffic is not None:
            frame = pd.concat([frame, traffic[0]], ignore_index=True)
    snap = datasets.snapshot(
        frame,
        window.uris,
        ctx.store,
        model=ctx.model,
        schema_conflicts=window.conflicts,
        batches=[v.content_hash for v in verdicts if v.admitted],
        quarantined=[v.uri for v in held],
        traffic=traffic[1].hash if traffic else None,
        notes=[note] if note else [],
        left_out=left_out,
        **joined_meta,
    )
    start, last = window.start, window.end
    return SnapshotRef(
        hash=snap.hash,
        uri=snap.uri,
        rows=snap.rows,
        sources=len(window.uris),
        source="batches" if last else "table",
        start=start.isoformat() if start else None,
        end=last.isoformat() if last else None,
        batches=tuple(v.content_hash for v in verdicts if v.admitted),
        quarantined=tuple(v.uri for v in held),
        traffic_hash=traffic[1].hash if traffic else None,
        traffic_rows=traffic[1].rows if traffic else 0,
        out_of_scope=left_out["out_of_scope"],
        unlabelled=left_out["unlabelled"],
        joins=pinned,
    )


def current_span(ctx: RunContext) -> tuple[date, date]:
    """The first and last day of the current window `load_current` reads: the
    `drift.window_days` days up to the newest batch on or before `as_of`, or up to `as_of`'s
    date with `current_source: inference` (or no batch that old), as the traffic is read."""
    drift = ctx.spec.drift
    end = ctx.as_of.date()
    last = None
    if drift.current_source != "inference":
        last = datasets.window_end(datasets.batch_dates(ctx.spec.data.source, ctx.store), end)
    last = last or end
    return last - timedelta(days=drift.window_days - 1), last


def reference_span(drift: DriftSpec, first: date, last: date) -> tuple[date, date]:
    """The days of the reference window `drift.reference` names for the current window
    `first` to `last`: always before `first` (never overlapping it, never after the check)."""
    before = first - timedelta(days=1)
    if isinstance(drift.reference, RollingReference):
        return first - timedelta(days=drift.reference.rolling), before
    if drift.reference == "previous_window":
        return first - timedelta(days=drift.window_days), before
    if drift.reference == "same_period_last_year":
        year = timedelta(days=YEAR_DAYS)
        return first - year, last - year
    raise ValueError(f"drift.reference: {drift.reference!r} is not a window of batches")


def reference_window(ctx: RunContext, production: Reference) -> Reference:
    """`production` compared with the window of batches `drift.reference` names instead of
    its training snapshot: read as of the check (no batch dated after `as_of`), through the
    declared contract (quarantined batches left out), frozen as a snapshot."""
    spec = ctx.spec
    first, last = reference_span(spec.drift, *current_span(ctx))
    snap = _freeze_batches(ctx, None, span=(first, last))
    log.info(
        "%s: reference %s: %d rows from %s to %s (snapshot %s)",
        ctx.model,
        spec.drift.reference_kind,
        snap.rows,
        first,
        last,
        snap.hash[:12],
    )
    return replace(
        production,
        kind=spec.drift.reference_kind,
        hash=snap.hash,
        start=first.isoformat(),
        end=last.isoformat(),
        rows=snap.rows,
    )


def labelled_traffic(
    ctx: RunContext, days: int | None, batches: pd.DataFrame
) -> tuple[pd.DataFrame, SnapshotRef] | None:
    """Logged predictions of the window's days that have a label, shaped like the batches
    (features, target, time and id columns), frozen as their own snapshot for lineage."""
    import pandas as pd

    spec = ctx.spec
    traffic = read_traffic(
        ctx.store, spec.name, days or spec.drift.window_days, target=spec.target, as_of=ctx.as_of
    )
    if traffic.empty or spec.target not in traffic:
        return None
    labelled = traffic[traffic[spec.target].notna()]
    labelled = labelled.drop_duplicates(["request_id", "row"], keep="last")
    if labelled.empty:
        return None
    out = pd.DataFrame({c: labelled[c] for c in [*spec.features.all, spec.target]})
    if spec.data.time_column:
        ts = pd.to_datetime(labelled["ts"], utc=True)
        batch_ts = batches.get(spec.data.time_column)
        naive = batch_ts is None or getattr(batch_ts.dtype, "tz", None) is None
        out[spec.data.time_column] = ts.dt.tz_convert(None) if naive else ts
    if spec.data.id_column:
        out[spec.data.id_column] = (
            labelled["request_id"].astype(str) + ":" + labelled["row"].astype(str)
        )
    out = out.reset_index(drop=True)
    sources = [ctx.store.uri_for(f"inference/{spec.name}")]
    snap = datasets.snapshot(out, sources, ctx.store, "inference", model=spec.name)
    log.info("%s: %d labelled traffic rows join the training window", spec.name, len(out))
    return out, snap


def traffic_window(ctx: RunContext, required: bool) -> SnapshotRef | None:
    """The logged traffic of the drift window as a snapshot; None when it holds fewer than
    `drift.min_rows` rows (unless `required`: then an error when there is none)."""
    spec = ctx.spec
    traffic = read_traffic(
        ctx.store, spec.name, spec.drift.window_days, target=spec.target, as_of=ctx.as_of
    )
    if not required and len(traffic) < spec.drift.min_rows:
        return None
    if traffic.empty:
        raise DataError(
            f"{spec.name}: no logged predictions in the {spec.drift.window_days} day(s) "
            f"up to {ctx.as_of:%Y-%m-%d}",
            model=spec.name,
        )
    sources = [ctx.store.uri_for(f"inference/{spec.name}")]
    snap = datasets.snapshot(traffic, sources, ctx.store, "inference", model=spec.name)
    labelled = int(traffic[spec.target].notna().sum()) if spec.target in traffic else 0
    return SnapshotRef(
        hash=snap.hash,
        uri=snap.uri,
        rows=snap.rows,
        sources=1,
        source="inference",
        labelled_rows=labelled,
    )
