"""What training, evaluation, drift and serving share about a model's inputs and outputs.

Feature preparation (one canonical form per feature type), the deterministic holdout split,
scoring, metrics and which way each metric is better. Every caller goes through here, so the
model sees the same columns the same way at training, evaluation, monitoring and serving.
"""

from __future__ import annotations

import hashlib
import importlib
import math
from typing import TYPE_CHECKING, Any

import numpy as np

from mlops_tasks.errors import DataError
from mlops_tasks.specs import ESTIMATORS, METRICS, ModelSpec

if TYPE_CHECKING:
    import pandas as pd
    from sklearn.pipeline import Pipeline


def higher_is_better(task: str, metric: str) -> bool:
    return METRICS[task][metric]


def metric_drop(task: str, metric: str, baseline: float, value: float) -> float:
    """How much worse `value` is than `baseline` (positive = worse), whatever the direction."""
    return (baseline - value) if higher_is_better(task, metric) else (value - baseline)


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
        raise DataError(
            f"{spec.name}: input is missing feature column(s) {missing}", columns=missing
        )
    out = pd.DataFrame(index=df.index)
    for c in spec.features.numeric:
        out[c] = pd.to_numeric(df[c], errors="coerce").astype("float64")
    for c in spec.features.categorical:
        col = df[c]
        out[c] = col.astype(str).astype(object).where(col.notna(), np.nan)
    return out


def records_frame(spec: ModelSpec, rows: list[dict[str, Any]]) -> pd.DataFrame:
    """`prepare_features` for request rows already checked against the spec's schema
    (numbers or null, text or null): the same columns and dtypes, without the coercions."""
    import pandas as pd

    data: dict[str, Any] = {}
    for c in spec.features.numeric:
        data[c] = np.array([r[c] if r[c] is not None else np.nan for r in rows], dtype=float)
    for c in spec.features.categorical:
        data[c] = np.array([r[c] if r[c] is not None else np.nan for r in rows], dtype=object)
    return pd.DataFrame(data)


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
    """Predictions and, for classifiers, the positive-class probability (one model pass)."""
    if spec.task == "classification":
        scores = model.predict_proba(x)
        return model.classes_[np.argmax(scores, axis=1)], scores[:, 1]
    return model.predict(x), None


def compute_metrics(
    task: str, y_true: np.ndarray, pred: np.ndarray, proba: np.ndarray | None
) -> dict[str, float | None]:
    """Classification: ROC AUC, PR AUC, F1, log loss, accuracy. Regression: RMSE, MAE, R².

    A metric that cannot be computed on these rows (one class only, fewer than two rows) is
    None, never NaN, so every JSON output stays valid.
    """
    from sklearn import metrics as m

    out: dict[str, float | None]
    if task == "classification":
        y = np.asarray(y_true).astype(int)
        out = {"accuracy": m.accuracy_score(y, pred), "f1": m.f1_score(y, pred, zero_division=0)}
        out |= {"roc_auc": None, "pr_auc": None, "log_loss": None}
        if proba is not None and len(np.unique(y)) == 2:
            out["roc_auc"] = m.roc_auc_score(y, proba)
            out["pr_auc"] = m.average_precision_score(y, proba)
            out["log_loss"] = m.log_loss(y, np.clip(proba, 1e-7, 1 - 1e-7), labels=[0, 1])
    else:
        y_f = np.asarray(y_true, dtype=float)
        out = {
            "rmse": math.sqrt(m.mean_squared_error(y_f, pred)),
            "mae": m.mean_absolute_error(y_f, pred),
            "r2": m.r2_score(y_f, pred) if len(y_f) > 1 else None,
        }
    return {k: _finite(v) for k, v in out.items()}


def _finite(v: Any) -> float | None:
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None
