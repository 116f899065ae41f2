"""Metrics, slices, champion vs challenger on one holdout, and the typed gate decision."""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from mlops_tasks import reports
from mlops_tasks.datasets import load_snapshot
from mlops_tasks.errors import GateFailed, MlopsError
from mlops_tasks.registry import Registry
from mlops_tasks.specs import METRICS, ModelSpec
from mlops_tasks.storage import ArtifactStore, open_store
from mlops_tasks.training import predict_scores, prepare_features, split

log = logging.getLogger(__name__)


def compute_metrics(
    task: str, y_true: np.ndarray, pred: np.ndarray, proba: np.ndarray | None
) -> dict[str, float]:
    """Classification: ROC AUC, PR AUC, F1, log loss, accuracy. Regression: RMSE, MAE, R²."""
    from sklearn import metrics as m

    if task == "classification":
        y = np.asarray(y_true).astype(int)
        out = {"accuracy": m.accuracy_score(y, pred), "f1": m.f1_score(y, pred, zero_division=0)}
        if proba is not None and len(np.unique(y)) == 2:
            out["roc_auc"] = m.roc_auc_score(y, proba)
            out["pr_auc"] = m.average_precision_score(y, proba)
            out["log_loss"] = m.log_loss(y, np.clip(proba, 1e-7, 1 - 1e-7), labels=[0, 1])
        return {k: float(v) for k, v in out.items()}
    y_f = np.asarray(y_true, dtype=float)
    return {
        "rmse": float(math.sqrt(m.mean_squared_error(y_f, pred))),
        "mae": float(m.mean_absolute_error(y_f, pred)),
        "r2": float(m.r2_score(y_f, pred)),
    }


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
        return {"passed": self.passed, "checks": [asdict(c) for c in self.checks],
                "compared_to": self.compared_to, "note": self.note}  # fmt: skip


def _bound_check(metric: str, value: float | None, bound: float, is_min: bool) -> Check:
    if value is None or math.isnan(value):
        return Check("absolute", metric, value, bound, False, f"{metric} could not be computed")
    ok = value >= bound if is_min else value <= bound
    op = (">=" if ok else "<") if is_min else ("<=" if ok else ">")
    kind = "minimum" if is_min else "maximum"
    return Check("absolute", metric, value, bound, ok,
                 f"{metric} {value:.4f} {op} {bound} ({kind})")  # fmt: skip


def decide(
    spec: ModelSpec,
    candidate: dict[str, float],
    production: dict[str, float] | None,
    production_version: int | None,
    slices: dict[str, dict[str, dict[str, Any]]],
    skip_champion: bool = False,
) -> GateDecision:
    """The gate: absolute thresholds, maximum drop against production, minimum slice metric."""
    ev = spec.evaluation
    primary = ev.primary_metric
    checks = [_bound_check(k, candidate.get(k), v, True) for k, v in ev.min.items()]
    checks += [_bound_check(k, candidate.get(k), v, False) for k, v in ev.max.items()]
    if production is None:
        note = "first model: judged on absolute thresholds only (no production version yet)"
    elif skip_champion:
        note = f"champion comparison against v{production_version} skipped (force_deploy)"
    else:
        note = f"compared with production v{production_version} on the same holdout"
        cand, prod = candidate.get(primary), production.get(primary)
        if cand is None or prod is None:
            checks.append(Check("champion", primary, cand, prod, False,
                                f"{primary} missing for candidate or production"))  # fmt: skip
        else:
            higher = METRICS[spec.task][primary]
            drop = (prod - cand) if higher else (cand - prod)
            ok = drop <= ev.max_drop
            checks.append(Check("champion", primary, cand, prod, ok,
                                f"{primary} {cand:.4f} vs production {prod:.4f}: drop {drop:+.4f} "
                                f"(allowed {ev.max_drop})"))  # fmt: skip
    if ev.min_slice_metric is not None:
        higher = METRICS[spec.task][primary]
        for col, groups in slices.items():
            for value, res in groups.items():
                v = res.get(primary)
                if res["rows"] < ev.min_slice_rows or v is None:
                    continue
                ok = v >= ev.min_slice_metric if higher else v <= ev.min_slice_metric
                checks.append(
                    Check(
                        "slice",
                        primary,
                        v,
                        ev.min_slice_metric,
                        ok,
                        f"{col}={value}: {primary} {v:.4f} on {res['rows']} rows",
                    )
                )
    return GateDecision(all(c.passed for c in checks), checks, production_version, note)


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
                res.update(
                    compute_metrics(
                        spec.task, y[mask], pred[mask], proba[mask] if proba is not None else None
                    )
                )
            groups[value] = res
        out[col] = groups
    return out


def evaluate_candidate(
    spec: ModelSpec,
    version: int,
    run_id: str,
    force_deploy: bool = False,
    store: ArtifactStore | None = None,
) -> dict[str, Any]:
    """Score the candidate and the production model on the candidate's holdout; decide.

    Stores the decision in the version's metadata and a model-card report; never raises on a
    failed gate (the `gate` step does, after the evidence is stored).
    """
    st = store or open_store()
    reg = Registry(st)
    meta = reg.get_version(spec.name, version)
    df = load_snapshot(meta["dataset"]["train"], st)
    _, holdout, _ = split(spec, df)
    x = prepare_features(spec, holdout)
    y = holdout[spec.target].to_numpy()
    pred, proba = predict_scores(spec, reg.load(spec.name, version), x)
    cand = compute_metrics(spec.task, y, pred, proba)
    slices = slice_metrics(spec, holdout, pred, proba)

    prod_version = reg.alias(spec.name)
    prod_metrics = None
    if prod_version is not None and prod_version != version:
        try:
            p_pred, p_proba = predict_scores(spec, reg.load(spec.name, prod_version), x)
            prod_metrics = compute_metrics(spec.task, y, p_pred, p_proba)
        except (MlopsError, ValueError, KeyError) as err:
            # A champion that cannot score today's holdout cannot defend its title.
            log.warning("production v%s cannot score the holdout: %s", prod_version, err)
            prod_metrics = {spec.evaluation.primary_metric: float("nan")}
    decision = decide(spec, cand, prod_metrics, prod_version, slices, skip_champion=force_deploy)
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
    uris = reports.store_report(st, spec.name, run_id, f"evaluation-v{version}", result,
                                _model_card(spec, meta, result))  # fmt: skip
    result["report_uri"] = uris["html"]
    reg.record_evaluation(spec.name, version, result)
    return {
        "model": spec.name,
        "version": version,
        "passed": decision.passed,
        "failed": [c.detail for c in decision.failed],
        "metrics": cand,
        "production_version": prod_version,
        "report_uri": uris["html"],
    }


def enforce_gate(spec: ModelSpec, evaluation: dict[str, Any],
                 store: ArtifactStore | None = None) -> dict[str, Any]:  # fmt: skip
    """Reject the candidate and raise GateFailed when its evaluation did not pass."""
    if evaluation["passed"]:
        return {"model": spec.name, "version": evaluation["version"], "passed": True}
    reasons = "; ".join(evaluation["failed"])
    Registry(store or open_store()).reject(spec.name, evaluation["version"],
                                           reason=f"gate failed: {reasons}")  # fmt: skip
    raise GateFailed(
        f"{spec.name} v{evaluation['version']} failed its gate: {reasons}. "
        f"Report: {evaluation['report_uri']}",
        model=spec.name, version=evaluation["version"], failed=evaluation["failed"],
        report_uri=evaluation["report_uri"],
    )  # fmt: skip


def _model_card(spec: ModelSpec, meta: dict[str, Any], result: dict[str, Any]) -> str:
    decision = result["decision"]
    metric_rows = [
        {"metric": k, "candidate": v,
         "production": (result["production_metrics"] or {}).get(k)}
        for k, v in result["metrics"].items()
    ]  # fmt: skip
    slice_rows = [
        {"column": col, "value": val, **res}
        for col, groups in result["slices"].items() for val, res in groups.items()
    ]  # fmt: skip
    ds = meta["dataset"]
    verdict = "PASSED" if decision["passed"] else "FAILED"
    return reports.page(
        f"{spec.name} v{meta['version']}: gate {verdict}",
        [
            ("Model", reports.table([{
                "task": spec.task, "estimator": meta["estimator"], "params": meta["params"],
                "seed": meta["seed"], "trigger": meta.get("triggered_by"),
                "run": result["run_id"]}])),
            ("Data", reports.table([{
                "snapshot": ds["train"], "rows": ds["rows"], "train rows": ds["train_rows"],
                "holdout rows": ds["holdout_rows"], "split": ds["split"]}])),
            ("Decision", f"<p class='{'pass' if decision['passed'] else 'fail'}'>{verdict}</p>"
             f"<p>{reports.esc(decision['note'])}</p>"
             + reports.table(decision["checks"],
                             ["name", "metric", "value", "threshold", "passed", "detail"])),
            ("Metrics on the holdout", reports.table(metric_rows)),
            ("Slices", reports.table(slice_rows)),
            ("Description", f"<p>{reports.esc(spec.description)}</p>"),
        ],
    )  # fmt: skip
