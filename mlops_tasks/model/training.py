"""Reproducible training: a scikit-learn Pipeline built from the spec, a deterministic split."""

from __future__ import annotations

import io
import logging
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from mlops_tasks.data.datasets import load_snapshot, snapshot_metadata
from mlops_tasks.data.profile import profile_file
from mlops_tasks.errors import DataError
from mlops_tasks.model import thresholds
from mlops_tasks.model.artifacts import custom_types, dump_artifact
from mlops_tasks.model.modelling import (
    CLASS_PROBABILITY,
    binary_labels,
    class_labels,
    compute_metrics,
    fit_rows,
    predict_scores,
    prepare_features,
    split,
)
from mlops_tasks.model.search import run_search, searched_spec
from mlops_tasks.records import (
    CustomEstimator,
    DatasetLineage,
    SearchResult,
    Threshold,
    TrainedVersion,
    Trigger,
    VersionLineage,
)
from mlops_tasks.registry import Registry
from mlops_tasks.specs import CUSTOM_ESTIMATOR, ModelSpec
from mlops_tasks.storage import ArtifactStore

if TYPE_CHECKING:
    import pandas as pd
    from sklearn.pipeline import Pipeline

log = logging.getLogger(__name__)


def _holdout_scores(pred: np.ndarray, proba: Any) -> bytes:
    """The candidate's holdout predictions as Parquet, stored with the version so evaluation
    reuses them instead of loading the model again."""
    import pandas as pd

    frame = pd.DataFrame({"prediction": pred})
    if isinstance(proba, pd.DataFrame):  # multiclass: a probability per class
        for label in proba.columns:
            frame[f"{CLASS_PROBABILITY}{label}"] = proba[label].to_numpy()
    elif proba is not None:
        frame["probability"] = proba
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    return buf.getvalue()


def fit_pipeline(
    spec: ModelSpec, train: pd.DataFrame, threads: int = 1, params: dict[str, Any] | None = None
) -> Pipeline:
    """The spec's pipeline (`params` over `model.params`) fitted on `train` with exactly
    `threads` native threads, so that the same data and count give the same bytes on any
    machine (see `threads.fit_threads`); `reproduce` refits with the count the version
    records. `model.class_weight` reaches the estimator as sample weights
    (`modelling.sample_weights`)."""
    return fit_rows(
        spec, prepare_features(spec, train), train[spec.target].to_numpy(), threads, params
    )


@dataclass(frozen=True)
class Fit:
    """A spec fitted on a snapshot: what a version is made of."""

    train: pd.DataFrame
    holdout: pd.DataFrame
    #: How `modelling.split` chose the holdout: `time` or `hash`.
    split: str
    #: The fitted pipeline as stored (`model.skops`).
    artifact: bytes
    #: The holdout predictions as stored (`holdout.parquet`).
    holdout_scores: bytes
    metrics: dict[str, float | None]
    #: The decision threshold chosen by `evaluation.threshold` (None: the most probable class).
    threshold: Threshold | None = None
    #: The search that chose the params (`model.search`; None: the spec fixed them).
    search: SearchResult | None = None

    def params(self, spec: ModelSpec) -> dict[str, Any]:
        """The params the pipeline was fitted with: `model.params` and the search's winner."""
        return {**spec.model.params, **(self.search.best_params if self.search else {})}


#: The salt of the row hash that carves a threshold's validation split from the training rows.
THRESHOLD_SALT = "threshold:"


def choose_threshold(spec: ModelSpec, train: pd.DataFrame, threads: int) -> Threshold | None:
    """The spec's decision threshold, chosen on a validation split of `train` scored by a
    pipeline fitted on the rest of it (`model/thresholds.py`); never on the holdout.

    The validation split is the newest rows of `train` by time, else a share of its rows by a
    row hash salted apart from the holdout's (`modelling.row_buckets`)."""
    rule = spec.evaluation.threshold
    if rule is None:
        return None
    if rule.fixed is not None:
        return thresholds.choose(rule, np.zeros(0, int), np.zeros(0))
    fit_part, validation, _ = split(spec, train, rule.validation_fraction, salt=THRESHOLD_SALT)
    y_fit = binary_labels(spec, fit_part[spec.target].to_numpy())
    y_val = binary_labels(spec, validation[spec.target].to_numpy(), "the validation split")
    if len(np.unique(y_fit)) < 2 or len(np.unique(y_val)) < 2:
        raise DataError(
            f"{spec.name}: evaluation.threshold: the validation split "
            f"({rule.validation_fraction:g} of {len(train)} training rows) or the rest holds a "
            "single class; give more rows or a larger validation_fraction",
            field="evaluation.threshold.validation_fraction",
        )
    scorer = fit_pipeline(spec, fit_part, threads)
    _, proba = predict_scores(spec, scorer, prepare_features(spec, validation))
    return thresholds.choose(rule, y_val, proba)


def fit_and_score(spec: ModelSpec, df: pd.DataFrame, threads: int) -> Fit:
    """Split a snapshot, fit the spec's pipeline (its estimator, params and seed) on the
    training part with `threads` native threads, and score the holdout. With `model.search`,
    the search runs on the training part first (`model/search.py`) and the winner's params are
    the ones fitted, and the decision threshold chosen, on the whole training part.

    The one routine that makes a version: the train step registers what it returns, and
    `reproduce` runs it again on the version's snapshot, stored spec and recorded thread count
    and compares, so "rebuilds bit for bit" does not rest on two copies staying in step.
    """
    train, holdout, method = split(spec, df)
    y_train = train[spec.target].to_numpy()
    if spec.task == "classification" and len(np.unique(binary_labels(spec, y_train))) < 2:
        raise DataError(
            f"{spec.name}: training split has a single class; cannot train", column=spec.target
        )
    if spec.task == "multiclass":
        labels = sorted(set(class_labels(y_train)), key=str)
        if len(labels) < 3:
            raise DataError(
                f"{spec.name}: a multiclass model needs three or more labels of "
                f"{spec.target!r} in its training split, found {len(labels)} ({labels}); "
                "with two, use task: classification",
                column=spec.target,
            )
    found = run_search(spec, train, threads) if spec.model.search is not None else None
    fitted = spec if found is None else searched_spec(spec, found)
    pipeline = fit_pipeline(fitted, train, threads)
    threshold = choose_threshold(fitted, train, threads)
    fit = score_holdout(
        fitted, pipeline, dump_artifact(pipeline), (train, holdout, method), threshold
    )
    return fit if found is None else replace(fit, search=found)


def score_holdout(
    spec: ModelSpec,
    model: Any,
    artifact: bytes,
    parts: tuple[pd.DataFrame, pd.DataFrame, str],
    threshold: Threshold | None = None,
) -> Fit:
    """`model` (stored as `artifact`) scored on the holdout of `parts`, `modelling.split`'s
    (train, holdout, method), at `threshold` when it has one: what a version is registered
    with."""
    train, holdout, method = parts
    cut = threshold.value if threshold is not None else None
    pred, proba = predict_scores(spec, model, prepare_features(spec, holdout), cut)
    return Fit(
        train=train,
        holdout=holdout,
        split=method,
        artifact=artifact,
        holdout_scores=_holdout_scores(pred, proba),
        metrics=compute_metrics(spec.task, holdout[spec.target].to_numpy(), pred, proba, spec),
        threshold=threshold,
    )


def already_registered(
    registry: Registry, spec: ModelSpec, dataset_hash: str, run_id: str
) -> TrainedVersion | None:
    """The version run `run_id` registered from this snapshot and spec (a retried step finds
    what its first attempt registered), or None."""
    for v in reversed(registry.versions(spec.name)):
        if (
            v.run_id == run_id
            and v.dataset.train == dataset_hash
            and v.spec_hash == spec.spec_hash()
        ):
            log.info("%s: run %s already registered v%d", spec.name, run_id, v.version)
            return TrainedVersion(
                model=spec.name,
                version=v.version,
                dataset_hash=dataset_hash,
                train_rows=v.dataset.train_rows,
                holdout_rows=v.dataset.holdout_rows,
                metrics=v.metrics,
            )
    return None


def training_snapshot(spec: ModelSpec, dataset_hash: str, store: ArtifactStore) -> pd.DataFrame:
    """The snapshot a version is made from, which must hold the spec's target."""
    df = load_snapshot(dataset_hash, store)
    if spec.target not in df.columns:
        raise DataError(
            f"{spec.name}: snapshot {dataset_hash[:12]} has no target column {spec.target!r}",
            column=spec.target,
        )
    return df


def version_lineage(
    spec: ModelSpec,
    dataset_hash: str,
    rows: int,
    fit: Fit,
    trigger: Trigger,
    run_id: str,
    code_version: dict[str, str | None],
    sources: dict[str, Any],
    threads: int,
) -> VersionLineage:
    """What the version was trained on, how, by which code, and why."""
    return VersionLineage(
        task=spec.task,
        estimator=spec.model.estimator,
        params=fit.params(spec),
        class_weight=spec.model.class_weight,
        seed=spec.model.seed,
        features=spec.features.model_dump(),
        target=spec.target,
        spec_hash=spec.spec_hash(),
        dataset=DatasetLineage(
            train=dataset_hash,
            rows=rows,
            train_rows=len(fit.train),
            holdout_rows=len(fit.holdout),
            split=fit.split,
            holdout_fraction=spec.evaluation.holdout_fraction,
            batches=tuple(sources.get("batches") or ()),
            traffic=sources.get("traffic"),
            out_of_scope=int((sources.get("left_out") or {}).get("out_of_scope", 0)),
            unlabelled=int((sources.get("left_out") or {}).get("unlabelled", 0)),
            joins=dict(sources.get("joins") or {}),
            join_unmatched=dict(sources.get("join_unmatched") or {}),
        ),
        primary_metric=spec.evaluation.primary_metric,
        metrics=fit.metrics,
        triggered_by=trigger,
        run_id=run_id,
        code_version=code_version,
        train_threads=threads,
        threshold=fit.threshold,
        search=fit.search,
    )


def custom_estimator(spec: ModelSpec, fit: Fit, packages: tuple[str, ...]) -> CustomEstimator:
    """What a custom estimator's version records: its class and its artifact's own types,
    which must all come from the trusted `packages` (else an IntegrityError before anything is
    registered: a version nothing would load is not made)."""
    what = f"{spec.name} ({spec.model.class_path})"
    return CustomEstimator(
        class_path=str(spec.model.class_path), types=custom_types(fit.artifact, what, packages)
    )


def train_candidate(
    spec: ModelSpec,
    dataset_hash: str,
    trigger: Trigger,
    run_id: str,
    store: ArtifactStore,
    code_version: dict[str, str | None],
    threads: int = 1,
) -> TrainedVersion:
    """Fit the spec's pipeline on the snapshot's training split with `threads` native threads;
    register a candidate.

    A retried task finds the version its first attempt registered (same run, data and spec)
    and returns it instead of training again.
    """
    registry = Registry(store)
    if done := already_registered(registry, spec, dataset_hash, run_id):
        return done
    df = training_snapshot(spec, dataset_hash, store)
    started = time.perf_counter()
    fit = fit_and_score(spec, df, threads)
    seconds = time.perf_counter() - started
    sources = snapshot_metadata(dataset_hash, store)
    lineage = version_lineage(
        spec, dataset_hash, len(df), fit, trigger, run_id, code_version, sources, threads
    )
    if spec.model.estimator == CUSTOM_ESTIMATOR:
        lineage = replace(lineage, custom=custom_estimator(spec, fit, store.trusted_packages))
    trained = register_fit(registry, spec, dataset_hash, fit, lineage)
    log.info(
        "%s v%d trained on %d rows in %.1f s with %d thread(s): %s",
        spec.name,
        trained.version,
        len(fit.train),
        seconds,
        threads,
        fit.metrics,
    )
    return trained


def register_fit(
    registry: Registry, spec: ModelSpec, dataset_hash: str, fit: Fit, lineage: VersionLineage
) -> TrainedVersion:
    """Register `fit` as a candidate with its holdout predictions, its spec and the profile of
    its training split, as the trigger's actor."""
    version = registry.register(
        spec.name,
        fit.artifact,
        lineage,
        actor=lineage.triggered_by.actor,
        files={
            "holdout.parquet": fit.holdout_scores,
            "spec.json": spec.model_dump_json().encode(),
            **profile_file(spec, fit.train),
        },
    )
    return TrainedVersion(
        model=spec.name,
        version=version.version,
        dataset_hash=dataset_hash,
        train_rows=len(fit.train),
        holdout_rows=len(fit.holdout),
        metrics=fit.metrics,
    )
