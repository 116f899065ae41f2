"""The Models view's drift checks: what a check flags beside its decision is shown, on the
view's FastAPI app without starting Airflow (a user who may do everything, no approvals)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import mlops_ui_app
import pytest
from airflow.api_fastapi.auth.managers.models.base_user import BaseUser
from airflow.api_fastapi.core_api.security import get_user
from fastapi.testclient import TestClient

from mlops_tasks.monitor import policy
from mlops_tasks.storage import LocalStore
from tests.unit.test_policy import CALM, ONE_CLASS, drift, verdict


class Admin(BaseUser):
    def get_id(self) -> str:
        return "admin"

    def get_name(self) -> str:
        return "admin"


@pytest.fixture
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    store = LocalStore(tmp_path / "store")
    found = replace(drift(CALM, None), performance=ONE_CLASS)
    policy.record_check(store, "m", verdict("no_retrain", ["no drift detected"], False, 0), found)
    monkeypatch.setattr(mlops_ui_app, "store", lambda: store)
    monkeypatch.setattr(mlops_ui_app, "allowed", lambda *args, **kwargs: True)
    monkeypatch.setattr(mlops_ui_app, "pending_approvals", lambda *args, **kwargs: [])
    mlops_ui_app.app.dependency_overrides[get_user] = Admin
    with TestClient(mlops_ui_app.app) as c:
        yield c
    mlops_ui_app.app.dependency_overrides.clear()


def test_a_check_on_a_one_class_window_shows_its_flag(client: TestClient) -> None:
    page = client.get("/models/m")
    assert page.status_code == 200, page.text[:500]
    assert "no drift detected" in page.text
    assert "metric undefined: the labelled window holds one class (all 1)" in page.text
