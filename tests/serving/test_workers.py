"""`mlops serve --workers 2`: two uvicorn processes on one port behave as one service.

Feedback reaches whichever worker accepts the connection, so a label for a request another
worker served must be accepted once (and a second one refused with 409); /metrics adds the
workers' counters up and labels their gauges by worker; /admin/reload returns once every
worker serves the production version. Plus the shared pieces on their own: the SQLite request
index under the in-memory index's rule, and merging metric snapshots."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mlops_tasks.serving.feedback import RequestIndex, Served, SharedRequestIndex
from mlops_tasks.serving.metrics import Metrics
from tests.conftest import free_port
from tests.serving.support import records, trained

PREDICT = "/v1/models/credit_default/predict"
FEEDBACK = "/v1/models/credit_default/feedback"
TOKEN = "workers-admin-token"


@pytest.mark.parametrize("shared", [False, True], ids=["memory", "sqlite"])
def test_request_indexes_follow_one_rule(tmp_path: Path, shared: bool) -> None:
    index = SharedRequestIndex(tmp_path / "r.sqlite", 3) if shared else RequestIndex(3)
    classes = __import__("numpy").array([0, 1])
    for i in range(5):
        index.add(f"r{i}", Served("m", 2, 2, "alice", classes))
    item = {"request_id": "r4", "row": 1, "label": 1}
    rows, refused, newly = index.claim("m", "alice", [item])
    assert rows == [dict(item, overwrite=False, client="alice", version=2)] and not refused
    assert [r.status for r in index.claim("m", "alice", [item])[1]] == [409]
    assert [r.status for r in index.claim("m", "bob", [dict(item, row=0)])[1]] == [403]
    assert [r.status for r in index.claim("m", "alice", [dict(item, label=7)])[1]] == [422]
    assert [r.status for r in index.claim("x", "alice", [item])[1]] == [404]
    index.release(newly)
    assert not index.claim("m", "alice", [item])[1]  # released: a first label again


def test_metric_snapshots_add_up_and_keep_gauges_apart() -> None:
    a, b = Metrics(), Metrics()
    for m, n in ((a, 2), (b, 3)):
        m.inc("mlops_requests_total", n, model="m", code="200")
        m.set("mlops_model_loaded_version", n, model="m")
        m.observe_latency(0.002 * n, model="m")
    merged = a.empty_copy()
    merged.absorb(a.snapshot(), worker="1")
    merged.absorb(b.snapshot(), worker="2")
    text = merged.render()
    assert 'mlops_requests_total{code="200",model="m"} 5' in text
    assert 'mlops_model_loaded_version{model="m",worker="1"} 2' in text
    assert 'mlops_model_loaded_version{model="m",worker="2"} 3' in text
    assert 'mlops_request_duration_seconds_count{model="m"} 2' in text


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    store, spec_dir = trained()
    port = free_port()
    log = tmp_path_factory.mktemp("workers") / "serve.log"
    env = {**os.environ, "MLOPS_SERVING_TOKEN": TOKEN, "MLOPS_SPEC_DIR": str(spec_dir)}
    cmd = [str(Path(sys.executable).parent / "mlops"), "serve", "--store", store.uri]
    proc = subprocess.Popen(
        [*cmd, "--port", str(port), "--workers", "2"],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while _workers_ready(url) < 2:
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


def _workers_ready(url: str) -> int:
    try:
        r = httpx.post(f"{url}/admin/reload", headers={"Authorization": f"Bearer {TOKEN}"})
    except httpx.TransportError:
        return 0
    return len(r.json().get("workers", {})) if r.status_code == 200 else 0


def fresh(url: str) -> httpx.Client:
    """A new connection per call, so that calls spread over the workers."""
    return httpx.Client(base_url=url, timeout=60)


def test_feedback_reaches_the_request_whichever_worker_served_it(two_workers: str) -> None:
    ids = []
    for _ in range(12):
        with fresh(two_workers) as c:
            ids.append(c.post(PREDICT, json={"records": records("credit_default", 2)}).json())
    ids = [r["request_id"] for r in ids]
    for rid in ids:
        with fresh(two_workers) as c:
            label = {"request_id": rid, "row": 1, "label": 1}
            assert c.post(FEEDBACK, json={"labels": [label]}).status_code == 200
    for rid in ids[:4]:
        with fresh(two_workers) as c:
            label = {"request_id": rid, "row": 1, "label": 0}
            assert c.post(FEEDBACK, json={"labels": [label]}).status_code == 409


def test_metrics_add_the_workers_up(two_workers: str) -> None:
    def served() -> float:
        with fresh(two_workers) as c:
            text = c.get("/metrics").text
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("mlops_predicted_rows_total{") and 'model="credit_default"' in line
        )

    # The earlier tests' requests may still be on their way to the worker that answers: start
    # from a total that has stopped moving, or they would be counted as this test's.
    before, deadline = served(), time.monotonic() + 60
    while time.monotonic() < deadline:
        time.sleep(1.0)
        if (again := served()) == before:
            break
        before = again
    for _ in range(10):
        with fresh(two_workers) as c:
            assert c.post(PREDICT, json={"records": records("credit_default", 3)}).is_success
    # Another worker's figures reach the one that answers within about a second when the
    # machine is idle; on a loaded one later. Wait for them, never for a fixed time.
    deadline = time.monotonic() + 60
    while (total := served()) != before + 30 and time.monotonic() < deadline:
        time.sleep(0.25)
    assert total == before + 30
    with fresh(two_workers) as c:
        gauges = [
            line
            for line in c.get("/metrics").text.splitlines()
            if line.startswith('mlops_model_loaded_version{model="credit_default"')
        ]
    assert len(gauges) == 2 and all('worker="' in g for g in gauges)


def test_reload_answers_for_every_worker(two_workers: str) -> None:
    r = httpx.post(f"{two_workers}/admin/reload", headers={"Authorization": f"Bearer {TOKEN}"})
    body = r.json()
    assert r.status_code == 200 and body["ready"] is True
    assert len(body["workers"]) == 2
    assert all(w["models"]["credit_default"]["serving"] == 1 for w in body["workers"].values())
