"""The store's credentials the Airflow way: an `aws` connection gives the endpoint and keys, the
DAG layer hands them to `mlops_tasks` as plain parameters, and they show up nowhere else.

The end-to-end check runs a retrain and a monitor through Airflow against moto's S3 server with
IAM authentication switched on: it refuses every request not signed with the access key it
issued (the canary), so a successful run proves the tasks opened the store with the
connection's keys, not with the decoy keys in the AWS environment chain. Then every file under
AIRFLOW_HOME (task logs, the SQLite database with XCom), everything printed or logged, and every
object in the store are searched for the canary key id and secret.
"""

from __future__ import annotations

import json
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from mlops_tasks.data import synthetic
from mlops_tasks.errors import StoreError, UsageError
from mlops_tasks.registry import Registry
from mlops_tasks.settings import Settings
from mlops_tasks.storage import S3Credentials, S3Store, resolve
from tests.conftest import moto_server_process
from tests.dags.conftest import AIRFLOW_HOME, REPO


@pytest.fixture(scope="module")
def dagbag(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO / "dags"))


@pytest.fixture
def no_aws_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("AIRFLOW_CONN_AWS_DEFAULT", "MLOPS_AWS_CONN_ID", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def client_keys(store: S3Store) -> tuple[str, str, str | None]:
    creds = store.client._get_credentials()
    return creds.access_key, creds.secret_key, creds.token


# How an `aws` connection maps to the store -------------------------------------------------
@pytest.mark.parametrize(
    ("value", "endpoint", "keys", "region"),
    [
        pytest.param(
            "aws://KEYID0001:se%2Fcret0001@/?endpoint_url=http%3A%2F%2Fminio%3A9000"
            "&region_name=eu-west-1",
            "http://minio:9000",
            ("KEYID0001", "se/cret0001", None),
            "eu-west-1",
            id="uri-login-password",
        ),
        pytest.param(
            json.dumps(
                {
                    "conn_type": "aws",
                    "extra": {
                        "aws_access_key_id": "KEYID0002",
                        "aws_secret_access_key": "secret0002",
                        "aws_session_token": "token0002",
                        "endpoint_url": "http://global:1",
                        "service_config": {"s3": {"endpoint_url": "http://s3-only:2"}},
                    },
                }
            ),
            "http://s3-only:2",
            ("KEYID0002", "secret0002", "token0002"),
            None,
            id="json-extra-keys-session-token-s3-endpoint",
        ),
    ],
)
def test_connection_fields_become_store_parameters(
    no_aws_env: pytest.MonkeyPatch,
    value: str,
    endpoint: str,
    keys: tuple[str, str, str | None],
    region: str | None,
) -> None:
    from airflow.sdk.log import redact
    from mlops_airflow import open_store, store_access

    no_aws_env.setenv("AIRFLOW_CONN_AWS_DEFAULT", value)
    got_endpoint, creds = store_access(None)
    assert got_endpoint == endpoint
    assert creds is not None and creds.region_name == region
    assert (creds.aws_access_key_id, creds.aws_secret_access_key, creds.aws_session_token) == keys
    assert keys[0] not in repr(creds) and keys[1] not in repr(creds)
    # Airflow's masker knows every identifying value, the key id included.
    assert redact(f"id {keys[0]} secret {keys[1]}") == "id *** secret ***"

    store = open_store(Settings.from_env({"MLOPS_STORE": "s3://bucket/prefix"}))
    assert isinstance(store, S3Store) and store.endpoint_url == endpoint
    assert client_keys(store) == keys
    assert keys[1] not in repr(store)
    # A data URI in another bucket is read with the same endpoint and keys.
    other, key = resolve("s3://elsewhere/batches/a.parquet", store)
    assert key == "batches/a.parquet"
    assert isinstance(other, S3Store) and other.bucket == "elsewhere"
    assert other.endpoint_url == endpoint and client_keys(other) == keys


def test_without_a_connection_the_aws_chain_applies(no_aws_env: pytest.MonkeyPatch) -> None:
    from mlops_airflow import open_store, store_access

    no_aws_env.setenv("AWS_ACCESS_KEY_ID", "CHAINKEY01")
    no_aws_env.setenv("AWS_SECRET_ACCESS_KEY", "chainsecret01")
    assert store_access(None) == (None, None)
    env = {"MLOPS_STORE": "s3://bucket/p", "AWS_ENDPOINT_URL": "http://env:9000"}
    store = open_store(Settings.from_env(env))
    assert isinstance(store, S3Store) and store.endpoint_url == "http://env:9000"
    assert client_keys(store)[:2] == ("CHAINKEY01", "chainsecret01")
    # Endpoint only: the connection names the endpoint, the chain gives the keys.
    no_aws_env.setenv(
        "AIRFLOW_CONN_AWS_DEFAULT", '{"conn_type": "aws", "extra": {"endpoint_url": "http://c:1"}}'
    )
    assert store_access(None) == ("http://c:1", None)


@pytest.mark.parametrize(
    ("conn_id", "value", "match"),
    [
        pytest.param("mlops_s3", None, "MLOPS_AWS_CONN_ID='mlops_s3': no such", id="named-missing"),
        pytest.param(None, "postgres://u:p@h/db", "type 'postgres'", id="wrong-type"),
        pytest.param(None, "aws://KEYONLY01:@", "needs its secret", id="key-without-secret"),
        pytest.param(
            None,
            '{"conn_type": "aws", "extra": {"role_arn": "arn:aws:iam::1:role/r"}}',
            r"\['role_arn'\] is not supported",
            id="assume-role",
        ),
    ],
)
def test_a_connection_that_cannot_work_is_refused(
    no_aws_env: pytest.MonkeyPatch, conn_id: str | None, value: str | None, match: str
) -> None:
    from mlops_airflow import store_access

    if value:
        no_aws_env.setenv("AIRFLOW_CONN_AWS_DEFAULT", value)
    with pytest.raises(UsageError, match=match):
        store_access(conn_id)


def test_credentials_repr_hides_the_keys() -> None:
    creds = S3Credentials("KEYID0003", "secret0003", "token0003", "eu-west-1")
    assert repr(creds) == "S3Credentials(region_name='eu-west-1')"


# Canary keys through a retrain and a monitor -----------------------------------------------
def _post(url: str, body: bytes) -> None:
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "text/plain"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


@pytest.fixture(scope="module")
def authenticated_s3() -> Iterator[dict[str, str]]:
    """moto's S3 server (its own process) that accepts only the access key it issued here."""
    import boto3

    with moto_server_process() as endpoint:
        setup = {
            "endpoint_url": endpoint,
            "region_name": "us-east-1",
            "aws_access_key_id": "setup",
            "aws_secret_access_key": "setup",
        }
        iam = boto3.client("iam", **setup)
        iam.create_user(UserName="mlops")
        policy = {"Effect": "Allow", "Action": "s3:*", "Resource": "*"}
        iam.put_user_policy(
            UserName="mlops",
            PolicyName="store",
            PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [policy]}),
        )
        key = iam.create_access_key(UserName="mlops")["AccessKey"]
        bucket = f"mlops-{uuid.uuid4().hex[:10]}"
        boto3.client("s3", **setup).create_bucket(Bucket=bucket)
        _post(f"{endpoint}/moto-api/reset-auth", b"0")  # from now on: signed requests only
        yield {
            "endpoint": endpoint,
            "bucket": bucket,
            "key_id": key["AccessKeyId"],
            "secret": key["SecretAccessKey"],
        }


def states(dag_run: Any) -> dict[str, str]:
    return {
        ti.task_id: str(getattr(ti.state, "value", ti.state)) for ti in dag_run.get_task_instances()
    }


def test_canary_keys_open_the_store_and_appear_nowhere(
    dagbag: Any,
    authenticated_s3: dict[str, str],
    no_aws_env: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    from threadpoolctl import threadpool_limits

    s3 = authenticated_s3
    canaries = {"key id": s3["key_id"], "secret": s3["secret"]}
    connection = {
        "conn_type": "aws",
        "login": s3["key_id"],
        "password": s3["secret"],
        "extra": {"endpoint_url": s3["endpoint"], "region_name": "us-east-1"},
    }
    no_aws_env.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps(connection))
    no_aws_env.setenv("MLOPS_STORE", f"s3://{s3['bucket']}/store")
    # The AWS chain holds keys the server refuses: only the connection's keys open the store.
    no_aws_env.setenv("AWS_ACCESS_KEY_ID", "AKIADECOYDECOYDECOY0")
    no_aws_env.setenv("AWS_SECRET_ACCESS_KEY", "decoy-secret-the-server-refuses")
    with pytest.raises(StoreError, match="InvalidAccessKeyId"):
        S3Store(s3["bucket"], "store", endpoint_url=s3["endpoint"]).list_keys()

    store = S3Store(
        s3["bucket"],
        "store",
        endpoint_url=s3["endpoint"],
        aws_access_key_id=s3["key_id"],
        aws_secret_access_key=s3["secret"],
    )
    synthetic.write_batches(days=6, rows_per_day=800, store=store)
    with threadpool_limits(1):
        retrain = dagbag.dags["credit_default_retrain"].test(run_conf={"reason": "canary"})
        assert set(states(retrain).values()) == {"success"}, states(retrain)
        monitor = dagbag.dags["credit_default_monitor"].test()
    monitored = states(monitor)
    assert monitored["detect_drift"] == monitored["decide"] == "success", monitored
    assert Registry(store).alias("credit_default") == 1

    found: list[str] = []
    files = [p for p in AIRFLOW_HOME.rglob("*") if p.is_file()]
    for path in files:
        data = path.read_bytes()
        found += [f"{name} in {path}" for name, v in canaries.items() if v.encode() in data]
    keys = store.list_keys()
    for key in keys:
        data = store.get_bytes(key)
        found += [
            f"{name} in store object {key}" for name, v in canaries.items() if v.encode() in data
        ]
    out, err = capfd.readouterr()
    for where, text in (("stdout", out), ("stderr", err), ("log records", caplog.text)):
        found += [f"{name} in {where}" for name, v in canaries.items() if v in text]
    assert found == []

    # The search looked where the runs left their traces: both runs' XCom in the database,
    # and their step records, reports and audit events in the store.
    database = b"".join(p.read_bytes() for p in files if p.name.startswith("airflow.db"))
    assert retrain.run_id.encode() in database and monitor.run_id.encode() in database
    snapshots = {k.split("/")[1] for k in keys if k.startswith("datasets/")}
    assert snapshots and all(h.encode() in database for h in snapshots)  # snapshot_data's XCom
    for prefix in ("runs/", "reports/", "models/credit_default/audit/"):
        assert any(k.startswith(prefix) for k in keys), prefix
    print(f"searched {len(files)} files under AIRFLOW_HOME and {len(keys)} store objects")
