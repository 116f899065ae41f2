"""A stored monitoring check that is not one (an edited, truncated or planted file) is an
integrity error naming the file: `mlops checks` ended in an AttributeError or KeyError
traceback, and the monitor's policy, which reads the same history, crashed the same way."""

from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlops_tasks import overview
from mlops_tasks.cli import main
from mlops_tasks.errors import IntegrityError
from mlops_tasks.monitor import policy
from mlops_tasks.storage import LocalStore
from tests.unit.test_policy import DRIFTED, drift, verdict

#: Newer than any check the tests store, so the Models page reads it as the last one.
KEY = "models/m/monitoring/29990101T000000.000000Z_c9.json"


def stored_check(store: LocalStore) -> dict[str, Any]:
    """A check as the monitor stores it."""
    decision = verdict(policy.RETRAIN, ["retrain: drift persisted"], True, 2, 1)
    return policy.record_check(store, "m", decision, drift(DRIFTED, None))


def cli(*argv: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue() + err.getvalue()


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        pytest.param([1, 2], "a JSON list, not an object", id="a-list"),
        pytest.param({"decision": "retrain"}, "at is None", id="no-time"),
        pytest.param(
            {"decision": "maybe", "at": "2026-03-01"}, "decision is 'maybe'", id="verdict"
        ),
        pytest.param(
            {"decision": "retrain", "at": "2026-03-01", "evidence": [3]},
            "evidence holds something other than text",
            id="evidence",
        ),
        pytest.param(
            {"decision": "retrain", "at": "2026-03-01", "current_rows": "900"},
            "current_rows is '900'",
            id="rows-as-text",
        ),
    ],
)
def test_a_malformed_check_is_an_integrity_error_naming_its_file(
    tmp_path: Path, content: Any, problem: str
) -> None:
    store = LocalStore(tmp_path / "s")
    stored_check(store)
    store.put_json(KEY, content)
    uri = store.uri_for(KEY)
    with pytest.raises(IntegrityError, match="not a valid monitoring check") as err:
        policy.history(store, "m")
    assert uri in str(err.value) and problem in str(err.value)
    code, text = cli("checks", "m", "--store", store.uri, "--spec-dir", str(tmp_path))
    assert code == IntegrityError.exit_code and uri in text and "Traceback" not in text
    with pytest.raises(IntegrityError, match=uri):  # the model's page: a 422 naming it
        overview.detail(store, "m")
    summary = overview.summary(store, "m")  # the Models page: a "cannot read" row, not a 500
    assert summary.error is not None and uri in summary.error


def test_checks_the_monitor_stores_and_older_ones_read_as_before(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "s")
    written = stored_check(store)
    older = {"decision": "no_retrain", "at": "2025-01-01T00:00:00Z", "drift_detected": False}
    store.put_json("models/m/monitoring/20250101T000000.000000Z_c0.json", older)
    assert policy.history(store, "m") == [older, written]


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
)


@settings(max_examples=60, deadline=None)
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "decision": st.sampled_from(["retrain", "no_retrain", "escalate"]) | JSON,
            "at": st.just("2026-03-01T00:00:00Z") | JSON,
            "decided_for": st.just("2026-03-01T00:00:00+00:00") | JSON,
            "evidence": st.lists(st.text(max_size=5), max_size=2) | JSON,
            "reference_version": st.integers(1, 5) | JSON,
            "current_rows": st.integers(0, 5000) | JSON,
            "drift_detected": st.booleans() | JSON,
        },
    )
    | JSON
)
def test_arbitrary_json_in_a_check_never_crashes_a_reader(content: Any) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = LocalStore(Path(tmp) / "s")
        store.put_json(KEY, content)
        code, text = cli("checks", "m", "--store", store.uri, "--spec-dir", tmp, "--json")
        assert code in (0, IntegrityError.exit_code) and "Traceback" not in text, text
        with contextlib.suppress(IntegrityError):
            for check in policy.history(store, "m"):  # what the policy reads, as it reads it
                assert isinstance(check.get("decided_for") or check["at"], str)
