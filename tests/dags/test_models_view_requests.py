"""The Models view's request checks, on its FastAPI app without starting Airflow: Airflow's
user lookup and permission check are replaced by a user who may do everything, so what is
left is the view's own refusal of planted links."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import mlops_ui_app
import pytest
from airflow.api_fastapi.auth.managers.models.base_user import BaseUser
from airflow.api_fastapi.core_api.security import get_user
from fastapi.testclient import TestClient

from mlops_tasks.storage import LocalStore

HOST = "airflow.example:8080"


class Admin(BaseUser):
    def get_id(self) -> str:
        return "admin"

    def get_name(self) -> str:
        return "admin"


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalStore]:
    st = LocalStore(tmp_path / "store")
    monkeypatch.setattr(mlops_ui_app, "store", lambda: st)
    monkeypatch.setattr(mlops_ui_app, "allowed", lambda *args, **kwargs: True)
    mlops_ui_app.app.dependency_overrides[get_user] = Admin
    yield st
    mlops_ui_app.app.dependency_overrides.clear()


@pytest.fixture
def client(store: LocalStore) -> Iterator[TestClient]:
    with TestClient(mlops_ui_app.app, base_url=f"http://{HOST}") as c:
        yield c


def test_a_report_is_served_but_not_through_a_planted_link(
    store: LocalStore, client: TestClient, tmp_path: Path
) -> None:
    store.put_bytes("reports/m/run-1/drift.html", b"<!doctype html>the report")
    assert client.get("/reports/m/run-1/drift.html").text == "<!doctype html>the report"
    secret = tmp_path / "airflow-home" / "passwords.json"  # the API server may read it
    secret.parent.mkdir()
    secret.write_text('{"admin": "s3cret-password"}')
    os.symlink(secret, store.root / "reports/m/run-1/passwords.json")
    os.symlink(secret.parent, store.root / "reports/m/home")
    os.symlink(tmp_path, store.root / "reports/evil")
    for path in ("m/run-1", "m/home", "evil/airflow-home"):
        resp = client.get(f"/reports/{path}/passwords.json")
        assert resp.status_code == 404, path
        assert "s3cret" not in resp.text
