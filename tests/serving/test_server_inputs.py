"""The input bounds where they depend on the server: `mlops serve` (uvicorn) in its own process,
configured through the environment (API token, body limit), driven over loopback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mlops_tasks.service_client import ServiceClient
from mlops_tasks.specs import find_spec
from tests.conftest import free_port
from tests.serving.support import records, trained

pytestmark = pytest.mark.integration
PREDICT = "/v1/models/credit_default/predict"
TOKEN = "integration-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
LIMIT = 1_000_000


@pytest.fixture(scope="module")
def serve_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What the service writes to stdout and stderr."""
    return tmp_path_factory.mktemp("serve") / "serve.log"


@pytest.fixture(scope="module")
def url(serve_log: Path) -> Iterator[str]:
    store, spec_dir = trained()
    port = free_port()
    log = serve_log
    env = {
        **os.environ,
        "MLOPS_SPEC_DIR": str(spec_dir),
        "MLOPS_SERVING_API_TOKEN": TOKEN,
        "MLOPS_SERVING_MAX_BODY_BYTES": str(LIMIT),
    }
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "mlops"),
            "serve",
            "--store",
            store.uri,
            "--port",
            str(port),
        ],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            if httpx.get(f"{base}/readyz").status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise TimeoutError(f"service did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.3)
    yield base
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)


def test_the_service_logs_what_it_serves_at_info(url: str, serve_log: Path) -> None:
    """`mlops serve` showed only warnings: its "now serving vN" INFO lines never appeared."""
    wanted = "INFO mlops_tasks.serving.models: credit_default: now serving v1 (was nothing)"
    deadline = time.monotonic() + 30  # /readyz answers as the line is written
    while wanted not in serve_log.read_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert wanted in serve_log.read_text(), serve_log.read_text()[-3000:]


def test_a_50_mb_body_is_refused_with_a_short_413(url: str) -> None:
    row = dict(records("credit_default", 1)[0], region="x" * 50_000_000)
    body = json.dumps({"records": [row]}).encode()
    headers = {**AUTH, "content-type": "application/json"}
    with httpx.Client(base_url=url, timeout=60) as http:
        declared = http.post(PREDICT, content=body, headers=headers)
        assert declared.status_code == 413 and len(declared.content) < 300
        assert str(LIMIT) in declared.json()["detail"]  # the configured limit, not the default

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
            for i in range(0, len(body), 1 << 16):
                yield body[i : i + (1 << 16)]

        chunked = http.post(PREDICT, content=chunks(), headers=headers)
        assert chunked.status_code == 413 and len(chunked.content) < 300
        # The service is unharmed and still answers in full.
        assert (
            http.post(
                PREDICT, json={"records": records("credit_default", 5)}, headers=AUTH
            ).status_code
            == 200
        )
        metrics = http.get("/metrics", headers=AUTH).text
    assert f'mlops_http_responses_total{{code="413",method="POST",route="{PREDICT}"}} 2' in metrics


def test_infinity_is_a_422_through_the_server(url: str) -> None:
    row = dict(records("credit_default", 1)[0], income="@@")
    body = json.dumps({"records": [row]}).replace('"@@"', "Infinity")
    resp = httpx.post(
        f"{url}{PREDICT}", content=body, headers={**AUTH, "content-type": "application/json"}
    )
    assert resp.status_code == 422
    assert resp.json()["detail"][0]["loc"] == ["body", "records", 0, "income"]


def test_the_token_from_the_environment_guards_the_api(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    payload = {"records": records("credit_default", 2)}
    assert httpx.post(f"{url}{PREDICT}", json=payload).status_code == 401
    assert httpx.get(f"{url}/metrics").status_code == 401
    assert httpx.get(f"{url}/healthz").status_code == 200
    assert httpx.get(f"{url}/docs").status_code == 200
    client = ServiceClient(url, api_token=TOKEN)  # what the deploy task's client sends
    out = client.predict(find_spec("credit_default", trained()[1]), _frame())
    fed = client.feedback("credit_default", [{"request_id": out["request_id"], "label": 1}])
    assert fed == {"model": "credit_default", "accepted": 1, "overwritten": 0}


def _frame():  # type: ignore[no-untyped-def]
    import pandas as pd

    return pd.DataFrame(records("credit_default", 3))
