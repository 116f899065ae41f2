"""In Chromium: log in to Airflow, open the Models view, follow a version to its model card,
and approve a waiting candidate. Screenshots go to `test-artifacts/screenshots/`."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from typing import Any

import pytest

from mlops_tasks.registry import Registry
from tests.browser.conftest import APPROVAL_DAG, ARTIFACTS, CHROMIUM, Deployment, awaiting_approval

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _missing(msg: str) -> None:
    if os.environ.get("REQUIRE_SERVICES") == "1":
        pytest.fail(f"{msg} and REQUIRE_SERVICES=1")
    pytest.skip(msg)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.is_file():
        _missing(f"Chromium is not installed at {CHROMIUM} (Debian: apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the playwright package is not installed (requirements-dev.txt)")
    # Debian's Chromium, never a downloaded one.
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def page(browser: Any, ui: Deployment) -> Iterator[Any]:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = context.new_page()
    pg.set_default_timeout(60_000)
    pg.goto(f"{ui.af.base}/auth/login")
    pg.get_by_label("Username").fill("admin")
    pg.get_by_label("Password").fill(ui.passwords["admin"])
    pg.get_by_role("button", name="Sign in").click()
    pg.wait_for_url(re.compile(re.escape(ui.af.base) + r"/(\?.*)?$"))
    yield pg
    context.close()


def shot(page: Any, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_models_view_leads_from_a_version_to_its_model_card(page: Any, ui: Deployment) -> None:
    page.get_by_role("link", name="Models").first.click()  # the entry in Airflow's navigation
    page.wait_for_url("**/plugin/models")
    frame = page.frame_locator("iframe").first
    frame.get_by_role("link", name="credit_default", exact=True).click()
    frame.get_by_role("heading", name=re.compile(r"credit_default \(production: v\d+\)")).wait_for()
    shot(page, "01-models-view-credit_default")

    page.goto(f"{ui.af.base}/mlops/models/credit_default")
    shot(page, "02-model-page")
    page.get_by_role("link", name="model card").first.click()
    page.wait_for_url("**/mlops/reports/credit_default/**/evaluation-v*.html")
    assert "credit_default" in page.title()
    assert page.locator("svg.chart").count() >= 1
    shot(page, "03-model-card")


def test_a_person_approves_a_waiting_candidate_in_the_models_view(
    page: Any, ui: Deployment
) -> None:
    awaiting_approval(ui)
    page.goto(f"{ui.af.base}/mlops/models/customer_spend")
    shot(page, "04-pending-approval")
    page.get_by_label("comment").fill("model card checked")
    page.get_by_role("button", name="Approve").click()
    page.get_by_text("approved run").wait_for()
    shot(page, "05-approved")
    run = ui.af.wait_for_run(APPROVAL_DAG, lambda r: r["dag_run_id"] == ui.approval_run)
    assert run["state"] == "success", ui.af.task_states(APPROVAL_DAG, ui.approval_run)
    reg = Registry(ui.store)
    version = reg.alias("customer_spend")
    assert version is not None
    promote = reg.audit("customer_spend", action="promote")[-1]
    assert promote["actor"] == "admin" and promote["to_version"] == version
    assert promote["details"]["approval"] == {
        "approved_by": "admin",
        "comment": "model card checked",
    }
    assert promote["reason"].endswith("; approved: model card checked")
    page.goto(f"{ui.af.base}/mlops/models/customer_spend")
    assert page.get_by_role("heading", name=f"customer_spend (production: v{version})").count()
    shot(page, "06-after-approval")


def test_a_rollback_names_its_target_and_is_confirmed_once(page: Any, ui: Deployment) -> None:
    reg = Registry(ui.store)
    production = reg.alias("credit_default")
    target = reg.rollback_target("credit_default")
    assert production is not None and target is not None
    page.goto(f"{ui.af.base}/mlops/models/credit_default")
    form = page.locator("form[action$='/rollback']")
    assert form.get_by_role("combobox").input_value() == str(target)
    form.get_by_placeholder("reason (audited)").fill("browser drill")
    form.get_by_role("button", name="Review rollback").click()
    page.get_by_text(f"production goes from v{production} to v{target}").wait_for()
    assert reg.alias("credit_default") == production  # nothing changed before the confirmation
    shot(page, "07-confirm-rollback")
    page.get_by_role("button", name=f"Roll back to v{target}").click()
    page.get_by_text(f"rollback: production is v{target}").wait_for()
    assert reg.alias("credit_default") == target
    page.go_back()  # the confirmation again, sent a second time: nothing more happens
    page.get_by_role("button", name=f"Roll back to v{target}").click()
    page.get_by_text(f"production is v{target} now, not v{production}").wait_for()
    assert reg.alias("credit_default") == target
    shot(page, "08-second-rollback-refused")
    reg.promote("credit_default", production, reason="after the browser drill", actor="tests")


def test_links_inside_airflows_frame_open_airflows_pages(page: Any, ui: Deployment) -> None:
    """Airflow frames the view without top navigation, where a plain link did nothing."""
    page.goto(f"{ui.af.base}/plugin/models")
    frame = page.frame_locator("iframe").first
    frame.get_by_role("link", name="credit_default", exact=True).click()
    frame.get_by_role("link", name="credit_default_monitor").click()
    page.wait_for_url(f"{ui.af.base}/dags/credit_default_monitor")
    page.get_by_text("credit_default_monitor").first.wait_for()
    shot(page, "09-dag-from-the-models-view")
    page.goto(f"{ui.af.base}/plugin/models")
    page.frame_locator("iframe").first.get_by_role("link", name="Airflow home").click()
    page.wait_for_url(re.compile(re.escape(ui.af.base) + r"/(\?.*)?$"))


def test_models_and_versions_can_be_searched_sorted_and_compared(page: Any, ui: Deployment) -> None:
    page.goto(f"{ui.af.base}/mlops/models")
    rows = page.locator("#models tr")
    page.get_by_label("search models").fill("spend")
    assert page.locator("#models tr:visible").count() == 2  # the head and customer_spend
    page.get_by_label("search models").fill("")
    page.locator("#models th", has_text="model").click()
    first = rows.nth(1).locator("td").first.inner_text()
    page.locator("#models th", has_text="model").click()
    assert rows.nth(1).locator("td").first.inner_text() != first
    assert page.locator("#models th[aria-sort=descending]").count() == 1

    page.goto(f"{ui.af.base}/mlops/models/credit_default")
    page.get_by_role("heading", name="Drift over time").wait_for()
    page.get_by_role("button", name="Compare").click()
    page.get_by_role("heading", name=re.compile(r"credit_default: v\d+ and v\d+")).wait_for()
    assert page.get_by_role("cell", name="roc_auc", exact=True).count() == 1
    shot(page, "10-compare-versions")


def test_the_retrain_form_requires_nothing_and_names_its_bounds(page: Any, ui: Deployment) -> None:
    """It showed a red badge before anything was typed, marked force_deploy required and
    clamped numbers to bounds it did not show."""
    page.goto(f"{ui.af.base}/dags/credit_default_retrain")
    page.get_by_role("button", name="Trigger").first.click()
    page.get_by_text("Optional: days of batches to train on").wait_for()
    assert page.get_by_text(re.compile(r"spec: \d+; 1 to 3650")).count() == 1
    assert page.locator(".chakra-field__requiredIndicator").count() == 0
    shot(page, "11-retrain-trigger-form")
