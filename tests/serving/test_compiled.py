"""The compiled serving path against the full pipeline it replaces.

For every estimator the project allows (each task it serves), a real pipeline is fitted by
`training.fit_pipeline` on demo data with nulls and an integer-coded categorical feature; then
generated request rows (known and unseen categories, integer and boolean codes, the imputer's
own marker as text, nulls, numbers far outside the training range) go through both paths. The
encoded matrix must be identical and so must the predictions and probabilities; the row checks
must give the same `DataIssues` as `FeatureChecks` on the request frame."""

from __future__ import annotations

import functools
from datetime import date
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.base import clone

from mlops_tasks.data import synthetic
from mlops_tasks.data.profile import FeatureChecks, feature_profile
from mlops_tasks.model.modelling import predict_scores, prepare_features, records_frame
from mlops_tasks.model.training import fit_pipeline
from mlops_tasks.serving.compiled import MISSING, NotCompiled, RowChecks, compile_model
from mlops_tasks.specs import ESTIMATORS, ModelSpec, find_spec
from tests.conftest import REPO

SMALL = {  # parameters that keep each fit under a second
    "hist_gradient_boosting": {"max_iter": 15},
    "random_forest": {"n_estimators": 8, "max_depth": 6},
    "logistic_regression": {"max_iter": 500},
    "ridge": {},
    "extra_trees": {"n_estimators": 8, "max_depth": 6},
    "gradient_boosting": {"n_estimators": 15},
    "sgd": {},
    "svm": {},
    "knn": {"n_neighbors": 5},
    "mlp": {"hidden_units": 8, "max_iter": 30},
    "linear_regression": {},
    "lasso": {"alpha": 0.1},
    "elastic_net": {"alpha": 0.1, "l1_ratio": 0.5},
}
CASES = [
    pytest.param(estimator, task, id=f"{estimator}-{task}")
    for estimator, info in ESTIMATORS.items()
    for task in info.tasks
]
BASE = {"classification": "credit_default", "regression": "customer_spend"}


def test_cases_cover_every_estimator() -> None:
    assert set(SMALL) == set(ESTIMATORS)


@functools.cache
def fitted(estimator: str, task: str) -> tuple[ModelSpec, Any]:
    """A pipeline of `estimator` fitted on demo rows, one numeric column moved to the
    categorical features (integer-coded categories) and some values blanked (nulls)."""
    base = find_spec(BASE[task], REPO / "dags" / "specs")
    numeric = [c for c in base.features.numeric if c != "num_dependents"]
    features = base.features.model_copy(
        update={"numeric": numeric, "categorical": [*base.features.categorical, "num_dependents"]}
    )
    model = base.model.model_copy(update={"estimator": estimator, "params": SMALL[estimator]})
    spec = base.model_copy(update={"features": features, "model": model})
    train = synthetic.generate_day(date(2026, 3, 1), 600, "stable", seed=5)
    rng = np.random.default_rng(0)
    for c in (numeric[0], spec.features.categorical[0]):
        train.loc[rng.random(len(train)) < 0.1, c] = None
    return spec, fit_pipeline(spec, train)


def known_categories(spec: ModelSpec, model: Any) -> dict[str, list[str]]:
    encoder = model.named_steps["preprocess"].named_transformers_["categorical"]
    cats = encoder.named_steps["encode"].categories_
    return {f: [str(c) for c in v] for f, v in zip(spec.features.categorical, cats, strict=True)}


def row_strategy(spec: ModelSpec, model: Any) -> st.SearchStrategy[dict[str, Any]]:
    cats = known_categories(spec, model)
    number = st.one_of(
        st.none(),
        st.floats(-1e6, 1e6, allow_nan=False),
        st.integers(-(10**6), 10**6),
        st.floats(allow_nan=False, allow_infinity=False, width=32),
    )
    fields: dict[str, Any] = {f: number for f in spec.features.numeric}
    for f in spec.features.categorical:
        fields[f] = st.one_of(
            st.none(),
            st.sampled_from(cats[f]),
            st.text(max_size=6),
            st.integers(-3, 12),
            st.booleans(),
            st.just(MISSING),
        )
    return st.fixed_dictionaries(fields)


@pytest.mark.parametrize(("estimator", "task"), CASES)
def test_compiled_path_matches_the_pipeline(estimator: str, task: str) -> None:
    spec, model = fitted(estimator, task)
    compiled = compile_model(spec, model)
    checks = FeatureChecks.build(spec, None, model)
    train = synthetic.generate_day(date(2026, 3, 1), 600, "stable", seed=5)
    profiled = FeatureChecks.build(
        spec, feature_profile(spec, prepare_features(spec, train)), model
    )

    @settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(row_strategy(spec, model), min_size=1, max_size=12))
    def same(rows: list[dict[str, Any]]) -> None:
        frame = records_frame(spec, rows)
        expected = model.named_steps["preprocess"].transform(frame)
        encoded = compiled.encode(rows)
        assert encoded.dtype == expected.dtype
        np.testing.assert_array_equal(encoded, expected)
        with np.errstate(all="ignore"):
            try:
                want = predict_scores(spec, model, frame)
            except ValueError as err:  # e.g. a forest's float32 overflow: the same refusal
                with pytest.raises(type(err)):
                    predict_scores(spec, compiled.estimator, encoded)
                return
            got = predict_scores(spec, compiled.estimator, encoded)
        np.testing.assert_array_equal(got[0], want[0])
        if want[1] is not None:
            np.testing.assert_allclose(got[1], want[1], rtol=0, atol=1e-12)
        for source in (checks, profiled):
            assert RowChecks(source).check(rows) == source.check(frame)

    same()


def test_a_pipeline_of_another_shape_is_not_compiled() -> None:
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    spec, model = fitted("ridge", "regression")
    other = Pipeline([("preprocess", FunctionTransformer()), ("model", model[-1])])
    with pytest.raises(NotCompiled, match="ColumnTransformer"):
        compile_model(spec, other)
    with pytest.raises(NotCompiled, match="pipeline"):
        compile_model(spec, model[-1])


def test_a_scaler_that_does_not_centre_is_compiled_as_it_transforms() -> None:
    """A model trained elsewhere (`mlops register`) may set what `build_pipeline` never does:
    a scaler with `with_mean=False` still fits `mean_`, which it must not subtract."""
    spec, platform = fitted("logistic_regression", "classification")
    model = clone(platform).set_params(preprocess__numeric__scale__with_mean=False)
    train = synthetic.generate_day(date(2026, 3, 1), 600, "stable", seed=5)
    model.fit(prepare_features(spec, train), train[spec.target])
    rows = synthetic.feature_records(train.head(40), spec.features.all)
    expected = model[0].transform(records_frame(spec, rows))
    np.testing.assert_array_equal(compile_model(spec, model).encode(rows), expected)


def test_a_version_the_compiler_refuses_is_served_by_its_pipeline(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import os

    from fastapi.testclient import TestClient

    from mlops_tasks.serving import models
    from mlops_tasks.serving.app import create_app
    from mlops_tasks.settings import Settings
    from tests.serving.support import records, trained

    store, spec_dir = trained()
    settings = Settings.from_env({**os.environ, "MLOPS_STORE": store.uri})
    rows = records("credit_default", 5)
    answers = []
    for compiled in (True, False):
        if not compiled:

            def refuse(spec: ModelSpec, model: Any) -> Any:
                raise NotCompiled("refused for the test")

            monkeypatch.setattr(models, "compile_model", refuse)
        app = create_app(settings, store, spec_dir, api_tokens=[])
        with caplog.at_level("WARNING"), TestClient(app) as client:
            assert (app.state.service.manager.slots["credit_default"].compiled is None) is (
                not compiled
            )
            out = client.post("/v1/models/credit_default/predict", json={"records": rows})
            answers.append({k: out.json()[k] for k in ("predictions", "probabilities")})
    assert answers[0] == answers[1]
    assert "served by its full pipeline (preprocessing not compiled: refused for the test)" in (
        caplog.text
    )
