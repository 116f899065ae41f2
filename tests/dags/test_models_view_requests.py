"""The Models view's request checks, on its FastAPI app without starting Airflow: Airflow's
user lookup and permission check are replaced by a user who may do everything, so what is
left is the view's own refusal of planted links and of cross-site posts."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import mlops_ui_app
import pytest
from airflow.api_fastapi.auth.managers.base_auth_manager import COOKIE_NAME_JWT_TOKEN
from airflow.api_fastapi.auth.managers.models.base_user import BaseUser
from airflow.api_fastapi.core_api.security import get_user
from fastapi import HTTPException
from fastapi.testclient import TestClient
from starlette.requests import Request

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


def request(headers: dict[str, str], cookie: bool = True) -> Request:
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    if cookie:
        raw.append((b"cookie", f"{COOKIE_NAME_JWT_TOKEN}=session".encode()))
    scope = {
        "type": "http",
        "method": "POST",
        "scheme": "http",
        "path": "/mlops/models/m/rollback",
        "query_string": b"",
        "headers": [(b"host", HOST.encode()), *raw],
        "server": ("airflow.example", 8080),
    }
    return Request(scope)


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"Origin": f"http://{HOST}"}, id="origin"),
        pytest.param({"Referer": f"http://{HOST}/mlops/models/m"}, id="referer"),
        pytest.param({"Authorization": "Bearer t0ken"}, id="a-script-with-a-token"),
        pytest.param(
            {"Authorization": "Bearer t0ken", "Origin": f"http://{HOST}"}, id="token-and-origin"
        ),
    ],
)
def test_a_post_from_this_site_or_a_script_is_accepted(headers: dict[str, str]) -> None:
    mlops_ui_app.same_origin(request(headers))


@pytest.mark.parametrize(
    ("headers", "refusal"),
    [
        pytest.param({}, "without Origin or Referer", id="cookie-and-nothing-else"),
        pytest.param({"Authorization": "Basic eDp5"}, "without Origin", id="not-a-bearer"),
        pytest.param({"Authorization": "Bearer"}, "without Origin", id="an-empty-bearer"),
        pytest.param({"Origin": "http://evil.example"}, "cross-site", id="other-origin"),
        pytest.param({"Origin": "null"}, "cross-site", id="opaque-origin"),
        pytest.param({"Referer": "http://evil.example/page"}, "cross-site", id="other-referer"),
        pytest.param(
            {"Referer": f"http://evil.example/?{HOST}"}, "cross-site", id="host-in-the-query"
        ),
        pytest.param(
            {"Authorization": "Bearer t0ken", "Origin": "http://evil.example"},
            "cross-site",
            id="token-from-another-origin",
        ),
    ],
)
def test_a_post_from_elsewhere_or_from_nowhere_is_refused(
    headers: dict[str, str], refusal: str
) -> None:
    with pytest.raises(HTTPException, match=refusal) as err:
        mlops_ui_app.same_origin(request(headers))
    assert err.value.status_code == 403


def test_every_form_post_checks_where_it_comes_from(client: TestClient) -> None:
    """Each action route refuses a cookie post that names no origin before doing anything."""
    client.cookies.set(COOKIE_NAME_JWT_TOKEN, "session")
    for action, form in (
        ("retrain", {"reason": "forged"}),
        ("promote", {"version": "1", "reason": "forged"}),
        ("rollback", {"reason": "forged"}),
        ("approvals/run-1", {"option": "Approve", "comment": "forged"}),
    ):
        resp = client.post(f"/models/m/{action}", data=form)
        assert resp.status_code == 403, action
        assert "without Origin or Referer" in resp.text, action
