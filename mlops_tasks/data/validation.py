"""Data validation with Great Expectations 1.x: a suite derived from the spec.

The suite checks that every column the model needs is present with the right type, that the
target and key columns have no nulls and features few, numeric ranges and allowed categories
(given in the spec, or learned from the reference snapshot with a tolerance), row-count bounds,
the target's values, and the spec's extra expectations. It runs in an ephemeral context on the
in-memory DataFrame; the result is stored as JSON and HTML under `reports/`.
"""

from __future__ import annotations

import logging
import math
import sys
from typing import TYPE_CHECKING, Any

from mlops_tasks import reports
from mlops_tasks.errors import DataValidationError, SpecError
from mlops_tasks.records import ValidationResult
from mlops_tasks.registry import Registry
from mlops_tasks.specs import ModelSpec
from mlops_tasks.storage import ArtifactStore

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

NUMERIC_TYPES = ["int8", "int16", "int32", "int64", "float32", "float64", "Int64", "Float64"]
_EXAMPLES = 5
FINITE = sys.float_info.max


def _learned_range(series: pd.Series, tolerance: float) -> tuple[float, float] | None:
    import pandas as pd

    values = pd.to_numeric(series, errors="coerce").dropna()
    if values.empty:
        return None
    lo, hi = float(values.min()), float(values.max())
    pad = (hi - lo) * tolerance
    return lo - pad, hi + pad


def _quiet_gx() -> None:
    """Great Expectations logs hundreds of INFO lines on import; keep task logs readable."""
    for noisy in ("great_expectations", "great_expectations.data_context.types.base"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _gx() -> tuple[Any, Any]:
    _quiet_gx()
    import great_expectations.expectations as gxe
    from great_expectations.expectations.expectation_configuration import (
        ExpectationConfiguration,
    )

    return gxe, ExpectationConfiguration


def declared_expectations(
    spec: ModelSpec, serving: bool = False, row_bounds: bool = True
) -> list[Any]:
    """The contract the spec declares: these block a run.

    Columns present; numeric features (and a regression target) numeric; nulls within
    `max_null_fraction` per feature and none in the target, id and time columns; declared
    ranges and categories; a classifier's labels 0/1 unless the spec names its positive class;
    the spec's extra expectations; and, with `row_bounds`, the window's row bounds.
    `serving=True` checks logged prediction requests: features only (labels arrive later), and
    extra expectations only where they name a feature.
    """
    from mlops_tasks.data.expectations import Expectation, light_extra

    v = spec.validation
    exps: list[Any] = []
    if row_bounds:
        exps.append(
            Expectation(
                "expect_table_row_count_to_be_between", min_value=v.min_rows, max_value=v.max_rows
            )
        )
    keys = [c for c in (spec.data.id_column, spec.data.time_column, spec.target) if c]
    for col in spec.features.all if serving else spec.columns:
        exps.append(Expectation("expect_column_to_exist", column=col))
        mostly = 1.0 if col in keys else 1.0 - v.max_null_fraction
        if mostly > 0:
            exps.append(
                Expectation("expect_column_values_to_not_be_null", column=col, mostly=mostly)
            )
    with_target = spec.task == "regression" and not serving
    for col in [*spec.features.numeric, *([spec.target] if with_target else [])]:
        exps.append(
            Expectation(
                "expect_column_values_to_be_in_type_list", column=col, type_list=NUMERIC_TYPES
            )
        )
        r = v.ranges.get(col)
        # Without a declared range, the widest finite one: +-inf (a division by zero upstream)
        # would pass every other check and crash the fit.
        lo = -FINITE if r is None or r.min is None else r.min
        hi = FINITE if r is None or r.max is None else r.max
        exps.append(
            Expectation(
                "expect_column_values_to_be_between", column=col, min_value=lo, max_value=hi
            )
        )
    for col, allowed in v.categories.items():
        exps.append(Expectation("expect_column_values_to_be_in_set", column=col, value_set=allowed))
    if spec.task == "classification" and not serving and spec.positive_class is None:
        exps.append(
            Expectation("expect_column_values_to_be_in_set", column=spec.target, value_set=[0, 1])
        )
    for i, extra in enumerate(v.expectations):
        if serving and extra.kwargs.get("column") not in spec.features.all:
            continue
        light = light_extra(extra.type, dict(extra.kwargs))
        if light is not None:
            exps.append(light)
            continue
        _, configuration = _gx()
        try:
            exps.append(configuration(type=extra.type, kwargs=extra.kwargs).to_domain_obj())
        except Exception as err:  # GX raises its own not-found and pydantic errors here
            raise SpecError(
                f"{spec.name}: validation.expectations.{i} ({extra.type}): {err}",
                field=f"validation.expectations.{i}",
            ) from err
    return exps


def learned_expectations(spec: ModelSpec, reference: pd.DataFrame) -> list[Any]:
    """What production's training data looked like, as expectations: numeric ranges (widened
    by `range_tolerance`) and category sets of the features the spec gives none for. They
    describe the reference; a window that leaves them is worth a warning, never a failure."""
    from mlops_tasks.data.expectations import Expectation

    v = spec.validation
    ref = contract_frame(spec, reference)
    exps: list[Any] = []
    for col in spec.features.numeric:
        if (
            col not in v.ranges
            and col in ref
            and (learned := _learned_range(ref[col], v.range_tolerance))
        ):
            exps.append(
                Expectation(
                    "expect_column_values_to_be_between",
                    column=col,
                    min_value=learned[0],
                    max_value=learned[1],
                    mostly=v.mostly,
                )
            )
    for col in spec.features.categorical:
        if col not in v.categories and col in ref:
            seen = sorted(str(x) for x in ref[col].dropna().unique())
            exps.append(
                Expectation(
                    "expect_column_values_to_be_in_set", column=col, value_set=seen, mostly=v.mostly
                )
            )
    return exps


def contract_frame(spec: ModelSpec, df: pd.DataFrame) -> pd.DataFrame:
    """`df` with its categorical features in their canonical text form (`1`, `1.0` and `"1"`
    are one category), as training and serving see them."""
    from mlops_tasks.model.modelling import canonical_text

    present = [c for c in spec.features.categorical if c in df.columns]
    if not present:
        return df
    out = df.copy(deep=False)
    for col in present:
        out[col] = canonical_text(df[col])
    return out


def check_contract(spec: ModelSpec, batch: pd.DataFrame) -> list[dict[str, Any]]:
    """The declared contract's failures on one batch (empty when it holds)."""
    frame = contract_frame(spec, batch)
    result = run_checks(frame, declared_expectations(spec, row_bounds=False), spec.name)
    return _failures(result, frame)


def _py(x: Any) -> Any:
    return x.item() if hasattr(x, "item") else x


def _failure(result: Any) -> dict[str, Any]:
    cfg, info, res = result.expectation_config, result.exception_info or {}, result.result or {}
    if "raised_exception" in info:
        error = info.get("exception_message") if info.get("raised_exception") else None
    else:  # a metric failed to compute, e.g. the column does not exist
        error = "; ".join(str(e.get("exception_message")) for e in info.values())
    kwargs = {k: _py(val) for k, val in cfg.kwargs.items() if k != "batch_id"}
    examples = (res.get("partial_unexpected_list") or [])[:_EXAMPLES]
    return {
        "expectation": cfg.type,
        "column": kwargs.get("column"),
        "unexpected_count": res.get("unexpected_count"),
        "unexpected_percent": _clean(res.get("unexpected_percent")),
        "examples": [_clean(_py(e)) for e in examples],
        "observed_value": _py(res.get("observed_value")),
        "kwargs": {k: val for k, val in kwargs.items() if k != "column"},
        "error": error,
    }


def _clean(x: Any) -> Any:
    return None if isinstance(x, float) and math.isnan(x) else x


def run_suite(df: pd.DataFrame, expectations: list[Any], name: str) -> Any:
    """Validate `df` in an ephemeral GX context (no files, no network, no progress bars)."""
    _quiet_gx()
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    _quiet_gx()  # the import resets one child logger to INFO
    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    batch_def = (
        ctx.data_sources.add_pandas("memory")
        .add_dataframe_asset(name)
        .add_batch_definition_whole_dataframe("whole")
    )
    from mlops_tasks.data.expectations import gx_object

    objects = [gx_object(e) for e in expectations]
    suite = gx.ExpectationSuite(name=f"{name}_suite", expectations=objects)
    batch = batch_def.get_batch(batch_parameters={"dataframe": df})
    return batch.validate(suite, result_format="SUMMARY")


def run_checks(df: pd.DataFrame, expectations: list[Any], name: str, detail: bool = False) -> Any:
    """`run_suite`'s result, evaluated by `expectations.check_suite` (vectorised, GX's semantics).

    GX itself validates only what the fast path does not reproduce and, when something failed
    (or `detail` is asked for), the failed (or all) expectations, so stored failures carry GX's
    own detail.
    """
    from mlops_tasks.data.expectations import check_suite

    return check_suite(df, expectations, lambda d, e: run_suite(d, e, name), detail)


def _failures(result: Any, df: pd.DataFrame) -> list[dict[str, Any]]:
    """Failed expectations, one line per missing column instead of one per expectation."""
    failures = sorted(
        (_failure(r) for r in result.results if not r.success),
        key=lambda f: (f["column"] or "", f["expectation"]),
    )
    missing = {f["column"] for f in failures if f["column"] and f["column"] not in df.columns}
    failures = [
        f
        for f in failures
        if f["column"] not in missing or f["expectation"] == "expect_column_to_exist"
    ]
    for f in failures:
        if f["column"] in missing:
            f["error"] = f"column {f['column']!r} is missing from the data"
    return failures


def _conflict_failure(conflict: dict[str, Any]) -> dict[str, Any]:
    return {
        "expectation": "batches_share_one_schema",
        "column": conflict["column"],
        "unexpected_count": None,
        "unexpected_percent": None,
        "examples": [],
        "observed_value": None,
        "kwargs": {},
        "error": conflict["message"],
    }


def _failure_line(f: dict[str, Any]) -> str:
    if f["expectation"] == "batches_share_one_schema":
        return f"  - batches disagree: {f['error']}"
    if f["expectation"] == "expect_column_values_to_be_in_type_list" and not f["error"]:
        f = {
            **f,
            "error": "expected a numeric type (int or float); list a column of codes under "
            "features.categorical",
        }
    return (
        f"  - {f['expectation']}"
        + (f" on column {f['column']!r}" if f["column"] else "")
        + (f": {f['unexpected_count']} unexpected" if f["unexpected_count"] else "")
        + (f", e.g. {f['examples'][:3]}" if f["examples"] else "")
        + (f" (observed {f['observed_value']})" if f["observed_value"] is not None else "")
        + (f" [{f['error']}]" if f["error"] else "")
    )


def validate(
    spec: ModelSpec,
    df: pd.DataFrame,
    run_id: str,
    store: ArtifactStore,
    reference: pd.DataFrame | None = None,
    name: str = "validation",
    dataset_hash: str | None = None,
    serving: bool = False,
    schema_conflicts: list[dict[str, Any]] | None = None,
    quarantined: list[str] | None = None,
    row_bounds: bool = True,
) -> ValidationResult:
    """Check a window: the declared contract blocks, what was learned from `reference` warns.

    Stores the evidence (JSON and HTML report); on a failure records a `validation_failed`
    audit event and raises DataValidationError. `schema_conflicts` (from `datasets.read_window`)
    become failures naming the odd batches, replacing the misleading per-value failures of a
    column whose batches disagree on its type. `quarantined` names the batches left out of the
    window by their contract check, for the report.
    """
    frame = contract_frame(spec, df)
    declared = run_checks(frame, declared_expectations(spec, serving, row_bounds), spec.name)
    relevant = [c for c in schema_conflicts or [] if c["column"] in spec.columns]
    conflicted = {c["column"] for c in relevant}
    failures = [f for f in _failures(declared, frame) if f["column"] not in conflicted]
    failures += [_conflict_failure(c) for c in relevant]
    for f in failures:
        if f["column"] == spec.target and f["expectation"].endswith("_to_be_in_set"):
            f["error"] = (
                "a classifier's labels are 0/1 unless the spec names the positive class: "
                f"target: {{column: {spec.target}, positive: <label>}}"
            )
    warnings: list[dict[str, Any]] = []
    if reference is not None and not serving:
        learned = learned_expectations(spec, reference)
        if learned:
            warnings = _failures(run_checks(frame, learned, spec.name), frame)
    stats = {k: _clean(_py(val)) for k, val in dict(declared.statistics).items()}
    summary = {
        "model": spec.name,
        "run_id": run_id,
        "dataset_hash": dataset_hash,
        "rows": len(df),
        "success": not failures,
        "statistics": stats,
        "failed": failures,
        "warnings": warnings,
        "quarantined": quarantined or [],
        "reference": "warnings learned from the production training snapshot"
        if reference is not None and not serving
        else "declared contract only",
    }
    uris = reports.store_report(store, spec.name, run_id, name, summary, _html(spec, summary))
    evaluated = stats.get("evaluated_expectations")
    if failures:
        message = (
            f"{spec.name}: data validation failed ({len(failures)} of {evaluated} "
            f"expectations)\nReport: {uris['html']}\n" + "\n".join(map(_failure_line, failures))
        )
        Registry(store).record_event(
            spec.name,
            "validation_failed",
            actor="contract",
            reason=message.splitlines()[0],
            details={
                "run_id": run_id,
                "report_uri": uris["html"],
                "dataset_hash": dataset_hash,
                "failed": failures[:10],
            },
        )
        raise DataValidationError(
            message, model=spec.name, failed=failures, report_uri=uris["html"]
        )
    for w in warnings:
        log.warning(
            "%s: %s (learned from production's data; not blocking)",
            spec.name,
            _failure_line(w).strip(),
        )
    log.info("%s: %d rows passed %s expectations", spec.name, len(df), evaluated)
    return ValidationResult(
        success=True,
        rows=len(df),
        statistics=stats,
        report_uri=uris["html"],
        warnings=len(warnings),
        quarantined=tuple(quarantined or ()),
    )


def _html(spec: ModelSpec, summary: dict[str, Any]) -> str:
    verdict = "PASSED" if summary["success"] else "FAILED"
    rows = [{**f, "examples": ", ".join(map(str, f["examples"]))} for f in summary["failed"]]
    warned = [{**f, "examples": ", ".join(map(str, f["examples"]))} for f in summary["warnings"]]
    held = [{"batch": b} for b in summary["quarantined"]]
    run = {
        "run": summary["run_id"],
        "rows": summary["rows"],
        "dataset": summary["dataset_hash"],
        "reference": summary["reference"],
    }
    columns = [
        "expectation",
        "column",
        "unexpected_count",
        "unexpected_percent",
        "examples",
        "observed_value",
        "error",
    ]
    return reports.page(
        f"{spec.name}: data validation {verdict}",
        [
            ("Run", reports.table([run])),
            ("Statistics", reports.table([summary["statistics"]])),
            ("Failed expectations (declared contract: these block)", reports.table(rows, columns)),
            (
                "Warnings (outside what production was trained on: drift evidence, not errors)",
                reports.table(warned, columns),
            ),
            ("Quarantined batches left out of this window", reports.table(held, ["batch"])),
        ],
    )
