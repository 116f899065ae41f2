"""Run a real Airflow 3 deployment on one machine, bound to 127.0.0.1, in one of two profiles.

Used by `make demo` (the README's main command) and by the end-to-end tests. It starts the
Airflow processes separately (api-server, scheduler, dag-processor, triggerer) in their own
AIRFLOW_HOME instead of `airflow standalone`, which binds its log servers to every interface.
Processes are stopped by PID.

* `local` (default, `make demo`): SQLite and the LocalExecutor.
* `distributed`: the production topology on one machine. PostgreSQL as metadata database (a
  scratch database created for the run and dropped at stop), the CeleryExecutor with Redis as
  broker and result backend, and N Celery workers as separate processes. Each worker reports its
  own hostname (`worker-1`, `worker-2`, ...) through `core.hostname_callable`
  (plugins/mlops_hostname.py), so a task instance records which worker ran it. The run's Celery
  queue and Redis keys carry the database name, so deployments sharing one Redis do not take
  each other's tasks. Workers skip the log server (it binds every interface); they share
  AIRFLOW_HOME/logs with the api-server, which reads finished task logs from there.

    python scripts/local_airflow.py --home .airflow --port 8080   # runs until Ctrl-C
    python scripts/local_airflow.py --profile distributed --workers 2 --port 8080
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
PROFILES = ("local", "distributed")
POSTGRES = "postgres@127.0.0.1:5432"  # user[:password]@host:port of the distributed profile
REDIS = "redis://127.0.0.1:6379/0"


class LocalAirflow:
    """An Airflow deployment in `home`; `start()`, use `api()`, `stop()`.

    `profile="distributed"` runs the CeleryExecutor with `workers` Celery workers (each taking
    up to `worker_concurrency` tasks) on PostgreSQL (`postgres`: user[:password]@host:port) and
    Redis (`redis`: broker and result backend URL).
    """

    def __init__(
        self,
        home: Path,
        port: int,
        dags: Path = REPO / "dags",
        plugins: Path = REPO / "plugins",
        password: str | None = None,
        extra_env: dict[str, str] | None = None,
        parallelism: int = 4,
        profile: str = "local",
        workers: int = 2,
        worker_concurrency: int = 2,
        postgres: str = POSTGRES,
        redis: str = REDIS,
    ) -> None:
        if profile not in PROFILES:
            raise ValueError(f"unknown profile {profile!r}; choose one of {PROFILES}")
        self.home = Path(home).resolve()
        self.port = port
        self.profile = profile
        self.base = f"http://127.0.0.1:{port}"
        self.password = password or secrets.token_urlsafe(12)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._token: str | None = None
        self.workers = [f"worker-{i + 1}" for i in range(workers)] if profile != "local" else []
        self.worker_concurrency = worker_concurrency
        self.postgres, self.redis = postgres, redis
        # Unique per run: the scratch database, the Celery queue and the Redis key prefix.
        self.run_name = f"mlops_airflow_{os.getpid()}_{secrets.token_hex(4)}"
        self.database: str | None = None
        if profile == "local":
            backend = {
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.home}/airflow.db",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS": "mlops_sqlite.CONNECT_ARGS",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS_ASYNC": "mlops_sqlite.CONNECT_ARGS",
            }
        else:
            parallelism = max(parallelism, workers * worker_concurrency)
            backend = {
                "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://{postgres}/{self.run_name}",
                "AIRFLOW__CELERY__BROKER_URL": redis,
                "AIRFLOW__CELERY__RESULT_BACKEND": redis,
                "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(worker_concurrency),
                "AIRFLOW__OPERATORS__DEFAULT_QUEUE": self.run_name,
                "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__GLOBAL_KEYPREFIX": f"{self.run_name}:",
                "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT": "21600",
                "AIRFLOW__CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS__GLOBAL_KEYPREFIX": (
                    f"{self.run_name}:"
                ),
                "AIRFLOW__CORE__HOSTNAME_CALLABLE": "mlops_hostname.hostname",
            }
        self.env = {
            **os.environ,
            "AIRFLOW_HOME": str(self.home),
            # Tasks run this checkout's mlops_tasks, next to its dags/ and plugins/.
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(plugins),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__PARALLELISM": str(parallelism),
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            **backend,
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
            # An idle scheduler loop sleeps this long before it looks for finished tasks and
            # schedules their downstream ones (Airflow's default: 1 s, paid between every two
            # tasks of a run). A loop costs a few ms of CPU (bench/recover.py).
            "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.2",
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
        if self.profile == "distributed":
            self._create_database()
        try:
            self._run("db", "migrate")
            if self.profile == "local":
                # Write-ahead logging: readers no longer block the writer (persists in the file).
                with contextlib.closing(sqlite3.connect(self.home / "airflow.db")) as db:
                    db.execute("PRAGMA journal_mode=WAL")
            commands = {
                "api-server": ["api-server", "--host", "127.0.0.1", "--port", str(self.port)],
                "scheduler": ["scheduler", "--skip-serve-logs"],
                "dag-processor": ["dag-processor"],
                "triggerer": ["triggerer", "--skip-serve-logs"],
            }
            deadline = time.monotonic() + timeout
            for name, args in commands.items():
                self._spawn(name, args)
            if self.workers:
                # Tasks need the Execution API: a worker started earlier fails what it picks up.
                self.wait_healthy(timeout, api_only=True)
                for worker in self.workers:
                    self.add_worker(worker, wait=False)
            self.wait_healthy(max(1.0, deadline - time.monotonic()))
        except BaseException:
            self.stop()
            raise

    def _spawn(self, name: str, args: list[str], env: dict[str, str] | None = None) -> None:
        log = open(self.home / "logs" / f"{name}.log", "ab")  # noqa: SIM115 (owned by Popen)
        self.procs[name] = subprocess.Popen(
            [str(BIN / "airflow"), *args],
            env=env or self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        (self.home / "pids.json").write_text(json.dumps({n: p.pid for n, p in self.procs.items()}))

    def add_worker(self, name: str | None = None, wait: bool = True, timeout: float = 120) -> str:
        """Start one more Celery worker (distributed profile); its tasks report `name` as host."""
        if self.profile != "distributed":
            raise RuntimeError("Celery workers exist only in the distributed profile")
        name = name or f"worker-{len(self.workers) + 1}"
        if name not in self.workers:
            self.workers.append(name)
        self._spawn(
            name,
            [
                "celery",
                "worker",
                "--celery-hostname",
                f"{name}@{self.run_name}",
                "--queues",
                self.run_name,
                "--concurrency",
                str(self.worker_concurrency),
                "--skip-serve-logs",
                "--without-mingle",
                "--without-gossip",
            ],
            env={**self.env, "MLOPS_HOSTNAME": name},
        )
        if wait:
            deadline = time.monotonic() + timeout
            while not self._worker_ready(name):
                self._check_alive()
                if time.monotonic() > deadline:
                    raise TimeoutError(f"Celery {name} not ready after {timeout:.0f} s")
                time.sleep(1)
        return name

    def _worker_ready(self, name: str) -> bool:
        """Celery prints `<hostname> ready.` once the worker consumes its queue."""
        log = self.home / "logs" / f"{name}.log"
        return log.exists() and f"{name}@{self.run_name} ready." in log.read_text(errors="replace")

    def _admin_connection(self) -> Any:
        import psycopg2  # the distributed profile's requirement, not the local one's

        conn = psycopg2.connect(f"postgresql://{self.postgres}/postgres", connect_timeout=10)
        conn.autocommit = True
        return conn

    def _create_database(self) -> None:
        with contextlib.closing(self._admin_connection()) as conn, conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{self.run_name}"')
        self.database = self.run_name

    def _drop_database(self) -> None:
        if self.database is None:
            return
        with contextlib.closing(self._admin_connection()) as conn, conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
        self.database = None

    def _clear_redis(self) -> None:
        """Remove this run's broker keys (its queue, bindings and unacked sets)."""
        import redis

        client = redis.Redis.from_url(self.redis, socket_connect_timeout=5)
        try:
            keys = list(client.scan_iter(match=f"{self.run_name}:*", count=500))
            if keys:
                client.delete(*keys)
        finally:
            client.close()

    def _check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(
                    f"airflow {name} exited with {proc.returncode}; see "
                    f"{self.home / 'logs' / (name + '.log')}"
                )

    def wait_healthy(self, timeout: float, api_only: bool = False) -> None:
        """Wait until the scheduler is healthy and every worker is ready (or the API answers)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                with urllib.request.urlopen(f"{self.base}/api/v2/monitor/health", timeout=5) as r:
                    health = json.load(r)
                if api_only or (
                    health.get("scheduler", {}).get("status") == "healthy"
                    and all(self._worker_ready(w) for w in self.workers)
                ):
                    return
            except (urllib.error.URLError, OSError, ValueError):
                pass
            time.sleep(1)
        raise TimeoutError(f"Airflow at {self.base} not healthy after {timeout:.0f} s")

    def stop(self) -> None:
        # Task processes run in sessions of their own (outside their worker's process group):
        # note them first, to end any that outlive their worker.
        descendants = [c for proc in self.procs.values() for c in _descendants(proc.pid)]
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
        for child in descendants:
            with contextlib.suppress(Exception):
                child.kill()
        self.procs.clear()
        if self.profile == "distributed":
            self._drop_database()
            with contextlib.suppress(Exception):  # leftovers in Redis are harmless, only noise
                self._clear_redis()

    # REST API ---------------------------------------------------------------------------------
    def login(self, user: str, password: str) -> str:
        """A fresh API token for `user` (`POST /auth/token`)."""
        body = json.dumps({"username": user, "password": password}).encode()
        req = urllib.request.Request(
            f"{self.base}/auth/token",
            data=body,
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=30) as r:
            return str(json.load(r)["access_token"])

    def token(self) -> str:
        """The admin's token, fetched once."""
        if self._token is None:
            self._token = self.login("admin", self.password)
        return self._token

    def api(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """Call the REST API (`/api/v2/...`) or a page; returns (status, JSON body or text).

        On SQLite the API server can wait a long time for the scheduler's write lock on a
        busy machine: a GET that times out is asked again (it changes nothing); other methods
        are not (see `trigger` for a POST made safe to repeat)."""
        data = json.dumps(body).encode() if body is not None else None
        attempts = 3 if method == "GET" else 1
        for attempt in range(attempts):
            req = urllib.request.Request(
                f"{self.base}{path}",
                data=data,
                method=method,
                headers={
                    "Authorization": f"Bearer {self.token()}",
                    "Content-Type": "application/json",
                },
            )
            try:
                with urllib.request.urlopen(req, timeout=90) as r:
                    return r.status, _body(r.read())
            except urllib.error.HTTPError as err:
                return err.code, _body(err.read())
            except TimeoutError:
                if attempt == attempts - 1:
                    raise
        raise AssertionError("unreachable")

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> tuple[int, Any]:
        return self.api(
            "POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf or {}}
        )

    def runs(self, dag_id: str) -> list[dict[str, Any]]:
        status, body = self.api(
            "GET", f"/api/v2/dags/{dag_id}/dagRuns?order_by=-start_date&limit=100"
        )
        return body["dag_runs"] if status == 200 else []

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        rid = urllib.parse.quote(run_id, safe="")
        _, body = self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{rid}/taskInstances?limit=100")
        return list(body.get("task_instances", [])) if isinstance(body, dict) else []

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str]:
        return {t["task_id"]: t["state"] for t in self.task_instances(dag_id, run_id)}

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


def _body(raw: bytes) -> Any:
    """A response body: parsed JSON, or its text (a page of the Models view), or None."""
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")


def _descendants(pid: int) -> list[Any]:
    import psutil  # an Airflow dependency

    try:
        return list(psutil.Process(pid).children(recursive=True))
    except psutil.Error:
        return []


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--profile",
        choices=PROFILES,
        default="local",
        help="local: SQLite + LocalExecutor (default); distributed: "
        "PostgreSQL (scratch database, dropped at stop) + CeleryExecutor on "
        "Redis",
    )
    parser.add_argument(
        "--home",
        help="AIRFLOW_HOME to use (default: .airflow, or "
        ".airflow/distributed for the distributed profile)",
    )
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--workers", type=int, default=2, help="Celery workers (distributed)")
    parser.add_argument(
        "--worker-concurrency", type=int, default=2, help="tasks per Celery worker (distributed)"
    )
    parser.add_argument(
        "--postgres",
        default=POSTGRES,
        help="user[:password]@host:port of the PostgreSQL server (distributed)",
    )
    parser.add_argument("--redis", default=REDIS, help="Redis URL: Celery broker and results")
    args = parser.parse_args()
    default_home = REPO / ".airflow" / ("distributed" if args.profile == "distributed" else "")
    home = Path(args.home or default_home)
    home.mkdir(parents=True, exist_ok=True)
    password_file = home / ".admin_password"
    password = password_file.read_text().strip() if password_file.exists() else None
    af = LocalAirflow(
        home,
        args.port,
        password=password,
        profile=args.profile,
        workers=args.workers,
        worker_concurrency=args.worker_concurrency,
        postgres=args.postgres,
        redis=args.redis,
    )
    if not password_file.exists():
        password_file.write_text(af.password)
        os.chmod(password_file, 0o600)
    where = (
        f"PostgreSQL database {af.run_name}, {len(af.workers)} Celery worker(s)"
        if args.profile == "distributed"
        else "SQLite, LocalExecutor"
    )
    print(
        f"starting Airflow ({args.profile}: {where}) in {af.home} (logs in {af.home / 'logs'}) ...",
        flush=True,
    )
    # Stop on Ctrl-C or SIGTERM (`make stop`), even when started in the background (where a
    # shell leaves SIGINT ignored), and even while the components are still starting.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    launcher = home / "launcher.pid"
    launcher.write_text(str(os.getpid()))
    try:
        af.start()
        dags = af.dag_ids()
        print(
            f"\nAirflow UI:  {af.base}\n  user: admin\n  password: {af.password}\n"
            f"DAGs ({len(dags)}): {', '.join(dags)}\nPress Ctrl-C to stop.",
            flush=True,
        )
        while all(p.poll() is None for p in af.procs.values()):
            time.sleep(2)
        print("an Airflow process exited; see the logs above", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        print("stopping Airflow ...", flush=True)
        af.stop()
        launcher.unlink(missing_ok=True)


if __name__ == "__main__":
    sys.exit(main())
