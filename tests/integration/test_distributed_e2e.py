"""The same DAGs on the production topology: CeleryExecutor + PostgreSQL + S3, two workers.

scripts/local_airflow.py's `distributed` profile starts api-server, scheduler, dag-processor,
triggerer and two Celery workers as separate processes on 127.0.0.1, with a scratch PostgreSQL
database (created for the module, dropped at the end) as metadata database and Redis as Celery
broker and result backend. The artifact store is S3 over HTTP (moto's server). The three trigger
paths run end to end: (a) a scheduled monitor run; (b) a REST trigger with Params promotes a
version; (c) drifted data makes the monitor emit the retrain Asset event and the asset-triggered
retrain promotes a newer version. Finally the REST API's task instances show that tasks ran on
both workers (each worker reports its own hostname through `core.hostname_callable`).

The workers reach the store with canary keys from an Airflow connection
(`AIRFLOW_CONN_AWS_DEFAULT`, endpoint in its extra), and the last test searches the real task
log files, every row of the metadata database (XCom included) and every store object for them.

Skips when PostgreSQL (127.0.0.1:5432) or Redis (127.0.0.1:6379) is unreachable; fails instead
with REQUIRE_SERVICES=1, as in CI. The assertions name outcomes (run states, the registry,
hostnames), not task ids.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import shutil
import time
import uuid
from collections.abc import Iterator
from datetime import date
from typing import Any

import pytest

from mlops_tasks.data import synthetic
from mlops_tasks.registry import Registry
from mlops_tasks.storage import S3Store
from scripts.local_airflow import REPO, LocalAirflow
from tests.conftest import free_port, require_service

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODEL = "credit_default"
RETRAIN, MONITOR = f"{MODEL}_retrain", f"{MODEL}_monitor"
WORKERS = ["worker-1", "worker-2"]
#: Unique per run: moto accepts any key, so these are found only where something leaked them.
CANARIES = {"key id": f"AKIA{uuid.uuid4().hex[:16].upper()}", "secret": uuid.uuid4().hex * 2}
# The distributed profile's drivers; requirements.txt carries them (requirements.in pins them).
DRIVERS = ("airflow.providers.celery", "psycopg2", "asyncpg", "redis")


def spec_copy(root: Any) -> Any:
    """A copy of the credit_default spec whose schedules fire once, at start-up.

    With catchup off, Airflow schedules a cron DAG's latest past time as soon as the DAG appears.
    A daily monitor therefore runs once on its own right away (the schedule path) and not every
    minute, which on two cores would take CPU from the retrains under test. The weekly retrain
    moves to 29 February (next in 2028) so no scheduled retrain queues ahead of the REST-triggered
    one (one run at a time). No cooldown, so drift requests a retrain at once.
    """
    specs = root / "specs"
    specs.mkdir()
    spec = (REPO / f"dags/specs/{MODEL}.yaml").read_text()
    for old, new in (
        ('monitor: "*/10 * * * *"', 'monitor: "0 0 * * *"'),
        ('retrain: "0 3 * * 0"', 'retrain: "0 3 29 2 *"'),
        ("cooldown_hours: 0.25", "cooldown_hours: 0"),
    ):
        assert old in spec, old
        spec = spec.replace(old, new)
    (specs / f"{MODEL}.yaml").write_text(spec)
    return specs


@pytest.fixture(scope="module")
def deployment(
    tmp_path_factory: pytest.TempPathFactory, s3_endpoint: str
) -> Iterator[tuple[LocalAirflow, S3Store]]:
    require_service("PostgreSQL", "127.0.0.1", 5432)
    require_service("Redis", "127.0.0.1", 6379)
    missing = [m for m in DRIVERS if importlib.util.find_spec(m) is None]
    if missing:
        pytest.fail(
            f"{missing} not installed: requirements.txt lacks the distributed profile's "
            "packages (requirements.in pins them; run `make lock`)"
        )
    root = tmp_path_factory.mktemp("airflow-distributed")
    store = S3Store(f"mlops-{uuid.uuid4().hex[:10]}", "store", endpoint_url=s3_endpoint)
    store.client.create_bucket(Bucket=store.bucket)
    synthetic.write_batches(days=8, rows_per_day=1000, store=store)
    # The store's endpoint and keys reach the tasks only through the Airflow connection.
    connection = {
        "conn_type": "aws",
        "login": CANARIES["key id"],
        "password": CANARIES["secret"],
        "extra": {"endpoint_url": s3_endpoint, "region_name": "us-east-1"},
    }
    env = {
        "MLOPS_STORE": store.uri,
        "MLOPS_SPEC_DIR": str(spec_copy(root)),
        "AIRFLOW_CONN_AWS_DEFAULT": json.dumps(connection),
    }
    af = LocalAirflow(
        root / "home", free_port(), profile="distributed", workers=len(WORKERS), extra_env=env
    )
    started = time.monotonic()
    try:
        af.start()
        print(f"distributed profile up in {time.monotonic() - started:.0f} s ({af.run_name})")
        yield af, store
    finally:
        af.stop()
        for log in sorted((root / "home" / "logs").glob("*.log")):
            print(f"--- {log.name} (tail)\n" + log.read_text(errors="replace")[-1500:])
        shutil.rmtree(root / "home" / "logs", ignore_errors=True)
    assert not postgres(
        af, "postgres", "SELECT 1 FROM pg_database WHERE datname = %s", (af.run_name,)
    ), "the scratch database outlived the deployment"


def postgres(af: LocalAirflow, database: str, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
    import psycopg2

    conn = psycopg2.connect(f"postgresql://{af.postgres}/{database}")
    with contextlib.closing(conn), conn.cursor() as cur:
        cur.execute(sql, args)
        return list(cur.fetchall())


def test_dags_load_and_the_stack_is_the_distributed_one(deployment) -> None:
    af, _ = deployment
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and RETRAIN not in af.dag_ids():
        time.sleep(2)
    assert {RETRAIN, MONITOR, "mlops_change_production"} <= set(af.dag_ids())
    status, body = af.api("GET", "/api/v2/importErrors")
    assert status == 200 and body["total_entries"] == 0, body
    assert af.env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert af.env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://")
    assert af.env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://127.0.0.1:6379")
    assert af.env["MLOPS_STORE"].startswith("s3://")
    assert sorted(n for n in af.procs if n.startswith("worker-")) == WORKERS
    assert all(p.poll() is None for p in af.procs.values())
    # The Celery workers, which fork the tasks, imported the steps' libraries first; the
    # scheduler (it only queues tasks here) and the API server did not.
    for name in WORKERS:
        assert "mlops: preloaded 15 modules" in (af.home / "logs" / f"{name}.log").read_text()
    for name in ("scheduler", "api-server"):
        assert "mlops: preloaded" not in (af.home / "logs" / f"{name}.log").read_text(), name


def test_manual_trigger_with_params_promotes(deployment) -> None:
    af, store = deployment
    status, body = af.trigger(RETRAIN, {"hp_max_iter": 0})
    assert status == 400 and "hp_max_iter" in str(body)
    status, body = af.trigger(RETRAIN, {"reason": "first model, on Celery", "hp_max_iter": 80})
    assert status == 200, body
    run_id = body["dag_run_id"]
    run = af.wait_for_run(RETRAIN, lambda r: r["dag_run_id"] == run_id, timeout=300)
    assert run["state"] == "success", af.task_states(RETRAIN, run_id)
    reg = Registry(store)
    version = reg.alias(MODEL)
    assert version is not None
    meta = reg.get_version(MODEL, version)
    assert meta.triggered_by.kind == "manual"
    assert meta.triggered_by.user == "admin"
    assert meta.params["max_iter"] == 80
    assert meta.run_id == run_id
    assert store.exists(f"models/{MODEL}/versions/{version}/model.skops")


def test_a_scheduled_monitor_run_happens_on_its_own(deployment) -> None:
    af, _ = deployment
    run = af.wait_for_run(MONITOR, lambda r: r["run_type"] == "scheduled", timeout=240)
    assert run["state"] == "success", af.task_states(MONITOR, run["dag_run_id"])


def test_drift_triggers_an_asset_run_that_promotes_a_newer_version(deployment) -> None:
    af, store = deployment
    reg = Registry(store)
    before = reg.alias(MODEL)
    assert before is not None, "needs the manual-trigger test's production version"
    synthetic.write_batches(
        start=date.today(), days=2, rows_per_day=1000, scenario="covariate_shift", store=store
    )
    status, body = af.trigger(MONITOR)
    assert status == 200, body
    monitor_id = body["dag_run_id"]
    monitor = af.wait_for_run(MONITOR, lambda r: r["dag_run_id"] == monitor_id, timeout=300)
    assert monitor["state"] == "success", af.task_states(MONITOR, monitor_id)
    retrain = af.wait_for_run(RETRAIN, lambda r: r["run_type"] == "asset_triggered", timeout=300)
    assert retrain["state"] == "success", af.task_states(RETRAIN, retrain["dag_run_id"])
    after = reg.alias(MODEL)
    assert after is not None and after > before
    lineage = reg.get_version(MODEL, after).triggered_by
    assert lineage.kind == "drift" and lineage.drift is not None
    assert lineage.drift.monitor_run_id == monitor_id
    report = lineage.drift.report_uri
    assert report.startswith(store.uri + "/") and report.endswith("/drift.html")
    assert store.exists(report.removeprefix(store.uri + "/"))
    promote = reg.audit(MODEL, action="promote")[-1]
    assert promote["to_version"] == after and promote["actor"] == "monitor"


def test_tasks_ran_on_both_workers(deployment) -> None:
    af, _ = deployment
    ran: dict[str, int] = {}
    for dag_id in (RETRAIN, MONITOR):
        for run in af.runs(dag_id):
            for ti in af.task_instances(dag_id, run["dag_run_id"]):
                if ti["state"] in ("success", "failed"):
                    ran[ti["hostname"]] = ran.get(ti["hostname"], 0) + 1
    print(f"task instances per worker: {ran}")
    assert set(ran) == set(WORKERS), ran  # both workers ran tasks, and nothing else did
    # The metadata lives in the run's scratch PostgreSQL database.
    rows = postgres(
        af,
        af.run_name,
        "SELECT hostname, count(*) FROM task_instance WHERE state "
        "IN ('success', 'failed') GROUP BY hostname",
    )
    assert dict(rows) == ran


def test_canary_keys_appear_in_no_task_log_database_row_or_store_object(deployment) -> None:
    af, store = deployment
    task_logs = sorted((af.home / "logs").glob("dag_id=*/**/*.log"))
    assert task_logs, "no task log files were written"
    # The workers' tasks read the store's keys from the connection (a log line says so, and
    # nothing else writes it) ...
    used = "store credentials from Airflow connection 'aws_default'"
    assert any(used in p.read_text(errors="replace") for p in task_logs)
    found: list[str] = []
    for path in (p for p in af.home.rglob("*") if p.is_file()):
        data = path.read_bytes()
        found += [f"{name} in {path}" for name, v in CANARIES.items() if v.encode() in data]
    # ... and neither key shows up in any row of any table of the metadata database ...
    tables = postgres(
        af, af.run_name, "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
    )
    for (table,) in tables:
        ((text,),) = postgres(
            af, af.run_name, f"SELECT string_agg(t::text, E'\\n') FROM \"{table}\" t"
        )
        text = text or ""
        found += [f"{name} in table {table}" for name, v in CANARIES.items() if v in text]
        if table == "xcom":  # the search reads what tasks returned: URIs into the store
            assert store.uri in text
    assert ("xcom",) in tables
    # ... nor in any object of the store.
    for key in store.list_keys():
        data = store.get_bytes(key)
        found += [f"{name} in {key}" for name, v in CANARIES.items() if v.encode() in data]
    assert found == []
