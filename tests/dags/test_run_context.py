"""A manual run as of the same text is the same instant from the CLI, the Airflow form and a
REST trigger.

The CLI read `--as-of 2026-03-01` as 23:59:59 that day and the `as_of` Param as 00:00:00; all
now go through `mlops_tasks.flow.context.parse_as_of`. The CLI side runs `mlops run monitor` up to
the flow it would start; the Airflow side is the adapter's `run_context` over the context a
manual run's task receives; the REST side builds that run from a `POST .../dagRuns` body with
Airflow's own body model and Param merge.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from mlops_tasks.cli import main
from mlops_tasks.flow.context import RunContext
from tests.dags.conftest import SPEC_DIR

MODEL = "credit_default"
TRIGGERED = datetime(2026, 3, 5, 8, 30, tzinfo=UTC)  # when the manual run was triggered


class FlowStarted(Exception):
    """Raised instead of running the flow, once its context is known."""


@pytest.fixture
def local_store(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    for name in ("MLOPS_SIGNING_CONN_ID", "MLOPS_AWS_CONN_ID", "MLOPS_SIGNING_KEY"):
        monkeypatch.delenv(name, raising=False)
    uri = (tmp_path / "store").as_uri()
    monkeypatch.setenv("MLOPS_STORE", uri)
    return uri


def cli_context(monkeypatch: pytest.MonkeyPatch, store: str, as_of: str) -> RunContext:
    seen: list[RunContext] = []

    def run_flow(_flow: Any, ctx: RunContext, *_: Any) -> Any:
        seen.append(ctx)
        raise FlowStarted

    monkeypatch.setattr("mlops_tasks.flow.flows.run_flow", run_flow)
    argv = ["run", "monitor", "--model", MODEL, "--as-of", as_of]
    with pytest.raises(FlowStarted):
        main([*argv, "--store", store, "--spec-dir", str(SPEC_DIR)])
    return seen[0]


def manual_run(params: dict[str, Any]) -> dict[str, Any]:
    """What a task of a manual run with these Params finds in its Airflow context."""
    from airflow.utils.types import DagRunType

    dag_run = SimpleNamespace(
        run_id="manual__2026-03-05T08:30:00+00:00",
        run_type=DagRunType.MANUAL,
        run_after=TRIGGERED,
        conf=dict(params),
        triggering_user_name="alice",
    )
    declared = {"as_of": None}
    return {
        "dag_run": dag_run,
        "dag": SimpleNamespace(params=declared),
        "params": declared | params,
        "data_interval_end": TRIGGERED,
    }


def airflow_context(as_of: str | None) -> RunContext:
    from mlops_airflow import run_context

    return run_context(manual_run({"as_of": as_of}), str(SPEC_DIR / f"{MODEL}.yaml"))


@pytest.mark.parametrize(
    ("as_of", "instant"),
    [
        pytest.param("2026-03-01", datetime(2026, 3, 1, 23, 59, 59, tzinfo=UTC), id="date"),
        pytest.param("2026-03-01T12:30", datetime(2026, 3, 1, 12, 30, tzinfo=UTC), id="no-zone"),
        pytest.param(
            "2026-03-01T01:30+02:00", datetime(2026, 2, 28, 23, 30, tzinfo=UTC), id="offset"
        ),
    ],
)
def test_the_cli_and_the_airflow_form_read_an_as_of_as_the_same_instant(
    monkeypatch: pytest.MonkeyPatch, local_store: str, as_of: str, instant: datetime
) -> None:
    cli = cli_context(monkeypatch, local_store, as_of)
    airflow = airflow_context(as_of)
    assert cli.as_of == airflow.as_of == instant
    # Windows end at as_of's date: the same day's batches from both sides.
    assert cli.as_of.date() == airflow.as_of.date() == instant.date()
    assert airflow.trigger.run_id == airflow.run_id and airflow.trigger.kind == "manual"


def test_a_manual_run_without_as_of_works_as_of_its_trigger_time(local_store: str) -> None:
    assert airflow_context(None).as_of == TRIGGERED


def test_a_bad_as_of_param_fails_the_task_naming_the_param(local_store: str) -> None:
    from airflow.sdk.exceptions import AirflowFailException
    from mlops_airflow import call, run_context

    context = manual_run({"as_of": "1 March"})
    with pytest.raises(AirflowFailException, match=r"^UsageError: Param as_of '1 March': use"):
        call(run_context, context, str(SPEC_DIR / f"{MODEL}.yaml"))


@pytest.fixture(scope="module")
def monitor_dag() -> Any:
    from airflow.dag_processing.dagbag import DagBag

    from tests.dags.conftest import REPO

    bag = DagBag(dag_folder=str(REPO / "dags" / "mlops_dags.py"))
    assert bag.import_errors == {}
    return bag.dags[f"{MODEL}_monitor"]


def rest_context(dag: Any, body: dict[str, Any]) -> RunContext:
    """The context a task of the run that `POST /api/v2/dags/{dag_id}/dagRuns` with `body`
    creates finds: the run as the API route makes it, the Params as the task runner merges
    and validates them with the run's conf."""
    from airflow.api_fastapi.core_api.datamodels.dag_run import TriggerDAGRunPostBody
    from airflow.sdk.definitions.param import process_params
    from airflow.serialization.serialized_objects import DagSerialization
    from airflow.utils.types import DagRunType
    from mlops_airflow import run_context

    serialized = DagSerialization.from_dict(DagSerialization.to_dict(dag))
    made = TriggerDAGRunPostBody.model_validate(body).validate_context(serialized)
    dag_run = SimpleNamespace(
        run_id=made["run_id"],
        run_type=DagRunType.MANUAL,
        run_after=made["run_after"],
        conf=made["conf"],
        triggering_user_name="alice",
    )
    interval = made["data_interval"]
    # A task's process holds its own copy of the DAG; merging a conf sets the Params' values.
    own = SimpleNamespace(params=copy.deepcopy(dag.params))
    task = SimpleNamespace(params=copy.deepcopy(dag.get_task("decide").params))
    return run_context(
        {
            "dag_run": dag_run,
            "dag": own,
            "params": process_params(own, task, made["conf"], suppress_exception=False),
            "data_interval_end": interval.end if interval else None,
        },
        str(SPEC_DIR / f"{MODEL}.yaml"),
    )


@pytest.mark.parametrize(
    ("as_of", "instant"),
    [
        pytest.param("2026-03-01", datetime(2026, 3, 1, 23, 59, 59, tzinfo=UTC), id="date"),
        pytest.param("2026-03-01T12:30", datetime(2026, 3, 1, 12, 30, tzinfo=UTC), id="no-zone"),
        pytest.param(
            "2026-03-01T01:30+02:00", datetime(2026, 2, 28, 23, 30, tzinfo=UTC), id="offset"
        ),
    ],
)
@pytest.mark.parametrize(
    "logical_date",
    [pytest.param(None, id="no-logical-date"), pytest.param("2026-03-04T00:00:00Z", id="dated")],
)
def test_a_rest_trigger_reads_its_as_of_as_the_cli_and_the_form_do(
    monkeypatch: pytest.MonkeyPatch,
    local_store: str,
    monitor_dag: Any,
    as_of: str,
    instant: datetime,
    logical_date: str | None,
) -> None:
    """`{"conf": {"as_of": ...}}` is the Param as_of, whatever logical date the body names."""
    body = {"logical_date": logical_date, "conf": {"as_of": as_of}}
    rest = rest_context(monitor_dag, body)
    assert rest.as_of == cli_context(monkeypatch, local_store, as_of).as_of == instant
    assert rest.trigger.kind == "manual" and rest.trigger.user == "alice"


def test_a_rest_trigger_without_as_of_works_as_of_its_logical_date(
    local_store: str, monitor_dag: Any
) -> None:
    rest = rest_context(monitor_dag, {"logical_date": "2026-03-04T06:00:00Z", "conf": {}})
    assert rest.as_of == datetime(2026, 3, 4, 6, tzinfo=UTC)
