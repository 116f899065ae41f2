"""Validation, evaluation and drift tasks link to their reports in the Models view, and task
logs and the approval body name the UI's URL of a report, never a file path."""

from __future__ import annotations

import pytest
from airflow.serialization.serialized_objects import OperatorSerialization
from mlops_airflow import StepReportLink, ui_links

from mlops_tasks.flow.flows import STEP_REPORTS
from tests.dags.conftest import REPO


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO / "dags"))


def test_report_steps_carry_the_report_link_and_others_do_not(dagbag) -> None:
    for dag_id in ("credit_default_retrain", "credit_default_monitor"):
        for task in dagbag.dags[dag_id].tasks:
            op = OperatorSerialization.serialize_operator(task)
            links = op.get("_operator_extra_links", {})
            if op["task_id"] in STEP_REPORTS:
                assert links == {"Report": StepReportLink().xcom_key}, op["task_id"]
            else:
                assert not links, op["task_id"]


def test_the_link_points_at_the_models_view(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "http://airflow.example:8080")

    class Key:
        dag_id, run_id, task_id = "credit_default_retrain", "manual__2026+00:00", "validate_data"

    url = StepReportLink().get_link(None, ti_key=Key())
    assert url == (
        "http://airflow.example:8080/mlops/runs/credit_default/manual__2026%2B00%3A00/validate_data"
    )


def test_log_messages_name_the_ui_url_of_a_report(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "http://airflow.example:8080")
    store = "file:///data/store"
    message = f"validation failed\nReport: {store}/reports/m/run_1/validation.html\nmore"
    assert ui_links(message, store) == (
        "validation failed\nReport: http://airflow.example:8080/mlops/reports/m/run_1/"
        "validation.html\nmore"
    )
    other = "see file:///elsewhere/reports/m/r/x.html"
    assert ui_links(other, store) == other


def test_the_approval_body_links_the_model_card(dagbag) -> None:
    approve = dagbag.dags["customer_spend_retrain"].get_task("approve")
    assert "/mlops/runs/customer_spend/{{ run_id | urlencode }}/evaluate_candidate" in approve.body
    assert "file://" not in approve.body
