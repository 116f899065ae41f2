"""Models trained elsewhere, brought to the registry (`mlops register MODEL --artifact FILE`).

A person who fitted a model outside the platform, on the data and features of a spec, brings
its skops file. It becomes a candidate version like any other: scored on the platform's own
holdout of the window a retrain at the same logical time would use, gated against production,
approved, deployed, verified, monitored and rolled back by the same steps. Only how it was fitted
differs, and the version says so (`VersionLineage.external`, trigger kind `external`), so
`reproduce` can say it has nothing to rebuild.

The file is refused, before anything is registered, unless:

* every node and type in it is one of the exact types of one estimator family's pipeline
  (`artifacts.check_artifact`, before any object is constructed), the family its final
  estimator belongs to, so `Registry.load` later checks it against that family's list;
* it is a fitted scikit-learn estimator or pipeline for the spec's task, fitted on a frame with
  exactly the spec's feature columns (the frame `modelling.prepare_features` gives);
* a classifier has `predict_proba` and two classes: 0/1, or the spec's positive class and one
  other; the labels of the data it is scored on are among them;
* it scores the holdout.

The artifact is stored byte for byte as brought, so the version's `model_sha256` is the file's.
"""

from __future__ import annotations

import logging
import math
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_tasks.data.datasets import snapshot_metadata
from mlops_tasks.errors import IncompatibleModel, UsageError
from mlops_tasks.model.artifacts import check_artifact, load_artifact
from mlops_tasks.model.modelling import (
    canonical_label,
    canonical_text,
    estimator_class,
    positive_label,
    split,
)
from mlops_tasks.model.training import (
    already_registered,
    register_fit,
    score_holdout,
    training_snapshot,
    version_lineage,
)
from mlops_tasks.records import ExternalArtifact, TrainedVersion, Trigger
from mlops_tasks.registry import Registry, sha256
from mlops_tasks.specs import ESTIMATORS, ModelSpec
from mlops_tasks.specs import family as task_family

if TYPE_CHECKING:
    import pandas as pd

    from mlops_tasks.storage import ArtifactStore

log = logging.getLogger(__name__)

#: Errors scikit-learn raises when a model cannot score a frame (wrong columns, dtypes, shapes).
_SCORING_ERRORS = (ValueError, TypeError, KeyError, IndexError, AttributeError)


def read_artifact(path: str) -> bytes:
    """The bytes of the file a person brought; UsageError naming it when it cannot be read."""
    try:
        return Path(path).read_bytes()
    except OSError as err:
        raise UsageError(f"--artifact {path}: cannot read it: {err.strerror or err}") from None


def check_external(spec: ModelSpec, data: bytes, what: str) -> tuple[Any, str]:
    """The model in skops bytes `data` and its estimator family, once it passed every check
    that needs no data (see the module's docstring); IntegrityError for an untrusted or
    unreadable archive, IncompatibleModel for a model that does not fit the spec."""
    model = load_artifact(data, what)  # refuses untrusted types before constructing anything
    if not callable(getattr(model, "predict", None)) or not hasattr(model, "get_params"):
        raise IncompatibleModel(
            f"{what}: holds a {type(model).__name__}, not a scikit-learn estimator or pipeline",
            model=spec.name,
        )
    _check_fitted(spec, model, what)
    family = _family(spec, model, what)
    check_artifact(data, what, family)  # the list `Registry.load` will check it against
    _check_columns(spec, model, what)
    if spec.task == "classification":  # a multiclass model's labels are whatever it learned
        _check_classes(spec, model, what)
    return model, family


def _check_fitted(spec: ModelSpec, model: Any, what: str) -> None:
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    try:
        check_is_fitted(model)
    except (NotFittedError, TypeError) as err:
        raise IncompatibleModel(f"{what}: not a fitted model ({err})", model=spec.name) from None


def final_estimator(model: Any) -> Any:
    """The estimator at the end of a pipeline (inside its calibration, for a calibrated one)."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.pipeline import Pipeline

    final = model.steps[-1][1] if isinstance(model, Pipeline) else model
    return final.estimator if isinstance(final, CalibratedClassifierCV) else final


def _family(spec: ModelSpec, model: Any, what: str) -> str:
    final = final_estimator(model)
    for family, info in ESTIMATORS.items():
        if task_family(spec.task) in info.tasks and estimator_class(family, spec.task) is type(
            final
        ):
            return family
    served = sorted(f for f, info in ESTIMATORS.items() if task_family(spec.task) in info.tasks)
    raise IncompatibleModel(
        f"{what}: its estimator is a {type(final).__module__}.{type(final).__name__}, not a "
        f"{spec.task} estimator the platform serves ({', '.join(served)})",
        model=spec.name,
        estimator=type(final).__name__,
    )


def _check_columns(spec: ModelSpec, model: Any, what: str) -> None:
    expected = spec.features.all
    names = getattr(model, "feature_names_in_", None)
    if names is None:
        raise IncompatibleModel(
            f"{what}: fitted without column names; fit it on a DataFrame with the spec's "
            f"feature columns {expected}",
            model=spec.name,
            columns=expected,
        )
    names = [str(n) for n in names]
    extra = [c for c in names if c not in expected]
    unused = [c for c in expected if c not in names]
    if extra or unused:
        problems = [f"not features of the spec: {extra}"] if extra else []
        problems += [f"spec features it does not take: {unused}"] if unused else []
        raise IncompatibleModel(
            f"{what}: fitted on columns {names}, not the spec's features {expected} "
            f"({'; '.join(problems)})",
            model=spec.name,
            columns=extra + unused,
        )


def _classes(model: Any) -> list[Any]:
    return [canonical_label(c) for c in getattr(model, "classes_", [])]


def _check_classes(spec: ModelSpec, model: Any, what: str) -> None:
    if not hasattr(model, "predict_proba"):
        raise IncompatibleModel(
            f"{what}: has no predict_proba; the gate and the service score a classifier's "
            "probability of the positive class",
            model=spec.name,
        )
    classes = _classes(model)
    positive = canonical_label(positive_label(spec))
    wanted = "0 and 1" if spec.positive_class is None else f"{positive!r} and one other"
    if (
        len(classes) != 2
        or positive not in classes
        or (spec.positive_class is None and set(classes) != {"0", "1"})
    ):
        raise IncompatibleModel(
            f"{what}: its classes are {classes}; the spec's target {spec.target!r} has two "
            f"labels, {wanted}",
            model=spec.name,
            classes=classes,
        )


def _check_labels(spec: ModelSpec, model: Any, df: pd.DataFrame, what: str) -> None:
    labels = sorted({str(v) for v in canonical_text(df[spec.target]).dropna()})
    unknown = [v for v in labels if v not in _classes(model)]
    if unknown:
        raise IncompatibleModel(
            f"{what}: the data's labels {labels} of {spec.target!r} include {unknown}, which "
            f"are not among the model's classes {_classes(model)}",
            model=spec.name,
            classes=_classes(model),
        )


def _params(model: Any) -> dict[str, Any]:
    """The final estimator's plain parameters (numbers, text, flags), for its lineage."""
    params = final_estimator(model).get_params(deep=False)
    return {
        k: v
        for k, v in sorted(params.items())
        if v is None
        or isinstance(v, str | bool | int)
        or (isinstance(v, float) and math.isfinite(v))
    }


def register_external(
    spec: ModelSpec,
    dataset_hash: str,
    path: str,
    trigger: Trigger,
    run_id: str,
    store: ArtifactStore,
    code_version: dict[str, str | None],
) -> TrainedVersion:
    """Check the model in the file at `path`, score it on the holdout of the snapshot (split as
    training splits it) and register it as a candidate brought by the trigger's actor.

    Nothing is registered when a check fails. A retried step finds the version its first
    attempt registered (same run, data and spec) and returns it.
    """
    registry = Registry(store)
    if done := already_registered(registry, spec, dataset_hash, run_id):
        return done
    data = read_artifact(path)
    name = Path(path).name
    model, family = check_external(spec, data, name)
    df = training_snapshot(spec, dataset_hash, store)
    _check_labels(spec, model, df, name)
    try:
        fit = score_holdout(spec, model, data, split(spec, df))
    except _SCORING_ERRORS as err:
        raise IncompatibleModel(
            f"{name}: cannot score the spec's feature columns {spec.features.all}: {err}",
            model=spec.name,
        ) from err
    sources = snapshot_metadata(dataset_hash, store)
    lineage = version_lineage(
        spec, dataset_hash, len(df), fit, trigger, run_id, code_version, sources, threads=1
    )
    brought = ExternalArtifact(
        file=name, sha256=sha256(data), bytes=len(data), brought_by=trigger.actor
    )
    lineage = replace(
        lineage, estimator=family, params=_params(model), class_weight=None, external=brought
    )
    trained = register_fit(registry, spec, dataset_hash, fit, lineage)
    log.info(
        "%s v%d brought by %s (%s, sha256 %s): %s",
        spec.name,
        trained.version,
        trigger.actor,
        name,
        brought.sha256[:12],
        fit.metrics,
    )
    return trained
