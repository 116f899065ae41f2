"""A manual run as of the same text is the same instant from the CLI and from the Airflow form.

The CLI read `--as-of 2026-03-01` as 23:59:59 that day and the `as_of` Param as 00:00:00; both
now go through `mlops_tasks.flow.context.parse_as_of`. The CLI side runs `mlops run monitor` up to
the flow it would start; the Airflow side is the adapter's `run_context` over the context a
manual run's task receives.
"""

from __future__ import annotations

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
