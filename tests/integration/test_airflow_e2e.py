"""The three ways a retrain starts, on a real Airflow 3 scheduler (no human step).

api-server, scheduler, dag-processor and triggerer run as separate processes on 127.0.0.1 in a
temporary AIRFLOW_HOME (SQLite, LocalExecutor). (a) a scheduled monitor run happens on its own;
(b) a REST trigger with Params promotes a version, invalid Params get HTTP 400; (c) drifted data
makes the monitor emit the retrain Asset event, which starts an asset-triggered retrain that
promotes a version whose lineage names the drift report.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from datetime import date, datetime

import pytest

from mlops_tasks import synthetic
from mlops_tasks.registry import Registry
from mlops_tasks.storage import LocalStore
from scripts.local_airflow import REPO, LocalAirflow
from tests.conftest import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def deployment(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[LocalAirflow, LocalStore]]:
    root = tmp_path_factory.mktemp("airflow-e2e")
    store = LocalStore(root / "store")
    synthetic.write_batches(days=8, rows_per_day=1000, store=store)
    specs = root / "specs"
    specs.mkdir()
    spec = (REPO / "dags/specs/credit_default.yaml").read_text()
    spec = spec.replace('monitor: "*/10 * * * *"', 'monitor: "* * * * *"')  # every minute
    spec = spec.replace("cooldown_hours: 0.25", "cooldown_hours: 0")
    assert '"* * * * *"' in spec and "cooldown_hours: 0\n" in spec
    (specs / "credit_default.yaml").write_text(spec)
    af = LocalAirflow(
        root / "home",
        free_port(),
        extra_env={"MLOPS_STORE": store.uri, "MLOPS_SPEC_DIR": str(specs)},
    )
    try:
        af.start()
        yield af, store
    finally:
        af.stop()
        for log in sorted((root / "home" / "logs").glob("*.log")):
            print(f"--- {log.name} (tail)\n" + log.read_text(errors="replace")[-1500:])
        shutil.rmtree(root / "home" / "logs" / "dag_id=credit_default_retrain", ignore_errors=True)


def test_dags_are_listed_without_import_errors(deployment) -> None:
    af, _ = deployment
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and "credit_default_retrain" not in af.dag_ids():
        time.sleep(2)
    assert {"credit_default_retrain", "credit_default_monitor", "mlops_change_production"} <= set(
        af.dag_ids()
    )
    status, body = af.api("GET", "/api/v2/importErrors")
    assert status == 200 and body["total_entries"] == 0, body


def test_a_scheduled_monitor_run_happens_on_its_own(deployment) -> None:
    af, _ = deployment
    run = af.wait_for_run(
        "credit_default_monitor", lambda r: r["run_type"] == "scheduled", timeout=240
    )
    assert run["state"] == "success"


def test_manual_trigger_with_params_promotes_and_bad_params_are_rejected(deployment) -> None:
    af, store = deployment
    status, body = af.trigger("credit_default_retrain", {"hp_max_iter": 0})
    assert status == 400 and "hp_max_iter" in str(body)
    status, body = af.trigger("credit_default_retrain", {"force_deploy": "yes"})
    assert status == 400 and "force_deploy" in str(body)
    status, body = af.trigger(
        "credit_default_retrain", {"reason": "first model, from the REST API", "hp_max_iter": 80}
    )
    assert status == 200, body
    run_id = body["dag_run_id"]
    run = af.wait_for_run("credit_default_retrain", lambda r: r["dag_run_id"] == run_id)
    assert run["state"] == "success", af.task_states("credit_default_retrain", run_id)
    reg = Registry(store)
    version = reg.alias("credit_default")
    meta = reg.get_version("credit_default", version)
    assert meta.triggered_by.kind == "manual"
    assert meta.triggered_by.user == "admin"
    assert meta.params["max_iter"] == 80
    assert meta.run_id == run_id
    promote = reg.audit("credit_default", action="promote")[-1]
    assert promote["actor"] == "admin" and promote["reason"] == "first model, from the REST API"


def test_drift_triggers_an_asset_run_that_promotes_a_new_version(deployment) -> None:
    af, store = deployment
    reg = Registry(store)
    before = reg.alias("credit_default")
    assert before is not None, "needs the manual-trigger test's production version"
    synthetic.write_batches(
        start=date.today(), days=2, rows_per_day=1000, scenario="covariate_shift", store=store
    )
    status, body = af.trigger("credit_default_monitor")
    assert status == 200, body
    monitor_id = body["dag_run_id"]
    monitor = af.wait_for_run("credit_default_monitor", lambda r: r["dag_run_id"] == monitor_id)
    assert af.task_states("credit_default_monitor", monitor_id)["request_retrain"] == "success"
    retrain = af.wait_for_run(
        "credit_default_retrain", lambda r: r["run_type"] == "asset_triggered"
    )
    assert retrain["state"] == "success", af.task_states(
        "credit_default_retrain", retrain["dag_run_id"]
    )
    after = reg.alias("credit_default")
    assert after is not None and after > before
    lineage = reg.get_version("credit_default", after).triggered_by
    assert lineage.kind == "drift" and lineage.drift is not None
    assert lineage.drift.monitor_run_id == monitor_id
    report = lineage.drift.report_uri
    assert report.endswith("/drift.html")
    assert (store.root / report.removeprefix(store.uri + "/")).is_file()
    promote = reg.audit("credit_default", action="promote")[-1]
    assert promote["to_version"] == after and promote["actor"] == "monitor"
    started = datetime.fromisoformat(monitor["start_date"].replace("Z", "+00:00"))
    promoted = datetime.fromisoformat(promote["at"].replace("Z", "+00:00"))
    print(
        f"monitor run start -> v{after} in production: {(promoted - started).total_seconds():.0f} s"
    )


def test_rollback_through_the_change_production_dag(deployment) -> None:
    af, store = deployment
    reg = Registry(store)
    current = reg.alias("credit_default")
    status, body = af.trigger(
        "mlops_change_production",
        {"model": "credit_default", "action": "rollback", "reason": "e2e rollback drill"},
    )
    assert status == 200, body
    run = af.wait_for_run(
        "mlops_change_production", lambda r: r["dag_run_id"] == body["dag_run_id"]
    )
    assert run["state"] == "success"
    assert reg.alias("credit_default") < current
    event = reg.audit("credit_default", action="rollback")[-1]
    assert (event["actor"], event["reason"]) == ("admin", "e2e rollback drill")
