"""DAG integrity: the factory loads cleanly, follows the house policies and parses cheaply."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.dags.conftest import AIRFLOW_ENV, DAG_FILES, REPO, SPEC_DIR, dag_folder

HEAVY = [
    "sklearn",
    "great_expectations",
    "evidently",
    "skops",
    "pandas",
    "boto3",
    "fastapi",
    "mlops_tasks.storage",
    "mlops_tasks.registry",
]


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO / "dags"))


def test_no_import_errors(dagbag) -> None:
    assert dagbag.import_errors == {}


def test_every_spec_gets_retrain_and_monitor(dagbag) -> None:
    names = {p.stem for p in SPEC_DIR.glob("*.yaml")}
    expected = {f"{n}_{kind}" for n in names for kind in ("retrain", "monitor")}
    assert expected | {"mlops_change_production"} == set(dagbag.dag_ids)


def test_policies_owner_tags_retries(dagbag) -> None:
    for dag in dagbag.dags.values():
        assert dag.tags and "mlops" in dag.tags, dag.dag_id
        assert dag.doc_md, dag.dag_id
        for t in dag.tasks:
            assert t.owner and t.owner != "airflow", (dag.dag_id, t.task_id)
            if dag.dag_id != "mlops_change_production" and t.task_id != "approve":
                assert t.retries >= 1, (dag.dag_id, t.task_id)


def test_change_production_fails_a_promote_without_a_version_at_once(dagbag, caplog) -> None:
    """`promote` with no version passes the form (it cannot say "required if"); the task
    then failed saying it "will retry" although it has no retries. It fails once, for good."""
    import logging

    from airflow.sdk.exceptions import AirflowFailException
    from mlops_airflow import call

    from mlops_tasks.model.deployment import change_production

    assert [t.retries for t in dagbag.dags["mlops_change_production"].tasks] == [0]
    with (
        caplog.at_level(logging.INFO),
        pytest.raises(AirflowFailException, match="UsageError: promote needs a version"),
    ):
        call(change_production, None, "credit_default", "promote", None, "why", "me")
    assert "will retry" not in caplog.text


def test_retrain_dags_run_one_at_a_time_and_listen_for_drift(dagbag) -> None:
    for dag_id, dag in dagbag.dags.items():
        if not dag_id.endswith("_retrain"):
            continue
        model = dag_id.removesuffix("_retrain")
        assert dag.max_active_runs == 1
        assert type(dag.timetable).__name__ == "AssetOrTimeSchedule"
        assert dag.timetable.timetable.expression  # the spec's cron ...
        assets = dag.timetable.asset_condition.objects  # ... or the drift Asset
        assert [a.uri for a in assets] == [f"mlops://retrain-request/{model}"]


def test_retrain_task_chain(dagbag) -> None:
    dag = dagbag.dags["credit_default_retrain"]
    order = [
        "snapshot_data",
        "validate_data",
        "train_candidate",
        "evaluate_candidate",
        "gate",
        "deploy",
        "verify_deployment",
    ]
    assert [t.task_id for t in dag.topological_sort()] == order
    manual = dagbag.dags["customer_spend_retrain"]  # approval: manual in its spec
    assert manual.get_task("approve").downstream_task_ids == {"deploy"}
    assert manual.get_task("gate").downstream_task_ids == {"approve", "deploy"}


def test_monitor_emits_the_retrain_asset(dagbag) -> None:
    task = dagbag.dags["credit_default_monitor"].get_task("request_retrain")
    assert [o.uri for o in task.outlets] == ["mlops://retrain-request/credit_default"]


def test_retrain_params_are_typed_and_bounded(dagbag) -> None:
    params = dagbag.dags["credit_default_retrain"].params
    assert params.get_param("force_deploy").schema["type"] == ["null", "boolean"]
    lr = params.get_param("hp_learning_rate").schema
    assert lr["type"] == ["null", "number"] and lr["maximum"] == 1.0
    from airflow.sdk.exceptions import ParamValidationError

    with pytest.raises(ParamValidationError, match="greater than the maximum"):
        params.get_param("hp_learning_rate").resolve(5.0)
    with pytest.raises(ParamValidationError, match="is not of type"):
        params.get_param("force_deploy").resolve("yes")


_PARSE_PROBE = """
import json, sys, time
import airflow.sdk as sdk
calls = []
def spy(kind, orig):
    def wrapper(*a, **k):
        calls.append(kind)
        return orig(*a, **k)
    return wrapper
sdk.Variable.get = staticmethod(spy("variable", sdk.Variable.get))
sdk.Connection.get = staticmethod(spy("connection", sdk.Connection.get))
before = set(sys.modules)
from airflow.dag_processing.dagbag import DagBag
t = time.perf_counter()
bag = DagBag(dag_folder=sys.argv[1])
seconds = time.perf_counter() - t
loaded = sorted(m for m in set(sys.modules) - before)
print(json.dumps({"seconds": seconds, "calls": calls, "modules": loaded,
                  "dags": sorted(bag.dag_ids), "errors": dict(bag.import_errors)}))
"""


def _probe(folder: Path, **env: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", _PARSE_PROBE, str(folder)],
        env={**os.environ, **AIRFLOW_ENV, **env},
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_parse_is_cheap_and_touches_nothing(tmp_path: Path) -> None:
    # A store URI that would fail loudly if anything tried to reach it at parse time.
    res = _probe(REPO / "dags", MLOPS_STORE="s3://parse-time-must-not-touch-this")
    assert res["errors"] == {}
    assert res["calls"] == []
    heavy = [m for m in res["modules"] if m.split(".")[0] in HEAVY or m in HEAVY]
    assert heavy == []
    print(f"DagBag parse of dags/: {res['seconds'] * 1000:.0f} ms")


_READS_PROBE = """
import builtins, collections, io, json, os, sys
spec_dir = os.path.realpath(sys.argv[2])
reads = collections.Counter()
original = io.open
def counting_open(file, *args, **kwargs):
    path = os.path.realpath(os.fspath(file)) if isinstance(file, (str, os.PathLike)) else ""
    if os.path.dirname(path) == spec_dir:
        reads[os.path.basename(path)] += 1
    return original(file, *args, **kwargs)
builtins.open = io.open = counting_open
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
print(json.dumps({"reads": reads, "dags": len(bag.dag_ids), "errors": dict(bag.import_errors)}))
"""


def generated_specs(directory: Path, n: int) -> list[str]:
    """`n` copies of the credit_default spec under other names (as bench/dag_parse.py makes)."""
    directory.mkdir(parents=True, exist_ok=True)
    text = (REPO / "dags/specs/credit_default.yaml").read_text()
    names = [f"model_{i:03d}" for i in range(n)]
    for name in names:
        (directory / f"{name}.yaml").write_text(
            text.replace("name: credit_default", f"name: {name}")
        )
    return names


@pytest.mark.parametrize("dag_file", DAG_FILES)
def test_each_spec_file_is_read_once_per_parse(tmp_path: Path, dag_file: str) -> None:
    """A DAG folder of 100 specs: 201 DAGs, and every spec file opened exactly once by each DAG
    file's parse (the dag-processor parses each file on its own; the time is
    bench/dag_parse.py's)."""
    names = generated_specs(tmp_path / "specs", 100)
    out = subprocess.run(
        [
            sys.executable,
            "-W",
            "ignore",
            "-c",
            _READS_PROBE,
            str(REPO / "dags" / dag_file),
            str(tmp_path / "specs"),
        ],
        env={**os.environ, **AIRFLOW_ENV, "MLOPS_SPEC_DIR": str(tmp_path / "specs")},
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["errors"] == {}
    assert res["dags"] == (2 * len(names) + 1 if dag_file == "mlops_dags.py" else 0)
    assert res["reads"] == {f"{name}.yaml": 1 for name in names}


def test_broken_spec_is_an_import_error_of_its_own_file(tmp_path: Path) -> None:
    """The error names the spec file and field, and it is not the models' DAG file's: the
    dag-processor marks every DAG of a file with an import error stale."""
    dags, specs = dag_folder(tmp_path)
    shutil.copy(REPO / "dags/specs/credit_default.yaml", specs)
    broken = (
        (REPO / "dags/specs/customer_spend.yaml")
        .read_text()
        .replace("estimator: ridge", "estimator: quantum_forest")
    )
    (specs / "customer_spend.yaml").write_text(broken)
    res = _probe(dags, MLOPS_SPEC_DIR=str(specs))
    assert "credit_default_retrain" in res["dags"] and "credit_default_monitor" in res["dags"]
    assert not any(d.startswith("customer_spend") for d in res["dags"])
    ((where, message),) = res["errors"].items()
    assert where.endswith("mlops_spec_errors.py")
    assert str(specs / "customer_spend.yaml") in message
    assert "model.estimator: unknown estimator 'quantum_forest'" in message


def _pools(dag) -> dict[str, tuple[str, int]]:
    return {t.task_id: (t.pool, t.pool_slots) for t in dag.tasks}


def test_model_tasks_run_in_the_deployment_pool_with_the_spec_slots(
    dagbag, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.dag_processing.dagbag import DagBag

    # Without settings: Airflow's default pool, one slot per task.
    for dag_id in ("credit_default_retrain", "customer_spend_monitor"):
        assert set(_pools(dagbag.dags[dag_id]).values()) == {("default_pool", 1)}, dag_id

    specs = tmp_path / "specs"
    specs.mkdir()
    for name, extra in (
        ("credit_default", "  pool_slots: 3\n"),
        ("customer_spend", "  pool: gpu\n"),
    ):
        text = (SPEC_DIR / f"{name}.yaml").read_text()
        (specs / f"{name}.yaml").write_text(text.replace("schedule:\n", "schedule:\n" + extra))
    monkeypatch.setenv("MLOPS_SPEC_DIR", str(specs))
    monkeypatch.setenv("MLOPS_POOL", "mlops")
    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert bag.import_errors == {}
    for flow in ("retrain", "monitor"):
        # A heavy model takes three slots of the deployment's pool with every task ...
        assert set(_pools(bag.dags[f"credit_default_{flow}"]).values()) == {("mlops", 3)}
        # ... and a spec can name a pool of its own (here: models that need a GPU).
        pools = _pools(bag.dags[f"customer_spend_{flow}"])
        pools.pop("approve", None)
        assert set(pools.values()) == {("gpu", 1)}
    # A person's approval holds no slot while it waits.
    assert _pools(bag.dags["customer_spend_retrain"])["approve"] == ("default_pool", 1)
    assert set(_pools(bag.dags["mlops_change_production"]).values()) == {("default_pool", 1)}


@pytest.mark.parametrize(
    ("line", "field"),
    [
        pytest.param("  pool_slots: 0\n", "schedule.pool_slots", id="no-slots"),
        pytest.param("  pool_slots: 1000\n", "schedule.pool_slots", id="too-many-slots"),
        pytest.param("  pool: 'a b'\n", "schedule.pool", id="pool-name"),
    ],
)
def test_pool_settings_in_a_spec_are_bounded(tmp_path: Path, line: str, field: str) -> None:
    from mlops_tasks.errors import SpecError
    from mlops_tasks.specs import load_spec

    path = tmp_path / "credit_default.yaml"
    text = (SPEC_DIR / "credit_default.yaml").read_text()
    path.write_text(text.replace("schedule:\n", "schedule:\n" + line))
    with pytest.raises(SpecError, match=field):
        load_spec(path)


def test_an_unanswered_approval_expires_and_is_never_taken_as_an_answer(dagbag) -> None:
    """It used to default to Reject after three days (and Reject looked like the answer the
    page expected): no default now, a timeout from the spec, and a comment for the audit."""
    from datetime import timedelta

    approve = dagbag.dags["customer_spend_retrain"].get_task("approve")
    assert approve.defaults is None
    assert approve.response_timeout == timedelta(hours=72)
    assert approve.params.get_param("comment").schema["maxLength"] == 500
    assert "expires after 72 h" in approve.body


def test_the_trigger_form_marks_nothing_required_and_names_every_bound(dagbag) -> None:
    """Airflow's form marks a field required unless its type admits null (it showed a red
    badge before anything was typed, and force_deploy looked required), and it clamps a
    number to its bounds on its own: each bounded field's description says them."""
    params = dagbag.dags["credit_default_retrain"].params
    for name in params:
        schema = params.get_param(name).schema
        assert "null" in schema["type"], name
        if "minimum" in schema or "maximum" in schema:
            low, high = schema.get("minimum"), schema.get("maximum")
            words = f"{low:g} to {high:g}" if low is not None and high is not None else ""
            assert words in params.get_param(name).description, name
    assert params.get_param("training_window_days").description.endswith("1 to 3650)")
    assert params["force_deploy"] is False
