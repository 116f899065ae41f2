"""The `mlops` command: tables, --json, exit codes, --help."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from mlops_tasks import errors
from mlops_tasks.cli import BROKEN_PIPE, main
from mlops_tasks.errors import NotFoundError, RegistryError, SpecError, UnknownModel
from mlops_tasks.records import RetrainRequest, Trigger
from mlops_tasks.registry import Registry
from mlops_tasks.storage import LocalStore
from tests.unit.test_registry import lineage, model_bytes, passed_gate

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def populated(tmp_path: Path) -> str:
    reg = Registry(LocalStore(tmp_path / "s"))
    for seed in range(2):
        metrics = {"roc_auc": 0.8 + seed / 100}
        version = reg.register(
            "credit", model_bytes(seed), replace(lineage(), metrics=metrics), "ci"
        ).version
        passed_gate(reg, "credit", version)
    reg.promote("credit", 1, reason="first", actor="alice")
    return (tmp_path / "s").as_uri()


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_models_and_versions_tables(populated: str, capsys) -> None:
    code, out, _ = run(capsys, "models", "--store", populated)
    assert code == 0
    assert out.splitlines()[0].split() == ["MODEL", "VERSIONS", "LATEST", "PRODUCTION"]
    assert out.splitlines()[1].split() == ["credit", "2", "2", "1"]
    code, out, _ = run(capsys, "versions", "credit", "--store", populated, "--json")
    rows = json.loads(out)
    assert [(r["version"], r["status"], r["metric"]) for r in rows] == [
        (1, "production", "roc_auc=0.8000"),
        (2, "candidate", "roc_auc=0.8100"),
    ]


def test_promote_rollback_audit_roundtrip(populated: str, capsys) -> None:
    assert (
        run(
            capsys,
            "promote",
            "credit",
            "2",
            "--reason",
            "better",
            "--actor",
            "bob",
            "--store",
            populated,
        )[0]
        == 0
    )
    code, out, _ = run(
        capsys, "rollback", "credit", "--reason", "regression seen", "--store", populated
    )
    assert code == 0 and "v2 -> v1" in out
    code, out, _ = run(
        capsys, "audit", "credit", "--json", "--store", populated, "--action", "rollback"
    )
    (event,) = json.loads(out)
    assert (event["from_version"], event["to_version"], event["reason"]) == (
        2,
        1,
        "regression seen",
    )


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        pytest.param(
            ["show", "credit", "9"],
            NotFoundError.exit_code,
            "has no version 9",
            id="missing-version",
        ),
        pytest.param(
            ["versions", "ghost"],
            UnknownModel.exit_code,
            "unknown model 'ghost'",
            id="missing-model",
        ),
        pytest.param(
            ["rollback", "credit", "--reason", "try it"],
            RegistryError.exit_code,
            "no earlier production version",
            id="nothing-to-roll-back",
        ),
    ],
)
def test_errors_have_distinct_exit_codes(populated, capsys, argv, code, message) -> None:
    got, _, err = run(capsys, *argv, "--store", populated)
    assert got == code
    assert message in err


def test_validate_spec(tmp_path: Path, capsys) -> None:
    good = str(REPO / "dags/specs/credit_default.yaml")
    assert run(capsys, "validate-spec", good)[0] == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\ntask: classification\nextra_field: 1\n")
    code, out, _ = run(capsys, "validate-spec", good, str(bad))
    assert code == SpecError.exit_code
    assert "bad.yaml: invalid model spec" in out and "extra_field: unknown key" in out


def test_console_script_help_everywhere() -> None:
    exe = Path(sys.executable).parent / "mlops"
    out = subprocess.run([exe, "--help"], capture_output=True, text=True, check=True).stdout
    assert "exit codes:" in out and "promote" in out
    for sub in ("models", "versions", "show", "promote", "rollback", "audit", "validate-spec"):
        res = subprocess.run([exe, sub, "--help"], capture_output=True, text=True, check=False)
        assert res.returncode == 0 and "usage: mlops" in res.stdout
    res = subprocess.run([exe, "promote", "m"], capture_output=True, text=True, check=False)
    assert res.returncode == 2 and "required" in res.stderr
    for sub in (["run", "retrain"], ["run", "monitor"], ["demo", "drift"], ["feedback", "import"]):
        res = subprocess.run([exe, *sub, "--help"], capture_output=True, text=True, check=False)
        assert res.returncode == 0 and "--store" in res.stdout, sub


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(["--store", "{store}", "--json", "versions", "credit"], id="before"),
        pytest.param(["versions", "credit", "--store", "{store}", "--json"], id="after"),
        pytest.param(["--json", "versions", "--store", "{store}", "credit"], id="mixed"),
    ],
)
def test_global_options_work_before_and_after_the_command(populated, capsys, argv) -> None:
    """`mlops --store X versions M` used to ignore --store silently (a write could go astray)."""
    code, out, _ = run(capsys, *[a.replace("{store}", populated) for a in argv])
    assert code == 0
    assert [r["version"] for r in json.loads(out)] == [1, 2]


def test_a_usage_error_has_the_usage_exit_code(populated, capsys) -> None:
    from mlops_tasks.errors import UsageError
    from mlops_tasks.model.deployment import change_production
    from mlops_tasks.storage import open_store

    with pytest.raises(UsageError, match="promote needs a version") as info:
        change_production(Registry(open_store(populated)), "credit", "promote", None, "x", "me")
    assert info.value.exit_code == 2 and info.value.retryable is False


def test_promote_refuses_an_ungated_candidate_unless_forced(tmp_path: Path, capsys) -> None:
    store = (tmp_path / "s").as_uri()
    reg = Registry(LocalStore(tmp_path / "s"))
    reg.register("credit", model_bytes(), lineage(), "ci")  # its run died before the gate
    code, _, err = run(capsys, "promote", "credit", "1", "--reason", "try it", "--store", store)
    assert code == RegistryError.exit_code and "has no gate result" in err
    argv = ["promote", "credit", "1", "--force", "--reason", "checked by hand", "--store", store]
    code, out, _ = run(capsys, *argv)
    assert code == 0 and "production is now v1" in out
    (event,) = reg.audit("credit", "promote")
    assert event["details"]["forced"] is True


def test_demo_reset_undoes_broken_batches_and_keeps_the_registry(populated: str, capsys) -> None:
    from mlops_tasks.data.datasets import list_batches, read_window
    from mlops_tasks.data.synthetic import DEMO_SOURCE

    store = LocalStore(Path(populated.removeprefix("file://")))
    assert run(capsys, "demo", "seed", "--days", "3", "--rows", "50", "--store", populated)[0] == 0
    assert (
        run(
            capsys,
            "demo",
            "drift",
            "--scenario",
            "quality_break",
            "--rows",
            "50",
            "--store",
            populated,
        )[0]
        == 0
    )
    assert len(list_batches(DEMO_SOURCE, store)[1]) == 5
    events_before = Registry(store).audit("credit")

    code, out, _ = run(capsys, "demo", "reset", "--days", "4", "--rows", "50", "--store", populated)

    assert code == 0
    assert "removed 5 demo batch(es) and wrote 4 stable ones" in out
    batches = list_batches(DEMO_SOURCE, store)[1]
    assert len(batches) == 4
    window = read_window(DEMO_SOURCE, store=store)
    assert window.frame["credit_score"].dtype.kind == "f"  # the retyped column is gone
    assert Registry(store).audit("credit") == events_before
    assert Registry(store).alias("credit") == 1


# Unknown models ------------------------------------------------------------------------------
#: Every command that takes a model, with what else it needs; `{m}` is the model's name.
PER_MODEL = [
    ("versions", "{m}"),
    ("show", "{m}", "1"),
    ("audit", "{m}"),
    ("checks", "{m}"),
    ("quarantine", "{m}"),
    ("release-batch", "{m}", "2024-01-01", "--reason", "x"),
    ("promote", "{m}", "1", "--reason", "x"),
    ("rollback", "{m}", "--reason", "x"),
    ("verify", "{m}"),
    ("repair-alias", "{m}", "--reason", "x"),
    ("sign", "{m}", "--reason", "x"),
    ("reproduce", "{m}", "1"),
    ("run", "retrain", "--model", "{m}"),
    ("run", "monitor", "--model", "{m}"),
    ("feedback", "import", "labels.csv", "--model", "{m}"),
    ("demo", "traffic", "--model", "{m}"),
]


@pytest.fixture
def spec_dir(tmp_path: Path) -> str:
    """A spec directory that defines `churn` (only the file's name makes a model known)."""
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "churn.yaml").write_text("name: churn\n")
    return str(tmp_path / "specs")


def _argv(template: tuple[str, ...], model: str, store: str, specs: str) -> list[str]:
    return ["--store", store, "--spec-dir", specs, *(a.replace("{m}", model) for a in template)]


@pytest.mark.parametrize("template", [pytest.param(t, id=" ".join(t[:2])) for t in PER_MODEL])
def test_an_unknown_model_fails_the_same_way_in_every_command(
    populated, spec_dir, capsys, template
) -> None:
    """`audit`, `checks` and `quarantine` printed nothing and exited 0 on a typo; `rollback`
    said "no production version" (6) and `release-batch` exited 2."""
    code, out, err = run(capsys, *_argv(template, "credt", populated, spec_dir))
    assert code == UnknownModel.exit_code
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith("error: unknown model 'credt': no spec in ")
    assert err.rstrip().endswith("known models: churn, credit")


@pytest.mark.parametrize(
    ("command", "empty"),
    [
        pytest.param("audit", "churn: no audit events yet", id="audit"),
        pytest.param("checks", "churn: no drift checks or quarantined batches yet", id="checks"),
        pytest.param("quarantine", "churn: no quarantined batches", id="quarantine"),
        pytest.param("versions", "churn: no versions yet", id="versions"),
    ],
)
def test_a_known_model_without_records_says_so(populated, spec_dir, capsys, command, empty) -> None:
    """A model with a spec and nothing stored yet is no error, but no silence either."""
    code, out, _ = run(capsys, *_argv((command, "churn"), "churn", populated, spec_dir))
    assert (code, out) == (0, empty + "\n")
    code, out, _ = run(capsys, *_argv((command, "churn", "--json"), "churn", populated, spec_dir))
    assert (code, json.loads(out)) == (0, [])


def test_audit_names_the_action_it_found_no_events_of(populated, capsys) -> None:
    code, out, _ = run(capsys, "audit", "credit", "--action", "rollback", "--store", populated)
    assert (code, out) == (0, "credit: no rollback events yet\n")


#: Every exit status `mlops --help` documents.
DOCUMENTED_CODES = {0, 1, 2, 130, BROKEN_PIPE} | {
    c.exit_code
    for c in vars(errors).values()
    if isinstance(c, type) and issubclass(c, errors.MlopsError)
}


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(template=st.sampled_from(PER_MODEL), name=st.text(max_size=30))
def test_any_model_name_gets_a_documented_exit_code_and_no_traceback(
    populated, spec_dir, template, name
) -> None:
    assume(name not in ("churn", "credit"))
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(_argv(template, name, populated, spec_dir))
        except SystemExit as exit_:  # argparse: a name that looks like an option
            code = exit_.code if isinstance(exit_.code, int) else 2
    assert code in DOCUMENTED_CODES
    assert "Traceback" not in err.getvalue()
    if not name.startswith("-"):
        assert code == UnknownModel.exit_code
        assert err.getvalue().count("\n") == 1


# Output into a closed pipe ----------------------------------------------------------------------
def test_a_reader_that_goes_away_ends_the_command_quietly(populated: str) -> None:
    """`mlops audit M | head -1` ended with a BrokenPipeError traceback."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first line: every write fails
    try:
        res = subprocess.run(
            [Path(sys.executable).parent / "mlops", "audit", "credit", "--store", populated],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
            timeout=60,
        )
    finally:
        os.close(write_end)
    assert (res.returncode, res.stderr) == (BROKEN_PIPE, "")


# Report links ----------------------------------------------------------------------------------
@pytest.fixture
def reported(tmp_path: Path) -> str:
    """A store with credit v1, retrained on drift, whose gate left a report."""
    root = tmp_path / "reported"
    store = root.as_uri()
    drift = RetrainRequest(
        model="credit",
        reason="drift",
        report_uri=f"{store}/reports/credit/monitor_1/drift.html",
        drift_share=0.5,
        drifted_columns=("a",),
        monitor_run_id="monitor_1",
        check_id="c1",
    )
    reg = Registry(LocalStore(root))
    meta = replace(lineage(), triggered_by=Trigger("drift", drift=drift))
    reg.register("credit", model_bytes(), meta, "ci")
    decision = {"passed": True, "note": "better", "checks": []}
    report = f"{store}/reports/credit/retrain_1/evaluation-v1.html"
    reg.record_evaluation("credit", 1, {"decision": decision, "report_uri": report})
    return store


@pytest.mark.parametrize(
    ("base_url", "store_option", "prefix"),
    [
        pytest.param(
            "http://airflow.example:8080/",
            False,
            "http://airflow.example:8080/mlops/reports/credit/",
            id="models-view",
        ),
        pytest.param(None, False, "{store}/reports/credit/", id="no-base-url"),
        pytest.param(
            "http://airflow.example:8080", True, "{store}/reports/credit/", id="another-store"
        ),
    ],
)
def test_show_links_reports_through_the_models_view(
    reported, tmp_path, monkeypatch, capsys, base_url, store_option, prefix
) -> None:
    """`show` printed file:// URIs a browser will not open; the Models view serves them. Only
    the deployment's store is served there, so another --store keeps the URI."""
    monkeypatch.setenv("MLOPS_STORE", reported)
    if base_url:
        monkeypatch.setenv("AIRFLOW__API__BASE_URL", base_url)
    else:
        monkeypatch.delenv("AIRFLOW__API__BASE_URL", raising=False)
    argv = ["show", "credit", "1"]
    if store_option:
        monkeypatch.setenv("MLOPS_STORE", (tmp_path / "elsewhere").as_uri())
        argv += ["--store", reported]
    code, out, _ = run(capsys, *argv)
    assert code == 0
    prefix = prefix.replace("{store}", reported)
    assert f"  drift report {prefix}monitor_1/drift.html\n" in out
    assert f"  report       {prefix}retrain_1/evaluation-v1.html\n" in out


def test_each_demo_drift_lands_in_the_monitors_window(tmp_path: Path, capsys) -> None:
    """README steps 6 and 7: the second `demo drift` used to follow the first one's batches
    into the future, where no monitor looked. Both now end today; a day that holds data gets
    a further part, nothing is replaced, and every customer id stays unique."""
    import pandas as pd

    from mlops_tasks.data.datasets import list_batches
    from mlops_tasks.data.synthetic import DEMO_SOURCE

    store = (tmp_path / "s").as_uri()
    assert run(capsys, "demo", "seed", "--days", "3", "--rows", "50", "--store", store)[0] == 0
    st, seeded = list_batches(DEMO_SOURCE, LocalStore(tmp_path / "s"))
    before = {key: st.get_bytes(key) for _, key in seeded}
    for scenario in ("covariate_shift", "quality_break"):
        code, _, err = run(
            capsys, "demo", "drift", "--scenario", scenario, "--rows", "50", "--store", store
        )
        assert code == 0, err
    st, batches = list_batches(DEMO_SOURCE, LocalStore(tmp_path / "s"))
    today = datetime.now(UTC).date()
    assert max(day for day, _ in batches) == today
    assert len(batches) == len(seeded) + 4
    assert all(st.get_bytes(key) == data for key, data in before.items())
    yesterday = today - timedelta(days=1)
    assert sorted(k.rsplit("/", 1)[1] for d, k in batches if d == yesterday) == [
        "part-0.parquet",
        "part-1.parquet",
        "part-2.parquet",
    ]
    ids = pd.concat([pd.read_parquet(io.BytesIO(st.get_bytes(k))) for _, k in batches])
    assert ids["customer_id"].dropna().is_unique


def test_run_retrain_and_monitor_print_what_the_runs_did(tmp_path: Path, capsys) -> None:
    """The text `mlops run retrain|monitor` print reads the run's typed records (a name the
    text used was imported for type checking only, and the command ended in a NameError)."""
    from datetime import date

    from mlops_tasks.data import synthetic

    store = LocalStore(tmp_path / "s")
    synthetic.write_batches(start=date(2026, 3, 1), days=6, rows_per_day=800, store=store)
    argv = ["--store", store.uri, "--as-of", "2026-03-06"]
    code, out, err = run(capsys, "run", "retrain", "--model", "credit_default", "--approve", *argv)
    assert code == 0, err
    assert out.startswith("credit_default v1 passed its gate and was deployed to production")
    code, out, err = run(capsys, "run", "monitor", "--model", "credit_default", *argv)
    assert code == 0, err
    assert out.startswith("credit_default: no_retrain: ")


def test_checks_show_what_a_check_flags_beside_its_lead(populated, capsys) -> None:
    """A one-class window's check leads with `no drift detected`; its flag follows."""
    from mlops_tasks.monitor import policy
    from tests.unit.test_policy import CALM, ONE_CLASS, drift, verdict

    store = LocalStore(Path(populated.removeprefix("file://")))
    found = replace(drift(CALM, None), performance=ONE_CLASS)
    check = verdict("no_retrain", ["no drift detected"], False, 0)
    policy.record_check(store, "credit", check, found)
    code, out, _ = run(capsys, "checks", "credit", "--store", populated, "--width", "200")
    assert code == 0
    assert "no drift detected; metric undefined: the labelled window holds one class (all 1)" in out
