"""Reproducible training: a scikit-learn Pipeline built from the spec, a deterministic split."""

from __future__ import annotations

import io
import logging
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from mlops_tasks.artifacts import fit_threads
from mlops_tasks.datasets import load_snapshot, snapshot_metadata
from mlops_tasks.errors import DataError
from mlops_tasks.modelling import (
    binary_labels,
    build_pipeline,
    compute_metrics,
    predict_scores,
    prepare_features,
    split,
)
from mlops_tasks.profile import profile_file
from mlops_tasks.records import DatasetLineage, TrainedVersion, Trigger, VersionLineage
from mlops_tasks.registry import Registry, dump_artifact
from mlops_tasks.specs import ModelSpec
from mlops_tasks.storage import ArtifactStore

if TYPE_CHECKING:
    import pandas as pd
    from sklearn.pipeline import Pipeline

log = logging.getLogger(__name__)


def holdout_scores(pred: np.ndarray, proba: np.ndarray | None) -> bytes:
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
    `reproduce` refits with the count the version records."""
    pipeline = build_pipeline(spec)
    with fit_threads(threads):
        pipeline.fit(prepare_features(spec, train), train[spec.target].to_numpy())
    return pipeline


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
    rows: tuple[int, int, int],
    split_method: str,
    metrics: dict[str, float | None],
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
        seed=spec.model.seed,
        features=spec.features.model_dump(),
        target=spec.target,
        spec_hash=spec.spec_hash(),
        dataset=DatasetLineage(
            train=dataset_hash,
            rows=rows[0],
            train_rows=rows[1],
            holdout_rows=rows[2],
            split=split_method,
            holdout_fraction=spec.evaluation.holdout_fraction,
            batches=tuple(sources.get("batches") or ()),
            traffic=sources.get("traffic"),
        ),
        primary_metric=spec.evaluation.primary_metric,
        metrics=metrics,
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
    train, holdout, method = split(spec, df)
    y_train = train[spec.target].to_numpy()
    if spec.task == "classification" and len(np.unique(binary_labels(spec, y_train))) < 2:
        raise DataError(
            f"{spec.name}: training split has a single class; cannot train", column=spec.target
        )
    started = time.perf_counter()
    pipeline = fit_pipeline(spec, train, threads)
    fit_seconds = time.perf_counter() - started
    pred, proba = predict_scores(spec, pipeline, prepare_features(spec, holdout))
    metrics = compute_metrics(spec.task, holdout[spec.target].to_numpy(), pred, proba, spec)
    rows = (len(df), len(train), len(holdout))
    sources = snapshot_metadata(dataset_hash, store)
    lineage = _lineage(
        spec, dataset_hash, rows, method, metrics, trigger, run_id, code_version, sources, threads
    )
    version = registry.register(
        spec.name,
        dump_artifact(pipeline),
        lineage,
        actor=trigger.actor,
        files={
            "holdout.parquet": holdout_scores(pred, proba),
            "spec.json": spec.model_dump_json().encode(),
            **profile_file(spec, train),
        },
    )
    log.info(
        "%s v%d trained on %d rows in %.1f s with %d thread(s): %s",
        spec.name,
        version.version,
        len(train),
        fit_seconds,
        threads,
        metrics,
    )
    return TrainedVersion(
        model=spec.name,
        version=version.version,
        dataset_hash=dataset_hash,
        train_rows=len(train),
        holdout_rows=len(holdout),
        metrics=metrics,
    )
