"""A multiclass model, spec only, on the raw Palmer penguins table (`tests/penguins.py`): three
species under their long text names. Trained, gated per class, carded, served with a
probability per class, labelled by feedback (a species training never saw is refused, not a
500), monitored for performance and reproduced bit for bit."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from mlops_tasks.registry import Registry
from mlops_tasks.serving.app import create_app
from mlops_tasks.settings import Settings
from mlops_tasks.storage import LocalStore
from tests.conftest import REPO
from tests.flowkit import Loop
from tests.penguins import raw_table, write_batches

pytestmark = [pytest.mark.integration]

MODEL = "penguin_species"
SPECIES = {
    "Adelie Penguin (Pygoscelis adeliae)",
    "Chinstrap penguin (Pygoscelis antarctica)",
    "Gentoo penguin (Pygoscelis papua)",
}


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory) -> Loop:
    root = tmp_path_factory.mktemp("species")
    specs = root / "specs"
    specs.mkdir()
    (specs / f"{MODEL}.yaml").write_text((REPO / "docs" / "examples" / f"{MODEL}.yaml").read_text())
    run = Loop(LocalStore(root / "store"), specs)
    write_batches(run.store)
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLOPS_SERVING_URL", raising=False)
        code, _, err = run.mlops("run", "retrain", "--model", MODEL, "--as-of", "2009-12-01")
    assert code == 0, err
    return run


def test_three_text_classes_train_and_pass_a_per_class_gate(loop: Loop) -> None:
    registry = Registry(loop.store)
    assert registry.alias(MODEL) == 1
    meta = registry.get_version(MODEL, 1)
    assert meta.task == "multiclass"
    assert set(meta.metrics) == {
        "accuracy",
        "balanced_accuracy",
        "macro_f1",
        "weighted_f1",
        "log_loss",
        "roc_auc_ovr",
    }
    assert meta.metrics["macro_f1"] >= 0.9 and meta.metrics["roc_auc_ovr"] > 0.95
    evaluation = meta.evaluation or {}
    assert set(evaluation["per_class"]) == SPECIES
    class_checks = [c for c in evaluation["decision"]["checks"] if c["name"] == "class"]
    assert class_checks and all(c["passed"] for c in class_checks)
    counts = evaluation["confusion"]["counts"]
    assert sum(map(sum, counts)) == meta.dataset.holdout_rows


def test_the_model_card_draws_the_confusion_matrix_and_per_class_bars(loop: Loop) -> None:
    meta = Registry(loop.store).get_version(MODEL, 1)
    uri = (meta.evaluation or {})["report_uri"]
    html = loop.store.get_bytes(uri.split("/store/", 1)[1]).decode()
    assert "Confusion matrix" in html and "recall per class" in html
    assert "Gentoo penguin (Pygoscelis papua)" in html


def test_a_class_below_its_floor_fails_the_gate(loop: Loop, tmp_path: Path) -> None:
    import yaml

    doc = yaml.safe_load((loop.specs / f"{MODEL}.yaml").read_text())
    doc["name"] = "penguin_species_strict"
    doc["evaluation"]["min_per_class"] = {"recall": 1.0, "precision": 1.0}
    doc["features"] = {"numeric": ["body_mass_g"], "categorical": []}  # too little to go on
    doc["evaluation"]["min"] = {}
    doc["evaluation"]["max"] = {}
    doc["evaluation"]["slices"] = []
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "penguin_species_strict.yaml").write_text(yaml.safe_dump(doc))
    run = Loop(loop.store, specs)
    code, _, err = run.mlops(
        "run", "retrain", "--model", "penguin_species_strict", "--as-of", "2009-12-01"
    )
    assert code == 9, err  # the gate failed
    assert "class Chinstrap penguin (Pygoscelis antarctica): recall" in err


def test_serving_answers_the_class_and_a_probability_per_class(loop: Loop) -> None:
    gentoo = raw_table().query("Species.str.startswith('Gentoo')", engine="python").iloc[0]
    raw = {
        c: (v.item() if hasattr(v, "item") else v)
        for c, v in gentoo.items()
        if c
        in {
            "Culmen Length (mm)",
            "Culmen Depth (mm)",
            "Flipper Length (mm)",
            "Body Mass (g)",
            "Island",
            "Sex",
        }
    }
    settings = Settings.from_env({})
    with TestClient(create_app(settings, loop.store, loop.specs, api_tokens=[])) as c:
        got = c.post(f"/v1/models/{MODEL}/predict", json={"records": [raw]})
        assert got.status_code == 200, got.text
        body = got.json()
        assert body["predictions"] == ["Gentoo penguin (Pygoscelis papua)"]
        (probabilities,) = body["probabilities"]
        assert set(probabilities) == SPECIES
        assert sum(probabilities.values()) == pytest.approx(1.0)
        assert max(probabilities, key=probabilities.__getitem__) == body["predictions"][0]
        request_id = body["request_id"]
        unseen = c.post(
            f"/v1/models/{MODEL}/feedback",
            json={"labels": [{"request_id": request_id, "row": 0, "label": "Emperor penguin"}]},
        )
        assert unseen.status_code == 422, unseen.text
        assert "label" in unseen.text and "Emperor penguin" in unseen.text
        known = c.post(
            f"/v1/models/{MODEL}/feedback",
            json={
                "labels": [
                    {
                        "request_id": request_id,
                        "row": 0,
                        "label": "Gentoo penguin (Pygoscelis papua)",
                    }
                ]
            },
        )
        assert known.status_code == 200, known.text


def test_the_monitor_judges_production_on_labelled_batches(loop: Loop) -> None:
    code, _, err = loop.mlops("run", "monitor", "--model", MODEL, "--as-of", "2009-12-01")
    assert code == 0, err
    code, checks, err = loop.mlops("checks", MODEL)
    assert code == 0, err
    performance = checks[-1]["performance"]
    assert performance["metric"] == "macro_f1" and performance["labelled_rows"] >= 20, checks[-1]


def test_reproduce_rebuilds_the_multiclass_version_bit_for_bit(loop: Loop) -> None:
    code, out, err = loop.mlops("reproduce", MODEL, "1")
    assert code == 0, err
    assert out["artifact_identical"] and out["predictions_identical"], out
