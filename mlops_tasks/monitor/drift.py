"""Drift checks: Evidently data drift per column, and performance drift on labelled rows.

`column_drift` is the one place that computes data drift; callers only see its rows
(column, method, score, threshold, drifted). The scores and decisions are Evidently's
`ValueDrift` ones, computed exactly by `drift_stats` on the full windows in a fraction of
Evidently's time and memory (docs/benchmarks.md); Evidently itself computes only the methods
`drift_stats` lacks, and draws the interactive page from bounded samples when it is kept.
"""

from __future__ import annotations

import itertools
import logging
import re
import warnings
from dataclasses import asdict, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from mlops_tasks import reports
from mlops_tasks.data.datasets import load_snapshots
from mlops_tasks.errors import MlopsError
from mlops_tasks.model.modelling import (
    canonical_text,
    compute_metrics,
    describe_change,
    metric_drop,
    predict_scores,
    prepare_features,
)
from mlops_tasks.monitor import drift_stats
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
#: Bounds of the compact page's distributions: drifted columns drawn, bins per number, and
#: categories shown (the rest summed as "other").
PLOTTED_COLUMNS = 12
NUMERIC_BINS = 20
TOP_CATEGORIES = 12


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

    def distributions(self, columns: list[str]) -> str:
        """Reference vs current histograms of `columns` (the prepared frames, full windows),
        as inline SVG for the compact page."""
        ref, cur = self._frames
        numeric = set(self._columns[0])
        out = ""
        for col in columns[:PLOTTED_COLUMNS]:
            bins, ref_share, cur_share = distribution(ref[col], cur[col], col in numeric)
            out += f"<h3>{reports.esc(col)}</h3>" + reports.histogram(
                f"{col}: reference vs current", bins, ref_share, cur_share
            )
        if len(columns) > PLOTTED_COLUMNS:
            out += f"<p class='note'>and {len(columns) - PLOTTED_COLUMNS} more columns.</p>"
        return out

    def get_html_str(self) -> str:
        """Evidently's standalone page, its embedded data made script-safe (`evidently_html`)."""
        sizes = [len(f) for f in self._frames]
        ref, cur = (
            f.sample(PAGE_SAMPLE_ROWS, random_state=i) if len(f) > PAGE_SAMPLE_ROWS else f
            for i, f in enumerate(self._frames)
        )
        _, snap = _evidently_drift(ref, cur, *self._columns, self._overrides)
        page = evidently_html(str(snap.get_html_str(as_iframe=False)))
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
        return at_top(page, note)


#: The lines of Evidently's page that carry its data: `var <id> = <JSON>;` in a <script>. The
#: JSON comes from `json.dumps` (ASCII, no raw line break), so each such line is one JSON text.
_EVIDENTLY_DATA = re.compile(r"^(\s*var (?:additional_graphs_)?metric_[0-9a-f]{32} = )(.+);$", re.M)


def evidently_html(page: str) -> str:
    """Evidently's page with the JSON it embeds in a <script> made script-safe.

    Evidently 0.7 writes `json.dumps` output into the script as it is: a category or column
    name holding `</script><img src=x onerror=...>` ended the script, and the rest ran as
    markup wherever the stored page was opened. Its two data lines are rewritten with
    `reports.script_json` (same data, no `<`, `>` or `&`); a page in another layout is refused
    rather than stored unchecked.
    """
    safe, found = _EVIDENTLY_DATA.subn(
        lambda m: f"{m.group(1)}{reports.script_json(m.group(2))};", page
    )
    if found != 2:
        raise MlopsError(
            f"Evidently's drift page embeds its data in {found} lines, not the 2 this code makes "
            "script-safe: check drift.evidently_html against the installed Evidently",
            lines=found,
        )
    return safe


def at_top(page: str, section: str) -> str:
    """`page` with `section` first in its body (on a script-safe page the first `<body` is
    the element: no data holds a `<`)."""
    body = re.search(r"<body[^>]*>", page)
    at = body.end() if body else 0
    return page[:at] + section + page[at:]


def distribution(
    reference: pd.Series, current: pd.Series, numeric: bool
) -> tuple[list[str], list[float], list[float]]:
    """Bin labels and each window's share per bin: `NUMERIC_BINS` equal-width bins over both
    windows' range for numbers (so values outside the reference's range show), the
    `TOP_CATEGORIES` most frequent categories plus "other" for text; missing values get a bin of
    their own when there are any."""
    import numpy as np
    import pandas as pd

    ref, cur = reference.dropna(), current.dropna()
    labels: list[str]
    if numeric:
        ref = ref[np.isfinite(ref.to_numpy(dtype=float))]
        cur = cur[np.isfinite(cur.to_numpy(dtype=float))]
        both = pd.concat([ref, cur])
        lo, hi = (float(both.min()), float(both.max())) if len(both) else (0.0, 1.0)
        edges = np.histogram_bin_edges(both.to_numpy(dtype=float), NUMERIC_BINS, (lo, hi))
        counts = [np.histogram(w.to_numpy(dtype=float), edges)[0].tolist() for w in (ref, cur)]
        labels = [f"{a:.4g}–{b:.4g}" for a, b in itertools.pairwise(edges)]
    else:
        ref_counts, cur_counts = ref.astype(str).value_counts(), cur.astype(str).value_counts()
        top = (
            (ref_counts / max(len(ref), 1))
            .add(cur_counts / max(len(cur), 1), fill_value=0)
            .sort_values(ascending=False, kind="mergesort")
            .index[:TOP_CATEGORIES]
        )
        labels = [str(c) for c in top]
        counts = [[int(vc.get(c, 0)) for c in top] for vc in (ref_counts, cur_counts)]
        if len(top) < len(ref_counts.index.union(cur_counts.index)):
            labels.append("other")
            for row, window in zip(counts, (ref, cur), strict=True):
                row.append(len(window) - sum(row))
    missing = [len(reference) - len(ref), len(current) - len(cur)]
    if any(missing):
        labels.append("missing or not finite")
        for row, m in zip(counts, missing, strict=True):
            row.append(m)
    ref_share, cur_share = (
        [c / max(len(w), 1) for c in row]
        for row, w in zip(counts, (reference, current), strict=True)
    )
    return labels, ref_share, cur_share


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
    ref, cur = prepare_features(spec, reference), prepare_features(spec, current)
    rows, snap = column_drift(ref, cur, numeric, categorical, overrides)
    findings = learned_findings(ref, cur, numeric, categorical)
    columns = tuple(ColumnDrift(**r, **findings.get(r["column"], {})) for r in rows)
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


def learned_findings(
    reference: pd.DataFrame, current: pd.DataFrame, numeric: list[str], categorical: list[str]
) -> dict[str, dict[str, Any]]:
    """What the current window holds that the reference never showed: categories with their
    counts (the 20 most frequent), and the share of numbers outside the reference's range.
    These were learned checks once; here they are drift evidence, never a reason to refuse
    the data."""
    out: dict[str, dict[str, Any]] = {}
    for col in categorical:
        seen = set(reference[col].dropna().unique())
        counts = current[col].dropna().value_counts()
        new = counts[~counts.index.isin(seen)].head(20)
        if len(new):
            out[col] = {"new_categories": {str(k): int(v) for k, v in new.items()}}
    for col in numeric:
        ref, cur = reference[col].dropna(), current[col].dropna()
        if ref.empty or cur.empty:
            continue
        outside = float(((cur < ref.min()) | (cur > ref.max())).mean())
        if outside > 0:
            out[col] = {"out_of_range_share": outside}
    return out


def performance_drift(
    spec: ModelSpec, reference: Reference, current: pd.DataFrame, registry: Registry
) -> PerformanceDrift | None:
    """The production model's metric on labelled current rows vs its own holdout metric.

    Logged traffic carries the version that scored each row; only production's own rows
    judge it (traffic scored by an older version says nothing about this one).
    """
    import pandas as pd

    metric = spec.performance_metric
    perf = spec.drift.performance
    if spec.target not in current.columns:
        return None
    labelled = current[current[spec.target].notna()]
    older = 0
    if "version" in labelled.columns:  # logged traffic: judge only what production scored
        scored_here = pd.to_numeric(labelled["version"], errors="coerce") == reference.version
        older = int((~scored_here).sum())
        labelled = labelled[scored_here.to_numpy()]
    baseline = reference.metrics.get(metric)
    if len(labelled) < perf.min_labelled_rows or baseline is None:
        summary = (
            f"performance: {len(labelled)} labelled rows (< {perf.min_labelled_rows} needed); "
            "not checked"
        ) + (f" ({older} rows scored by older versions not counted)" if older else "")
        return PerformanceDrift(False, metric, len(labelled), summary)
    model, cut = registry.load_scorer(spec.name, reference.version)
    pred, proba = predict_scores(spec, model, prepare_features(spec, labelled), cut)
    value = compute_metrics(spec.task, labelled[spec.target].to_numpy(), pred, proba, spec).get(
        metric
    )
    if value is None:
        why = _undefined(labelled[spec.target])
        summary = (
            f"performance: metric undefined: {why}, so {metric} cannot be computed on its "
            f"{len(labelled)} labelled rows; not checked"
        )
        return PerformanceDrift(False, metric, len(labelled), summary, undefined=why)
    drop = metric_drop(spec.task, metric, baseline, value)
    allowed, how = spec.performance_allowance(baseline)
    summary = (
        f"performance: {metric} {value:.4f} on {len(labelled)} labelled rows vs "
        f"{baseline:.4f} at training ({describe_change(spec.task, metric, baseline, value)}; "
        f"at most {how} worse allowed)"
    ) + (f"; {older} rows scored by older versions not counted" if older else "")
    return PerformanceDrift(
        drop > allowed, metric, len(labelled), summary, value, baseline, drop, allowed
    )


def _undefined(labels: pd.Series) -> str:
    """Why a metric was undefined on these labels: one class (ROC AUC, PR AUC and log loss
    need both), else what the labels hold."""
    classes = sorted(set(canonical_text(labels).dropna()), key=str)
    if len(classes) == 1:
        return f"the labelled window holds one class (all {classes[0]})"
    shown = ", ".join(map(str, classes[:6]))
    return f"the labelled window's classes ({shown}) do not define it"


def reference_too_small(spec: ModelSpec, reference: Reference) -> str | None:
    """Why data drift is not judged against a reference window: it has fewer than
    `drift.min_rows` rows (None when it has enough, and always for the training snapshot)."""
    if reference.kind == "training" or reference.rows is None:
        return None
    if reference.rows >= spec.drift.min_rows:
        return None
    return (
        f"the reference window ({reference.kind}, {reference.start} to {reference.end}) has "
        f"{reference.rows} rows, fewer than drift.min_rows ({spec.drift.min_rows})"
    )


def unchecked_drift(spec: ModelSpec) -> DataDrift:
    """The data drift of a check that judged none: no columns, nothing drifted."""
    return DataDrift(
        columns=(),
        drifted_columns=(),
        drifted_share=0.0,
        threshold_share=spec.drift.drift_share,
        drift_detected=False,
    )


def detect_drift(
    spec: ModelSpec,
    reference: Reference,
    current_hash: str,
    run_id: str,
    store: ArtifactStore,
    traffic_hash: str | None = None,
    as_of: datetime | None = None,
) -> DriftResult:
    """Data and performance drift between the reference snapshot and the current window, and
    of the logged traffic (`traffic_hash`) when there is enough of it beside the batches.

    The reference is production's training snapshot or a window of batches (`Reference.kind`);
    both windows are judged against it with the same tests and thresholds. A reference window
    of fewer than `drift.min_rows` rows judges no data drift (`DriftResult.data_not_checked`
    says so); performance drift compares with production's holdout metrics either way.
    Stores the JSON result and the HTML report under reports/<model>/<run>/; `as_of` (the
    run's logical time) is shown on the page.
    """
    not_checked = reference_too_small(spec, reference)
    hashes = [
        *([] if not_checked else [reference.hash]),
        current_hash,
        *([traffic_hash] if traffic_hash else []),
    ]
    frames = load_snapshots(hashes, store)
    cur_df = frames[current_hash]
    labelled = frames[traffic_hash] if traffic_hash else cur_df
    traffic, traffic_page = None, None
    if not_checked:
        data, snap = unchecked_drift(spec), None
        reference_rows = reference.rows or 0
    else:
        ref_df = frames[reference.hash]
        data, snap = data_drift(spec, ref_df, cur_df)
        if traffic_hash:
            traffic, traffic_page = data_drift(spec, ref_df, labelled)
        reference_rows = len(ref_df)
    perf = performance_drift(spec, reference, labelled, Registry(store))
    partial = DriftResult(
        reference_version=reference.version,
        reference_hash=reference.hash,
        current_hash=current_hash,
        reference_rows=reference_rows,
        current_rows=len(cur_df),
        data=data,
        performance=perf,
        report_uri="",
        traffic=traffic,
        traffic_rows=len(frames[traffic_hash]) if traffic_hash else 0,
        reference_kind=reference.kind,
        reference_start=reference.start,
        reference_end=reference.end,
        data_not_checked=not_checked,
    )
    # Evidently's interactive page is ~4 MB; a monitor running every few minutes would fill
    # the store with it. Keep it when something drifted; a compact page otherwise.
    html = (
        at_top(snap.get_html_str(), _summary_header(spec, partial, run_id, as_of))
        if partial.detected and snap is not None
        else _summary_page(spec, partial, run_id, as_of, snap, traffic_page)
    )
    uris = reports.store_report(store, spec.name, run_id, "drift", to_json(partial), html)
    if not_checked:
        log.warning("%s drift: data drift not checked: %s", spec.name, not_checked)
    log.info(
        "%s drift: %.0f%% of columns drifted (%s); traffic: %s; performance: %s",
        spec.name,
        100 * data.drifted_share,
        ", ".join(data.drifted_columns) or "none",
        f"{traffic.drifted_share:.0%} drifted" if traffic else "not checked",
        perf.summary if perf else "no labels",
    )
    return replace(partial, report_uri=uris["html"])


def _columns_table(data: DataDrift) -> str:
    shown = ["column", "method", "score", "threshold", "drifted"]
    shown += ["new categories (count)", "outside the reference's range"]
    rows = [
        {
            **to_json(c),
            "new categories (count)": c.new_categories,
            "outside the reference's range": (
                None if c.out_of_range_share is None else f"{c.out_of_range_share:.1%}"
            ),
        }
        for c in data.columns
    ]
    return reports.table(rows, shown)


def _drifted_distributions(data: DataDrift, page: DriftPage | None) -> str:
    if not data.drifted_columns or page is None:
        return "<p class='note'>No column drifted: nothing to compare.</p>"
    return reports.legend() + page.distributions(list(data.drifted_columns))


def _check_fields(
    result: DriftResult, run_id: str, as_of: datetime | None
) -> list[tuple[str, str]]:
    """What a drift check found, as labelled and escaped values (both pages open with it)."""
    data, perf, traffic = result.data, result.performance, result.traffic
    esc = reports.esc
    fields = [("as of", esc(f"{as_of:%Y-%m-%d %H:%M %Z}".strip()))] if as_of else []
    fields += [
        ("run", f"<code>{esc(run_id)}</code>"),
        ("reference", _reference_text(result)),
        (
            "current",
            f"snapshot <code>{esc(result.current_hash)}</code>, {result.current_rows} rows",
        ),
        (
            "data drift",
            f"<span class='neutral'>not checked: {esc(result.data_not_checked)}</span>"
            if result.data_not_checked
            else f"<span class='{reports.tone('drifted', data.drift_detected)}'>"
            f"{data.drifted_share:.0%} of columns drifted ({len(data.drifted_columns)} of "
            f"{len(data.columns)}: {esc(data.drifted_columns) or 'none'}); a retrain needs "
            f"{data.threshold_share:.0%}</span>",
        ),
    ]
    if traffic:
        fields.append(
            (
                "logged traffic",
                f"<span class='{reports.tone('drifted', traffic.drift_detected)}'>"
                f"{traffic.drifted_share:.0%} of columns drifted in {result.traffic_rows} rows "
                f"({esc(traffic.drifted_columns) or 'none'})</span>",
            )
        )
    fields.append(
        (
            "performance",
            f"<span class='{reports.tone('drifted', perf.drift_detected)}'>"
            f"{esc(perf.summary)}</span>"
            if perf
            else "no labels",
        )
    )
    return fields


def _reference_text(result: DriftResult) -> str:
    """What the check compared with: production's training snapshot, or a window of batches
    (its kind, days and snapshot), with production's holdout for performance."""
    esc = reports.esc
    snapshot = f"snapshot <code>{esc(result.reference_hash)}</code>, {result.reference_rows} rows"
    if result.reference_kind == "training":
        return f"production v{result.reference_version}'s training data: {snapshot}"
    return (
        f"{esc(result.reference_kind)}: the batches from {esc(result.reference_start)} to "
        f"{esc(result.reference_end)} as of this check, {snapshot}; performance against "
        f"production v{result.reference_version}'s holdout"
    )


def _decision(result: DriftResult) -> str:
    """The check's verdict in words: which kinds of drift it found."""
    perf, traffic = result.performance, result.traffic
    found = [
        name
        for name, hit in (
            ("data drift", result.data.drift_detected),
            ("drift in the logged traffic", bool(traffic and traffic.drift_detected)),
            ("performance drift", bool(perf and perf.drift_detected)),
        )
        if hit
    ]
    return f"drift detected: {', '.join(found)}" if found else "no drift"


#: The header's look: Evidently's page has none of the compact page's style sheet.
_HEADER_STYLE = (
    "<style>.mlops-summary{font-family:system-ui,sans-serif;margin:1rem;color:#1f2328}"
    ".mlops-summary h1{font-size:1.4rem;margin:.2rem 0 .6rem}"
    ".mlops-summary table{border-collapse:collapse}.mlops-summary th,.mlops-summary td"
    "{border:1px solid #d0d7de;padding:.3rem .6rem;text-align:left;font-size:.9rem;"
    "vertical-align:top}.mlops-summary th{background:#f6f8fa}"
    ".mlops-summary .fail{color:#cf222e;font-weight:600}.mlops-summary .pass{color:#1a7f37}"
    ".mlops-summary .neutral{color:#57606a}.mlops-summary .note{color:#57606a;"
    "font-size:.85rem}</style>"
)


def _summary_header(
    spec: ModelSpec, result: DriftResult, run_id: str, as_of: datetime | None
) -> str:
    """What a reader of Evidently's long page needs first: model, as of, verdict, drifted
    share and columns, performance. Every value escaped; Evidently's page follows untouched."""
    esc = reports.esc
    verdict = _decision(result)
    tone = reports.tone("drifted", result.detected)
    fields = [
        ("model", esc(spec.name)),
        ("decision", f"<span class='{tone}'>{esc(verdict)}</span>"),
        *_check_fields(result, run_id, as_of),
    ]
    return (
        f"<section class='mlops-summary'>{_HEADER_STYLE}"
        f"<h1>{esc(spec.name)}: {esc(verdict)}</h1>{reports.fields(fields)}"
        "<p class='note'>Whether this drift retrains the model is the monitor's next step "
        "(persistence, cooldown, minimum rows): the model's drift checks in the Models view "
        "or <code>mlops checks</code> say what it decided. Evidently's report follows.</p>"
        "</section>"
    )


def _summary_page(
    spec: ModelSpec,
    result: DriftResult,
    run_id: str,
    as_of: datetime | None = None,
    page: DriftPage | None = None,
    traffic_page: DriftPage | None = None,
) -> str:
    """The compact page kept when nothing drifted overall (or no data drift was judged): the
    decision, every column's score, and reference vs current distributions of the columns
    that did drift."""
    data = result.data
    columns = (
        f"<p class='note'>Not checked: {reports.esc(result.data_not_checked)}.</p>"
        if result.data_not_checked
        else _columns_table(data)
    )
    sections = [
        ("Check", reports.fields(_check_fields(result, run_id, as_of))),
        ("Columns (batches)", columns),
        ("Drifted columns: reference vs current", _drifted_distributions(data, page)),
    ]
    if result.traffic:
        title = f"Columns (logged traffic, {result.traffic_rows} rows)"
        sections.append((title, _columns_table(result.traffic)))
        if result.traffic.drifted_columns:
            sections.append(
                (
                    "Drifted columns in the logged traffic: reference vs current",
                    _drifted_distributions(result.traffic, traffic_page),
                )
            )
    title = (
        f"{spec.name}: {_decision(result)} (data drift not checked)"
        if result.data_not_checked
        else f"{spec.name}: no drift ({data.drifted_share:.0%} of columns drifted)"
    )
    return reports.page(title, sections)
