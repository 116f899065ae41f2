"""Shared fixtures: stores on both backends (S3 through a real HTTP endpoint on 127.0.0.1)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from mlops_tasks.storage import ArtifactStore, LocalStore, S3Store

# CI replays the same examples every run (a red CI means a change broke something, not that the
# search got lucky); everywhere else each run explores new ones, and a failure it finds is
# kept in the example database and becomes a regression test.
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def service_reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def moto_server_process() -> Iterator[str]:
    """moto's S3 server in a process of its own (not a thread of this one), on 127.0.0.1;
    yields its endpoint and stops it afterwards."""
    port = free_port()
    cmd = [sys.executable, "-m", "tests.s3server", str(port)]
    # cwd: `-m` finds the tests package there.
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not service_reachable("127.0.0.1", port):
            assert proc.poll() is None and time.monotonic() < deadline, "moto server did not start"
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def require_service(name: str, host: str, port: int) -> None:
    """Skip when a service is down, unless REQUIRE_SERVICES=1 makes that a failure."""
    if service_reachable(host, port):
        return
    msg = f"{name} is not reachable on {host}:{port}"
    if os.environ.get("REQUIRE_SERVICES") == "1":
        pytest.fail(f"{msg} and REQUIRE_SERVICES=1")
    pytest.skip(msg)


#: Test modules that start a whole Airflow deployment (scheduler, dag-processor, API server,
#: Celery workers) or drive Chromium against one. Under `pytest -n` (`make test` runs two
#: workers) they run one after another on one worker: never two stacks competing at once.
STACK_MODULES = frozenset(
    {
        "tests/browser/test_models_http.py",
        "tests/browser/test_models_view.py",
        "tests/integration/test_airflow_e2e.py",
        "tests/integration/test_distributed_e2e.py",
    }
)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Under `pytest -n`: whole modules go to one worker (their module-scoped stores and
    services are built once), and the deployment modules all to the same one
    (`STACK_MODULES`), one after another."""
    from xdist.scheduler import LoadScopeScheduling

    class ModuleScheduling(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return "stacks" if module in STACK_MODULES else module

    return ModuleScheduling(config, log)


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's standalone S3 server, a real HTTP endpoint on 127.0.0.1, with S3's atomic
    conditional writes (`tests.s3server`)."""
    from tests.s3server import ThreadedServer

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    port = free_port()
    server = ThreadedServer("127.0.0.1", port)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3_store(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> S3Store:
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    bucket = f"mlops-{uuid.uuid4().hex[:10]}"
    store = S3Store(bucket, "store", endpoint_url=s3_endpoint)
    store.client.create_bucket(Bucket=bucket)
    return store


@pytest.fixture
def local_store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest) -> ArtifactStore:
    """The same contract runs against both backends."""
    name = "local_store" if request.param == "local" else "s3_store"
    st: ArtifactStore = request.getfixturevalue(name)
    return st
