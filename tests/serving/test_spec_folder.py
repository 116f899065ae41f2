"""A running service follows its spec folder: a spec file added starts serving its model, one
removed stops it, a changed one reloads its version under the new spec, and a file that does
not load (at start or later) is reported while every other model keeps serving."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from mlops_tasks.serving.app import create_app
from mlops_tasks.settings import Settings
from tests.serving.support import records, trained

CREDIT, SPEND = "credit_default", "customer_spend"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A spec folder holding the credit model's spec only."""
    _, specs = trained()
    shutil.copy(specs / f"{CREDIT}.yaml", tmp_path / f"{CREDIT}.yaml")
    return tmp_path


@pytest.fixture
def client(folder: Path) -> Iterator[TestClient]:
    store, _ = trained()
    settings = Settings.from_env({**os.environ, "MLOPS_STORE": store.uri})
    # The poller never runs on its own here: each test refreshes when it has changed a file.
    app = create_app(settings, store, folder, poll_seconds=3600, api_tokens=[])
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def refresh(client: TestClient) -> None:
    client.app.state.service.manager.refresh()  # type: ignore[attr-defined]


def predict(client: TestClient, model: str) -> int:
    resp = client.post(f"/v1/models/{model}/predict", json={"records": records(model, 2)})
    return resp.status_code


def test_a_spec_added_and_removed_while_running_starts_and_stops_its_model(
    client: TestClient, folder: Path
) -> None:
    assert predict(client, SPEND) == 404
    _, specs = trained()
    shutil.copy(specs / f"{SPEND}.yaml", folder / f"{SPEND}.yaml")
    refresh(client)
    assert predict(client, SPEND) == 200 and predict(client, CREDIT) == 200
    ready = client.get("/readyz")
    assert ready.status_code == 200 and set(ready.json()["models"]) == {CREDIT, SPEND}
    schema = client.get("/openapi.json").json()
    assert f"/v1/models/{SPEND}/predict" in schema["paths"]  # typed, documented route
    (folder / f"{SPEND}.yaml").unlink()
    refresh(client)
    resp = client.post(f"/v1/models/{SPEND}/predict", json={"records": records(SPEND, 1)})
    assert resp.status_code == 404 and "no model named" in resp.text
    assert set(client.get("/readyz").json()["models"]) == {CREDIT}
    assert f"/v1/models/{SPEND}/predict" not in client.get("/openapi.json").json()["paths"]


def test_a_broken_file_is_reported_and_nothing_else_changes(
    client: TestClient, folder: Path
) -> None:
    good = (folder / f"{CREDIT}.yaml").read_text()
    (folder / "typo_model.yaml").write_text(
        good.replace(f"name: {CREDIT}", "name: typo_model").replace("features:", "featurez:")
    )
    (folder / f"{CREDIT}.yaml").write_text(good.replace("model:", "modle:", 1))
    refresh(client)
    ready = client.get("/readyz")
    assert ready.status_code == 200  # one typo never takes the service out of rotation
    errors = ready.json()["spec_errors"]
    assert set(errors) == {"typo_model.yaml", f"{CREDIT}.yaml"}
    assert "featurez" in errors["typo_model.yaml"] and "modle" in errors[f"{CREDIT}.yaml"]
    assert predict(client, CREDIT) == 200  # its last good spec keeps serving
    (folder / f"{CREDIT}.yaml").write_text(good)
    (folder / "typo_model.yaml").unlink()
    refresh(client)
    assert "spec_errors" not in client.get("/readyz").json()


def test_a_changed_spec_reloads_its_version_under_it(client: TestClient, folder: Path) -> None:
    manager = client.app.state.service.manager  # type: ignore[attr-defined]
    before = manager.slots[CREDIT]
    path = folder / f"{CREDIT}.yaml"
    text = path.read_text()
    assert "description:" in text
    path.write_text(text.replace("description:", "description: (edited)", 1))
    refresh(client)
    after = manager.slots[CREDIT]
    assert after is not before and after.version == before.version
    assert after.spec.description.startswith("(edited)")
    assert predict(client, CREDIT) == 200


def test_two_files_naming_one_model_serve_the_first(client: TestClient, folder: Path) -> None:
    shutil.copy(folder / f"{CREDIT}.yaml", folder / f"{CREDIT}.yml")  # names match files
    refresh(client)
    errors = client.get("/readyz").json()["spec_errors"]
    assert "already served from credit_default.yaml" in errors[f"{CREDIT}.yml"]
    assert predict(client, CREDIT) == 200


def test_a_service_starts_beside_a_broken_spec(folder: Path) -> None:
    (folder / "broken.yaml").write_text("name: broken\ntask: [not, a, task]\n")
    store, _ = trained()
    settings = Settings.from_env({**os.environ, "MLOPS_STORE": store.uri})
    app = create_app(settings, store, folder, poll_seconds=3600, api_tokens=[])
    with TestClient(app, raise_server_exceptions=False) as c:
        ready = c.get("/readyz")
        assert ready.status_code == 200 and "broken.yaml" in ready.json()["spec_errors"]
        assert predict(c, CREDIT) == 200
