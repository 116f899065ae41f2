"""What training, evaluation, drift and serving share about a model's inputs and outputs.

Feature preparation (one canonical form per feature type), the deterministic holdout split,
scoring, metrics and which way each metric is better. Every caller goes through here, so the
model sees the same columns the same way at training, evaluation, monitoring and serving.
"""

from __future__ import annotations

import hashlib
import importlib
import math
import re
from typing import TYPE_CHECKING, Any

import numpy as np

from mlops_tasks.errors import DataError, SpecError
from mlops_tasks.specs import CUSTOM_ESTIMATOR, ESTIMATORS, METRICS, ModelSpec, family

if TYPE_CHECKING:
    import pandas as pd
    from sklearn.pipeline import Pipeline


def higher_is_better(task: str, metric: str) -> bool:
    return METRICS[task][metric]


def metric_drop(task: str, metric: str, baseline: float, value: float) -> float:
    """How much worse `value` is than `baseline` (positive = worse), whatever the direction."""
    return (baseline - value) if higher_is_better(task, metric) else (value - baseline)


#: A change of a metric smaller than this reads as unchanged (metrics show four decimals).
UNCHANGED = 5e-5


def direction(baseline: float, value: float) -> str:
    """Which way a metric went from `baseline` to `value`: `rose`, `fell` or `unchanged`."""
    if abs(value - baseline) < UNCHANGED:
        return "unchanged"
    return "rose" if value > baseline else "fell"


def worse_by(task: str, metric: str, baseline: float, value: float) -> str:
    """Whether `value` is worse than `baseline` for this metric, and by how much: `worse by
    0.0500`, `better by 0.0500`, or `unchanged`."""
    drop = metric_drop(task, metric, baseline, value)
    if abs(drop) < UNCHANGED:
        return "unchanged"
    return f"{'worse' if drop > 0 else 'better'} by {abs(drop):.4f}"


def describe_change(task: str, metric: str, baseline: float, value: float) -> str:
    """How `value` differs from `baseline` in words: which way it went and whether that is
    worse for this metric (`rose, worse by 0.0500` for a log loss that went up, `fell, worse
    by 0.0200` for a ROC AUC that went down, `rose, better by 0.0100`, or `unchanged`). A
    signed "drop +0.0023" had to be decoded by its reader, and "dropped" said a rising log
    loss fell."""
    moved = direction(baseline, value)
    return moved if moved == "unchanged" else f"{moved}, {worse_by(task, metric, baseline, value)}"


def estimator_class(estimator: str, task: str) -> type:
    """The scikit-learn class an allow-listed estimator is for `task`."""
    path = ESTIMATORS[estimator].cls.replace("{Task}", "{Classifier|Regressor}")
    path = re.sub(
        r"\{([^|{}]*)\|([^|{}]*)\}",
        lambda m: m.group(1) if family(task) == "classification" else m.group(2),
        path,
    )
    module, name = path.rsplit(".", 1)
    cls: type = getattr(importlib.import_module(module), name)
    return cls


def sklearn_params(estimator: str, task: str, params: dict[str, Any]) -> dict[str, Any]:
    """A spec's params (already checked by `specs.check_params`) as the estimator's arguments.

    A logistic regression's `penalty` becomes `l1_ratio` (and `C=inf` for none): scikit-learn
    1.8 deprecated its own `penalty`. `none` is SGD's `penalty=None`. An MLP's `hidden_units`
    and `hidden_layers` become `hidden_layer_sizes`.
    """
    defaults = ESTIMATORS[estimator].defaults
    kwargs = {**next((v for k, v in defaults.items() if k == family(task)), {}), **params}
    if estimator == "logistic_regression" and "penalty" in kwargs:
        penalty = kwargs.pop("penalty")
        if penalty != "elasticnet":  # elasticnet: the spec's own l1_ratio
            kwargs["l1_ratio"] = 1.0 if penalty == "l1" else 0.0
        if penalty == "none":
            kwargs["C"] = math.inf
    elif estimator == "sgd" and kwargs.get("penalty") == "none":
        kwargs["penalty"] = None
    elif estimator == "mlp" and {"hidden_units", "hidden_layers"} & set(kwargs):
        units, layers = kwargs.pop("hidden_units", 100), kwargs.pop("hidden_layers", 1)
        kwargs["hidden_layer_sizes"] = (units,) * layers
    return kwargs


def custom_class(spec: ModelSpec) -> type:
    """The user's estimator class that `model.class_path` names, imported and checked to be a
    scikit-learn estimator for the spec's task that takes its params: a SpecError naming
    `model.class_path` or `model.params` otherwise."""
    path = str(spec.model.class_path)
    module_name, _, name = path.rpartition(".")
    field = "model.class_path"
    try:
        module = importlib.import_module(module_name)
    except Exception as err:  # ImportError, or the module failing as it imports
        raise SpecError(
            f"{spec.name}: model.class_path: cannot import {module_name!r} "
            f"({type(err).__name__}: {err}); install the package wherever the model trains "
            "and serves (Airflow workers and the prediction service)",
            field=field,
        ) from None
    cls = getattr(module, name, None)
    if not isinstance(cls, type):
        raise SpecError(
            f"{spec.name}: model.class_path: {module_name} has no class {name!r}", field=field
        )
    from sklearn.base import BaseEstimator, is_classifier, is_regressor

    if not issubclass(cls, BaseEstimator):
        raise SpecError(
            f"{spec.name}: model.class_path: {path} is not a scikit-learn estimator "
            "(subclass sklearn.base.BaseEstimator, with ClassifierMixin or RegressorMixin)",
            field=field,
        )
    classifier = family(spec.task) == "classification"
    try:
        instance = cls()
    except Exception as err:
        raise SpecError(
            f"{spec.name}: model.class_path: {path}() fails with no arguments "
            f"({type(err).__name__}: {err}); every constructor argument needs a default, as "
            "scikit-learn requires",
            field=field,
        ) from None
    if classifier and not (is_classifier(instance) and hasattr(instance, "predict_proba")):
        raise SpecError(
            f"{spec.name}: model.class_path: {path} is not a classifier with predict_proba; a "
            f"{spec.task} model is scored by its probabilities",
            field=field,
        )
    if not classifier and not is_regressor(instance):
        raise SpecError(
            f"{spec.name}: model.class_path: {path} is not a regressor (RegressorMixin)",
            field=field,
        )
    known = set(instance.get_params(deep=False))
    unknown = sorted(set(spec.model.params) - known)
    if unknown:
        raise SpecError(
            f"{spec.name}: model.params: {path} takes no parameter {', '.join(unknown)}; "
            f"it takes: {', '.join(sorted(known)) or 'none'}",
            field="model.params",
        )
    if spec.model.class_weight is not None:
        import inspect

        if "sample_weight" not in inspect.signature(instance.fit).parameters:
            raise SpecError(
                f"{spec.name}: model.class_weight: {path}.fit takes no sample_weight, so its "
                "classes cannot be weighted",
                field="model.class_weight",
            )
    return cls


def build_estimator(spec: ModelSpec, params: dict[str, Any] | None = None) -> Any:
    """The spec's estimator, seeded with `model.seed` wherever it draws random numbers.

    A support vector classifier has no probabilities of its own (`SVC(probability=True)` is
    deprecated since scikit-learn 1.9): it is calibrated by 5-fold cross-validation, one SVC
    fitted on all rows, as scikit-learn recommends.
    """
    estimator, task = spec.model.estimator, spec.task
    if estimator == CUSTOM_ESTIMATOR:
        cls = custom_class(spec)
        kwargs = {**spec.model.params, **(params or {})}
    else:
        cls = estimator_class(estimator, task)
        kwargs = sklearn_params(estimator, task, {**spec.model.params, **(params or {})})
    if "random_state" in cls().get_params():
        kwargs["random_state"] = spec.model.seed
    model = cls(**kwargs)
    if estimator == "svm" and family(task) == "classification":
        from sklearn.calibration import CalibratedClassifierCV

        return CalibratedClassifierCV(model, method="sigmoid", ensemble=False)
    return model


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


def fit_rows(
    spec: ModelSpec,
    x: pd.DataFrame,
    y: np.ndarray,
    threads: int = 1,
    params: dict[str, Any] | None = None,
) -> Pipeline:
    """The spec's pipeline (`params` over `model.params`) fitted on features `x` (as
    `prepare_features` gives them) and labels `y` with exactly `threads` native threads, so
    that the same rows and count give the same bytes on any machine (`threads.fit_threads`).
    `model.class_weight` reaches the estimator as sample weights of these rows
    (`sample_weights`). Training's refit and every search trial fit through here."""
    from mlops_tasks.model.threads import fit_threads

    pipeline = build_pipeline(spec, params)
    weights = sample_weights(spec, y)
    fit_params = {} if weights is None else {"model__sample_weight": weights}
    with fit_threads(threads):
        pipeline.fit(x, y, **fit_params)
    return pipeline


def canonical_text(values: pd.Series) -> pd.Series:
    """A categorical column in its one canonical form: text, nulls as NaN.

    Integer-, float- and bool-coded categories become the text of their integer (`2`, `2.0`
    and `"2"` are all `"2"`; `True` is `"1"`), other numbers their shortest repr, text stays as
    it is. Training, serving, validation and drift all go through here, so a season coded 1-4
    in Parquet, `"1"` in a CSV or `1` in a JSON request is the same category everywhere.
    """
    import pandas as pd

    if values.dtype == object and pd.api.types.infer_dtype(values, skipna=True) in (
        "string",
        "empty",
    ):
        return values.where(values.notna(), np.nan) if values.hasnans else values
    if pd.api.types.is_bool_dtype(values.dtype) or pd.api.types.is_numeric_dtype(values.dtype):
        arr = pd.to_numeric(values, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
        out = np.full(len(arr), np.nan, dtype=object)
        valid = ~np.isnan(arr)
        safe = np.where(valid, arr, 0.0)
        integral = valid & (np.mod(safe, 1) == 0) & (np.abs(safe) < 2**63)
        out[integral] = safe[integral].astype(np.int64).astype(str)
        other = valid & ~integral
        out[other] = [repr(float(x)) for x in arr[other]]
        return pd.Series(out, index=values.index, dtype=object)
    mapped = values.map(_canonical_value, na_action="ignore").astype(object)
    return mapped.where(mapped.notna(), np.nan)


def _canonical_value(value: Any) -> Any:
    if isinstance(value, str):
        return value
    if isinstance(value, bool | np.bool_):
        return "1" if value else "0"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        if not math.isfinite(value):
            return np.nan if math.isnan(value) else repr(float(value))
        return str(int(value)) if float(value).is_integer() else repr(float(value))
    return str(value)


def canonical_label(value: Any) -> Any:
    """One label in the form `canonical_text` gives it (for comparing a spec's positive
    class with a column's values)."""
    return _canonical_value(value)


def prepare_features(spec: ModelSpec, df: pd.DataFrame) -> pd.DataFrame:
    """The model's input columns with stable dtypes: numbers as float, categories in their
    canonical text form (`canonical_text`)."""
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
        out[c] = canonical_text(df[c])
    return out


def records_frame(spec: ModelSpec, rows: list[dict[str, Any]]) -> pd.DataFrame:
    """`prepare_features` for request rows already checked against the spec's schema
    (numbers or null, text or null): the same columns and dtypes, without the coercions."""
    import pandas as pd

    data: dict[str, Any] = {}
    for c in spec.features.numeric:
        data[c] = np.array([r[c] if r[c] is not None else np.nan for r in rows], dtype=float)
    for c in spec.features.categorical:
        data[c] = np.array(
            [np.nan if r[c] is None else _canonical_value(r[c]) for r in rows], dtype=object
        )
    return pd.DataFrame(data)


def row_buckets(spec: ModelSpec, df: pd.DataFrame, salt: str = "") -> np.ndarray:
    """Each row's place in [0, 1]: a stable hash of its `data.id_column` (else of the whole
    row), salted with `salt`.

    The holdout is the rows below `evaluation.holdout_fraction` with no salt; anything carved
    from the training part the same way (a threshold's validation split, search folds) uses its
    own salt, so it is an unbiased share of the training rows instead of the rows just above the
    holdout's cut (which, with the same hash, an equal fraction would leave empty).
    """
    import pandas as pd

    if spec.data.id_column and spec.data.id_column in df.columns:
        keys = df[spec.data.id_column].astype(str)
    else:
        keys = pd.Series(pd.util.hash_pandas_object(df, index=False).astype(str), index=df.index)
    return np.fromiter(
        (int(hashlib.sha256((salt + k).encode()).hexdigest()[:8], 16) / 0xFFFFFFFF for k in keys),
        dtype=float,
        count=len(keys),
    )


def split(
    spec: ModelSpec, df: pd.DataFrame, fraction: float | None = None, salt: str = ""
) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """Deterministic train/holdout split: the latest rows by time, else a stable row hash.

    Returns (train, holdout, method). The same snapshot always gives the same split. The
    holdout is `evaluation.holdout_fraction` of the rows, or `fraction` of them with the hash
    salted by `salt` (a validation split carved from the training part: see `row_buckets`).
    """
    frac = spec.evaluation.holdout_fraction if fraction is None else fraction
    if spec.data.time_column and spec.data.time_column in df.columns:
        order = df.sort_values([spec.data.time_column], kind="mergesort").index
        cut = round(len(df) * (1 - frac))
        return df.loc[order[:cut]], df.loc[order[cut:]], "time"
    mask = row_buckets(spec, df, salt) < frac
    return df[~mask], df[mask], "hash"


def positive_label(spec: ModelSpec) -> Any:
    """The positive class of a classifier: the spec's `positive_class`, else 1."""
    return 1 if spec.positive_class is None else spec.positive_class


def binary_labels(spec: ModelSpec, labels: Any, where: str = "data") -> np.ndarray:
    """A classifier's labels as 0/1 (1 = the positive class), checking that they are two
    classes the spec can name: 0/1 (or booleans) by default, any two labels with
    `target: {column, positive}`."""
    import pandas as pd

    text = canonical_text(pd.Series(labels, dtype=object if _is_text(labels) else None))
    values = sorted({v for v in text.dropna()}, key=str)
    positive = canonical_label(positive_label(spec))
    if spec.positive_class is None and not set(values) <= {"0", "1"}:
        raise DataError(
            f"{spec.name}: target {spec.target!r} in {where} has labels {values[:6]}; a "
            f"classifier's labels are 0/1 unless the spec names the positive class: "
            f"target: {{column: {spec.target}, positive: <label>}}",
            column=spec.target,
        )
    if len(values) > 2:
        raise DataError(
            f"{spec.name}: target {spec.target!r} in {where} has {len(values)} labels "
            f"{values[:6]}; a binary classifier takes two",
            column=spec.target,
        )
    if spec.positive_class is not None and values and positive not in values and len(values) > 1:
        raise DataError(
            f"{spec.name}: positive class {positive!r} is not among the labels {values} of "
            f"{spec.target!r} in {where}",
            column=spec.target,
        )
    return (text == positive).to_numpy(dtype=bool).astype(int)


def sample_weights(spec: ModelSpec, labels: Any) -> np.ndarray | None:
    """The sample weight of each training row that `model.class_weight` gives (None: none).

    `balanced` weighs each class by n_rows / (n_classes * its rows), as scikit-learn's
    `class_weight="balanced"` does; a mapping weighs the rows of each label it names (labels
    compared in their canonical text form, so `"1"` names the integer label 1), others weigh 1.
    """
    import pandas as pd

    weights = spec.model.class_weight
    if weights is None:
        return None
    text = canonical_text(pd.Series(labels, dtype=object if _is_text(labels) else None))
    classes, counts = np.unique(text.to_numpy(dtype=str), return_counts=True)
    if weights == "balanced":
        per_class = dict(zip(classes, len(text) / (len(classes) * counts), strict=True))
    else:
        missing = sorted(set(weights) - set(classes))
        if missing:
            raise DataError(
                f"{spec.name}: model.class_weight names {missing}, not labels of "
                f"{spec.target!r} in the training rows (labels: {sorted(classes)[:6]})",
                column=spec.target,
            )
        per_class = {c: float(weights.get(c, 1.0)) for c in classes}
    return text.map(per_class).to_numpy(dtype=float)


def _is_text(labels: Any) -> bool:
    arr = np.asarray(labels)
    return arr.dtype == object or arr.dtype.kind in "USb"


def predict_scores(
    spec: ModelSpec, model: Any, x: Any, threshold: float | None = None
) -> tuple[np.ndarray, Any]:
    """Predictions (in the model's own labels) and, for classifiers, the positive class's
    probability (one model pass). With `threshold` (the version's decision threshold), a
    row is the positive class when that probability is >= it; else the most probable class."""
    if spec.task == "classification":
        scores = model.predict_proba(x)
        positive = canonical_label(positive_label(spec))
        classes = [canonical_label(c) for c in model.classes_]
        column = classes.index(positive) if positive in classes else len(classes) - 1
        proba = scores[:, column]
        if threshold is not None and len(classes) == 2:
            labels = model.classes_
            return np.where(proba >= threshold, labels[column], labels[1 - column]), proba
        return model.classes_[np.argmax(scores, axis=1)], proba
    if spec.task == "multiclass":
        import pandas as pd

        scores = model.predict_proba(x)
        labels = [canonical_label(c) for c in model.classes_]
        return model.classes_[np.argmax(scores, axis=1)], pd.DataFrame(scores, columns=labels)
    return model.predict(x), None


#: A multiclass model's stored holdout probabilities: one column per class, named so.
CLASS_PROBABILITY = "probability:"


def class_labels(values: Any) -> np.ndarray:
    """Labels in their canonical text form (`canonical_text`), as an object array."""
    import pandas as pd

    series = pd.Series(values, dtype=object if _is_text(values) else None)
    return canonical_text(series).to_numpy(dtype=object)


def _multiclass_metrics(
    y_true: Any, pred: Any, proba: pd.DataFrame | None
) -> dict[str, float | None]:
    """Accuracy, balanced accuracy, macro and weighted F1 on every row; log loss and
    one-vs-rest ROC AUC on the rows whose label is one the model knows (a label training never
    saw has no probability), when at least two classes are present."""
    from sklearn import metrics as m

    y, p = class_labels(y_true), class_labels(pred)
    known = list(proba.columns) if proba is not None else sorted({*y, *p}, key=str)
    out: dict[str, float | None] = {
        "accuracy": m.accuracy_score(y, p) if len(y) else None,
        "balanced_accuracy": None,
        "macro_f1": m.f1_score(y, p, labels=known, average="macro", zero_division=0),
        "weighted_f1": m.f1_score(y, p, labels=known, average="weighted", zero_division=0),
        "log_loss": None,
        "roc_auc_ovr": None,
    }
    if len(set(y)) >= 2:
        with np.errstate(all="ignore"):
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # a class absent from these rows
                out["balanced_accuracy"] = m.balanced_accuracy_score(y, p)
    if proba is not None:
        seen = np.isin(y, known)
        ys = y[seen]
        if len(set(ys)) >= 2:
            scores = np.clip(proba.to_numpy(dtype=float)[seen], 1e-15, 1.0)
            scores = scores / scores.sum(axis=1, keepdims=True)
            out["log_loss"] = m.log_loss(ys, scores, labels=known)
            try:
                out["roc_auc_ovr"] = m.roc_auc_score(
                    ys, scores, multi_class="ovr", average="macro", labels=known
                )
            except ValueError:  # a class the model knows is absent from these rows
                present = [c for c in known if c in set(ys)]
                if len(present) >= 2:
                    cols = [known.index(c) for c in present]
                    sub = scores[:, cols] / scores[:, cols].sum(axis=1, keepdims=True)
                    mask = np.isin(ys, present)
                    out["roc_auc_ovr"] = m.roc_auc_score(
                        ys[mask], sub[mask], multi_class="ovr", average="macro", labels=present
                    )
    return out


def per_class_metrics(
    y_true: Any, pred: Any, classes: list[str]
) -> dict[str, dict[str, float | int]]:
    """Precision, recall, F1 and support (holdout rows) of every class the model knows."""
    from sklearn import metrics as m

    y, p = class_labels(y_true), class_labels(pred)
    precision, recall, f1, support = m.precision_recall_fscore_support(
        y, p, labels=classes, zero_division=0
    )
    return {
        c: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, c in enumerate(classes)
    }


def confusion(y_true: Any, pred: Any, classes: list[str]) -> list[list[int]]:
    """Rows: true class, columns: predicted class, both in `classes` order; labels outside
    `classes` (never seen in training) are not counted."""
    from sklearn import metrics as m

    matrix = m.confusion_matrix(class_labels(y_true), class_labels(pred), labels=classes)
    return [[int(v) for v in row] for row in matrix]


def compute_metrics(
    task: str,
    y_true: np.ndarray,
    pred: np.ndarray,
    proba: Any,
    spec: ModelSpec | None = None,
) -> dict[str, float | None]:
    """Classification: ROC AUC, PR AUC, F1, log loss, accuracy. Multiclass (`proba` a frame
    with a column per class): log loss, macro and weighted F1, balanced accuracy, accuracy,
    one-vs-rest ROC AUC. Regression: RMSE, MAE, R².

    Classification labels are compared as 0/1 with `spec`'s positive class (`binary_labels`);
    without a spec they must already be 0/1. A metric that cannot be computed on these rows
    (one class only, fewer than two rows) is None, never NaN, so every JSON output stays valid.
    """
    from sklearn import metrics as m

    out: dict[str, float | None]
    if task == "multiclass":
        out = _multiclass_metrics(y_true, pred, proba)
    elif task == "classification":
        if spec is not None:
            y, pred = binary_labels(spec, y_true), binary_labels(spec, pred, "predictions")
        else:
            y, pred = np.asarray(y_true).astype(int), np.asarray(pred).astype(int)
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
