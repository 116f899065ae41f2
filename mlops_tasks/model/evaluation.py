"""Champion vs challenger on one holdout, slices, and the typed gate decision.

The candidate's holdout predictions were stored by training; evaluation reads them back and
scores only the production model on the same rows. The candidate itself is loaded once, for
its permutation importance, which is computed here once and stored with the version's
evaluation, so the model card (and anyone after it) explains the model without refitting.
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
from mlops_tasks.data.datasets import load_snapshot
from mlops_tasks.errors import GateFailed, MlopsError
from mlops_tasks.model import artifacts
from mlops_tasks.model.modelling import (
    CLASS_PROBABILITY,
    compute_metrics,
    confusion,
    describe_change,
    higher_is_better,
    metric_drop,
    per_class_metrics,
    predict_scores,
    prepare_features,
    split,
)
from mlops_tasks.records import Evaluation, ModelVersion
from mlops_tasks.registry import Registry
from mlops_tasks.specs import ModelSpec
from mlops_tasks.storage import ArtifactStore

log = logging.getLogger(__name__)

#: Bounds of the permutation importance: holdout rows scored and shuffles per feature. With the
#: demo model's 25 features that is 75 predictions of 1,000 rows, about 1.5 s on one thread
#: (the trees' per-call cost dominates, so fewer rows would save little).
IMPORTANCE_ROWS = 1_000
IMPORTANCE_REPEATS = 3
#: Versions the model card's metric history reaches back (each is a few store reads).
HISTORY_VERSIONS = 20


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
    per_class: dict[str, dict[str, Any]] | None = None,
) -> GateDecision:
    """The gate: absolute thresholds, maximum drop against production, minimum slice metric,
    and for a multiclass model, the floor of every class (`min_per_class`)."""
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
    checks += _class_checks(spec, per_class or {})
    return GateDecision(all(c.passed for c in checks), checks, production_version, note)


def _class_checks(spec: ModelSpec, per_class: dict[str, dict[str, Any]]) -> list[Check]:
    """`evaluation.min_per_class`: every class with `min_slice_rows` holdout rows or more."""
    checks = []
    for label, scores in per_class.items():
        if scores["support"] < spec.evaluation.min_slice_rows:
            continue
        for metric, bound in spec.evaluation.min_per_class.items():
            v = float(scores[metric])
            detail = f"class {label}: {metric} {v:.4f} on {scores['support']} rows (min {bound:g})"
            checks.append(Check("class", metric, v, bound, v >= bound, detail))
    return checks


def _champion_check(
    spec: ModelSpec, candidate: dict[str, float | None], production: dict[str, float | None]
) -> Check:
    primary, allowed = spec.evaluation.primary_metric, spec.evaluation.max_drop
    cand, prod = candidate.get(primary), production.get(primary)
    if cand is None or prod is None:
        detail = f"{primary} missing for candidate or production"
        return Check("champion", primary, cand, prod, False, detail)
    drop = metric_drop(spec.task, primary, prod, cand)
    detail = (
        f"{primary} {cand:.4f} vs production {prod:.4f}: "
        f"{describe_change(spec.task, primary, prod, cand)} "
        f"(at most {allowed} worse allowed)"
    )
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


def slice_gaps(
    spec: ModelSpec, slices: dict[str, dict[str, dict[str, Any]]]
) -> list[dict[str, Any]]:
    """Per slice column, its best and worst group on the primary metric and the gap between
    them, widest first: who the model serves worse. Groups smaller than `min_slice_rows` are
    left out, as the gate leaves them out (their metric is mostly noise)."""
    primary = spec.evaluation.primary_metric
    higher = higher_is_better(spec.task, primary)
    out = []
    for col, groups in slices.items():
        scored = [
            (value, res)
            for value, res in groups.items()
            if res.get(primary) is not None and res["rows"] >= spec.evaluation.min_slice_rows
        ]
        if len(scored) < 2:
            continue
        ranked = sorted(scored, key=lambda g: float(g[1][primary]), reverse=higher)
        (best_value, best), (worst_value, worst) = ranked[0], ranked[-1]
        out.append(
            {
                "column": col,
                "metric": primary,
                "gap": abs(float(best[primary]) - float(worst[primary])),
                "best": {"value": best_value, "metric": best[primary], "rows": best["rows"]},
                "worst": {"value": worst_value, "metric": worst[primary], "rows": worst["rows"]},
            }
        )
    return sorted(out, key=lambda g: -float(g["gap"]))


def permutation_importance(
    spec: ModelSpec, model: Any, holdout: Any, seed: int, threshold: float | None = None
) -> dict[str, Any]:
    """How much the primary metric worsens when one feature's values are shuffled on the
    holdout (positive: the model relies on it), in the metric's own units.

    Bounded (`IMPORTANCE_ROWS`, `IMPORTANCE_REPEATS`), seeded with the version's seed and run on
    one thread, so a retried evaluation stores the same numbers.
    """
    from sklearn.inspection import permutation_importance as shuffled_scores

    primary = spec.evaluation.primary_metric
    sign = 1.0 if higher_is_better(spec.task, primary) else -1.0
    rows = (
        holdout.sample(IMPORTANCE_ROWS, random_state=seed)
        if len(holdout) > IMPORTANCE_ROWS
        else holdout
    )
    x, y = prepare_features(spec, rows), rows[spec.target].to_numpy()

    def score(estimator: Any, x_: Any, y_: np.ndarray) -> float:
        pred, proba = predict_scores(spec, estimator, x_, threshold)
        value = compute_metrics(spec.task, y_, pred, proba, spec).get(primary)
        return math.nan if value is None else sign * value

    with artifacts.single_thread():
        found = shuffled_scores(
            model, x, y, scoring=score, n_repeats=IMPORTANCE_REPEATS, random_state=seed
        )
    features: list[dict[str, Any]] = [
        {
            "feature": col,
            "mean": _finite(found.importances_mean[i]),
            "std": _finite(found.importances_std[i]),
        }
        for i, col in enumerate(x.columns)
    ]
    features.sort(key=lambda f: -math.inf if f["mean"] is None else -f["mean"])
    return {
        "metric": primary,
        "rows": len(rows),
        "repeats": IMPORTANCE_REPEATS,
        "seed": seed,
        "features": features,
    }


def _finite(value: Any) -> float | None:
    out = float(value)
    return out if math.isfinite(out) else None


def metric_history(
    spec: ModelSpec, registry: Registry, version: int, current: dict[str, float | None]
) -> list[dict[str, Any]]:
    """The primary metric of the versions before this one (the last `HISTORY_VERSIONS`), each
    as its own evaluation measured it (else training), with its status, then this candidate."""
    primary = spec.evaluation.primary_metric
    alias = registry.production_alias(spec.name)
    earlier = [n for n in registry.version_numbers(spec.name) if n < version]
    out: list[dict[str, Any]] = []
    for n in earlier[-(HISTORY_VERSIONS - 1) :]:
        try:
            v = registry.get_version(spec.name, n, alias)
        except MlopsError as err:  # a damaged old version must not block this evaluation
            log.warning("metric history: %s v%d unreadable: %s", spec.name, n, err)
            out.append({"version": n, "value": None, "status": "unreadable"})
            continue
        metrics = (v.evaluation or {}).get("metrics") or v.metrics
        out.append({"version": n, "value": metrics.get(primary), "status": v.status})
    out.append({"version": version, "value": current.get(primary), "status": "this candidate"})
    return out


def _stored_scores(registry: Registry, model: str, version: int) -> tuple[np.ndarray, Any]:
    import pandas as pd

    data = registry.read_file(model, version, "holdout.parquet")
    frame = pd.read_parquet(io.BytesIO(data))
    per_class = [c for c in frame.columns if c.startswith(CLASS_PROBABILITY)]
    if per_class:  # multiclass: a frame with a column per class, as `predict_scores` gives
        proba: Any = frame[per_class].rename(columns=lambda c: c[len(CLASS_PROBABILITY) :])
    else:
        proba = frame["probability"].to_numpy() if "probability" in frame else None
    return frame["prediction"].to_numpy(), proba


def _champion_metrics(
    spec: ModelSpec, registry: Registry, version: int, x: Any, y: np.ndarray
) -> dict[str, float | None]:
    try:
        champion, cut = registry.load_scorer(spec.name, version)
        p_pred, p_proba = predict_scores(spec, champion, x, cut)
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
    alias = registry.production_alias(spec.name)
    meta = registry.get_version(spec.name, version, alias)
    _, holdout, _ = split(spec, load_snapshot(meta.dataset.train, store))
    y = holdout[spec.target].to_numpy()
    pred, proba = _stored_scores(registry, spec.name, version)
    cand = compute_metrics(spec.task, y, pred, proba, spec)
    slices = slice_metrics(spec, holdout, pred, proba)
    prod_version = alias.version if alias else None
    prod_metrics = None
    if prod_version is not None and prod_version != version:
        prod_metrics = _champion_metrics(
            spec, registry, prod_version, prepare_features(spec, holdout), y
        )
    per_class, matrix = None, None
    if spec.task == "multiclass" and proba is not None:
        classes = [str(c) for c in proba.columns]
        per_class = per_class_metrics(y, pred, classes)
        matrix = {"classes": classes, "counts": confusion(y, pred, classes)}
    decision = judge(
        spec,
        cand,
        prod_metrics,
        prod_version,
        slices,
        skip_champion=force_deploy,
        per_class=per_class,
    )
    importance = permutation_importance(
        spec,
        registry.load(spec.name, version, meta),
        holdout,
        meta.seed,
        meta.threshold.value if meta.threshold else None,
    )
    result = {
        "model": spec.name,
        "version": version,
        "run_id": run_id,
        "holdout_rows": len(holdout),
        "metrics": cand,
        "production_version": prod_version,
        "production_metrics": prod_metrics,
        "slices": slices,
        "slice_gaps": slice_gaps(spec, slices),
        "importance": importance,
        "per_class": per_class,
        "confusion": matrix,
        "force_deploy": force_deploy,
        "decision": decision.to_dict(),
    }
    history = metric_history(spec, registry, version, cand)
    card = _model_card(spec, meta, result, history)
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


#: How each version's status is coloured in the metric history.
_STATUS_TONES = {"production": "pass", "rejected": "fail", "this candidate": None}


def _model_card(
    spec: ModelSpec, meta: ModelVersion, result: dict[str, Any], history: list[dict[str, Any]]
) -> str:
    decision = result["decision"]
    prod = result["production_metrics"] or {}
    primary = spec.evaluation.primary_metric
    metric_rows = [
        {"metric": k, "candidate": v, "production": prod.get(k)}
        for k, v in result["metrics"].items()
    ]
    slice_rows = [
        {"column": col, "value": val, **res}
        for col, groups in result["slices"].items()
        for val, res in groups.items()
    ]
    verdict = "PASSED" if decision["passed"] else "FAILED"
    verdict_html = (
        f"<p class='{'pass' if decision['passed'] else 'fail'}'>{verdict}</p>"
        f"<p>{reports.esc(decision['note'])}</p>"
    )
    checks = reports.table(
        decision["checks"], ["name", "metric", "value", "threshold", "passed", "detail"]
    )
    history_chart = reports.line_chart(
        f"{primary} across versions",
        [
            (f"v{h['version']}", h["value"], _STATUS_TONES.get(h["status"], "neutral"))
            for h in history
        ],
    )
    return reports.page(
        f"{spec.name} v{meta.version}: gate {verdict}",
        [
            ("Decision", verdict_html + _gap_callout(spec, result["slice_gaps"]) + checks),
            (f"Who is served worse: {primary} per slice", _slice_charts(spec, result)),
            *_class_sections(result),
            ("What drives predictions", _importance_chart(result["importance"])),
            (
                "Metrics on the holdout",
                reports.table(metric_rows)
                + f"<h3>{reports.esc(primary)} across versions</h3>"
                + "<p class='note'>Each version on its own holdout; green: production, red: "
                "rejected, grey: archived or candidate, blue: this candidate.</p>" + history_chart,
            ),
            *_search_section(meta),
            ("Trigger and lineage", _lineage(spec, meta, result["run_id"])),
            ("Slices", reports.table(slice_rows)),
            ("Description", f"<p>{reports.esc(spec.description)}</p>"),
        ],
    )


def _value(value: Any) -> str:
    """A param's value in a trial table: numbers to four significant digits."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return "null" if value is None else str(value)


def _search_section(meta: ModelVersion) -> list[tuple[str, str]]:
    """The hyperparameter search that chose the version's params: every trial, best first,
    the winner marked."""
    found = meta.search
    if found is None:
        return []
    esc = reports.esc
    names = sorted({name for t in found.trials for name in t.params})
    candidates = len({t.candidate for t in found.trials})
    direction = "higher" if found.higher_is_better else "lower"
    how = (
        f"successive halving (each round keeps the best 1/{found.factor} on {found.factor} "
        "times the rows)"
        if found.method == "halving"
        else "random search"
    )
    folds = "; ".join(
        f"fold {i}: fits on {f.fit_rows} rows, scores {f.validation_rows}"
        + (f" ({f.validation_from} to {f.validation_to})" if f.validation_from else "")
        for i, f in enumerate(found.folds, start=1)
    )
    note = (
        f"<p class='note'>{esc(how)} of {candidates} candidates ({len(found.trials)} trials) by "
        f"{esc(found.metric)} ({direction} is better), the mean over {len(found.folds)} "
        f"{esc(found.cv)} folds of the training rows only (never the holdout): {esc(folds)}. "
        "The winner was refitted on all the training rows.</p>"
    )
    halving = found.method == "halving"
    head = ["rank", "candidate", *(["round"] if halving else []), *names]
    head += ["rows per fold", "fold scores", found.metric, "error"]
    rows = []
    for rank, i in enumerate(found.ranked(), start=1):
        t = found.trials[i]
        winner = i == found.best
        cells = [
            f"{rank} (winner)" if winner else str(rank),
            str(t.candidate + 1),
            *([str(t.round + 1)] if halving else []),
            *(_value(t.params.get(n)) if n in t.params else "" for n in names),
            " / ".join(str(r) for r in t.fold_rows),
            " / ".join("" if v is None else f"{v:.4f}" for v in t.fold_scores),
            "" if t.mean is None else f"{t.mean:.4f}",
            t.error or "",
        ]
        tone = " class='pass'" if winner else " class='fail'" if t.error else ""
        rows.append(f"<tr{tone}>" + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>")
    table = (
        "<table><tr>"
        + "".join(f"<th>{esc(h)}</th>" for h in head)
        + "</tr>"
        + "".join(rows)
        + "</table>"
    )
    return [("Hyperparameter search", note + table)]


def _class_sections(result: dict[str, Any]) -> list[tuple[str, str]]:
    """A multiclass model's confusion matrix and per-class scores on the holdout."""
    per_class, matrix = result.get("per_class"), result.get("confusion")
    if not per_class or not matrix:
        return []
    esc = reports.esc
    classes, counts = matrix["classes"], matrix["counts"]
    head = "".join(f"<th>{esc(c)}</th>" for c in classes)
    rows = "".join(
        f"<tr><th>{esc(c)}</th>"
        + "".join(
            f"<td class='{'pass' if i == j else ''}'>{n}</td>" for j, n in enumerate(counts[i])
        )
        + "</tr>"
        for i, c in enumerate(classes)
    )
    table = (
        "<p class='note'>Rows: the true class; columns: the predicted class (holdout rows).</p>"
        f"<table><tr><th>true \\ predicted</th>{head}</tr>{rows}</table>"
    )
    charts = "".join(
        f"<h3>{esc(metric)} per class</h3>"
        + reports.bar_chart(
            f"{metric} per class",
            [(str(c), float(per_class[c][metric]), None) for c in classes],
        )
        for metric in ("recall", "precision", "f1")
    )
    scores = reports.table([{"class": c, **per_class[c]} for c in classes])
    return [("Confusion matrix", table), ("Per class", charts + scores)]


def _slice_fails(spec: ModelSpec, value: float | None) -> bool:
    bound = spec.evaluation.min_slice_metric
    if bound is None or value is None:
        return False
    higher = higher_is_better(spec.task, spec.evaluation.primary_metric)
    return value < bound if higher else value > bound


def _gap_callout(spec: ModelSpec, gaps: list[dict[str, Any]]) -> str:
    """The widest best-to-worst slice gap, where a reviewer reads the verdict."""
    if not gaps:
        return (
            "<p class='note'>No slice gap: no slice column has two groups of at least "
            f"{spec.evaluation.min_slice_rows} rows.</p>"
        )
    g = gaps[0]
    worst, best = g["worst"], g["best"]
    col, metric = reports.esc(g["column"]), reports.esc(g["metric"])
    cls = "callout fail" if _slice_fails(spec, worst["metric"]) else "callout"
    return (
        f"<div class='{cls}'><strong>Slice gap {reports.esc(g['gap'])} {metric}</strong>: "
        f"served worst <strong>{col} = {reports.esc(worst['value'])}</strong> "
        f"({metric} {reports.esc(worst['metric'])} on {worst['rows']} rows), best "
        f"{col} = {reports.esc(best['value'])} ({reports.esc(best['metric'])} on "
        f"{best['rows']} rows).</div>"
    )


def _slice_charts(spec: ModelSpec, result: dict[str, Any]) -> str:
    primary = spec.evaluation.primary_metric
    gaps = {g["column"]: g for g in result["slice_gaps"]}
    out = (
        f"<p class='note'>{reports.esc(primary)} per group; red: below the gate's slice bound, "
        f"grey: fewer than {spec.evaluation.min_slice_rows} rows (not judged).</p>"
    )
    for col, groups in result["slices"].items():
        shown = sorted(groups.items(), key=lambda g: -int(g[1]["rows"]))[:30]
        bars = []
        for value, res in shown:
            small = res["rows"] < spec.evaluation.min_slice_rows
            tone = "neutral" if small else "fail" if _slice_fails(spec, res.get(primary)) else None
            bars.append((f"{value} ({res['rows']} rows)", res.get(primary), tone))
        gap = gaps.get(col)
        gap_text = f": gap {reports.esc(gap['gap'])}" if gap else ""
        more = f" (the 30 largest of {len(groups)} groups)" if len(groups) > 30 else ""
        out += f"<h3>{reports.esc(col)}{gap_text}{reports.esc(more)}</h3>" + reports.bar_chart(
            f"{primary} per {col}", bars
        )
    return out


def _importance_chart(importance: dict[str, Any]) -> str:
    features = importance["features"][:20]
    note = (
        f"<p class='note'>Drop in {reports.esc(importance['metric'])} when one feature is "
        f"shuffled on {importance['rows']} holdout rows ({importance['repeats']} shuffles, "
        f"seed {importance['seed']}); near zero or below: the model does not rely on it. "
        f"The {len(features)} largest of {len(importance['features'])} features.</p>"
    )
    bars = [(f["feature"], f["mean"], None) for f in features]
    return note + reports.bar_chart(f"permutation importance ({importance['metric']})", bars)


def _estimator(meta: ModelVersion) -> str:
    """The estimator's name; a custom one's class."""
    return f"custom {meta.custom.class_path}" if meta.custom else meta.estimator


def _class_weights(weights: str | dict[str, float] | None) -> str:
    if weights is None:
        return "none (every row weighs 1)"
    if isinstance(weights, str):
        return f"{weights} (inverse to each class's share of the training rows)"
    return ", ".join(f"{label}: {w:g}" for label, w in weights.items())


def _threshold(meta: ModelVersion) -> str:
    t = meta.threshold
    if t is None:
        return "none: the most probable class (0.5)"
    scores = ", ".join(
        f"{name} {value:.3f}"
        for name, value in (("precision", t.precision), ("recall", t.recall), ("F1", t.f1))
        if value is not None
    )
    where = f" on {t.validation_rows} validation rows ({scores})" if t.validation_rows else ""
    return f"{t.value:.4g}: {t.rule}{where}; positive when the probability is at least this"


def _left_out(ds: Any) -> str:
    if not (ds.out_of_scope or ds.unlabelled):
        return "none"
    return f"{ds.out_of_scope} out of data.scope, {ds.unlabelled} without a label"


def _lineage(spec: ModelSpec, meta: ModelVersion, run_id: str) -> str:
    ds = meta.dataset
    esc = reports.esc
    batches = ", ".join(f"<code>{esc(b[:12])}</code>" for b in ds.batches[:10])
    if len(ds.batches) > 10:
        batches += f" and {len(ds.batches) - 10} more"
    code = ", ".join(f"{esc(k)} {esc(v or 'unknown')}" for k, v in meta.code_version.items())
    params = ", ".join(f"{esc(k)}={esc(str(v))}" for k, v in meta.params.items())
    features = "; ".join(f"{esc(kind)}: {esc(cols)}" for kind, cols in meta.features.items())
    brought = meta.external
    elsewhere = (
        [
            (
                "trained",
                f"elsewhere: brought by {esc(brought.brought_by)} as <code>{esc(brought.file)}"
                f"</code> (sha256 <code>{esc(brought.sha256)}</code>); scored on this snapshot's "
                "holdout, not fitted on its training rows",
            )
        ]
        if brought
        else []
    )
    return reports.fields(
        [
            ("trigger", reports.trigger_html(meta.triggered_by)),
            *elsewhere,
            ("run", f"<code>{esc(meta.run_id or run_id)}</code>"),
            ("created", f"{esc(meta.created_at)} by {esc(meta.created_by)}"),
            (
                "dataset snapshot",
                f"<code>{esc(ds.train)}</code>: {ds.rows} rows, {ds.train_rows} for training, "
                f"{ds.holdout_rows} held out ({esc(ds.split)} split, "
                f"{ds.holdout_fraction:.0%})",
            ),
            ("batches", f"{len(ds.batches)}: {batches}" if ds.batches else "not recorded"),
            ("rows left out", esc(_left_out(ds))),
            ("labelled traffic", f"<code>{esc(ds.traffic)}</code>" if ds.traffic else "none"),
            ("spec hash", f"<code>{esc(meta.spec_hash)}</code>"),
            ("code", code or "not recorded"),
            (
                "estimator",
                f"{esc(_estimator(meta))} ({params or 'defaults'}), seed {meta.seed}"
                + (
                    f"; searched: {esc(sorted(meta.search.best_params))}"
                    if meta.search is not None
                    else ""
                ),
            ),
            *(
                [("trusted types", ", ".join(f"<code>{esc(t)}</code>" for t in meta.custom.types))]
                if meta.custom
                else []
            ),
            ("class weights", esc(_class_weights(meta.class_weight))),
            ("decision threshold", esc(_threshold(meta))),
            ("features", features),
            ("target", f"{esc(meta.target)} (primary metric {esc(meta.primary_metric)})"),
        ]
    )
