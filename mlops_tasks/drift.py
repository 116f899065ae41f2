"""Drift checks: Evidently data drift per column, and performance drift on labelled rows.

`column_drift` is the one place that computes data drift; callers only see its rows
(column, method, score, threshold, drifted). The scores and decisions are Evidently's
`ValueDrift` ones, computed exactly by `drift_stats` on the full windows in a fraction of
Evidently's time and memory (docs/benchmarks.md); Evidently itself computes only the methods
`drift_stats` lacks, and draws the interactive page from bounded samples when it is kept.
"""

from __future__ import annotations

import logging
import re
import warnings
from dataclasses import asdict, replace
from typing import TYPE_CHECKING, Any

from mlops_tasks import drift_stats, reports
from mlops_tasks.datasets import load_snapshots
from mlops_tasks.modelling import compute_metrics, metric_drop, predict_scores, prepare_features
from mlops_tasks.records import (
    ColumnDrift,
    DataDrift,
    DriftResult,
    PerformanceDrift,
    Reference,
    to_json,
)
from mlops_tasks.registry import Registry
from mlops_tasks.specs import ModelSpec
from mlops_tasks.storage import ArtifactStore

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)


#: Rows per window the Evidently page is drawn from; decisions always use the full windows.
PAGE_SAMPLE_ROWS = 20_000


def column_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    numeric: list[str],
    categorical: list[str],
    overrides: dict[str, dict[str, Any]] | None = None,
) -> tuple[list[dict[str, Any]], DriftPage]:
    """Per-column drift rows, and the Evidently page for them (built only if asked for).

    `overrides` maps a column to {"method": ..., "threshold": ...}; unset keys use Evidently's
    defaults (by column type, number of values and reference size). Scores and decisions are
    Evidently's, computed exactly by `drift_stats` on the full windows; a column it does not
    implement (a method it lacks) is computed by Evidently's `ValueDrift` itself. `drifted`
    follows the method's own rule (p-value below threshold for tests, distance at or above it
    for distances).
    """
    overrides = overrides or {}
    rows: dict[str, dict[str, Any]] = {}
    for kinds, kind in ((numeric, drift_stats.NUMERICAL), (categorical, drift_stats.CATEGORICAL)):
        for c in kinds:
            o = overrides.get(c, {})
            score = drift_stats.score_column(
                c, reference[c], current[c], kind, o.get("method"), o.get("threshold")
            )
            if score is not None:
                rows[c] = asdict(score)
    rest_num = [c for c in numeric if c not in rows]
    rest_cat = [c for c in categorical if c not in rows]
    if rest_num or rest_cat:
        log.info("drift: Evidently computes %s", ", ".join([*rest_num, *rest_cat]))
        slow, _ = _evidently_drift(reference, current, rest_num, rest_cat, overrides)
        rows.update((r["column"], r) for r in slow)
    ordered = [rows[c] for c in [*numeric, *categorical]]
    return ordered, DriftPage(reference, current, numeric, categorical, overrides, ordered)


def _evidently_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    numeric: list[str],
    categorical: list[str],
    overrides: dict[str, dict[str, Any]],
) -> tuple[list[dict[str, Any]], Any]:
    """Drift rows from Evidently's per-column `ValueDrift` metrics, and its snapshot."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift

    definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
    metrics = [
        ValueDrift(column=c, **{k: v for k, v in overrides.get(c, {}).items() if v is not None})
        for c in [*numeric, *categorical]
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # constant columns divide by zero
        snap = Report(metrics, include_tests=True).run(
            current_data=Dataset.from_pandas(current, data_definition=definition),
            reference_data=Dataset.from_pandas(reference, data_definition=definition),
        )
    data = snap.dict()
    status = {t["metric_config"]["metric_id"]: t["status"] for t in data["tests"]}
    rows = []
    for m in data["metrics"]:
        cfg = m["config"]
        if not cfg["type"].endswith(":ValueDrift"):
            continue
        rows.append(
            {
                "column": cfg["column"],
                "method": cfg["method"],
                "threshold": float(cfg["threshold"]),
                "score": float(m["value"]),
                "drifted": status.get(m["id"]) == "FAIL",
            }
        )
    return rows, snap


class DriftPage:
    """Evidently's interactive drift page, rendered on demand from bounded samples.

    Building Evidently's report costs more than the drift decisions themselves and is only
    kept when something drifted, so it is deferred until `get_html_str` (the name of
    Evidently's own snapshot method). Windows larger than `PAGE_SAMPLE_ROWS` are drawn from a
    seeded sample; the page then opens with the full-data decisions and says where they come
    from, since the sample's charts and scores can differ slightly.
    """

    def __init__(
        self,
        reference: pd.DataFrame,
        current: pd.DataFrame,
        numeric: list[str],
        categorical: list[str],
        overrides: dict[str, dict[str, Any]],
        rows: list[dict[str, Any]],
    ) -> None:
        self._frames = (reference, current)
        self._columns = (numeric, categorical)
        self._overrides = overrides
        self.rows = rows

    def get_html_str(self, as_iframe: bool = False) -> str:
        sizes = [len(f) for f in self._frames]
        ref, cur = (
            f.sample(PAGE_SAMPLE_ROWS, random_state=i) if len(f) > PAGE_SAMPLE_ROWS else f
            for i, f in enumerate(self._frames)
        )
        _, snap = _evidently_drift(ref, cur, *self._columns, self._overrides)
        page = str(snap.get_html_str(as_iframe=as_iframe))
        if max(sizes) <= PAGE_SAMPLE_ROWS:
            return page
        note = (
            "<section style='font-family:system-ui,sans-serif;margin:1rem'>"
            "<h2>Drift decisions (full data)</h2>"
            f"<p>Scores and decisions below come from the full windows ({sizes[0]:,} reference "
            f"and {sizes[1]:,} current rows), computed exactly. The Evidently report after this "
            f"table is drawn from a seeded sample of at most {PAGE_SAMPLE_ROWS:,} rows per "
            "window; its charts and scores illustrate the shift and can differ slightly.</p>"
            + reports.table(self.rows, ["column", "method", "score", "threshold", "drifted"])
            + "</section>"
        )
        body = re.search(r"<body[^>]*>", page)
        at = body.end() if body else 0
        return page[:at] + note + page[at:]


def data_drift(
    spec: ModelSpec, reference: pd.DataFrame, current: pd.DataFrame
) -> tuple[DataDrift, Any]:
    """Per-column drift of the spec's drift columns, and the share that drifted."""
    cols = spec.drift.columns or spec.features.all
    numeric = [c for c in spec.features.numeric if c in cols]
    categorical = [c for c in spec.features.categorical if c in cols]
    overrides = {c: {"method": spec.drift.method, "threshold": spec.drift.threshold} for c in cols}
    for c, o in spec.drift.overrides.items():
        threshold = o.threshold if o.threshold is not None else spec.drift.threshold
        overrides[c] = {"method": o.method or spec.drift.method, "threshold": threshold}
    rows, snap = column_drift(
        prepare_features(spec, reference),
        prepare_features(spec, current),
        numeric,
        categorical,
        overrides,
    )
    columns = tuple(ColumnDrift(**r) for r in rows)
    drifted = tuple(c.column for c in columns if c.drifted)
    share = len(drifted) / len(columns) if columns else 0.0
    result = DataDrift(
        columns=columns,
        drifted_columns=drifted,
        drifted_share=share,
        threshold_share=spec.drift.drift_share,
        drift_detected=share >= spec.drift.drift_share,
    )
    return result, snap


def performance_drift(
    spec: ModelSpec, reference: Reference, current: pd.DataFrame, registry: Registry
) -> PerformanceDrift | None:
    """The production model's metric on labelled current rows vs its own holdout metric."""
    metric = spec.performance_metric
    perf = spec.drift.performance
    if spec.target not in current.columns:
        return None
    labelled = current[current[spec.target].notna()]
    baseline = reference.metrics.get(metric)
    if len(labelled) < perf.min_labelled_rows or baseline is None:
        summary = (
            f"performance: {len(labelled)} labelled rows (< {perf.min_labelled_rows} needed); "
            "not checked"
        )
        return PerformanceDrift(False, metric, len(labelled), summary)
    model = registry.load(spec.name, reference.version)
    pred, proba = predict_scores(spec, model, prepare_features(spec, labelled))
    value = compute_metrics(spec.task, labelled[spec.target].to_numpy(), pred, proba).get(metric)
    if value is None:
        summary = f"performance: {metric} not computable on current labels"
        return PerformanceDrift(False, metric, len(labelled), summary)
    drop = metric_drop(spec.task, metric, baseline, value)
    summary = (
        f"performance: {metric} {value:.4f} on {len(labelled)} labelled rows vs "
        f"{baseline:.4f} at training (drop {drop:+.4f}, allowed {perf.max_drop})"
    )
    return PerformanceDrift(
        drop > perf.max_drop, metric, len(labelled), summary, value, baseline, drop, perf.max_drop
    )


def detect_drift(
    spec: ModelSpec,
    reference: Reference,
    current_hash: str,
    run_id: str,
    store: ArtifactStore,
) -> DriftResult:
    """Data and performance drift between the reference snapshot and the current window.

    Stores the JSON result and the HTML report under reports/<model>/<run>/.
    """
    frames = load_snapshots([reference.hash, current_hash], store)
    ref_df, cur_df = frames[reference.hash], frames[current_hash]
    data, snap = data_drift(spec, ref_df, cur_df)
    perf = performance_drift(spec, reference, cur_df, Registry(store))
    partial = DriftResult(
        reference_version=reference.version,
        reference_hash=reference.hash,
        current_hash=current_hash,
        reference_rows=len(ref_df),
        current_rows=len(cur_df),
        data=data,
        performance=perf,
        report_uri="",
    )
    # Evidently's interactive page is ~4 MB; a monitor running every few minutes would fill
    # the store with it. Keep it when something drifted; a compact page otherwise.
    html = (
        snap.get_html_str(as_iframe=False)
        if partial.detected
        else _summary_page(spec, partial, run_id)
    )
    uris = reports.store_report(store, spec.name, run_id, "drift", to_json(partial), html)
    log.info(
        "%s drift: %.0f%% of columns drifted (%s); performance: %s",
        spec.name,
        100 * data.drifted_share,
        ", ".join(data.drifted_columns) or "none",
        perf.summary if perf else "no labels",
    )
    return replace(partial, report_uri=uris["html"])


def _summary_page(spec: ModelSpec, result: DriftResult, run_id: str) -> str:
    data, perf = result.data, result.performance
    check_row = {
        "run": run_id,
        "reference": f"v{result.reference_version}",
        "reference rows": result.reference_rows,
        "current rows": result.current_rows,
        "drift share threshold": data.threshold_share,
        "performance": perf.summary if perf else "no labels",
    }
    columns = [to_json(c) for c in data.columns]
    return reports.page(
        f"{spec.name}: no drift ({data.drifted_share:.0%} of columns drifted)",
        [
            ("Check", reports.table([check_row])),
            (
                "Columns",
                reports.table(columns, ["column", "method", "score", "threshold", "drifted"]),
            ),
        ],
    )
