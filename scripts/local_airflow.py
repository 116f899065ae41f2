"""Run a real Airflow 3 deployment on one machine, bound to 127.0.0.1.

Used by `make demo` (the README's main command) and by the end-to-end tests. It starts the four
Airflow processes separately (api-server, scheduler, dag-processor, triggerer) in their own
AIRFLOW_HOME with SQLite and the LocalExecutor, instead of `airflow standalone`, which binds its
log servers to every interface. Processes are stopped by PID.

    python scripts/local_airflow.py --home .airflow --port 8080   # runs until Ctrl-C
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


class LocalAirflow:
    """An Airflow deployment in `home`; `start()`, use `api()`, `stop()`."""

    def __init__(
        self,
        home: Path,
        port: int,
        dags: Path = REPO / "dags",
        plugins: Path = REPO / "plugins",
        password: str | None = None,
        extra_env: dict[str, str] | None = None,
        parallelism: int = 4,
    ) -> None:
        self.home = Path(home).resolve()
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.password = password or secrets.token_urlsafe(12)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._token: str | None = None
        self.env = {
            **os.environ,
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(plugins),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": str(parallelism),
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.home}/airflow.db",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS": "mlops_sqlite.CONNECT_ARGS",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS_ASYNC": "mlops_sqlite.CONNECT_ARGS",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__BASE_URL": self.base,
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.base}/execution/",
            "AIRFLOW__API_AUTH__JWT_SECRET": self._secret("jwt_secret"),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self.home / "passwords.json"),
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "5",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
            "AIRFLOW__CORE__MIN_SERIALIZED_DAG_UPDATE_INTERVAL": "5",
            "PYTHONWARNINGS": "ignore::DeprecationWarning,ignore::FutureWarning",
            # Up to `parallelism` tasks share the cores: OpenMP threads inside each one only
            # spin against each other (training measured 2-4x slower under contention).
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
            **(extra_env or {}),
        }

    def _secret(self, name: str) -> str:
        """A per-home secret, made once and kept (0600) so restarts keep their sessions."""
        self.home.mkdir(parents=True, exist_ok=True)
        path = self.home / f".{name}"
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(32))
        return path.read_text().strip()

    def _run(self, *args: str) -> None:
        out = subprocess.run(
            [str(BIN / "airflow"), *args], env=self.env, capture_output=True, text=True, check=False
        )
        if out.returncode != 0:
            raise RuntimeError(
                f"airflow {' '.join(args)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
            )

    def start(self, timeout: float = 240) -> None:
        (self.home / "logs").mkdir(parents=True, exist_ok=True)
        (self.home / "passwords.json").write_text(json.dumps({"admin": self.password}))
        os.chmod(self.home / "passwords.json", 0o600)
        self._run("db", "migrate")
        # Write-ahead logging: readers no longer block the writer (persists in the file).
        with contextlib.closing(sqlite3.connect(self.home / "airflow.db")) as db:
            db.execute("PRAGMA journal_mode=WAL")
        commands = {
            "api-server": ["api-server", "--host", "127.0.0.1", "--port", str(self.port)],
            "scheduler": ["scheduler", "--skip-serve-logs"],
            "dag-processor": ["dag-processor"],
            "triggerer": ["triggerer", "--skip-serve-logs"],
        }
        for name, args in commands.items():
            log = open(self.home / "logs" / f"{name}.log", "ab")  # noqa: SIM115 (owned by Popen)
            self.procs[name] = subprocess.Popen(
                [str(BIN / "airflow"), *args],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        (self.home / "pids.json").write_text(json.dumps({n: p.pid for n, p in self.procs.items()}))
        self.wait_healthy(timeout)

    def wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"airflow {name} exited with {proc.returncode}; see "
                        f"{self.home / 'logs' / (name + '.log')}"
                    )
            try:
                with urllib.request.urlopen(f"{self.base}/api/v2/monitor/health", timeout=5) as r:
                    health = json.load(r)
                if health.get("scheduler", {}).get("status") == "healthy":
                    return
            except (urllib.error.URLError, OSError, ValueError):
                pass
            time.sleep(1)
        raise TimeoutError(f"Airflow at {self.base} not healthy after {timeout:.0f} s")

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.procs.clear()

    # REST API ---------------------------------------------------------------------------------
    def token(self) -> str:
        if self._token is None:
            body = json.dumps({"username": "admin", "password": self.password}).encode()
            req = urllib.request.Request(
                f"{self.base}/auth/token",
                data=body,
                method="POST",
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(req, timeout=30) as r:
                self._token = json.load(r)["access_token"]
        return self._token

    def api(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """Call the REST API (`/api/v2/...`); returns (status, parsed JSON body)."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            f"{self.base}{path}",
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {self.token()}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                raw = r.read()
                return r.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as err:
            raw = err.read()
            try:
                return err.code, json.loads(raw)
            except ValueError:
                return err.code, raw.decode(errors="replace")

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> tuple[int, Any]:
        return self.api(
            "POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf or {}}
        )

    def runs(self, dag_id: str) -> list[dict[str, Any]]:
        status, body = self.api(
            "GET", f"/api/v2/dags/{dag_id}/dagRuns?order_by=-start_date&limit=100"
        )
        return body["dag_runs"] if status == 200 else []

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str]:
        rid = urllib.parse.quote(run_id, safe="")
        _, body = self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{rid}/taskInstances")
        return {t["task_id"]: t["state"] for t in body.get("task_instances", [])}

    def wait_for_run(
        self, dag_id: str, predicate: Any = None, timeout: float = 600
    ) -> dict[str, Any]:
        """Wait for a finished run (success/failed) matching `predicate`; return it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for run in self.runs(dag_id):
                if run["state"] in ("success", "failed") and (predicate is None or predicate(run)):
                    return run
            time.sleep(2)
        raise TimeoutError(f"no finished {dag_id} run within {timeout:.0f} s: {self.runs(dag_id)}")

    def dag_ids(self) -> list[str]:
        _, body = self.api("GET", "/api/v2/dags?limit=100")
        return sorted(d["dag_id"] for d in body["dags"])


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--home", default=str(REPO / ".airflow"), help="AIRFLOW_HOME to use")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    home = Path(args.home)
    password_file = home / ".admin_password"
    password = password_file.read_text().strip() if password_file.exists() else None
    af = LocalAirflow(home, args.port, password=password)
    if not password_file.exists():
        password_file.write_text(af.password)
        os.chmod(password_file, 0o600)
    print(f"starting Airflow in {af.home} (logs in {af.home / 'logs'}) ...", flush=True)
    try:
        af.start()
        dags = af.dag_ids()
        print(
            f"\nAirflow UI:  {af.base}\n  user: admin\n  password: {af.password}\n"
            f"DAGs ({len(dags)}): {', '.join(dags)}\nPress Ctrl-C to stop.",
            flush=True,
        )
        # Stop on Ctrl-C or SIGTERM, even when started in the background (where a shell
        # leaves SIGINT ignored).
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
        while all(p.poll() is None for p in af.procs.values()):
            time.sleep(2)
        print("an Airflow process exited; see the logs above", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        print("stopping Airflow ...", flush=True)
        af.stop()


if __name__ == "__main__":
    sys.exit(main())
