"""Reproducible training: a scikit-learn Pipeline built from the spec, a deterministic split."""

from __future__ import annotations

import io
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from mlops_tasks.data.datasets import load_snapshot, snapshot_metadata
from mlops_tasks.data.profile import profile_file
from mlops_tasks.errors import DataError
from mlops_tasks.model.artifacts import dump_artifact, fit_threads
from mlops_tasks.model.modelling import (
    binary_labels,
    build_pipeline,
    compute_metrics,
    predict_scores,
    prepare_features,
    sample_weights,
    split,
)
from mlops_tasks.records import DatasetLineage, TrainedVersion, Trigger, VersionLineage
from mlops_tasks.registry import Registry
from mlops_tasks.specs import ModelSpec
from mlops_tasks.storage import ArtifactStore

if TYPE_CHECKING:
    import pandas as pd
    from sklearn.pipeline import Pipeline

log = logging.getLogger(__name__)


def _holdout_scores(pred: np.ndarray, proba: np.ndarray | None) -> bytes:
    """The candidate's holdout predictions as Parquet, stored with the version so evaluation
    reuses them instead of loading the model again."""
    import pandas as pd

    frame = pd.DataFrame({"prediction": pred})
    if proba is not None:
        frame["probability"] = proba
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    return buf.getvalue()


def fit_pipeline(spec: ModelSpec, train: pd.DataFrame, threads: int = 1) -> Pipeline:
    """The spec's pipeline fitted on `train` with exactly `threads` native threads, so that the
    same data and count give the same bytes on any machine (see `artifacts.fit_threads`);
    `reproduce` refits with the count the version records. `model.class_weight` reaches the
    estimator as sample weights (`modelling.sample_weights`)."""
    pipeline = build_pipeline(spec)
    y = train[spec.target].to_numpy()
    weights = sample_weights(spec, y)
    fit_params = {} if weights is None else {"model__sample_weight": weights}
    with fit_threads(threads):
        pipeline.fit(prepare_features(spec, train), y, **fit_params)
    return pipeline


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


def fit_and_score(spec: ModelSpec, df: pd.DataFrame, threads: int) -> Fit:
    """Split a snapshot, fit the spec's pipeline (its estimator, params and seed) on the
    training part with `threads` native threads, and score the holdout.

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
    pipeline = fit_pipeline(spec, train, threads)
    pred, proba = predict_scores(spec, pipeline, prepare_features(spec, holdout))
    return Fit(
        train=train,
        holdout=holdout,
        split=method,
        artifact=dump_artifact(pipeline),
        holdout_scores=_holdout_scores(pred, proba),
        metrics=compute_metrics(spec.task, holdout[spec.target].to_numpy(), pred, proba, spec),
    )


def _already_trained(
    registry: Registry, spec: ModelSpec, dataset_hash: str, run_id: str
) -> TrainedVersion | None:
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


def _lineage(
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
        params=spec.model.params,
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
    if done := _already_trained(registry, spec, dataset_hash, run_id):
        return done
    df = load_snapshot(dataset_hash, store)
    if spec.target not in df.columns:
        raise DataError(
            f"{spec.name}: snapshot {dataset_hash[:12]} has no target column {spec.target!r}",
            column=spec.target,
        )
    started = time.perf_counter()
    fit = fit_and_score(spec, df, threads)
    seconds = time.perf_counter() - started
    sources = snapshot_metadata(dataset_hash, store)
    lineage = _lineage(
        spec, dataset_hash, len(df), fit, trigger, run_id, code_version, sources, threads
    )
    version = registry.register(
        spec.name,
        fit.artifact,
        lineage,
        actor=trigger.actor,
        files={
            "holdout.parquet": fit.holdout_scores,
            "spec.json": spec.model_dump_json().encode(),
            **profile_file(spec, fit.train),
        },
    )
    log.info(
        "%s v%d trained on %d rows in %.1f s with %d thread(s): %s",
        spec.name,
        version.version,
        len(fit.train),
        seconds,
        threads,
        fit.metrics,
    )
    return TrainedVersion(
        model=spec.name,
        version=version.version,
        dataset_hash=dataset_hash,
        train_rows=len(fit.train),
        holdout_rows=len(fit.holdout),
        metrics=fit.metrics,
    )
