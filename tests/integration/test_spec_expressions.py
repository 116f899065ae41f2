"""A model on a raw public table written as a spec alone: derived features, a derived target,
a scope, and rows without a label, through the `mlops` command and the prediction service.

The table is the raw Palmer penguins table (`tests/penguins.py`). The model predicts a
penguin's sex from its measurements, among nests whose clutch was completed: the target is
derived (`Sex = 'MALE'`), nests without a completed clutch are out of scope, and birds whose
sex was not recorded are unlabelled. None of those rows may quarantine a batch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from mlops_tasks.registry import Registry
from mlops_tasks.serving.app import create_app
from mlops_tasks.settings import Settings
from mlops_tasks.storage import LocalStore
from tests.conftest import REPO
from tests.flowkit import Loop
from tests.penguins import PREFIX, raw_table, write_batches

pytestmark = [pytest.mark.integration]

MODEL = "penguin_sex"
SPEC = (REPO / "docs" / "examples" / f"{MODEL}.yaml").read_text()


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory) -> Loop:
    root = tmp_path_factory.mktemp("penguins")
    specs = root / "specs"
    specs.mkdir()
    (specs / f"{MODEL}.yaml").write_text(SPEC)
    store = LocalStore(root / "store")
    write_batches(store)
    run = Loop(store, specs)
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLOPS_SERVING_URL", raising=False)
        code, _out, err = run.mlops("run", "retrain", "--model", MODEL, "--as-of", "2009-12-01")
    assert code == 0, err
    return run


def test_out_of_scope_and_unlabelled_rows_are_left_out_and_counted(loop: Loop) -> None:
    table = raw_table()
    in_scope = table[table["Clutch Completion"] == "Yes"]
    unlabelled = in_scope[~in_scope["Sex"].isin(["MALE", "FEMALE"])]
    version = Registry(loop.store).get_version(MODEL, 1)
    dataset = version.dataset
    assert dataset.out_of_scope == len(table) - len(in_scope) > 0
    assert dataset.unlabelled == len(unlabelled) > 0
    assert dataset.rows == len(in_scope) - len(unlabelled)
    code, quarantined, err = loop.mlops("quarantine", MODEL)
    assert code == 0, err
    assert quarantined == [] or quarantined.get("batches") == [], quarantined


def test_the_model_trained_on_the_derived_target_passes_its_gate(loop: Loop) -> None:
    assert Registry(loop.store).alias(MODEL) == 1
    metrics = Registry(loop.store).get_version(MODEL, 1).metrics
    assert metrics["roc_auc"] >= 0.8


def client(loop: Loop) -> TestClient:
    settings = Settings.from_env({})
    return TestClient(create_app(settings, loop.store, loop.specs, api_tokens=[]))


RAW = {
    "Date Egg": "2009-11-20",
    "Culmen Length (mm)": 46.5,
    "Culmen Depth (mm)": 17.9,
    "Body Mass (g)": 3500.0,
    "Flipper Length (mm)": 192.0,
    "Species": "Chinstrap penguin (Pygoscelis antarctica)",
    "Island": "Dream",
}


def test_serving_takes_the_raw_columns_and_derives_the_features_as_training_did(
    loop: Loop,
) -> None:
    with client(loop) as c:
        schema = c.get("/openapi.json").json()["components"]["schemas"]
        row = next(v for k, v in schema.items() if k.startswith(f"{MODEL}_row"))
        assert set(row["properties"]) == set(RAW)  # raw inputs, not the derived features
        male = {**RAW, "Body Mass (g)": 4800.0, "Culmen Depth (mm)": 19.5}
        got = c.post(f"/v1/models/{MODEL}/predict", json={"records": [RAW, male]})
        assert got.status_code == 200, got.text
        assert got.json()["predictions"] == [0, 1]
        # the same rows through the pipeline the version was trained with give the same answer
        from mlops_tasks.data.rows import derive, serving_derived
        from mlops_tasks.model.modelling import prepare_features
        from mlops_tasks.specs import find_spec

        spec = find_spec(MODEL, loop.specs)
        frame = derive(spec, pd.DataFrame([RAW, male]), "test", only=serving_derived(spec))
        model = Registry(loop.store).load(MODEL, 1)
        expected = model.predict_proba(prepare_features(spec, frame))[:, 1]
        assert got.json()["probabilities"] == pytest.approx(list(expected))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"Culmen Depth (mm)": "deep"}, None),  # refused by the row schema: not a number
        ({"Date Egg": "the day after"}, "data.derive.egg_month"),
    ],
)
def test_a_request_the_derivation_cannot_use_is_a_422_naming_the_field(
    loop: Loop, change: dict[str, Any], message: str | None
) -> None:
    with client(loop) as c:
        got = c.post(f"/v1/models/{MODEL}/predict", json={"records": [{**RAW, **change}]})
    assert got.status_code == 422, got.text
    if message:
        assert message in got.text


def test_a_batch_the_spec_cannot_be_evaluated_on_is_quarantined_naming_the_field(
    loop: Loop,
) -> None:
    rows = raw_table().head(20).drop(columns=["Date Egg"])
    loop.store.put_bytes(f"{PREFIX}/dt=2009-12-02/part-0.csv", rows.to_csv(index=False).encode())
    code, _, err = loop.mlops("run", "retrain", "--model", MODEL, "--as-of", "2009-12-02")
    assert code == 0, err
    code, quarantined, err = loop.mlops("quarantine", MODEL)
    assert code == 0, err
    text = json.dumps(quarantined)
    assert "dt=2009-12-02" in text and "data.derive.egg_date" in text and "Date Egg" in text


def test_validate_spec_checks_the_spec_against_a_sample_batch(loop: Loop, tmp_path: Path) -> None:
    table = raw_table()
    good, bad = tmp_path / "good.csv", tmp_path / "bad.parquet"
    table.to_csv(good, index=False)
    table.drop(columns=["Culmen Depth (mm)"]).to_parquet(bad, index=False)
    spec = str(loop.specs / f"{MODEL}.yaml")
    code, out, err = loop.mlops("validate-spec", spec, "--sample", str(good))
    assert code == 0, err
    in_scope = table[table["Clutch Completion"] == "Yes"]
    assert out[0]["sample"]["out_of_scope"] == len(table) - len(in_scope)
    assert out[0]["sample"]["rows"] + out[0]["sample"]["unlabelled"] == len(in_scope)
    code, out, err = loop.mlops("validate-spec", spec, "--sample", str(bad))
    assert code == 11 and out[0]["ok"] is False
    assert "data.derive.culmen_ratio" in out[0]["error"] and "Culmen Depth (mm)" in out[0]["error"]


def test_a_cost_threshold_is_chosen_off_the_holdout_stored_and_served(
    loop: Loop, tmp_path: Path
) -> None:
    import yaml

    from mlops_tasks.data.datasets import load_snapshot
    from mlops_tasks.model.modelling import predict_scores, prepare_features, split
    from mlops_tasks.specs import find_spec

    doc = yaml.safe_load(SPEC)
    doc["name"] = "penguin_sex_costly"  # a missed male costs five false alarms
    doc["evaluation"]["threshold"] = {"cost": {"fp": 1, "fn": 5}}
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "penguin_sex_costly.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    run = Loop(loop.store, specs)
    code, _, err = run.mlops(
        "run", "retrain", "--model", "penguin_sex_costly", "--as-of", "2009-12-01"
    )
    assert code == 0, err
    registry = Registry(loop.store)
    meta = registry.get_version("penguin_sex_costly", 1)
    assert meta.threshold is not None and meta.threshold.rule == "least cost (fp 1, fn 5)"
    assert meta.threshold.value < 0.5
    # chosen on a fifth of the training part, never on the gate's holdout
    assert meta.threshold.validation_rows == meta.dataset.train_rows - round(
        meta.dataset.train_rows * 0.8
    )
    spec = find_spec("penguin_sex_costly", specs)
    _, holdout, _ = split(spec, load_snapshot(meta.dataset.train, loop.store))
    model = registry.load("penguin_sex_costly", 1)
    _, proba = predict_scores(spec, model, prepare_features(spec, holdout))
    between = holdout[(proba >= meta.threshold.value) & (proba < 0.5)]
    assert len(between) > 0  # rows the most probable class calls female and the cost calls male
    record = {c: between.iloc[0][c] for c in RAW}
    record = {k: (v.item() if hasattr(v, "item") else v) for k, v in record.items()}
    with TestClient(create_app(Settings.from_env({}), loop.store, specs, api_tokens=[])) as c:
        got = c.post("/v1/models/penguin_sex_costly/predict", json={"records": [record]})
        assert got.status_code == 200, got.text
        assert got.json()["predictions"] == [1] and got.json()["probabilities"][0] < 0.5
        assert (
            c.get("/v1/models/penguin_sex_costly").json()["lineage"]["threshold"]
            == meta.threshold.value
        )
    code, out, err = run.mlops("reproduce", "penguin_sex_costly", "1")
    assert code == 0, err
    assert out["artifact_identical"] and out["predictions_identical"], out
