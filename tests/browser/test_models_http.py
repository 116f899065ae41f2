"""The Models view over plain HTTP: Airflow's auth in front of it, permissions on actions, the
audit trail of actions, report paths, task links, and damaged store data."""

from __future__ import annotations

import urllib.parse

import pytest

from mlops_tasks.registry import Registry
from tests.browser.conftest import APPROVAL_DAG, Deployment, wait_for_task

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("/mlops/models", id="models"),
        pytest.param("/mlops/models/credit_default", id="one-model"),
        pytest.param("/mlops/reports/credit_default/x/drift.html", id="report"),
    ],
)
def test_no_session_and_no_token_is_refused(ui: Deployment, path: str) -> None:
    status, body, _ = ui.get(path)
    assert status == 401, body
    status, body, _ = ui.get(path, token="not-a-token")
    assert status in (401, 403), body
    # A browser without a session is sent to Airflow's login, and back here after it.
    status, _, headers = ui.get(path, headers={"Accept": "text/html,application/xhtml+xml"})
    assert status == 303
    assert headers["location"].startswith("/auth/login?next=")
    assert urllib.parse.unquote(headers["location"]).endswith(path)


def test_the_plugin_is_registered_with_its_view(ui: Deployment) -> None:
    status, body = ui.af.api("GET", "/api/v2/plugins")
    assert status == 200, body
    plugin = next(p for p in body["plugins"] if p["name"] == "mlops_models")
    assert plugin["external_views"][0]["href"] == "/mlops/models"
    assert plugin["fastapi_apps"][0]["url_prefix"] == "/mlops"
    status, _, headers = ui.get("/mlops/")  # a user who types the prefix lands on the view
    assert status == 307 and headers["location"] == "/mlops/models"


def test_a_viewer_sees_models_and_may_not_act(ui: Deployment) -> None:
    viewer = ui.token("viewer")
    status, body, _ = ui.get("/mlops/models", viewer)
    assert status == 200 and "credit_default" in body and "customer_spend" in body
    assert "may only read" in ui.get("/mlops/models/credit_default", viewer)[1]
    before = Registry(ui.store).audit("credit_default")
    status, _, _ = ui.get("/mlops/models/..%2Fx/rollback", ui.token("admin"), {"reason": "x y z"})
    assert status == 404
    for action, form in (
        ("retrain", {"reason": "viewer tries"}),
        ("promote", {"version": "1", "reason": "viewer tries"}),
        ("rollback", {"reason": "viewer tries"}),
    ):
        status, body, _ = ui.get(f"/mlops/models/credit_default/{action}", viewer, form)
        assert status == 403, (action, body)
    run = urllib.parse.quote(ui.approval_run, safe="")
    status, _, _ = ui.get(
        f"/mlops/models/customer_spend/approvals/{run}", viewer, {"option": "Approve"}
    )
    assert status == 403
    assert Registry(ui.store).audit("credit_default") == before


def test_actions_need_a_reason_and_record_the_airflow_user(ui: Deployment) -> None:
    admin = ui.token("admin")
    reg = Registry(ui.store)
    production = reg.alias("credit_default")
    assert production is not None and production >= 2
    status, _, _ = ui.get("/mlops/models/credit_default/rollback", admin, {"reason": " "})
    assert status == 400
    # The form first says what will happen, and changes nothing.
    rollback = "/mlops/models/credit_default/rollback"
    target = reg.rollback_target("credit_default")
    assert target is not None and target < production
    status, body, _ = ui.get(rollback, admin, {"reason": "drill from the UI"})
    assert status == 200, body
    assert f"production goes from v{production} to <b>v{target}</b>" in body
    assert reg.alias("credit_default") == production
    confirmed = {
        "reason": "drill from the UI",
        "version": str(target),
        "expected": str(production),
        "confirm": "yes",
    }
    status, _, headers = ui.get(rollback, admin, confirmed)
    assert status == 303, headers
    assert reg.alias("credit_default") == target
    event = reg.audit("credit_default", action="rollback")[-1]
    assert (event["actor"], event["reason"]) == ("admin", "drill from the UI")
    # The same confirmation sent again (a double click) rolls back no further.
    status, body, _ = ui.get(rollback, admin, confirmed)
    assert status == 409 and f"production is v{target} now, not v{production}" in body
    assert reg.alias("credit_default") == target
    status, _, _ = ui.get(
        "/mlops/models/credit_default/promote",
        admin,
        {
            "version": str(production),
            "reason": "back to the newer version",
            "expected": str(target),
            "confirm": "yes",
        },
    )
    assert status == 303
    assert reg.alias("credit_default") == production
    event = reg.audit("credit_default", action="promote")[-1]
    assert (event["actor"], event["reason"]) == ("admin", "back to the newer version")

    status, _, headers = ui.get(
        "/mlops/models/credit_default/retrain", admin, {"reason": "retrain from the UI"}
    )
    assert status == 303, headers
    event = reg.audit("credit_default", action="retrain_request")[-1]
    assert (event["actor"], event["reason"]) == ("admin", "retrain from the UI")
    run_id = event["details"]["run_id"]
    runs = {r["dag_run_id"]: r for r in ui.af.runs("credit_default_retrain")}
    assert runs[run_id]["conf"]["reason"] == "retrain from the UI"
    assert runs[run_id]["triggering_user_name"] == "admin"
    # The run itself is the DAG's business (tested elsewhere): stop it, spare the two cores.
    rid = urllib.parse.quote(run_id, safe="")
    status, body = ui.af.api(
        "PATCH", f"/api/v2/dags/credit_default_retrain/dagRuns/{rid}", {"state": "failed"}
    )
    assert status == 200, body


def test_pages_run_only_the_views_own_script(ui: Deployment) -> None:
    viewer = ui.token("viewer")
    status, body, headers = ui.get("/mlops/models/credit_default", viewer)
    assert status == 200
    csp = headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'self'" in csp
    assert "default-src 'none'" in csp and "form-action 'self'" in csp
    assert '<script src="/mlops/static/models.js" defer></script>' in body
    assert "<script>" not in body
    status, script, headers = ui.get("/mlops/static/models.js", viewer)
    assert status == 200 and headers["content-type"].startswith("text/javascript")
    assert "framedByAirflow" in script
    assert ui.get("/mlops/static/models.js")[0] == 401


def test_a_cross_site_form_post_is_refused(ui: Deployment) -> None:
    status, _, _ = ui.get(
        "/mlops/models/credit_default/rollback",
        ui.token("admin"),
        {"reason": "forged"},
        headers={"Origin": "http://evil.example"},
    )
    assert status == 403


def test_a_cookie_post_must_say_where_it_comes_from(ui: Deployment) -> None:
    """A browser sends the session cookie with a form another site posts: without Origin or
    Referer naming this host, the post is refused; with either it goes on (and fails here
    for its missing reason, so nothing changes)."""
    rollback = "/mlops/models/credit_default/rollback"
    cookie = {"Cookie": f"_token={ui.token('admin')}"}  # Airflow's COOKIE_NAME_JWT_TOKEN
    status, body, _ = ui.get(rollback, data={"reason": "forged"}, headers=cookie)
    assert status == 403 and "without Origin or Referer" in body
    status, _, _ = ui.get(
        rollback, data={"reason": "forged"}, headers={**cookie, "Referer": "http://evil.example/"}
    )
    assert status == 403
    for source in ({"Origin": ui.af.base}, {"Referer": f"{ui.af.base}/mlops/models"}):
        status, body, _ = ui.get(rollback, data={"reason": " "}, headers={**cookie, **source})
        assert status == 400 and "reason" in body, source


def test_a_report_linked_out_of_the_store_is_refused(ui: Deployment) -> None:
    """A link planted among the local store's reports, by whoever may write there, serves
    nothing: not /etc/passwd, not the generated passwords in Airflow's home."""
    reports = ui.store.root / "reports" / "credit_default"
    links = [reports / "planted" / "passwd.html", reports / "planted" / "pw.json", reports / "home"]
    links[0].parent.mkdir(exist_ok=True)
    links[0].symlink_to("/etc/passwd")
    links[1].symlink_to(ui.af.home / "passwords.json")
    links[2].symlink_to(ui.af.home)
    try:
        viewer = ui.token("viewer")
        for path in ("planted/passwd.html", "planted/pw.json", "home/passwords.json"):
            status, body, _ = ui.get(f"/mlops/reports/credit_default/{path}", viewer)
            assert status == 404, (path, body)
            assert "root:" not in body and ui.passwords["admin"] not in body
    finally:
        for link in links:
            link.unlink()
        links[0].parent.rmdir()


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("/mlops/reports/..%2F..%2Fmodels/credit_default/aliases", id="encoded-dots"),
        pytest.param("/mlops/reports/credit_default/..%2F..%2F..%2Fetc%2Fpasswd", id="deep"),
        pytest.param("/mlops/reports/%2Fetc%2Fpasswd", id="absolute"),
        pytest.param("/mlops/reports/credit_default/run/..%5C..%5Cx.html", id="backslash"),
        pytest.param("/mlops/reports/credit_default/run/x.py", id="not-a-report"),
        pytest.param("/mlops/reports/../models/credit_default/aliases/production.json", id="dots"),
        pytest.param("/mlops/runs/..%2Fmodels/x/evaluate_candidate", id="run-model"),
        pytest.param("/mlops/models/..%2Fmodels", id="model-page"),
    ],
)
def test_report_paths_cannot_leave_the_reports(ui: Deployment, path: str) -> None:
    status, body, _ = ui.get(path, ui.token("viewer"))
    assert status == 404, body
    assert "root:" not in body and "production" not in body


def test_every_report_listed_is_served_without_scripts(ui: Deployment) -> None:
    viewer = ui.token("viewer")
    status, body, _ = ui.get("/mlops/models/credit_default", viewer)
    assert status == 200
    reports = [k for k in ui.store.list_keys("reports/credit_default/") if k.endswith(".html")]
    assert reports
    for key in reports:
        url = "/mlops/reports/" + urllib.parse.quote(key.removeprefix("reports/"))
        assert url.replace("&", "&amp;") in body or urllib.parse.quote(url) in body or url in body
        status, page, headers = ui.get(url, viewer)
        assert status == 200 and page.lstrip().lower().startswith("<!doctype html>")
        policy = headers["content-security-policy"]
        assert "sandbox" in policy and "default-src 'none'" in policy


def test_a_model_with_damaged_data_gets_a_page_not_a_500(ui: Deployment) -> None:
    admin = ui.token("admin")
    status, body, _ = ui.get("/mlops/models", admin)
    assert status == 200 and "broken" in body and "not valid JSON" in body
    status, body, _ = ui.get("/mlops/models/broken", admin)
    assert status == 422, body
    assert "cannot be read" in body and "production.json" in body and "repair-alias" in body
    status, body, _ = ui.get("/mlops/models/no_such_model", admin)
    assert status == 404


def test_page_text_from_the_store_is_escaped(ui: Deployment) -> None:
    admin = ui.token("admin")
    Registry(ui.store).record_event(
        "credit_default", "note", actor="<script>alert(1)</script>", reason="<b>x</b>"
    )
    status, body, _ = ui.get("/mlops/models/credit_default", admin)
    assert status == 200
    assert "<script>alert(1)</script>" not in body and "&lt;script&gt;" in body


def test_a_task_link_leads_to_its_report(ui: Deployment) -> None:
    """The evaluation task of an Airflow run links to its model card in the Models view."""
    wait_for_task(ui, "evaluate_candidate")
    rid = urllib.parse.quote(ui.approval_run, safe="")
    status, body = ui.af.api(
        "GET",
        f"/api/v2/dags/{APPROVAL_DAG}/dagRuns/{rid}/taskInstances/evaluate_candidate/links",
    )
    assert status == 200, body
    url = body["extra_links"]["Report"]
    assert url.startswith(f"{ui.af.base}/mlops/runs/customer_spend/"), body
    viewer = ui.token("viewer")
    status, _, headers = ui.get(url.removeprefix(ui.af.base), viewer)
    assert status == 303 and "/mlops/reports/customer_spend/" in headers["location"]
    status, page, _ = ui.get(headers["location"], viewer)
    assert status == 200 and "customer_spend" in page
