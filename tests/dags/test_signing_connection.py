"""The signing key the Airflow way: a generic connection named by `MLOPS_SIGNING_CONN_ID` holds
the key in its password and the keys a rotation still accepts in extra `previous_keys`; the
Airflow layer hands them to `mlops_tasks` as plain settings, and masks them in logs.

The end-to-end check promotes a version through the `mlops_change_production` DAG with the key
in a connection only (defined by an `AIRFLOW_CONN_...` variable, as a secrets backend would):
the task reads metadata signed with the previous key and signs the alias with the current one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mlops_tasks.errors import IntegrityError, UsageError
from mlops_tasks.registry import Registry
from mlops_tasks.settings import Settings
from mlops_tasks.signing import HmacKey
from tests.dags.conftest import REPO
from tests.unit.test_registry import lineage, model_bytes

KEY = "c" * 32  # the connection's current key
OLD_KEY = "p" * 32  # the key the store was signed with before a rotation
CONN_ID = "mlops_signing"
MODEL = "credit_default"


@pytest.fixture(scope="module")
def dagbag(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO / "dags"))


@pytest.fixture
def signing_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    for name in ("MLOPS_SIGNING_KEY", "MLOPS_SIGNING_PREVIOUS_KEYS", "MLOPS_AWS_CONN_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLOPS_STORE", (tmp_path / "store").as_uri())
    monkeypatch.setenv("MLOPS_SIGNING_CONN_ID", CONN_ID)
    return monkeypatch


def connection(password: str, previous: Any = None) -> str:
    extra = {"previous_keys": previous} if previous is not None else {}
    return json.dumps({"conn_type": "generic", "password": password, "extra": extra})


def keyed(store_uri: str, key: str) -> Registry:
    """The registry as a deployment with `key` alone reads it."""
    env = {"MLOPS_STORE": store_uri, "MLOPS_SIGNING_KEY": key}
    return Registry(Settings.from_env(env).open_store())


@pytest.mark.parametrize(
    "previous",
    [
        pytest.param([OLD_KEY, "q" * 32], id="list"),
        pytest.param(f"{OLD_KEY}, {'q' * 32}", id="comma-separated"),
    ],
)
def test_the_connection_gives_the_key_and_the_previous_keys(
    signing_env: pytest.MonkeyPatch, previous: Any
) -> None:
    from airflow.sdk.log import redact
    from mlops_airflow import open_store, with_signing_key

    signing_env.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", connection(KEY, previous))
    settings = with_signing_key(Settings.from_env())
    assert settings.signing_key == KEY
    assert settings.signing_previous_keys == (OLD_KEY, "q" * 32)
    assert settings.signing_conn_id is None  # read once; opening the store reads no more
    assert KEY not in repr(settings) and OLD_KEY not in repr(settings)
    assert redact(f"key {KEY} old {OLD_KEY}") == "key *** old ***"
    store = open_store(Settings.from_env())
    assert store.keyring is not None
    for key, who in ((KEY, "current"), (OLD_KEY, "previous"), ("q" * 32, "previous")):
        assert store.keyring.who(b"doc", HmacKey(key.encode()).sign(b"doc")) == who


@pytest.mark.parametrize(
    ("value", "env", "match"),
    [
        pytest.param(None, {}, "MLOPS_SIGNING_CONN_ID='mlops_signing': no such", id="missing"),
        pytest.param(connection(""), {}, "password of Airflow connection", id="no-password"),
        pytest.param(connection("short"), {}, "at least 16 characters", id="short-key"),
        pytest.param(
            connection(KEY, ["short"]), {}, "each key of extra previous_keys", id="short-previous"
        ),
        pytest.param(
            connection(KEY), {"MLOPS_SIGNING_KEY": OLD_KEY}, "not both", id="connection-and-env"
        ),
    ],
)
def test_a_signing_connection_that_cannot_work_is_refused(
    signing_env: pytest.MonkeyPatch, value: str | None, env: dict[str, str], match: str
) -> None:
    from mlops_airflow import open_store

    if value is not None:
        signing_env.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", value)
    for name, v in env.items():
        signing_env.setenv(name, v)
    with pytest.raises(UsageError, match=match):
        open_store(Settings.from_env())


def test_outside_airflow_a_signing_connection_fails_closed(signing_env: pytest.MonkeyPatch) -> None:
    """The CLI cannot read an Airflow connection: it refuses rather than run without a key."""
    with pytest.raises(UsageError, match="only Airflow tasks read; outside Airflow give the key"):
        Settings.from_env().open_store()


def states(dag_run: Any) -> dict[str, str]:
    return {
        ti.task_id: str(getattr(ti.state, "value", ti.state)) for ti in dag_run.get_task_instances()
    }


def test_a_promotion_through_airflow_signs_with_the_connections_key(
    dagbag: Any, signing_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    uri = (tmp_path / "store").as_uri()
    old = keyed(uri, OLD_KEY)  # the store as it was signed before the rotation
    for seed in range(2):
        version = old.register(MODEL, model_bytes(seed), lineage(), actor="run").version
        old.record_evaluation(MODEL, version, {"decision": {"passed": True, "checks": []}})
    old.promote(MODEL, 1, reason="first", actor="alice")
    change = dagbag.dags["mlops_change_production"]
    conf = {"model": MODEL, "action": "promote", "version": 2, "reason": "key from a connection"}

    # A connection whose key is not the store's and accepts no previous one: refused.
    signing_env.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", connection("w" * 32))
    refused = change.test(run_conf=conf)
    assert states(refused) == {"change": "failed"}
    assert old.alias(MODEL) == 1

    # The rotated connection: the previous key reads the store, the current key signs.
    signing_env.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", connection(KEY, [OLD_KEY]))
    promoted = change.test(run_conf=conf)
    assert states(promoted) == {"change": "success"}
    assert keyed(uri, KEY).alias(MODEL) == 2  # signed with the connection's current key
    with pytest.raises(IntegrityError, match="signature does not match"):
        old.alias(MODEL)
    newest = old.store.list_keys(f"models/{MODEL}/audit/")[-1]
    event = json.loads(old.store.get_bytes(newest))
    assert event["action"] == "promote" and event["reason"] == "key from a connection"
    assert keyed(uri, KEY).sig.doc_signer(event) == "current"
