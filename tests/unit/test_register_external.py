"""`mlops register`: a model trained elsewhere, with plain scikit-learn on demo data the
platform never saw, saved with skops and brought to a real store where the platform's own
retrain made production v1. It is scored on the platform's holdout, gated against v1, audited
with who brought it, deployed, served, monitored and rolled back; a worse one is rejected; a
file with an untrusted type, the wrong columns or the wrong classes is refused naming them,
before anything is written."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, MinMaxScaler, OneHotEncoder, StandardScaler

from mlops_tasks.cli import main
from mlops_tasks.data import synthetic
from mlops_tasks.errors import GateFailed, IncompatibleModel, IntegrityError, NotReproducible
from mlops_tasks.flow.flows import BRING, CLI_FLOWS, REGISTER, RETRAIN, TRAIN
from mlops_tasks.model.modelling import prepare_features
from mlops_tasks.registry import Registry
from mlops_tasks.specs import ModelSpec, find_spec
from mlops_tasks.storage import LocalStore
from tests.conftest import REPO
from tests.flowkit import retrain

MODEL = "credit_default"
AS_OF = "2026-03-07"
START = date(2026, 3, 1)


@dataclass(frozen=True)
class World:
    """A store with six days of batches and production v1 trained by the platform."""

    root: Path
    spec_dir: Path

    @property
    def store(self) -> LocalStore:
        return LocalStore(self.root / "store")

    @property
    def spec(self) -> ModelSpec:
        return find_spec(MODEL, self.spec_dir)

    def cli(self, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
        capsys.readouterr()  # only what the command writes
        code = main([*argv, "--store", self.store.uri, "--spec-dir", str(self.spec_dir)])
        out = capsys.readouterr()
        return code, out.out, out.err

    def bring(
        self, capsys: pytest.CaptureFixture[str], model: Any, *extra: str
    ) -> tuple[int, str, str]:
        path = self.root / "elsewhere" / "model.skops"
        path.parent.mkdir(exist_ok=True)
        sio.dump(model, path)
        return self.cli(
            capsys, "register", MODEL, "--artifact", str(path), "--as-of", AS_OF, *extra
        )

    def written(self) -> set[str]:
        return set(self.store.list_keys(""))


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> World:
    root = tmp_path_factory.mktemp("register")
    spec_dir = root / "specs"
    spec_dir.mkdir()
    doc = yaml.safe_load((REPO / "dags" / "specs" / f"{MODEL}.yaml").read_text())
    doc["model"]["params"]["max_iter"] = 20  # a modest production model, trained in a second
    (spec_dir / f"{MODEL}.yaml").write_text(yaml.safe_dump(doc))
    world = World(root, spec_dir)
    synthetic.write_batches(start=START, days=6, rows_per_day=1000, store=world.store)
    as_of = datetime(2026, 3, 7, 23, 59, 59, tzinfo=UTC)
    run = retrain(world.spec, world.store, as_of=as_of)
    assert Registry(world.store).alias(MODEL) == run[TRAIN].version == 1
    return world


@pytest.fixture
def world(base: World, tmp_path: Path) -> World:
    """A copy of `base` of the test's own."""
    shutil.copytree(base.root / "store", tmp_path / "store")
    return World(tmp_path, base.spec_dir)


def elsewhere(rows: int = 3000) -> pd.DataFrame:
    """Data the platform never saw: other days, another seed."""
    days = [
        synthetic.generate_day(date(2026, 1, 1) + timedelta(d), rows // 3, seed=99)
        for d in (0, 1, 2)
    ]
    return pd.concat(days, ignore_index=True)


def pipeline(
    spec: ModelSpec,
    estimator: Any = None,
    scaler: Any = None,
    numeric_step: Any = None,
) -> Pipeline:
    """Plain scikit-learn, written the way a data scientist would."""
    numeric = Pipeline(
        [
            ("impute", numeric_step or SimpleImputer(strategy="median")),
            ("scale", scaler or StandardScaler()),
        ]
    )
    categorical = Pipeline(
        [
            ("impute", SimpleImputer(strategy="constant", fill_value="__missing__")),
            ("encode", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
        ]
    )
    pre = ColumnTransformer(
        [
            ("numeric", numeric, spec.features.numeric),
            ("categorical", categorical, spec.features.categorical),
        ]
    )
    return Pipeline(
        [("preprocess", pre), ("model", estimator or LogisticRegression(max_iter=1000))]
    )


def fitted(spec: ModelSpec, labels: Any = None, **kwargs: Any) -> Pipeline:
    df = elsewhere()
    y = df[spec.target] if labels is None else labels(df[spec.target])
    return pipeline(spec, **kwargs).fit(df[spec.features.all], y)


def _arbitrary(x: Any) -> Any:
    """Any function at all: a FunctionTransformer would call it on every request."""
    return x


# Registered, gated, audited, deployed, served ------------------------------------------------
def test_an_external_model_is_gated_audited_deployed_and_served(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    from fastapi.testclient import TestClient

    from mlops_tasks.serving.app import create_app
    from mlops_tasks.settings import Settings

    spec = world.spec
    model = fitted(spec)
    code, out, err = world.bring(capsys, model, "--actor", "alice", "--reason", "vendor model")
    assert code == 0, err
    assert "v2 passed its gate and was deployed" in out
    digest = hashlib.sha256((world.root / "elsewhere" / "model.skops").read_bytes()).hexdigest()

    registry = Registry(world.store)
    v = registry.get_version(MODEL, 2)
    assert v.status == "production" and registry.alias(MODEL) == 2
    assert (v.triggered_by.kind, v.triggered_by.user, v.triggered_by.reason) == (
        "external",
        "alice",
        "vendor model",
    )
    assert v.external is not None
    assert (v.external.file, v.external.sha256, v.external.brought_by) == (
        "model.skops",
        digest,
        "alice",
    )
    assert v.model_sha256 == digest  # stored byte for byte as brought
    assert v.estimator == "logistic_regression" and v.params["max_iter"] == 1000
    assert v.dataset.train == registry.get_version(MODEL, 1).dataset.train  # the same window
    decision = (v.evaluation or {})["decision"]
    assert decision["passed"] and decision["compared_to"] == 1
    assert any(c["name"] == "champion" for c in decision["checks"])

    (register,) = [e for e in registry.audit(MODEL, "register") if e["to_version"] == 2]
    assert register["actor"] == "alice" and register["reason"] == "vendor model"
    assert register["details"]["model_sha256"] == digest
    assert register["details"]["external"]["file"] == "model.skops"
    (promote,) = [e for e in registry.audit(MODEL, "promote") if e["to_version"] == 2]
    assert (promote["actor"], promote["reason"]) == ("alice", "vendor model")
    assert promote["details"]["triggered_by"]["kind"] == "external"
    assert registry.verify(MODEL).ok

    rows = synthetic.generate_day(date(2026, 3, 8), 50, seed=5)
    loaded = registry.load(MODEL, 2)
    x = prepare_features(spec, rows)
    np.testing.assert_array_equal(loaded.predict_proba(x), model.predict_proba(x))
    settings = Settings.from_env({**os.environ, "MLOPS_STORE": world.store.uri})
    app = create_app(settings, world.store, world.spec_dir, api_tokens=[], log_flush_seconds=60)
    records = synthetic.feature_records(rows, spec.features.all)
    with TestClient(app) as client:
        answer = client.post(f"/v1/models/{MODEL}/predict", json={"records": records}).json()
    assert answer["version"] == 2
    np.testing.assert_allclose(answer["probabilities"], model.predict_proba(x)[:, 1], rtol=1e-9)

    code, out, _ = world.cli(capsys, "versions", MODEL)
    assert code == 0 and "external" in out.splitlines()[-1]
    code, out, _ = world.cli(capsys, "show", MODEL, "2")
    assert "external by alice: vendor model" in out and "brought" in out and digest in out


def test_monitor_rollback_and_reproduce_treat_it_as_a_version_not_trained_here(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    assert world.bring(capsys, fitted(world.spec), "--actor", "alice")[0] == 0
    code, out, err = world.cli(
        capsys, "run", "monitor", "--model", MODEL, "--as-of", AS_OF, "--json"
    )
    assert code == 0, err
    monitor = json.loads(out)["monitor"]
    assert monitor["outputs"]["load_reference"]["version"] == 2

    code, out, err = world.cli(capsys, "reproduce", MODEL, "2")
    assert code == NotReproducible.exit_code and "Traceback" not in err
    assert "cannot be rebuilt: it was not trained here but brought by alice as model.skops" in err
    code, _, err = world.cli(capsys, "reproduce", MODEL, "1")
    assert code == 0, err  # the platform's own version still rebuilds

    code, out, _ = world.cli(capsys, "rollback", MODEL, "--reason", "back to ours")
    assert code == 0 and "v2 -> v1" in out


def test_a_worse_external_model_is_rejected_by_the_gate(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    def shuffled(y: pd.Series) -> np.ndarray:
        return np.random.default_rng(0).permutation(y.to_numpy())

    code, _, err = world.bring(capsys, fitted(world.spec, labels=shuffled), "--actor", "bob")
    assert code == GateFailed.exit_code and "v2 failed its gate" in err and "roc_auc" in err
    registry = Registry(world.store)
    assert registry.alias(MODEL) == 1 and registry.get_version(MODEL, 2).status == "rejected"
    (reject,) = registry.audit(MODEL, "reject")
    assert reject["to_version"] == 2 and reject["actor"] == "bob"


# Refused before anything is written -----------------------------------------------------------
def refused(world: World, capsys: pytest.CaptureFixture[str], model: Any) -> tuple[int, str]:
    before = world.written()
    code, out, err = world.bring(capsys, model)
    assert "Traceback" not in err and out == ""
    assert world.written() == before  # no snapshot, report, run record, version or event
    return code, err


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        pytest.param(
            {"numeric_step": FunctionTransformer(_arbitrary)},
            "sklearn.preprocessing._function_transformer.FunctionTransformer",
            id="function-transformer",
        ),
        pytest.param(
            {"scaler": MinMaxScaler()}, "sklearn.preprocessing._data.MinMaxScaler", id="min-max"
        ),
    ],
)
def test_an_untrusted_type_is_refused_naming_it(
    world: World, capsys: pytest.CaptureFixture[str], kwargs: dict[str, Any], named: str
) -> None:
    code, err = refused(world, capsys, fitted(world.spec, **kwargs))
    assert code == IntegrityError.exit_code
    assert "untrusted types" in err and named in err and "refusing to load" in err


def test_the_wrong_feature_columns_are_refused_naming_them(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = world.spec
    df = elsewhere().rename(columns={"age": "age_years"})
    numeric = ["age_years", *[c for c in spec.features.numeric if c != "age"]]
    other = spec.model_copy(
        update={"features": spec.features.model_copy(update={"numeric": numeric})}
    )
    model = pipeline(other).fit(df[other.features.all], df[spec.target])
    code, err = refused(world, capsys, model)
    assert code == IncompatibleModel.exit_code
    assert "not features of the spec: ['age_years']" in err
    assert "spec features it does not take: ['age']" in err


def test_a_model_fitted_without_column_names_is_refused(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    df = elsewhere()
    numeric = world.spec.features.numeric
    model = Pipeline([("impute", SimpleImputer()), ("model", LogisticRegression(max_iter=1000))])
    model.fit(df[numeric].to_numpy(), df[world.spec.target])
    code, err = refused(world, capsys, model)
    assert code == IncompatibleModel.exit_code and "fitted without column names" in err


@pytest.mark.parametrize(
    ("labels", "estimator", "message"),
    [
        pytest.param(
            lambda y: y.map({0: "no", 1: "yes"}),
            None,
            "its classes are ['no', 'yes']; the spec's target 'default' has two labels, 0 and 1",
            id="other-labels",
        ),
        pytest.param(
            lambda y: y.astype(float), Ridge(), "not a classification estimator", id="regressor"
        ),
    ],
)
def test_the_wrong_classes_or_task_are_refused(
    world: World, capsys: pytest.CaptureFixture[str], labels: Any, estimator: Any, message: str
) -> None:
    code, err = refused(world, capsys, fitted(world.spec, labels=labels, estimator=estimator))
    assert code == IncompatibleModel.exit_code and message in err


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_random_or_truncated_files_are_a_clear_error(
    world: World, capsys: pytest.CaptureFixture[str], data: st.DataObject
) -> None:
    good = sio.dumps(Pipeline([("model", LogisticRegression())]))
    blob = data.draw(
        st.one_of(
            st.binary(max_size=2000),
            st.integers(0, len(good) - 1).map(lambda n: good[:n]),
        )
    )
    path = world.root / "elsewhere.skops"
    path.write_bytes(blob)
    before = world.written()
    code, out, err = world.cli(capsys, "register", MODEL, "--artifact", str(path))
    assert code == IntegrityError.exit_code and out == ""
    assert err.startswith("error: elsewhere.skops: not a readable skops artifact")
    assert world.written() == before


def test_a_missing_file_is_a_usage_error(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = world.cli(capsys, "register", MODEL, "--artifact", str(world.root / "nope"))
    assert code == 2 and "cannot read it" in err


# The declaration ----------------------------------------------------
def test_the_register_flow_is_the_retrain_flow_with_the_fit_replaced() -> None:
    assert CLI_FLOWS["register"] is REGISTER
    names = [s.name for s in RETRAIN.steps]
    assert [s.name for s in REGISTER.steps] == [BRING.name if n == TRAIN.name else n for n in names]
    for mine, theirs in zip(REGISTER.steps, RETRAIN.steps, strict=True):
        assert (mine.function_ref, mine.ask is None) == (theirs.function_ref, theirs.ask is None)
        assert [d.replace(TRAIN.name, BRING.name) for d in theirs.depends_on] == list(
            mine.depends_on
        )
    approve = REGISTER.step("approve")
    assert approve.ask is not None and approve.ask.version_from == BRING.name
