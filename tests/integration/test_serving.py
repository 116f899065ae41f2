"""The prediction service, running for real: uvicorn on 127.0.0.1 in its own process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from mlops_tasks.data import synthetic
from mlops_tasks.data.traffic import read_traffic
from mlops_tasks.flow.flows import DECIDE, DEPLOY, REQUEST, TRAIN, VERIFY
from mlops_tasks.monitor import policy
from mlops_tasks.records import Trigger
from mlops_tasks.registry import Registry
from mlops_tasks.service_client import ServiceClient, send_traffic
from mlops_tasks.settings import Settings
from mlops_tasks.specs import find_spec
from mlops_tasks.storage import LocalStore
from tests.conftest import REPO, free_port
from tests.flowkit import monitor, retrain

pytestmark = pytest.mark.integration
TOKEN = "test-admin-token"
SPEC = find_spec("credit_default", REPO / "dags" / "specs")


def train_version(store: LocalStore, reason: str) -> int:
    res = retrain(SPEC, store, Trigger("cli", "tester", reason))
    return int(res[TRAIN].version)


@pytest.fixture(scope="module")
def trained_store(tmp_path_factory: pytest.TempPathFactory) -> LocalStore:
    store = LocalStore(tmp_path_factory.mktemp("serving") / "store")
    synthetic.write_batches(days=6, rows_per_day=1000, store=store)
    train_version(store, "v1")
    return store


class Service:
    def __init__(self, store: LocalStore, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "MLOPS_SERVING_TOKEN": TOKEN,
            "MLOPS_SPEC_DIR": str(REPO / "dags" / "specs"),
        }
        self.log = log
        self.proc = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "mlops"),
                "serve",
                "--store",
                store.uri,
                "--port",
                str(self.port),
                "--poll-seconds",
                "0.5",
            ],
            env=env,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        self.http = httpx.Client(base_url=self.url, timeout=30)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if self.http.get("/healthz").status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.3)
        raise TimeoutError(f"service did not start:\n{log.read_text()[-3000:]}")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)


@pytest.fixture(scope="module")
def service(trained_store: LocalStore, tmp_path_factory) -> Iterator[Service]:
    svc = Service(trained_store, tmp_path_factory.mktemp("log") / "serve.log")
    yield svc
    svc.stop()


def wait_serving(service: Service, version: int, timeout: float = 30) -> None:
    """Wait until the service serves `version` as production, seen twice a poll apart."""
    deadline = time.monotonic() + timeout
    settled = 0
    while settled < 2:
        assert time.monotonic() < deadline, f"service never settled on v{version}"
        state = service.http.get("/v1/models/credit_default").json()
        ok = state["serving_version"] == version == state["production_version"]
        settled = settled + 1 if ok else 0
        time.sleep(0.6)


def rows(n: int, scenario: str = "stable") -> list[dict]:
    frame = synthetic.generate_day(datetime.now(UTC).date(), n, scenario, seed=3)
    return synthetic.feature_records(frame, SPEC.features.all)


def test_predict_single_and_many_rows(service: Service, trained_store: LocalStore) -> None:
    version = Registry(trained_store).alias("credit_default")
    one = service.http.post("/v1/models/credit_default/predict", json={"records": rows(1)})
    assert one.status_code == 200, one.text
    body = one.json()
    assert body["version"] == version and len(body["request_id"]) == 32
    assert body["predictions"][0] in (0, 1) and 0.0 <= body["probabilities"][0] <= 1.0
    many = service.http.post("/v1/models/credit_default/predict", json={"records": rows(100)})
    assert len(many.json()["predictions"]) == 100
    listed = service.http.get("/v1/models").json()["models"]
    credit = next(m for m in listed if m["name"] == "credit_default")
    assert credit["serving_version"] == version
    assert credit["lineage"]["dataset"] and credit["lineage"]["triggered_by"]["kind"] == "cli"
    assert "/v1/models/credit_default/predict" in service.http.get("/openapi.json").text


@pytest.mark.parametrize(
    ("records", "loc", "kind"),
    [
        pytest.param(
            [{**rows(1)[0], "age": "old"}],
            ["body", "records", 0, "age"],
            "float_type",
            id="wrong-type",
        ),
        pytest.param(
            [{k: v for k, v in rows(1)[0].items() if k != "income"}],
            ["body", "records", 0, "income"],
            "missing",
            id="missing-feature",
        ),
        pytest.param(
            [{**rows(1)[0], "colour": "red"}],
            ["body", "records", 0, "colour"],
            "extra_forbidden",
            id="unknown-field",
        ),
        pytest.param(
            [{**rows(1)[0], "region": 7.5}],  # an integer code is accepted, a float is not
            ["body", "records", 0, "region"],
            "string_type",
            id="category-not-text-or-code",
        ),
        pytest.param([], ["body", "records"], "too_short", id="no-rows"),
    ],
)
def test_schema_errors_are_422_per_field(service: Service, records, loc, kind) -> None:
    resp = service.http.post("/v1/models/credit_default/predict", json={"records": records})
    assert resp.status_code == 422
    errors = resp.json()["detail"]
    assert any(e["loc"][: len(loc)] == loc and e["type"] == kind for e in errors), errors


def test_unknown_model_is_404(service: Service) -> None:
    resp = service.http.post("/v1/models/nope/predict", json={"records": rows(1)})
    assert resp.status_code == 404 and "nope" in resp.json()["detail"]


def test_readiness_metrics_and_admin_auth(service: Service) -> None:
    ready = service.http.get("/readyz")
    assert ready.status_code == 200 and ready.json()["models"]["credit_default"]["serving"]
    service.http.post("/v1/models/credit_default/predict", json={"records": rows(3)})
    text = service.http.get("/metrics").text
    assert 'mlops_requests_total{code="200",model="credit_default"' in text
    assert "mlops_request_duration_seconds_bucket" in text
    assert 'mlops_model_loaded_version{model="credit_default"}' in text
    assert service.http.post("/admin/reload").status_code == 401
    ok = service.http.post("/admin/reload", headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200 and ok.json()["ready"] is True


def test_promotion_under_continuous_traffic_has_zero_failures(
    service: Service, trained_store: LocalStore
) -> None:
    reg = Registry(trained_store)
    old = reg.alias("credit_default")
    new = train_version(trained_store, "candidate for the hot swap")  # promoted by the pipeline
    reg.promote("credit_default", old, reason="start the drill on the old version", actor="tester")
    wait_serving(service, old)
    payload = {"records": rows(20)}
    results: list[tuple[int, int | None]] = []
    stop = threading.Event()

    def traffic() -> None:
        with httpx.Client(base_url=service.url, timeout=30) as http:
            while not stop.is_set():
                r = http.post("/v1/models/credit_default/predict", json=payload)
                results.append((r.status_code, r.json().get("version") if r.is_success else None))

    workers = [threading.Thread(target=traffic) for _ in range(3)]
    for w in workers:
        w.start()
    time.sleep(1.5)
    reg.promote("credit_default", new, reason="hot swap under load", actor="tester")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (not results or results[-1][1] != new):
        time.sleep(0.2)
    time.sleep(1.0)
    stop.set()
    for w in workers:
        w.join()
    codes = {code for code, _ in results}
    versions = [v for _, v in results]
    assert codes == {200}, f"{len([c for c in codes if c != 200])} failed requests"
    assert old in versions and new in versions
    assert versions[-1] == new
    first_new = versions.index(new)
    assert all(v == new for v in versions[first_new + 10 :])  # switched, and stayed


def test_corrupted_new_artifact_is_refused_and_old_keeps_serving(
    service: Service, trained_store: LocalStore
) -> None:
    reg = Registry(trained_store)
    serving = reg.alias("credit_default")
    bad = train_version(trained_store, "will be corrupted")
    reg.rollback("credit_default", to=serving, reason="back before corrupting", actor="tester")
    wait_serving(service, serving)
    key = f"models/credit_default/versions/{bad}/model.skops"
    data = bytearray(trained_store.get_bytes(key))
    data[len(data) // 3] ^= 0xFF
    trained_store.put_bytes(key, bytes(data))
    # The alias moves out of band (the registry itself refuses to promote a corrupt artifact).
    alias = "models/credit_default/aliases/production.json"
    doc, token = trained_store.read_json_versioned(alias)
    trained_store.compare_and_swap(alias, {**doc, "version": bad, "event": None}, token)
    try:
        # Not ready as soon as production moves; refused (not merely loading) once checked.
        deadline = time.monotonic() + 20
        ready = service.http.get("/readyz")
        while time.monotonic() < deadline and (
            ready.status_code == 200 or not ready.json()["models"]["credit_default"]["error"]
        ):
            time.sleep(0.3)
            ready = service.http.get("/readyz")
        assert ready.status_code == 503
        state = ready.json()["models"]["credit_default"]
        assert state["serving"] == serving and "SHA-256" in state["error"]
        resp = service.http.post("/v1/models/credit_default/predict", json={"records": rows(5)})
        assert resp.status_code == 200 and resp.json()["version"] == serving
        assert f'mlops_model_load_errors_total{{model="credit_default",version="{bad}"}}' in (
            service.http.get("/metrics").text
        )
    finally:  # later tests in this module share the service and the store
        reg.rollback("credit_default", to=serving, reason="undo the corrupt alias", actor="tester")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and service.http.get("/readyz").status_code != 200:
        time.sleep(0.3)
    assert service.http.get("/readyz").status_code == 200


def test_inference_log_and_feedback_roundtrip(service: Service, trained_store) -> None:
    client = ServiceClient(service.url)
    frame = synthetic.generate_day(datetime.now(UTC).date(), 120, "stable", seed=5)
    sent = send_traffic(client, SPEC, frame, batch=40)
    assert sent == {"rows": 120, "versions": sent["versions"], "labels": 120}
    deadline = time.monotonic() + 20  # flushed by the background writer within seconds
    logged = read_traffic(trained_store, "credit_default", 1, target="default")
    while time.monotonic() < deadline and logged["default"].notna().sum() < 120:
        time.sleep(0.5)
        logged = read_traffic(trained_store, "credit_default", 1, target="default")
    labelled = logged[logged["default"].notna()]
    assert len(labelled) == 120  # every label joined to its prediction by request id and row
    columns = {"request_id", "row", "version", "prediction", "probability", "data_issues"}
    assert columns <= set(logged.columns)
    expected = frame["default"].to_numpy()
    assert sorted(labelled["default"].astype(int)) == sorted(expected.astype(int))


def test_concept_drift_traffic_retrains_and_the_service_serves_the_new_version(
    service: Service, trained_store: LocalStore
) -> None:
    settings = Settings.from_env(
        {
            "MLOPS_STORE": trained_store.uri,
            "MLOPS_SERVING_URL": service.url,
            "MLOPS_SERVING_TOKEN": TOKEN,
        }
    )
    reg = Registry(trained_store)
    before = reg.alias("credit_default")
    # A clean traffic window: earlier tests replayed one payload thousands of times.
    for key in trained_store.list_keys("inference/") + trained_store.list_keys("feedback/"):
        trained_store.delete(key)
    frame = synthetic.generate_day(datetime.now(UTC).date(), 1200, "concept_drift", seed=9)
    send_traffic(ServiceClient(service.url), SPEC, frame, batch=100)
    deadline = time.monotonic() + 30
    window = read_traffic(trained_store, "credit_default", 1, target="default")
    while time.monotonic() < deadline and (window.empty or window["default"].notna().sum() < 1200):
        time.sleep(0.5)
        window = read_traffic(trained_store, "credit_default", 1, target="default")
    assert len(window) == 1200 and window["default"].notna().sum() == 1200
    later = datetime.now(UTC) + timedelta(hours=SPEC.drift.cooldown_hours, minutes=1)
    run = monitor(SPEC, trained_store, as_of=later)
    decision = run[DECIDE]
    assert decision.decision == "retrain", decision.reason
    assert "performance: roc_auc" in decision.reason
    check = policy.history(trained_store, "credit_default")[-1]
    assert check["performance"]["drift_detected"] is True
    request = run[REQUEST]
    result = retrain(
        SPEC, trained_store, Trigger.from_request(request), as_of=later, settings=settings
    )
    assert result[VERIFY].served_by_service is True
    after = result[DEPLOY].version
    assert after != before and reg.alias("credit_default") == after
    served = service.http.get("/v1/models/credit_default").json()
    assert served["serving_version"] == after  # verify_deployment asked the service
