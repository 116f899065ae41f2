"""Reproducible training: a scikit-learn Pipeline built from the spec, a deterministic split."""

from __future__ import annotations

import hashlib
import importlib
import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from mlops_tasks.artifacts import single_thread
from mlops_tasks.datasets import load_snapshot
from mlops_tasks.errors import DataError
from mlops_tasks.registry import Registry, dump_artifact, trigger_actor
from mlops_tasks.specs import ESTIMATORS, ModelSpec
from mlops_tasks.storage import ArtifactStore, open_store

if TYPE_CHECKING:
    import pandas as pd
    from sklearn.pipeline import Pipeline

log = logging.getLogger(__name__)


def build_estimator(spec: ModelSpec, params: dict[str, Any] | None = None) -> Any:
    info = ESTIMATORS[spec.model.estimator]
    path = info.cls.replace(
        "{Task}", "Classifier" if spec.task == "classification" else "Regressor"
    )
    module, name = path.rsplit(".", 1)
    cls = getattr(importlib.import_module(module), name)
    kwargs = {**spec.model.params, **(params or {})}
    if "random_state" in cls().get_params():
        kwargs["random_state"] = spec.model.seed
    return cls(**kwargs)


def build_pipeline(spec: ModelSpec, params: dict[str, Any] | None = None) -> Pipeline:
    """Imputation and scaling/encoding per feature type, then the spec's estimator."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    transformers: list[tuple[str, Any, list[str]]] = []
    if spec.features.numeric:
        numeric = Pipeline(
            [("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]
        )
        transformers.append(("numeric", numeric, spec.features.numeric))
    if spec.features.categorical:
        categorical = Pipeline(
            [
                ("impute", SimpleImputer(strategy="constant", fill_value="__missing__")),
                ("encode", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
            ]
        )
        transformers.append(("categorical", categorical, spec.features.categorical))
    pre = ColumnTransformer(transformers, remainder="drop", verbose_feature_names_out=False)
    return Pipeline([("preprocess", pre), ("model", build_estimator(spec, params))])


def prepare_features(spec: ModelSpec, df: pd.DataFrame) -> pd.DataFrame:
    """The model's input columns with stable dtypes (numbers as float, categories as str)."""
    import pandas as pd

    missing = [c for c in spec.features.all if c not in df.columns]
    if missing:
        raise DataError(f"{spec.name}: input is missing feature column(s) {missing}",
                        columns=missing)  # fmt: skip
    out = pd.DataFrame(index=df.index)
    for c in spec.features.numeric:
        out[c] = pd.to_numeric(df[c], errors="coerce").astype("float64")
    for c in spec.features.categorical:
        col = df[c]
        out[c] = col.astype(str).astype(object).where(col.notna(), np.nan)
    return out


def split(spec: ModelSpec, df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """Deterministic train/holdout split: the latest rows by time, else a stable row hash.

    Returns (train, holdout, method). The same snapshot always gives the same split.
    """
    import pandas as pd

    frac = spec.evaluation.holdout_fraction
    if spec.data.time_column and spec.data.time_column in df.columns:
        order = df.sort_values([spec.data.time_column], kind="mergesort").index
        cut = round(len(df) * (1 - frac))
        return df.loc[order[:cut]], df.loc[order[cut:]], "time"
    if spec.data.id_column and spec.data.id_column in df.columns:
        keys = df[spec.data.id_column].astype(str)
    else:
        keys = pd.Series(pd.util.hash_pandas_object(df, index=False).astype(str), index=df.index)
    bucket = keys.map(lambda k: int(hashlib.sha256(k.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF)
    mask = bucket < frac
    return df[~mask], df[mask], "hash"


def predict_scores(spec: ModelSpec, model: Any, x: pd.DataFrame) -> tuple[np.ndarray, Any]:
    """Predictions and, for classifiers, the positive-class probability."""
    pred = model.predict(x)
    proba = model.predict_proba(x)[:, 1] if spec.task == "classification" else None
    return pred, proba


def _already_trained(
    store: ArtifactStore, spec: ModelSpec, dataset_hash: str, run_id: str
) -> dict[str, Any] | None:
    for meta in reversed(Registry(store).versions(spec.name)):
        if (
            meta.get("airflow_run_id") == run_id
            and meta["dataset"]["train"] == dataset_hash
            and meta.get("spec_hash") == spec.spec_hash()
        ):
            log.info("%s: run %s already registered v%d", spec.name, run_id, meta["version"])
            return {
                "model": spec.name,
                "version": meta["version"],
                "dataset_hash": dataset_hash,
                "train_rows": meta["dataset"]["train_rows"],
                "holdout_rows": meta["dataset"]["holdout_rows"],
                "metrics": meta["metrics"],
            }
    return None


def train_candidate(
    spec: ModelSpec,
    dataset_hash: str,
    triggered_by: dict[str, Any],
    run_id: str | None = None,
    params: dict[str, Any] | None = None,
    store: ArtifactStore | None = None,
    label_override: np.ndarray | None = None,
) -> dict[str, Any]:
    """Fit the spec's pipeline on the snapshot's training split; register a candidate.

    `label_override` replaces the training labels (used to prove the gate stops a bad model).
    Returns {model, version, dataset_hash, train_rows, holdout_rows, metrics}.
    """
    from mlops_tasks.evaluation import compute_metrics

    st = store or open_store()
    if params:
        spec = spec.with_params(params)
    if run_id and (done := _already_trained(st, spec, dataset_hash, run_id)):
        return done  # a retried task returns the version its first attempt registered
    df = load_snapshot(dataset_hash, st)
    if spec.target not in df.columns:
        raise DataError(f"{spec.name}: snapshot {dataset_hash[:12]} has no target column "
                        f"{spec.target!r}", column=spec.target)  # fmt: skip
    train, holdout, method = split(spec, df)
    y_train = train[spec.target].to_numpy()
    if label_override is not None:
        y_train = label_override[: len(y_train)]
    if spec.task == "classification" and len(np.unique(y_train)) < 2:
        raise DataError(f"{spec.name}: training split has a single class; cannot train",
                        column=spec.target)  # fmt: skip
    pipeline = build_pipeline(spec)
    with single_thread():  # the same bytes on any machine (see artifacts.single_thread)
        pipeline.fit(prepare_features(spec, train), y_train)
    pred, proba = predict_scores(spec, pipeline, prepare_features(spec, holdout))
    metrics = compute_metrics(spec.task, holdout[spec.target].to_numpy(), pred, proba)
    lineage = {
        "task": spec.task,
        "estimator": spec.model.estimator,
        "params": spec.model.params,
        "seed": spec.model.seed,
        "features": spec.features.model_dump(),
        "target": spec.target,
        "spec_hash": spec.spec_hash(),
        "dataset": {
            "train": dataset_hash,
            "rows": len(df),
            "train_rows": len(train),
            "holdout_rows": len(holdout),
            "split": method,
            "holdout_fraction": spec.evaluation.holdout_fraction,
        },
        "primary_metric": spec.evaluation.primary_metric,
        "metrics": metrics,
        "triggered_by": triggered_by,
        "airflow_run_id": run_id,
        "labels_overridden": label_override is not None,
    }
    meta = Registry(st).register(spec.name, dump_artifact(pipeline), lineage,
                                 actor=trigger_actor(triggered_by))  # fmt: skip
    log.info("%s v%d trained on %d rows: %s", spec.name, meta["version"], len(train), metrics)
    return {
        "model": spec.name,
        "version": meta["version"],
        "dataset_hash": dataset_hash,
        "train_rows": len(train),
        "holdout_rows": len(holdout),
        "metrics": metrics,
    }
