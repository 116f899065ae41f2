"""Every allow-listed estimator, trained the way a retrain run trains, on real public data.

Third-party data, shipped inside scikit-learn (BSD-3-Clause), read from the installed package:

* `load_breast_cancer`: the Wisconsin Diagnostic Breast Cancer data (W. Street, W. Wolberg,
  O. Mangasarian, 1995; UCI Machine Learning Repository), 569 tumours, 30 measurements of cell
  nuclei, malignant (0) or benign (1);
* `load_diabetes`: B. Efron, T. Hastie, I. Johnstone, R. Tibshirani, "Least Angle Regression",
  Annals of Statistics (2004), 442 patients, ten baseline variables, disease progression a
  year later (unscaled: `scaled=False`).

Each case trains through `training.train_candidate` (the train step's own routine), loads the
version as the prediction service does (`Registry.load`: checksum and allow-listed types),
scores it through the service's compiled path and the full pipeline, and rebuilds it with
`reproduce`: the same bytes and predictions. Slow learners (SVM, MLP, boosting) see 300 rows.
"""

from __future__ import annotations

import json
import math
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from mlops_tasks.data.datasets import snapshot
from mlops_tasks.errors import DataError, SpecError
from mlops_tasks.model.modelling import (
    build_pipeline,
    compute_metrics,
    predict_scores,
    prepare_features,
    sample_weights,
)
from mlops_tasks.model.reproduce import reproduce
from mlops_tasks.model.training import fit_and_score, train_candidate
from mlops_tasks.records import Trigger
from mlops_tasks.registry import Registry
from mlops_tasks.serving.compiled import compile_model
from mlops_tasks.specs import ESTIMATORS, ParamRule, check_params, parse_spec
from mlops_tasks.storage import LocalStore

CODE = {"package": "test", "git_sha": None}
ROWS = 300
CANCER = ["mean_radius", "mean_texture", "mean_smoothness", "worst_concavity", "worst_area"]


@cache
def cancer() -> pd.DataFrame:
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame
    frame.columns = [str(c).replace(" ", "_") for c in frame.columns]
    return frame[[*CANCER, "target"]].head(ROWS).reset_index(drop=True)


@cache
def diabetes() -> pd.DataFrame:
    from sklearn.datasets import load_diabetes

    frame = load_diabetes(as_frame=True, scaled=False).frame.head(ROWS).reset_index(drop=True)
    return frame.assign(sex=frame["sex"].map({1.0: "one", 2.0: "two"}))


def spec_for(estimator: str, task: str, params: dict[str, Any] | None = None, **model: Any) -> Any:
    classification = task == "classification"
    raw: dict[str, Any] = {
        "name": f"{estimator}_{task[:5]}",
        "task": task,
        "data": {"source": "file:///dev/null"},
        "target": "target",
        "features": (
            {"numeric": CANCER}
            if classification
            else {"numeric": ["age", "bmi", "bp", "s1", "s3", "s5"], "categorical": ["sex"]}
        ),
        "model": {"estimator": estimator, "params": params or {}, "seed": 11, **model},
        "evaluation": {"primary_metric": "roc_auc" if classification else "rmse"},
    }
    return parse_spec(json.dumps(raw))


#: Small but sensible settings per estimator (and the diabetes target's scale for SVR).
SMALL: dict[tuple[str, str], dict[str, Any]] = {
    ("linear_regression", "regression"): {},
    ("lasso", "regression"): {"alpha": 0.5},
    ("elastic_net", "regression"): {"alpha": 0.1, "l1_ratio": 0.7, "selection": "random"},
    ("logistic_regression", "classification"): {"penalty": "l1", "solver": "saga", "C": 0.5},
    ("sgd", "classification"): {"loss": "modified_huber", "penalty": "elasticnet", "l1_ratio": 0.3},
    ("sgd", "regression"): {"loss": "squared_error", "penalty": "l1", "alpha": 0.01},
    ("svm", "classification"): {"C": 2.0, "kernel": "rbf"},
    ("svm", "regression"): {"C": 100.0, "epsilon": 5.0},
    ("knn", "classification"): {"n_neighbors": 7, "weights": "distance"},
    ("knn", "regression"): {"n_neighbors": 9, "p": 1},
    ("extra_trees", "classification"): {"n_estimators": 20, "max_depth": 6},
    ("extra_trees", "regression"): {"n_estimators": 20, "min_samples_leaf": 5, "bootstrap": True},
    ("gradient_boosting", "classification"): {"n_estimators": 30, "max_depth": 2},
    ("gradient_boosting", "regression"): {"n_estimators": 30, "subsample": 0.8, "loss": "huber"},
    ("mlp", "classification"): {"hidden_units": 16, "max_iter": 300, "learning_rate_init": 0.01},
    ("mlp", "regression"): {"hidden_units": 8, "solver": "lbfgs", "max_iter": 1000},
}
NEW = sorted(SMALL, key=lambda c: (c[0], c[1]))


def test_every_new_estimator_and_task_has_a_case() -> None:
    old = {"hist_gradient_boosting", "random_forest", "ridge"}
    served = {(e, t) for e, info in ESTIMATORS.items() for t in info.tasks if e not in old}
    assert served == set(SMALL) | {("logistic_regression", "classification")}


@pytest.mark.parametrize(("estimator", "task"), NEW, ids=[f"{e}-{t}" for e, t in NEW])
def test_trains_loads_serves_and_reproduces(tmp_path: Path, estimator: str, task: str) -> None:
    classification = task == "classification"
    weighted = classification and ESTIMATORS[estimator].sample_weight
    extra = {"class_weight": "balanced"} if weighted else {}
    spec = spec_for(estimator, task, SMALL[(estimator, task)], **extra)
    df = cancer() if classification else diabetes()
    store = LocalStore(tmp_path / "store")
    ref = snapshot(df, [f"sklearn:{'breast_cancer' if classification else 'diabetes'}"], store)
    trained = train_candidate(spec, ref.hash, Trigger("cli", user="t"), "run-1", store, CODE)

    # minimum functionality on the holdout
    if classification:
        assert trained.metrics["roc_auc"] is not None and trained.metrics["roc_auc"] > 0.9
    else:
        assert trained.metrics["r2"] is not None and trained.metrics["r2"] > 0.2

    registry = Registry(store)
    meta = registry.get_version(spec.name, trained.version)
    assert meta.estimator == estimator and meta.params == SMALL[(estimator, task)]
    assert meta.class_weight == ("balanced" if weighted else None)
    model = registry.load(spec.name, trained.version, meta)  # what the service does
    rows = df[spec.features.all].head(25).to_dict("records")
    x = prepare_features(spec, df.head(25))
    compiled = compile_model(spec, model)
    pred, proba = predict_scores(spec, model, x)
    fast_pred, fast_proba = predict_scores(spec, compiled.estimator, compiled.encode(rows))
    assert np.array_equal(pred, fast_pred)
    if classification:
        assert proba is not None and fast_proba is not None
        assert ((proba >= 0) & (proba <= 1)).all()
        # the same matrix in another memory order: BLAS may round the last bit differently
        np.testing.assert_allclose(fast_proba, proba, rtol=0, atol=1e-12)

    result = reproduce(store, spec.name, trained.version, CODE)
    assert result.identical, result.notes
    assert result.artifact_sha256 == meta.model_sha256


def _train(spec: Any) -> Any:
    return fit_and_score(spec, cancer(), threads=1)


def test_class_weights_move_the_positive_probability() -> None:
    plain = spec_for("logistic_regression", "classification", {"C": 0.05})
    heavy = spec_for("logistic_regression", "classification", {"C": 0.05}, class_weight={"1": 20})
    light = spec_for("logistic_regression", "classification", {"C": 0.05}, class_weight={"1": 0.05})
    x = prepare_features(plain, cancer())

    def mean_probability(spec: Any) -> float:
        pipeline = build_pipeline(spec)
        y = cancer()["target"].to_numpy()
        pipeline.fit(x, y, model__sample_weight=sample_weights(spec, y))
        return float(predict_scores(spec, pipeline, x)[1].mean())

    assert mean_probability(light) < mean_probability(plain) < mean_probability(heavy)


def test_balanced_weights_and_the_weights_of_unlisted_labels() -> None:
    spec = spec_for("random_forest", "classification", class_weight="balanced")
    y = np.array([0, 0, 0, 1])
    assert sample_weights(spec, y).tolist() == [4 / 6, 4 / 6, 4 / 6, 2.0]
    spec = spec_for("random_forest", "classification", class_weight={"1": 3})
    assert sample_weights(spec, y).tolist() == [1.0, 1.0, 1.0, 3.0]
    assert sample_weights(spec_for("random_forest", "classification"), y) is None


def test_a_weighted_label_missing_from_the_training_rows_is_a_data_error() -> None:
    spec = spec_for("gradient_boosting", "classification").model_copy(
        update={"positive_class": "yes"}
    )
    spec = spec.model_copy(
        update={"model": spec.model.model_copy(update={"class_weight": {"maybe": 2.0}})}
    )
    with pytest.raises(DataError, match="names \\['maybe'\\], not labels"):
        sample_weights(spec, np.array(["yes", "no", "no"]))


def test_class_weight_is_part_of_the_spec_hash_only_when_given() -> None:
    plain = spec_for("svm", "classification")
    assert "class_weight" not in plain.model_dump()["model"]  # older specs keep their hash
    weighted = spec_for("svm", "classification", class_weight="balanced")
    assert weighted.spec_hash() != plain.spec_hash()


def test_penalty_none_is_unregularised_and_deterministic() -> None:
    spec = spec_for("logistic_regression", "classification", {"penalty": "none", "max_iter": 5000})
    first, second = _train(spec), _train(spec)
    assert first.artifact == second.artifact
    fitted = build_pipeline(spec).named_steps["model"]
    assert math.isinf(fitted.C) and fitted.l1_ratio == 0.0


@pytest.mark.parametrize(
    ("estimator", "task", "model", "field", "message"),
    [
        pytest.param(
            "logistic_regression",
            "classification",
            {"params": {"penalty": "l1"}},
            "model.params.penalty",
            "solver 'lbfgs' \\(the default\\) does not take penalty 'l1'; give solver: one of "
            "liblinear, saga",
            id="l1-needs-a-solver",
        ),
        pytest.param(
            "logistic_regression",
            "classification",
            {"params": {"penalty": "elasticnet", "solver": "liblinear", "l1_ratio": 0.5}},
            "model.params.penalty",
            "solver 'liblinear' does not take penalty 'elasticnet'",
            id="elasticnet-only-saga",
        ),
        pytest.param(
            "logistic_regression",
            "classification",
            {"params": {"penalty": "elasticnet", "solver": "saga"}},
            "model.params.l1_ratio",
            "needs l1_ratio",
            id="elasticnet-needs-l1-ratio",
        ),
        pytest.param(
            "logistic_regression",
            "classification",
            {"params": {"l1_ratio": 0.5}},
            "model.params.l1_ratio",
            "only an elasticnet penalty",
            id="l1-ratio-without-elasticnet",
        ),
        pytest.param(
            "logistic_regression",
            "classification",
            {"params": {"penalty": "none", "C": 3.0}},
            "model.params.C",
            "no regularisation strength",
            id="no-penalty-no-C",
        ),
        pytest.param(
            "logistic_regression",
            "classification",
            {"params": {"penalty": "ridge"}},
            "model.params.penalty",
            "must be one of \\['l2', 'l1', 'elasticnet', 'none'\\]",
            id="unknown-penalty",
        ),
        pytest.param(
            "sgd",
            "classification",
            {"params": {"loss": "hinge"}},
            "model.params.loss",
            "must be one of \\['log_loss', 'modified_huber'\\]",
            id="sgd-loss-without-probabilities",
        ),
        pytest.param(
            "sgd",
            "classification",
            {"params": {"loss": "squared_error"}},
            "model.params.loss",
            "must be one of",
            id="sgd-regression-loss-on-a-classifier",
        ),
        pytest.param(
            "svm",
            "classification",
            {"params": {"epsilon": 0.1}},
            "model.params.epsilon",
            "unknown parameter 'epsilon' for estimator 'svm' on classification",
            id="svr-param-on-a-classifier",
        ),
        pytest.param(
            "mlp",
            "regression",
            {"params": {"hidden_layers": 9}},
            "model.params.hidden_layers",
            "must be <= 5",
            id="mlp-too-deep",
        ),
        pytest.param(
            "knn",
            "classification",
            {"params": {"n_neighbors": 1.5}},
            "model.params.n_neighbors",
            "must be of type integer",
            id="knn-fractional-neighbours",
        ),
        pytest.param(
            "lasso",
            "regression",
            {"class_weight": "balanced"},
            "model.class_weight",
            "only a classification model weights classes",
            id="class-weight-on-a-regressor",
        ),
        pytest.param(
            "knn",
            "classification",
            {"class_weight": "balanced"},
            "model.class_weight",
            "estimator 'knn' cannot weight classes",
            id="class-weight-on-knn",
        ),
        pytest.param(
            "svm",
            "classification",
            {"class_weight": {"yes": 2}},
            "model.class_weight",
            "are not labels",
            id="class-weight-unknown-label",
        ),
        pytest.param(
            "svm",
            "classification",
            {"class_weight": {"1": 0}},
            "model.class_weight",
            "greater than 0",
            id="class-weight-zero",
        ),
        pytest.param(
            "svm",
            "classification",
            {"class_weight": "unbalanced"},
            "model.class_weight",
            "balanced",
            id="class-weight-unknown-mode",
        ),
    ],
)
def test_wrong_params_name_their_field(
    estimator: str, task: str, model: dict[str, Any], field: str, message: str
) -> None:
    with pytest.raises(SpecError, match=message) as info:
        spec_for(estimator, task, **model)
    assert f"  {field}" in str(info.value)


def test_hyperparameter_overrides_are_checked_as_combinations() -> None:
    spec = spec_for("logistic_regression", "classification", {"solver": "saga"})
    assert spec.with_params({"penalty": "l1"}).model.params["penalty"] == "l1"
    with pytest.raises(SpecError, match=r"model\.params\.penalty"):
        spec_for("logistic_regression", "classification").with_params({"penalty": "l1"})


# Property: whatever the spec accepts, scikit-learn accepts --------------------------------
#: Params that only make a fit longer: drawn small for the tiny fit, their bounds are checked
#: against scikit-learn's own constraints at full range.
COST = {"max_iter", "n_estimators", "hidden_units", "hidden_layers", "n_neighbors", "degree"}
CASES = [(e, t) for e, info in ESTIMATORS.items() for t in info.tasks]


def _value(rule: ParamRule, cost: bool) -> st.SearchStrategy[Any]:
    if rule.enum is not None:
        return st.sampled_from(rule.enum)
    if rule.type == "boolean":
        return st.booleans()
    lo, hi = rule.minimum, rule.maximum
    if rule.type == "integer":
        lo_i = int(lo) if lo is not None else -(2**31)
        hi_i = int(hi) if hi is not None else 2**31
        if cost:
            hi_i = min(hi_i, lo_i + 4)
        values: st.SearchStrategy[Any] = st.integers(lo_i, hi_i)
    else:
        values = st.floats(lo, hi, allow_nan=False, allow_infinity=False)
    return st.one_of(st.none(), values) if rule.nullable else values


def _params(estimator: str, task: str) -> st.SearchStrategy[dict[str, Any]]:
    rules = ESTIMATORS[estimator].rules(task)
    return st.fixed_dictionaries(
        {}, optional={name: _value(rule, name in COST) for name, rule in rules.items()}
    )


@cache
def _tiny(task: str) -> pd.DataFrame:
    frame = cancer() if task == "classification" else diabetes()
    return frame.sample(60, random_state=0).reset_index(drop=True)


@pytest.mark.parametrize(("estimator", "task"), CASES, ids=[f"{e}-{t}" for e, t in CASES])
def test_accepted_params_build_an_estimator_sklearn_fits(estimator: str, task: str) -> None:
    import warnings

    @settings(
        max_examples=4,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow],
    )
    @given(params=_params(estimator, task))
    def check(params: dict[str, Any]) -> None:
        try:
            check_params(estimator, params, task)
        except ValueError:
            assume(False)
        spec = spec_for(estimator, task, params)
        pipeline = build_pipeline(spec)
        model = pipeline.named_steps["model"]
        inner = getattr(model, "estimator", model)  # the calibrated SVC
        inner.set_params(**inner.get_params())
        inner._validate_params()  # scikit-learn's own constraints, at any size
        df = _tiny(task)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence warnings of a 60-row fit
            pipeline.fit(prepare_features(spec, df), df["target"].to_numpy())
            pred, proba = predict_scores(spec, pipeline, prepare_features(spec, df))
        metrics = compute_metrics(task, df["target"].to_numpy(), pred, proba, spec)
        assert metrics  # scored without error
        if task == "classification":
            assert proba is not None and np.isfinite(proba).all()

    check()


def test_the_readme_lists_every_estimator_and_param() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    table = readme[readme.index("### Estimators") :]
    for estimator, info in ESTIMATORS.items():
        row = next(line for line in table.splitlines() if line.startswith(f"| `{estimator}` |"))
        for name in info.rules():
            assert f"`{name}` (" in row, (estimator, name)
