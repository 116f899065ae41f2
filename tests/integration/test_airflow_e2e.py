"""The three ways a retrain starts, on a real Airflow 3 scheduler (no human step).

api-server, scheduler, dag-processor and triggerer run as separate processes on 127.0.0.1 in a
temporary AIRFLOW_HOME (SQLite, LocalExecutor). (a) a scheduled monitor run happens on its own;
(b) a REST trigger with Params promotes a version, invalid Params get HTTP 400; (c) drifted data
makes the monitor emit the retrain Asset event, which starts an asset-triggered retrain that
promotes a version whose lineage names the drift report; (d) a backfill of the `bikeshare`
monitor (public data, `tests/realdata.py`) over days of 2011 gives the same decisions as an
in-process replay of the same logical dates on a second store.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlops_tasks.cli import main
from mlops_tasks.data import synthetic
from mlops_tasks.monitor.policy import history
from mlops_tasks.registry import Registry
from mlops_tasks.storage import LocalStore
from scripts.local_airflow import REPO, LocalAirflow
from tests import flightdata, penguins, realdata
from tests.conftest import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: The spec guide's worked examples (docs/specs.md), run by the real scheduler too.
#: The spec guide's examples and the day each is replayed as of (its last batch).
AS_OF = {"penguin_sex": "2009-12-01", "penguin_species": "2009-12-01", "flight_delay": "2013-07-01"}
EXAMPLES = tuple(AS_OF)


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
    # A model whose promotions wait for a person (`deployment.approval: manual`). No retrain
    # schedule: its latest weekly run would otherwise start at once and hold the one run slot
    # while it waits for an answer.
    spend = (REPO / "dags/specs/customer_spend.yaml").read_text()
    assert 'retrain: "30 3 * * 0"' in spend
    spend = spend.replace('retrain: "30 3 * * 0"', "retrain: null")
    (specs / "customer_spend.yaml").write_text(spend)
    # Public data beside the demo's, for the backfill test. Its monitor's first scheduled run
    # (today) finds no production version and skips; its retrain has no schedule.
    realdata.write_batches(store)
    (specs / "bikeshare.yaml").write_text(realdata.spec_text())
    # The spec guide's examples on the raw penguins table and on flights joined with the
    # weather, started by hand only.
    penguins.write_batches(store)
    flightdata.land(store)
    for name in EXAMPLES:
        doc = yaml.safe_load((REPO / "docs" / "examples" / f"{name}.yaml").read_text())
        doc["schedule"] = {"retrain": None, "monitor": None}
        (specs / f"{name}.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
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
    # The scheduler, which the LocalExecutor's workers fork from, imported the steps' libraries.
    logs = af.home / "logs"
    assert "mlops: preloaded 15 modules" in (logs / "scheduler.log").read_text()
    for other in ("api-server", "dag-processor", "triggerer"):
        assert "mlops: preloaded" not in (logs / f"{other}.log").read_text(), other


def _wait(what: str, probe, timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := probe()):
        assert time.monotonic() < deadline, f"no {what} after {timeout:.0f} s"
        time.sleep(2)
    return found


def test_a_broken_spec_leaves_every_other_model_scheduled(deployment) -> None:
    """Through the real dag-processor, which marks every DAG of a file with an import error
    stale: a spec with a misspelled key is the import error of `mlops_spec_errors.py`, naming
    the spec file, the field and the key meant; every other model's DAGs stay active and
    scheduled after `mlops_dags.py` is parsed again; the Models view says the model is not
    scheduled and why; fixing the file clears the error."""
    af, _ = deployment
    specs = Path(af.env["MLOPS_SPEC_DIR"])
    text = (specs / "credit_default.yaml").read_text()
    text = text.replace("name: credit_default", "name: typo_model")
    text = text.replace("  training_window_days:", "  trainig_window_days:")
    assert "name: typo_model" in text and "trainig_window_days" in text
    good = {d for d in af.dag_ids() if not d.startswith("typo_model")}
    assert {"credit_default_retrain", "bikeshare_monitor", "mlops_change_production"} <= good
    broken = specs / "typo_model.yaml"
    written = datetime.now(UTC)
    broken.write_text(text)
    try:
        errors = _wait(
            "import error", lambda: af.api("GET", "/api/v2/importErrors")[1]["import_errors"]
        )
        (error,) = errors
        assert error["filename"].endswith("mlops_spec_errors.py"), error
        assert str(broken) in error["stack_trace"]
        assert (
            "data.trainig_window_days: unknown key (not part of the spec schema); "
            "did you mean 'training_window_days'?" in error["stack_trace"]
        )

        def reparsed() -> list[dict[str, Any]] | None:
            status, body = af.api("GET", "/api/v2/dags?limit=100&exclude_stale=false")
            assert status == 200, body
            dags = [d for d in body["dags"] if d["dag_id"] in good]
            parsed = [d["last_parsed_time"] for d in dags]
            return dags if all(p and datetime.fromisoformat(p) > written for p in parsed) else None

        dags = _wait("parse of mlops_dags.py after the broken spec", reparsed)
        assert {d["dag_id"] for d in dags} == good
        for d in dags:
            assert not d["is_stale"] and not d["has_import_errors"] and not d["is_paused"], d
        scheduled = [
            d
            for d in dags
            if d["dag_id"].endswith("_monitor") and not d["dag_id"].startswith(EXAMPLES)
        ]
        assert scheduled and all(d["next_dagrun_run_after"] for d in scheduled)
        assert not any(d.startswith("typo_model") for d in af.dag_ids())

        status, listing = af.api("GET", "/mlops/models")
        assert status == 200
        row = listing[listing.index(">typo_model<") :]
        assert "spec invalid, not scheduled" in row[:2000]
        assert "did you mean &#x27;training_window_days&#x27;?" in row[:2000]
        status, page = af.api("GET", "/mlops/models/typo_model")
        assert status == 200 and "spec file does not load" in page
    finally:
        broken.unlink()
    _wait(
        "cleared import error",
        lambda: af.api("GET", "/api/v2/importErrors")[1]["total_entries"] == 0,
    )


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


def test_the_spec_guide_examples_train_and_promote_through_the_scheduler(deployment) -> None:
    """Spec only, no code: derived features, a derived target and a scope (`penguin_sex`), a
    multiclass target of text labels (`penguin_species`), an as-of join with a derived target,
    a scope and a cost-chosen threshold (`flight_delay`), replayed as of their last batch."""
    af, store = deployment
    started = {}
    for name in EXAMPLES:
        status, body = af.trigger(f"{name}_retrain", {"as_of": AS_OF[name], "reason": "guide"})
        assert status == 200, body
        started[name] = body["dag_run_id"]
    reg = Registry(store)
    for name, run_id in started.items():
        dag = f"{name}_retrain"
        run = af.wait_for_run(dag, lambda r, rid=run_id: r["dag_run_id"] == rid)
        assert run["state"] == "success", af.task_states(dag, run_id)
        meta = reg.get_version(name, reg.alias(name))
        assert meta.run_id == run_id and meta.triggered_by.kind == "manual"
    assert reg.get_version("penguin_species", reg.alias("penguin_species")).task == "multiclass"
    sex = reg.get_version("penguin_sex", reg.alias("penguin_sex"))
    assert sex.dataset.out_of_scope > 0 and sex.dataset.unlabelled > 0
    flights = reg.get_version("flight_delay", reg.alias("flight_delay"))
    assert set(flights.dataset.joins) == {"weather"} and flights.threshold is not None
    assert flights.dataset.out_of_scope > 0 and flights.dataset.unlabelled > 0


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


# Backfill ------------------------------------------------------------------------------------
BIKESHARE = "bikeshare"
#: Three daily logical dates of 2011 (the monitor's cron is daily at midnight UTC): no drift,
#: then drift and a retrain request, then drift held back by that request's cooldown. Each
#: backfill run costs ~50 s here (six tasks, one process each), so the span stays short.
BACKFILL_FROM, BACKFILL_TO = "2011-03-08T00:00:00Z", "2011-03-10T00:00:00Z"


def _mlops(store: LocalStore, spec_dir: str, *argv: str) -> Any:
    """`mlops ARGV --json` in this process; its parsed output (fails the test on an error)."""
    out, err = io.StringIO(), io.StringIO()
    args = [*argv, "--store", store.uri, "--spec-dir", spec_dir, "--json"]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(args)
    assert code == 0, f"mlops {' '.join(argv)}: exit {code}\n{err.getvalue()}"
    return json.loads(out.getvalue())


def _decisions(store: LocalStore) -> list[dict[str, Any]]:
    """The recorded checks ordered by logical time, without what differs by nature between
    two runs of the same check (ids, run ids, report locations, wall-clock times)."""
    keep = (
        "decided_for",
        "decision",
        "reasons",
        "drift_detected",
        "drifted_columns",
        "drifted_share",
        "streak",
        "current_rows",
        "reference_version",
        "cooldown_blocked_by",
    )
    checks = sorted(history(store, BIKESHARE), key=lambda c: c["decided_for"])
    return [{k: c.get(k) for k in keep} for c in checks]


def _wait_idle(af: LocalAirflow, dag_id: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while any(r["state"] in ("queued", "running") for r in af.runs(dag_id)):
        assert time.monotonic() < deadline, f"{dag_id} runs still active: {af.runs(dag_id)}"
        time.sleep(2)


def test_a_backfill_of_the_monitor_replays_the_in_process_decisions(
    deployment: tuple[LocalAirflow, LocalStore], tmp_path: Path
) -> None:
    af, store = deployment
    spec_dir = af.env["MLOPS_SPEC_DIR"]
    deadline = time.monotonic() + 120
    while {f"{BIKESHARE}_monitor", f"{BIKESHARE}_retrain"} - set(af.dag_ids()):
        assert time.monotonic() < deadline, af.dag_ids()
        time.sleep(2)
    # No retrain may change production mid-sequence: requests queue, nothing runs.
    status, body = af.api("PATCH", f"/api/v2/dags/{BIKESHARE}_retrain", {"is_paused": True})
    assert status == 200 and body["is_paused"], body
    _wait_idle(af, f"{BIKESHARE}_monitor")  # today's scheduled run: no production, skipped
    assert history(store, BIKESHARE) == []

    # Both stores start alike: the batches, and v1 trained as of the end of February.
    replay_store = LocalStore(tmp_path / "replay")
    realdata.write_batches(replay_store)
    for st in (store, replay_store):
        _mlops(st, spec_dir, "run", "retrain", "--model", BIKESHARE, "--as-of", "2011-02-28")

    started = time.monotonic()
    body = {
        "dag_id": f"{BIKESHARE}_monitor",
        "from_date": BACKFILL_FROM,
        "to_date": BACKFILL_TO,
        "max_active_runs": 1,  # in date order, each run sees the checks before it
        "reprocess_behavior": "none",
    }
    # On SQLite (this profile) Airflow answers 503 "Database is locked" while the scheduler
    # holds the database; asking again is the documented way (PostgreSQL does not need it).
    for _ in range(40):
        status, backfill = af.api("POST", "/api/v2/backfills", body)
        if status != 503:
            break
        time.sleep(3)
    assert status == 200, backfill
    deadline = time.monotonic() + 900
    while True:
        status, state = af.api("GET", f"/api/v2/backfills/{backfill['id']}")
        if status == 200 and state["completed_at"]:
            break
        assert time.monotonic() < deadline, state
        time.sleep(3)
    seconds = time.monotonic() - started
    runs = sorted(
        (r for r in af.runs(f"{BIKESHARE}_monitor") if r["run_type"] == "backfill"),
        key=lambda r: r["logical_date"],
    )
    assert [r["logical_date"][:10] for r in runs] == ["2011-03-08", "2011-03-09", "2011-03-10"]
    assert all(r["state"] == "success" for r in runs), [
        af.task_states(f"{BIKESHARE}_monitor", r["dag_run_id"]) for r in runs
    ]
    print(f"backfill of {len(runs)} monitor runs: {seconds:.0f} s")

    # The same logical times in this process, on the second store.
    started = time.monotonic()
    for run in runs:
        as_of = run["data_interval_end"]
        _mlops(replay_store, spec_dir, "run", "monitor", "--model", BIKESHARE, "--as-of", as_of)
    print(f"in-process replay of {len(runs)} monitor runs: {time.monotonic() - started:.0f} s")

    airflow_decisions, replayed = _decisions(store), _decisions(replay_store)
    assert [d["decided_for"][:10] for d in airflow_decisions] == [
        r["data_interval_end"][:10] for r in runs
    ]
    assert airflow_decisions == replayed
    # The policy's state carried from run to run: a retrain request, then its cooldown.
    kinds = [(d["decision"], d["drift_detected"], d["cooldown_blocked_by"]) for d in replayed]
    assert kinds == [
        ("no_retrain", False, None),
        ("retrain", True, None),
        ("no_retrain", True, "retrain request"),
    ], [d["reasons"][0] for d in replayed]
    assert Registry(store).alias(BIKESHARE) == 1 and af.runs(f"{BIKESHARE}_retrain") == []


# A person approves or rejects a candidate -------------------------------------------------------
def _awaiting_approval(af: LocalAirflow, dag_id: str, run_id: str) -> dict[str, Any]:
    """The run's `approve` task once it has waited for a person for a few seconds.

    Airflow 3.3.2 loses a response sent within ~5 s of the task starting to wait; a person
    never answers that fast, so the test waits as long before it answers."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        ti = {t["task_id"]: t for t in af.task_instances(dag_id, run_id)}.get("approve")
        state = ti and ti["state"]
        assert state not in ("failed", "upstream_failed", "skipped"), ti
        if state in ("awaiting_input", "deferred"):
            time.sleep(8)
            return ti
        time.sleep(2)
    raise AssertionError(af.task_states(dag_id, run_id))


def _answer(af: LocalAirflow, dag_id: str, run_id: str, option: str) -> None:
    path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/approve/-1/hitlDetails"
    status, body = af.api("PATCH", path, {"chosen_options": [option], "params_input": {}})
    assert status == 200, body


def test_a_person_approves_a_candidate_and_a_rejection_changes_nothing(deployment) -> None:
    """Through the REST API the UI uses: the run waits at `approve`; an approval promotes with
    the approver in the audit trail, a rejection leaves production untouched."""
    af, store = deployment
    reg = Registry(store)
    dag_id = "customer_spend_retrain"
    status, body = af.trigger(dag_id, {"reason": "first spend model"})
    assert status == 200, body
    run_id = body["dag_run_id"]
    _awaiting_approval(af, dag_id, run_id)
    assert reg.alias("customer_spend") is None  # nothing moves while a person decides
    _answer(af, dag_id, run_id, "Approve")
    run = af.wait_for_run(dag_id, lambda r: r["dag_run_id"] == run_id, timeout=300)
    assert run["state"] == "success", af.task_states(dag_id, run_id)
    version = reg.alias("customer_spend")
    assert version is not None
    promote = reg.audit("customer_spend", action="promote")[-1]
    assert promote["actor"] == "admin" and promote["to_version"] == version

    status, body = af.trigger(dag_id, {"reason": "a second candidate"})
    assert status == 200, body
    second = body["dag_run_id"]
    _awaiting_approval(af, dag_id, second)
    _answer(af, dag_id, second, "Reject")
    af.wait_for_run(dag_id, lambda r: r["dag_run_id"] == second, timeout=300)
    states = af.task_states(dag_id, second)
    assert states["deploy"] in ("skipped", "upstream_failed"), states
    assert reg.alias("customer_spend") == version
    assert len(reg.audit("customer_spend", action="promote")) == 1
