"""One real Airflow (api-server, scheduler, dag-processor, triggerer on 127.0.0.1) with the
Models plugin, shared by the HTTP and the browser tests of this folder.

The store holds `credit_default` with two versions and drift checks (trained in this process),
a `broken` model whose version metadata is not JSON, and a `customer_spend` retrain run
(`approval: manual`) triggered at start that waits at its `approve` task for a person. No
DAG has a schedule, so nothing else competes for the two cores. Users: `admin` (ADMIN) and
`viewer` (VIEWER) of Airflow's SimpleAuthManager.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

from mlops_tasks.cli import main
from mlops_tasks.data import synthetic
from mlops_tasks.storage import LocalStore
from scripts.local_airflow import REPO, LocalAirflow
from tests.conftest import free_port

CHROMIUM = Path(os.environ.get("MLOPS_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = REPO / "test-artifacts" / "screenshots"
APPROVAL_DAG = "customer_spend_retrain"


@dataclass
class Deployment:
    af: LocalAirflow
    store: LocalStore
    passwords: dict[str, str]
    approval_run: str

    def token(self, user: str) -> str:
        return self.af.login(user, self.passwords[user])

    def get(
        self,
        path: str,
        token: str | None = None,
        data: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, str, dict[str, str]]:
        """GET (or POST a form when `data`) without following redirects; headers lower-case."""
        headers = {**(headers or {})}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        body = None
        if data is not None:
            body = urllib.parse.urlencode(data).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        req = urllib.request.Request(f"{self.af.base}{path}", data=body, headers=headers)
        opener = urllib.request.build_opener(_NoRedirect)
        try:
            with opener.open(req, timeout=300) as r:  # an action loads a model: slow under load
                return r.status, r.read().decode(errors="replace"), _lower(r.headers)
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode(errors="replace"), _lower(err.headers)


def _lower(headers: Any) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _mlops(store: LocalStore, spec_dir: Path, *argv: str) -> None:
    out, err = io.StringIO(), io.StringIO()
    args = [*argv, "--store", store.uri, "--spec-dir", str(spec_dir)]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(args)
    assert code == 0, f"mlops {' '.join(argv)}: exit {code}\n{err.getvalue()}"


def _specs(root: Path) -> Path:
    """The demo specs without schedules."""
    specs = root / "specs"
    specs.mkdir()
    for name in ("credit_default", "customer_spend"):
        text = (REPO / f"dags/specs/{name}.yaml").read_text()
        lines = [
            "  retrain: null" if line.startswith("  retrain: ") else line
            for line in text.splitlines()
        ]
        lines = ["  monitor: null" if line.startswith("  monitor: ") else line for line in lines]
        (specs / f"{name}.yaml").write_text("\n".join(lines) + "\n")
    return specs


def _seed(store: LocalStore, specs: Path) -> None:
    start = date.today() - timedelta(days=10)
    synthetic.write_batches(start=start, days=8, rows_per_day=600, store=store)
    _mlops(store, specs, "run", "retrain", "--model", "credit_default")
    synthetic.write_batches(
        start=start + timedelta(days=8),
        days=2,
        rows_per_day=600,
        scenario="covariate_shift",
        store=store,
    )
    _mlops(store, specs, "run", "monitor", "--model", "credit_default")
    _mlops(store, specs, "run", "retrain", "--model", "credit_default")
    # A model whose stored version and production alias are damaged: its page must explain,
    # not answer 500.
    store.put_bytes("models/broken/versions/1/metadata.json", b"{not json")
    store.put_bytes("models/broken/aliases/production.json", b"{not json")


# Package scope: the deployment stops after the browser tests, not at the end of the whole run
# (an idle Airflow left running slowed every later test on a 2-core machine).
@pytest.fixture(scope="package")
def ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp("models-ui")
    store, specs = LocalStore(root / "store"), _specs(root)
    af = LocalAirflow(
        root / "home",
        free_port(),
        extra_env={
            "MLOPS_STORE": store.uri,
            "MLOPS_SPEC_DIR": str(specs),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin,viewer:viewer",
        },
    )
    try:
        # Airflow starts (mostly waiting on its processes) while this process seeds the store.
        with ThreadPoolExecutor(1) as pool:
            started = pool.submit(af.start)
            _seed(store, specs)
            started.result()
        passwords = json.loads((af.home / "passwords.json").read_text())
        deadline = time.monotonic() + 180
        while APPROVAL_DAG not in af.dag_ids():
            assert time.monotonic() < deadline, af.dag_ids()
            time.sleep(2)
        status, body = af.trigger(APPROVAL_DAG, {"reason": "first spend model"})
        assert status == 200, body
        yield Deployment(af, store, passwords, body["dag_run_id"])
    finally:
        af.stop()
        for log in sorted((root / "home" / "logs").glob("*.log")):
            print(f"--- {log.name} (tail)\n" + log.read_text(errors="replace")[-1500:])
        shutil.rmtree(root / "home" / "logs", ignore_errors=True)


def wait_for_task(d: Deployment, task_id: str, timeout: float = 400) -> None:
    """Until `task_id` of the approval run has succeeded."""
    deadline = time.monotonic() + timeout
    while (state := d.af.task_states(APPROVAL_DAG, d.approval_run).get(task_id)) != "success":
        assert state not in ("failed", "upstream_failed", "skipped"), state
        assert time.monotonic() < deadline, d.af.task_states(APPROVAL_DAG, d.approval_run)
        time.sleep(2)


def awaiting_approval(d: Deployment, timeout: float = 400) -> None:
    """Until the approval run waits at `approve`, and has waited for a few seconds (Airflow
    3.3.2 loses an answer sent within ~5 s of the wait starting; the page holds its buttons
    back for `SETTLE_SECONDS`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ti = {t["task_id"]: t for t in d.af.task_instances(APPROVAL_DAG, d.approval_run)}.get(
            "approve"
        )
        state = ti and ti["state"]
        assert state not in ("failed", "upstream_failed", "skipped"), d.af.task_states(
            APPROVAL_DAG, d.approval_run
        )
        if state in ("awaiting_input", "deferred"):
            time.sleep(12)
            return
        time.sleep(2)
    raise AssertionError(d.af.task_states(APPROVAL_DAG, d.approval_run))
