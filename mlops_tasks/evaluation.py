"""Champion vs challenger on one holdout, slices, and the typed gate decision.

The candidate's holdout predictions were stored by training; evaluation reads them back and
scores only the production model on the same rows, so no model is loaded twice.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from mlops_tasks import reports
from mlops_tasks.datasets import load_snapshot
from mlops_tasks.errors import GateFailed, MlopsError
from mlops_tasks.modelling import (
    compute_metrics,
    higher_is_better,
    metric_drop,
    predict_scores,
    prepare_features,
    split,
)
from mlops_tasks.records import Evaluation, ModelVersion
from mlops_tasks.registry import Registry
from mlops_tasks.specs import ModelSpec
from mlops_tasks.storage import ArtifactStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Check:
    """One gate criterion and its outcome."""

    name: str
    metric: str
    value: float | None
    threshold: float | None
    passed: bool
    detail: str


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    checks: list[Check]
    compared_to: int | None
    note: str

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "checks": [asdict(c) for c in self.checks],
            "compared_to": self.compared_to,
            "note": self.note,
        }


def _bound_check(metric: str, value: float | None, bound: float, is_min: bool) -> Check:
    if value is None or math.isnan(value):
        return Check("absolute", metric, value, bound, False, f"{metric} could not be computed")
    ok = value >= bound if is_min else value <= bound
    op = (">=" if ok else "<") if is_min else ("<=" if ok else ">")
    kind = "minimum" if is_min else "maximum"
    return Check(
        "absolute", metric, value, bound, ok, f"{metric} {value:.4f} {op} {bound} ({kind})"
    )


def judge(
    spec: ModelSpec,
    candidate: dict[str, float | None],
    production: dict[str, float | None] | None,
    production_version: int | None,
    slices: dict[str, dict[str, dict[str, Any]]],
    skip_champion: bool = False,
) -> GateDecision:
    """The gate: absolute thresholds, maximum drop against production, minimum slice metric."""
    ev = spec.evaluation
    checks = [_bound_check(k, candidate.get(k), v, True) for k, v in ev.min.items()]
    checks += [_bound_check(k, candidate.get(k), v, False) for k, v in ev.max.items()]
    if production is None:
        note = "first model: judged on absolute thresholds only (no production version yet)"
    elif skip_champion:
        note = f"champion comparison against v{production_version} skipped (force_deploy)"
    else:
        note = f"compared with production v{production_version} on the same holdout"
        checks.append(_champion_check(spec, candidate, production))
    if ev.min_slice_metric is not None:
        checks += _slice_checks(spec, slices, ev.min_slice_metric)
    return GateDecision(all(c.passed for c in checks), checks, production_version, note)


def _champion_check(
    spec: ModelSpec, candidate: dict[str, float | None], production: dict[str, float | None]
) -> Check:
    primary, allowed = spec.evaluation.primary_metric, spec.evaluation.max_drop
    cand, prod = candidate.get(primary), production.get(primary)
    if cand is None or prod is None:
        detail = f"{primary} missing for candidate or production"
        return Check("champion", primary, cand, prod, False, detail)
    drop = metric_drop(spec.task, primary, prod, cand)
    detail = f"{primary} {cand:.4f} vs production {prod:.4f}: drop {drop:+.4f} (allowed {allowed})"
    return Check("champion", primary, cand, prod, drop <= allowed, detail)


def _slice_checks(
    spec: ModelSpec, slices: dict[str, dict[str, dict[str, Any]]], bound: float
) -> list[Check]:
    primary = spec.evaluation.primary_metric
    higher = higher_is_better(spec.task, primary)
    checks = []
    for col, groups in slices.items():
        for value, res in groups.items():
            v = res.get(primary)
            if res["rows"] < spec.evaluation.min_slice_rows or v is None:
                continue
            ok = v >= bound if higher else v <= bound
            detail = f"{col}={value}: {primary} {v:.4f} on {res['rows']} rows"
            checks.append(Check("slice", primary, v, bound, ok, detail))
    return checks


def slice_metrics(
    spec: ModelSpec, holdout: Any, pred: np.ndarray, proba: np.ndarray | None
) -> dict[str, dict[str, dict[str, Any]]]:
    out: dict[str, dict[str, dict[str, Any]]] = {}
    y = holdout[spec.target].to_numpy()
    for col in spec.evaluation.slices:
        groups: dict[str, dict[str, Any]] = {}
        values = holdout[col].astype(str).to_numpy()
        for value in sorted(set(values)):
            mask = values == value
            res: dict[str, Any] = {"rows": int(mask.sum())}
            with contextlib.suppress(ValueError):  # e.g. a slice holding one class only
                p = proba[mask] if proba is not None else None
                res.update(compute_metrics(spec.task, y[mask], pred[mask], p, spec))
            groups[value] = res
        out[col] = groups
    return out


def _stored_scores(
    registry: Registry, model: str, version: int
) -> tuple[np.ndarray, np.ndarray | None]:
    import pandas as pd

    data = registry.read_file(model, version, "holdout.parquet")
    frame = pd.read_parquet(io.BytesIO(data))
    proba = frame["probability"].to_numpy() if "probability" in frame else None
    return frame["prediction"].to_numpy(), proba


def _champion_metrics(
    spec: ModelSpec, registry: Registry, version: int, x: Any, y: np.ndarray
) -> dict[str, float | None]:
    try:
        p_pred, p_proba = predict_scores(spec, registry.load(spec.name, version), x)
        return compute_metrics(spec.task, y, p_pred, p_proba, spec)
    except (MlopsError, ValueError, KeyError) as err:
        # A champion that cannot score today's holdout cannot defend its title.
        log.warning("production v%s cannot score the holdout: %s", version, err)
        return {spec.evaluation.primary_metric: None}


def evaluate_candidate(
    spec: ModelSpec,
    version: int,
    run_id: str,
    store: ArtifactStore,
    force_deploy: bool = False,
) -> Evaluation:
    """Score production on the candidate's holdout, compare with the candidate's stored
    scores, and decide.

    Stores the decision in the version's metadata and a model-card report; never raises on a
    failed gate (the `gate` step does, after the evidence is stored).
    """
    registry = Registry(store)
    doc = registry.alias_doc(spec.name)
    meta = registry.get_version(spec.name, version, doc or {})
    _, holdout, _ = split(spec, load_snapshot(meta.dataset.train, store))
    y = holdout[spec.target].to_numpy()
    pred, proba = _stored_scores(registry, spec.name, version)
    cand = compute_metrics(spec.task, y, pred, proba, spec)
    slices = slice_metrics(spec, holdout, pred, proba)
    prod_version = doc.get("version") if doc else None
    prod_metrics = None
    if prod_version is not None and prod_version != version:
        prod_metrics = _champion_metrics(
            spec, registry, prod_version, prepare_features(spec, holdout), y
        )
    decision = judge(spec, cand, prod_metrics, prod_version, slices, skip_champion=force_deploy)
    result = {
        "model": spec.name,
        "version": version,
        "run_id": run_id,
        "holdout_rows": len(holdout),
        "metrics": cand,
        "production_version": prod_version,
        "production_metrics": prod_metrics,
        "slices": slices,
        "force_deploy": force_deploy,
        "decision": decision.to_dict(),
    }
    card = _model_card(spec, meta, result)
    uris = reports.store_report(store, spec.name, run_id, f"evaluation-v{version}", result, card)
    result["report_uri"] = uris["html"]
    registry.record_evaluation(spec.name, version, result)
    return Evaluation(
        model=spec.name,
        version=version,
        passed=decision.passed,
        failed=tuple(c.detail for c in decision.failed),
        metrics=cand,
        production_version=prod_version,
        report_uri=uris["html"],
    )


def enforce_gate(
    spec: ModelSpec, evaluation: Evaluation, store: ArtifactStore, actor: str
) -> Evaluation:
    """Reject the candidate and raise GateFailed when its evaluation did not pass."""
    if evaluation.passed:
        return evaluation
    reasons = "; ".join(evaluation.failed)
    Registry(store).reject(
        spec.name, evaluation.version, reason=f"gate failed: {reasons}", actor=actor
    )
    raise GateFailed(
        f"{spec.name} v{evaluation.version} failed its gate: {reasons}. "
        f"Report: {evaluation.report_uri}",
        model=spec.name,
        version=evaluation.version,
        failed=list(evaluation.failed),
        report_uri=evaluation.report_uri,
    )


def _model_card(spec: ModelSpec, meta: ModelVersion, result: dict[str, Any]) -> str:
    decision = result["decision"]
    prod = result["production_metrics"] or {}
    metric_rows = [
        {"metric": k, "candidate": v, "production": prod.get(k)}
        for k, v in result["metrics"].items()
    ]
    slice_rows = [
        {"column": col, "value": val, **res}
        for col, groups in result["slices"].items()
        for val, res in groups.items()
    ]
    ds = meta.dataset
    trig = meta.triggered_by
    verdict = "PASSED" if decision["passed"] else "FAILED"
    model_row = {
        "task": spec.task,
        "estimator": meta.estimator,
        "params": meta.params,
        "seed": meta.seed,
        "trigger": f"{trig.kind} by {trig.actor}: {trig.reason}",
        "run": result["run_id"],
    }
    data_row = {
        "snapshot": ds.train,
        "rows": ds.rows,
        "train rows": ds.train_rows,
        "holdout rows": ds.holdout_rows,
        "split": ds.split,
    }
    verdict_html = (
        f"<p class='{'pass' if decision['passed'] else 'fail'}'>{verdict}</p>"
        f"<p>{reports.esc(decision['note'])}</p>"
    )
    checks = reports.table(
        decision["checks"], ["name", "metric", "value", "threshold", "passed", "detail"]
    )
    return reports.page(
        f"{spec.name} v{meta.version}: gate {verdict}",
        [
            ("Model", reports.table([model_row])),
            ("Data", reports.table([data_row])),
            ("Decision", verdict_html + checks),
            ("Metrics on the holdout", reports.table(metric_rows)),
            ("Slices", reports.table(slice_rows)),
            ("Description", f"<p>{reports.esc(spec.description)}</p>"),
        ],
    )
