"""Stored quarantine records, contract verdicts and releases: one that is malformed is an
integrity error naming its file (never a KeyError traceback or a 500), and evidence that holds
non-finite numbers is stored, and shown, as valid JSON."""

from __future__ import annotations

import contextlib
import io
import json
import re
import tempfile
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlops_tasks import overview
from mlops_tasks.cli import main
from mlops_tasks.data import contracts, synthetic
from mlops_tasks.errors import IntegrityError, MlopsError
from mlops_tasks.registry import Registry
from mlops_tasks.specs import load_spec
from mlops_tasks.storage import ArtifactStore, LocalStore, encode_json

SPEC = Path(__file__).resolve().parents[2] / "dags/specs/credit_default.yaml"
HELD, OTHER = "a" * 64, "b" * 64


def record(content: str = HELD, day: str = "2026-03-01", **changes: Any) -> dict[str, Any]:
    """A quarantine record as `contracts.check_batch` leaves it."""
    return {
        "model": "m",
        "batch": f"store://batches/dt={day}/part.parquet",
        "day": day,
        "content_hash": content,
        "contract_hash": "c" * 64,
        "rows": 120,
        "passed": False,
        "failures": [{"expectation": "expect_column_values_to_not_be_null", "column": "age"}],
        "checked_at": f"{day}T01:00:00Z",
        "run_id": "scheduled__x",
        "quarantined_at": f"{day}T01:00:01Z",
        **changes,
    }


def held_store(path: Path) -> LocalStore:
    """A store with one sound quarantined batch (2026-03-02) of model m."""
    store = LocalStore(path)
    store.put_json(contracts.quarantine_key("m", OTHER), record(OTHER, "2026-03-02"))
    return store


def cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


READERS = [
    ("quarantine", "m"),
    ("quarantine", "m", "--json"),
    ("checks", "m"),
    ("checks", "m", "--json"),
    ("release-batch", "m", "2026-03-02", "--reason", "checked by hand"),
]

MALFORMED = [
    pytest.param(b'{"day": "2026-03-01"', "not valid JSON", id="truncated"),
    pytest.param(b"[1, 2]", "a JSON list, not an object", id="a-list"),
    pytest.param(
        encode_json({k: v for k, v in record().items() if k != "content_hash"}),
        "content_hash is None, not str",
        id="no-content-hash",
    ),
    pytest.param(encode_json(record(rows="many")), "rows is 'many', not int", id="rows-text"),
    pytest.param(
        encode_json(record(failures=["nulls in age"])),
        "failures[0] is not an object naming its expectation",
        id="failure-not-an-object",
    ),
    pytest.param(encode_json(record(OTHER)), f"it names batch {OTHER[:16]}...", id="another-batch"),
]


@pytest.mark.parametrize(("content", "problem"), MALFORMED)
def test_a_malformed_quarantine_record_is_an_integrity_error_naming_it(
    tmp_path: Path, content: bytes, problem: str
) -> None:
    """One malformed record made /mlops/models answer 500 and `mlops quarantine`, `checks`
    and `release-batch` end in a KeyError traceback."""
    store = held_store(tmp_path / "s")
    key = contracts.quarantine_key("m", HELD)
    store.put_bytes(key, content)
    uri = store.uri_for(key)
    with pytest.raises(IntegrityError, match=re.escape(uri)) as err:
        contracts.quarantined(store, "m")
    assert problem in str(err.value)
    for argv in READERS:
        code, _, err_text = cli(*argv, "--store", store.uri)
        assert code == IntegrityError.exit_code, (argv, err_text)
        assert uri in err_text and problem in err_text and "Traceback" not in err_text
    summary = overview.summary(store, "m")  # the Models page: a "cannot read" row
    assert summary.error is not None and uri in summary.error
    with pytest.raises(IntegrityError, match=re.escape(uri)):  # the model's page: a 422
        overview.detail(store, "m")


def test_a_malformed_release_record_is_an_integrity_error_naming_it(tmp_path: Path) -> None:
    store = held_store(tmp_path / "s")
    key = contracts.release_key("m", OTHER)
    store.put_json(key, {"by": 7, "reason": "checked", "at": "2026-03-03", "content_hash": OTHER})
    with pytest.raises(IntegrityError, match=re.escape(f"{store.uri_for(key)}: not a valid")):
        contracts.quarantined(store, "m")
    code, _, err = cli("quarantine", "m", "--store", store.uri)
    assert code == IntegrityError.exit_code and "by is 7, not str" in err


def test_a_malformed_contract_verdict_is_an_integrity_error_naming_it(tmp_path: Path) -> None:
    """The verdict a run reads back before checking a batch again."""
    spec = load_spec(SPEC)
    frame = synthetic.generate_day(date(2026, 3, 1), 200)
    data = frame.to_parquet(index=False)
    store = LocalStore(tmp_path / "s")
    content = contracts.batch_hash(data)
    key = f"models/{spec.name}/contracts/{contracts.contract_hash(spec)[:16]}/{content}.json"
    store.put_json(key, {"passed": True})
    with pytest.raises(IntegrityError, match=re.escape(f"{store.uri_for(key)}: not a valid")):
        contracts.check_batch(
            spec, store, "store://b/dt=2026-03-01/x.parquet", date(2026, 3, 1), data, frame, "r"
        )


# Arbitrary JSON never crashes a reader ------------------------------------------------------
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)
PLAUSIBLE = record()
FAILURES = st.lists(
    st.fixed_dictionaries(
        {},
        optional={"expectation": st.text(max_size=8) | JSON, "column": st.text(max_size=4) | JSON},
    )
    | JSON,
    max_size=3,
)
#: Records that have some, all or none of the fields readers rely on, each sound or not.
RECORDS = JSON | st.fixed_dictionaries(
    {},
    optional={
        **{field: st.just(value) | JSON for field, value in PLAUSIBLE.items()},
        "content_hash": st.sampled_from([HELD, OTHER]) | JSON,
        "failures": FAILURES,
    },
)
RELEASES = (
    st.none()
    | JSON
    | st.fixed_dictionaries(
        {},
        optional={
            "by": st.just("alice") | JSON,
            "reason": st.just("checked") | JSON,
            "at": st.just("2026-03-03T00:00:00Z") | JSON,
            "content_hash": st.just(HELD) | JSON,
        },
    )
)


@settings(max_examples=60, deadline=None)
@given(held=RECORDS, released=RELEASES)
def test_arbitrary_json_in_a_quarantine_record_never_crashes_a_reader(
    held: Any, released: Any
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = held_store(Path(tmp) / "s")
        store.put_json(contracts.quarantine_key("m", HELD), held)
        if released is not None:
            store.put_json(contracts.release_key("m", HELD), released)
        try:
            records = contracts.quarantined(store, "m")
        except IntegrityError as err:
            assert "models/m/quarantine/" in str(err)
        else:
            assert {r["content_hash"] for r in records} == {HELD, OTHER}
        for argv in READERS:
            code, out, err = cli(*argv, "--store", store.uri)
            assert code in (0, 2, IntegrityError.exit_code), (argv, err)  # 2: nothing to release
            if "--json" in argv and code == 0:
                json.loads(out, parse_constant=_refuse)
        summary = overview.summary(store, "m")
        assert summary.error is None or "models/m/quarantine/" in summary.error
        with contextlib.suppress(MlopsError):
            overview.detail(store, "m")


# Non-finite evidence ------------------------------------------------------------------------
def _refuse(token: str) -> None:
    raise AssertionError(f"not valid JSON: {token}")


def infinite_batch(store: ArtifactStore) -> str:
    """Quarantine a batch whose ages include +inf and -inf; the model's name."""
    spec = load_spec(SPEC)
    frame = synthetic.generate_day(date(2026, 3, 1), 200)
    frame.loc[:3, "age"] = np.inf
    frame.loc[4:5, "age"] = -np.inf
    data = frame.to_parquet(index=False)
    uri = "store://batches/dt=2026-03-01/part.parquet"
    verdict = contracts.check_batch(spec, store, uri, date(2026, 3, 1), data, frame, "run")
    assert not verdict.passed
    return spec.name


def test_evidence_with_infinite_values_is_stored_as_valid_json(tmp_path: Path) -> None:
    """A batch with +/-inf was quarantined with its evidence stored as `Infinity`; then
    `quarantine --json` and `audit --json` crashed."""
    store = LocalStore(tmp_path / "s")
    model = infinite_batch(store)
    for key in store.list_keys():
        if key.endswith(".json"):
            json.loads(store.get_bytes(key), parse_constant=_refuse)
    (held,) = contracts.quarantined(store, model)
    assert held["non_finite"]["/failures/0/examples/0"] == "Infinity"
    assert held["failures"][0]["examples"][0] is None
    (event,) = Registry(store).audit(model, "batch_quarantined")
    assert set(event["non_finite"].values()) == {"Infinity", "-Infinity"}
    assert Registry(store).verify(model).problems == ()
    for argv in (["quarantine", model], ["audit", model], ["checks", model]):
        code, out, err = cli(*argv, "--json", "--store", store.uri)
        assert code == 0, err
        json.loads(out, parse_constant=_refuse)


def test_documents_stored_with_infinity_before_are_still_read_and_verified(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stores hold documents that the earlier encoder wrote with `Infinity` and signed so."""
    from mlops_tasks import registry
    from mlops_tasks.registry import aliases, audit, signatures, versions

    def earlier(obj: Any) -> bytes:
        return (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode()

    env = {"MLOPS_STORE": (tmp_path / "s").as_uri(), "MLOPS_SIGNING_KEY": "k" * 32}
    from mlops_tasks.settings import Settings

    store = Settings.from_env(env).open_store()
    monkeypatch.setattr(contracts, "encode_json", earlier)
    for part in (registry, aliases, audit, signatures, versions):
        monkeypatch.setattr(part, "encode_json", earlier)
    model = infinite_batch(store)
    monkeypatch.undo()
    assert b"Infinity" in store.get_bytes(f"models/{model}/audit/0000000001.json")
    reg = Registry(store)
    assert reg.verify(model).problems == ()  # its signature was made over `Infinity`
    monkeypatch.setenv("MLOPS_SIGNING_KEY", "k" * 32)
    for argv in (["quarantine", model], ["audit", model], ["checks", model]):
        code, out, err = cli(*argv, "--json", "--store", store.uri)
        assert code == 0, err
        shown = json.loads(out, parse_constant=_refuse)
        if argv[0] != "checks":  # which lists no evidence
            assert "Infinity" in json.dumps(shown)  # what the value was, in the note
