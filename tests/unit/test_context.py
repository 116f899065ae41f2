"""A run's context: the one as-of parser (`--as-of`, the `as_of` Param) and the one constructor.

The CLI read `--as-of 2026-03-01` as 23:59:59 that day and the Airflow form as 00:00:00, so the
same replay started from the two sides counted cooldowns 24 h apart.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from mlops_tasks.cli import main
from mlops_tasks.errors import UsageError
from mlops_tasks.flow.context import RunContext, parse_as_of
from mlops_tasks.records import RunParams, Trigger
from mlops_tasks.settings import Settings
from mlops_tasks.specs import load_spec
from mlops_tasks.storage import LocalStore

REPO = Path(__file__).resolve().parents[2]
SPEC_DIR = REPO / "dags" / "specs"
END_OF_MARCH_1 = datetime(2026, 3, 1, 23, 59, 59, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("2026-03-01", END_OF_MARCH_1, id="date-is-its-last-second"),
        pytest.param("20260301", END_OF_MARCH_1, id="basic-date"),
        pytest.param(" 2026-03-01 ", END_OF_MARCH_1, id="surrounding-blanks"),
        pytest.param("2026-03-01T12:30", datetime(2026, 3, 1, 12, 30, tzinfo=UTC), id="no-zone"),
        pytest.param("2026-03-01T12:30Z", datetime(2026, 3, 1, 12, 30, tzinfo=UTC), id="zulu"),
        pytest.param(
            "2026-03-01T01:00:00+02:00", datetime(2026, 2, 28, 23, tzinfo=UTC), id="offset"
        ),
    ],
)
def test_an_as_of_is_one_instant_in_utc(text: str, expected: datetime) -> None:
    parsed = parse_as_of(text, "--as-of")
    assert parsed == expected
    assert parsed is not None and parsed.utcoffset() == timedelta(0)


@pytest.mark.parametrize("value", [None, "", "   "])
def test_no_as_of_leaves_the_default_to_the_caller(value: str | None) -> None:
    assert parse_as_of(value, "--as-of") is None


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("yesterday", id="words"),
        pytest.param("2026-02-30", id="no-such-day"),
        pytest.param("2026-03-01T25:00", id="no-such-hour"),
        pytest.param("0001-01-01T00:00+01:00", id="before-year-1-in-utc"),
    ],
)
def test_a_bad_as_of_names_where_it_was_typed(text: str) -> None:
    with pytest.raises(UsageError, match=rf"^Param as_of '{re.escape(text)}': use YYYY-MM-DD \("):
        parse_as_of(text, "Param as_of")


def test_the_cli_refuses_a_bad_as_of_with_the_usage_exit_code(tmp_path: Path, capsys) -> None:
    store = (tmp_path / "store").as_uri()
    argv = ["run", "monitor", "--model", "credit_default", "--as-of", "2026-13-01"]
    code = main([*argv, "--store", store, "--spec-dir", str(SPEC_DIR)])
    err = capsys.readouterr().err
    assert code == UsageError.exit_code
    assert err.startswith("error: --as-of '2026-13-01': use YYYY-MM-DD")
    assert "Traceback" not in err


def test_the_cli_help_says_what_a_bare_date_means(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["run", "monitor", "--help"])
    assert "YYYY-MM-DD (the end of that day)" in " ".join(capsys.readouterr().out.split())


def test_the_constructor_names_the_run_in_its_trigger_and_keeps_as_of_in_utc(
    tmp_path: Path,
) -> None:
    store = LocalStore(tmp_path / "store")
    spec = load_spec(SPEC_DIR / "credit_default.yaml")
    settings = Settings.from_env({"MLOPS_STORE": store.uri})
    trigger = Trigger("manual", user="alice", reason="why")
    east = timezone(timedelta(hours=5))
    ctx = RunContext.create(
        spec, store, settings, "run-1", trigger, as_of=datetime(2026, 3, 2, 3, tzinfo=east)
    )
    assert ctx.trigger == Trigger("manual", user="alice", reason="why", run_id="run-1")
    assert ctx.as_of == datetime(2026, 3, 1, 22, tzinfo=UTC)
    assert ctx.as_of.tzinfo is UTC  # its date is the day the windows end on: 1 March
    assert ctx.params == RunParams()
    naive = RunContext.create(spec, store, settings, "run-2", trigger, as_of=datetime(2026, 3, 1))
    assert naive.as_of == datetime(2026, 3, 1, tzinfo=UTC)
    before = datetime.now(UTC)
    assert RunContext.create(spec, store, settings, "run-3", trigger).as_of >= before
