"""`model.estimator: custom`: a team's own estimator class by dotted path, on the raw Palmer
penguins table (`tests/penguins.py`), through the whole CLI loop: trained, its exact types
recorded in the version and trusted on load only from `MLOPS_TRUSTED_PACKAGES`, gated,
deployed, served and reproduced bit for bit. And what a careless or hostile package, spec or
store gets instead: a clear refusal before anything is registered or constructed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient

from mlops_tasks.errors import IntegrityError, SpecError, UsageError
from mlops_tasks.registry import Registry
from mlops_tasks.serving.app import create_app
from mlops_tasks.settings import Settings
from mlops_tasks.specs import parse_spec
from mlops_tasks.storage import LocalStore
from tests.conftest import REPO
from tests.flowkit import Loop
from tests.penguins import raw_table, write_batches

pytestmark = [pytest.mark.integration]

MODEL = "penguin_species"
CLASS = "tests.custom_estimators.ShrunkenCentroidClassifier"


def spec_text(**model: object) -> str:
    raw = yaml.safe_load((REPO / "docs" / "examples" / f"{MODEL}.yaml").read_text())
    raw["model"] = {"estimator": "custom", "class_path": CLASS, "params": {}, **model}
    return yaml.safe_dump(raw, sort_keys=False)


def make_loop(root: Path, text: str) -> Loop:
    specs = root / "specs"
    specs.mkdir()
    (specs / f"{MODEL}.yaml").write_text(text)
    run = Loop(LocalStore(root / "store"), specs)
    write_batches(run.store)
    return run


def retrain(run: Loop) -> tuple[int, str]:
    code, _, err = run.mlops("run", "retrain", "--model", MODEL, "--as-of", "2009-12-01")
    return code, err


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory) -> Loop:
    run = make_loop(tmp_path_factory.mktemp("custom"), spec_text(params={"shrinkage": 0.1}))
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLOPS_SERVING_URL", raising=False)
        mp.setenv("MLOPS_TRUSTED_PACKAGES", "tests")
        code, err = retrain(run)
    assert code == 0, err
    return run


def trusted(store: LocalStore) -> LocalStore:
    store.trusted_packages = ("tests",)
    return store


def test_a_custom_class_trains_records_its_types_and_is_promoted(loop: Loop) -> None:
    registry = Registry(trusted(LocalStore(loop.store.root)))
    assert registry.alias(MODEL) == 1
    meta = registry.get_version(MODEL, 1)
    assert meta.estimator == "custom" and meta.params == {"shrinkage": 0.1}
    assert meta.custom is not None and meta.custom.class_path == CLASS
    assert meta.custom.types == (CLASS,)  # exactly its own class: the rest is the platform's
    assert meta.metrics["macro_f1"] >= 0.9
    model = registry.load(MODEL, 1)
    assert type(model.steps[-1][1]).__name__ == "ShrunkenCentroidClassifier"
    uri = (meta.evaluation or {})["report_uri"]
    card = loop.store.get_bytes(uri.split("/store/", 1)[1]).decode()
    assert f"custom {CLASS}" in card and "trusted types" in card
    code, out, _ = loop.mlops("show", MODEL, "1")
    assert code == 0 and CLASS in json.dumps(out)


def test_the_service_serves_it_only_where_its_package_is_trusted(loop: Loop) -> None:
    inputs = ["Culmen Length (mm)", "Culmen Depth (mm)", "Flipper Length (mm)", "Body Mass (g)"]
    table = raw_table().dropna(subset=inputs).head(3)[[*inputs, "Island", "Sex"]]
    rows = json.loads(table.to_json(orient="records"))  # blanks as null
    env = {"MLOPS_STORE": loop.store.uri, "MLOPS_TRUSTED_PACKAGES": "tests"}
    settings = Settings.from_env(env)
    app = create_app(settings, settings.open_store(), loop.specs, poll_seconds=3600)
    with TestClient(app) as client:
        assert client.get("/readyz").status_code == 200
        resp = client.post(f"/v1/models/{MODEL}/predict", json={"records": rows})
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["version"] == 1 and len(body["predictions"]) == 3
    # A service whose deployment does not trust the package serves nothing for the model.
    bare = Settings.from_env({"MLOPS_STORE": loop.store.uri})
    app = create_app(bare, bare.open_store(), loop.specs, poll_seconds=3600)
    with TestClient(app) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert "MLOPS_TRUSTED_PACKAGES" in ready.json()["models"][MODEL]["error"]


def test_it_reproduces_bit_for_bit(loop: Loop, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLOPS_TRUSTED_PACKAGES", "tests")
    code, out, err = loop.mlops("reproduce", MODEL, "1")
    assert code == 0, err
    assert out["identical"] is True


def test_recorded_types_that_differ_from_the_artifact_are_refused(
    loop: Loop, tmp_path: Path
) -> None:
    """An unsigned store's metadata edited to trust more: refused before anything is built."""
    import shutil

    copy = tmp_path / "store"
    shutil.copytree(loop.store.root, copy)
    store = trusted(LocalStore(copy))
    key = f"models/{MODEL}/versions/1/metadata.json"
    doc = json.loads(store.get_bytes(key))
    doc["custom"]["types"] = [CLASS, "tests.custom_estimators.HookedClassifier"]
    store.put_bytes(key, json.dumps(doc).encode())
    with pytest.raises(IntegrityError, match="not the ones its version recorded"):
        Registry(store).load(MODEL, 1)
    doc["custom"]["types"] = [CLASS, "builtins.eval"]
    store.put_bytes(key, json.dumps(doc).encode())
    with pytest.raises(IntegrityError, match="not the ones its version recorded"):
        Registry(store).load(MODEL, 1)


def train_again(loop: Loop, packages: tuple[str, ...], class_path: str = CLASS) -> None:
    """Train the spec (with `class_path`) on version 1's snapshot, trusting `packages`."""
    from mlops_tasks.model.training import train_candidate
    from mlops_tasks.records import Trigger

    store = LocalStore(loop.store.root)
    store.trusted_packages = packages
    snapshot = Registry(store).get_version(MODEL, 1).dataset.train
    train_candidate(
        spec(class_path=class_path),  # type: ignore[arg-type]
        snapshot,
        Trigger("cli", user="pytest"),
        f"again-{class_path}-{packages}",
        store,
        {},
    )


def test_without_a_trusted_package_nothing_is_registered(loop: Loop) -> None:
    with pytest.raises(IntegrityError, match="MLOPS_TRUSTED_PACKAGES is not set") as err:
        train_again(loop, ())
    assert CLASS in str(err.value)
    with pytest.raises(IntegrityError, match=r"outside the trusted packages \(acme\)"):
        train_again(loop, ("acme",))
    assert [v.version for v in Registry(loop.store).versions(MODEL)] == [1]


def test_a_class_holding_a_callable_from_elsewhere_is_never_registered(loop: Loop) -> None:
    with pytest.raises(IntegrityError, match=r"builtins\.eval"):
        train_again(loop, ("tests",), "tests.custom_estimators.HookedClassifier")
    assert [v.version for v in Registry(loop.store).versions(MODEL)] == [1]


def spec(**model: object) -> object:
    return parse_spec(spec_text(**model), source="custom.yaml")


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ({"class_path": None}, "class_path: estimator custom needs the class"),
        ({"class_path": "Scorer"}, "not a dotted path"),
        ({"class_path": "os.system"}, "not from 'os'"),
        ({"class_path": "builtins.eval"}, "not from 'builtins'"),
        ({"class_path": "subprocess.Popen"}, "not from 'subprocess'"),
        ({"class_path": "airflow.models.Variable"}, "not from 'airflow'"),
        ({"class_path": "mlops_tasks.model.training.Fit"}, "not from 'mlops_tasks'"),
        ({"class_path": "a.b; import os"}, "not a dotted path"),
        ({"params": {"shrinkage": float("nan")}}, "params.shrinkage: must be a finite number"),
        ({"params": {"not valid": 1}}, "not a Python argument name"),
        ({"estimator": "knn"}, "only estimator custom takes a class"),
        (
            {"search": {"n_iter": 2, "params": {"shrinkage": {"low": 0.0, "high": 1.0}}}},
            "model.search: a custom estimator's params have no declared types",
        ),
    ],
)
def test_spec_errors_name_the_field(model: dict[str, object], message: str) -> None:
    with pytest.raises(SpecError, match="model") as err:
        spec(**model)
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("class_path", "params", "message"),
    [
        ("tests.no_such_module.Scorer", {}, "cannot import 'tests.no_such_module'"),
        ("tests.custom_estimators.Missing", {}, "has no class 'Missing'"),
        ("tests.custom_estimators.NotAnEstimator", {}, "not a scikit-learn estimator"),
        ("tests.custom_estimators.MeanRegressor", {}, "not a classifier with predict_proba"),
        ("tests.custom_estimators.NeedsArguments", {}, "fails with no arguments"),
        (CLASS, {"depth": 3}, "takes no parameter depth; it takes: shrinkage, temperature"),
    ],
)
def test_training_names_what_is_wrong_with_the_class(
    class_path: str, params: dict[str, object], message: str
) -> None:
    from mlops_tasks.model.modelling import build_pipeline

    with pytest.raises(SpecError, match=r"model\.") as err:
        build_pipeline(spec(class_path=class_path, params=params))  # type: ignore[arg-type]
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("value", "message"),
    [("os", "not from 'os'"), ("a.b", "not a top-level package"), ("airflow", "'airflow'")],
)
def test_trusted_packages_refuse_the_standard_library(value: str, message: str) -> None:
    with pytest.raises(UsageError, match="MLOPS_TRUSTED_PACKAGES") as err:
        Settings.from_env({"MLOPS_TRUSTED_PACKAGES": value})
    assert message in str(err.value)
    assert Settings.from_env({"MLOPS_TRUSTED_PACKAGES": " acme , tests,acme"}).trusted_packages == (
        "acme",
        "tests",
    )


def test_validate_spec_imports_the_class_and_checks_its_package_is_trusted(
    loop: Loop, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = str(loop.specs / f"{MODEL}.yaml")
    monkeypatch.delenv("MLOPS_TRUSTED_PACKAGES", raising=False)
    code, out, _ = loop.mlops("validate-spec", path)
    assert code == SpecError.exit_code
    assert "package 'tests' is not in MLOPS_TRUSTED_PACKAGES (not set)" in out[0]["error"]
    monkeypatch.setenv("MLOPS_TRUSTED_PACKAGES", "tests")
    code, out, _ = loop.mlops("validate-spec", path)
    assert code == 0 and out[0]["ok"]
    (loop.specs.parent / "broken").mkdir()
    broken = loop.specs.parent / "broken" / f"{MODEL}.yaml"
    broken.write_text(spec_text(class_path="tests.custom_estimators.NotAnEstimator"))
    code, out, _ = loop.mlops("validate-spec", str(broken))
    assert code == SpecError.exit_code and "not a scikit-learn estimator" in out[0]["error"]
