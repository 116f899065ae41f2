"""Time-to-recover: a drifted batch is seen, and a new version is served.

The same chain runs twice in one bench run, on two copies of one store (demo batches, v1 in
production, then two days of `covariate_shift` batches):

* **Airflow**: a real deployment (`scripts/local_airflow.py`: api-server, scheduler,
  dag-processor, triggerer; SQLite, LocalExecutor). The clock starts when the monitor run is
  triggered through the REST API; the monitor emits the retrain Asset event, the
  asset-triggered retrain trains, gates, promotes and verifies, and the clock stops when the
  prediction service (`mlops serve`, polled every 0.1 s) reports the new version.
* **In process**: `mlops_tasks.flow.flows.run_flow` runs the monitor and then the retrain its
  request asks for, in one fresh Python process (its imports included), against its own service.

Per task it prints what Airflow adds around the step's own work, from the task instance's
times (REST API) and the step's record (`runs/<model>/<run>/<step>.json`: `started_at`,
`seconds`):

* wait      the upstream task's end (or the run's start) to this task's start: scheduling and
            the executor picking the task up;
* before    task start to step start: the task process (fork), parsing the DAG file, imports,
            the run context (spec, store), the step's own imports;
* after     step end to task end: XCom and state back to the API server.

    python bench/recover.py                      # tuned scheduler settings (the deployment's)
    python bench/recover.py --scheduler default  # Airflow's defaults for the latency settings
    python bench/recover.py --preload off        # tasks import their libraries themselves
    python bench/recover.py --json out.json

Compare before/after a change by running the same file from two checkouts (`--repo`): the
Airflow processes and the in-process chain then use that checkout's code. The machine may be
shared: the 1-minute load average is printed beside every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent.parent
MODEL = "credit_default"
TOKEN = "bench-admin-token"
TARGET_SECONDS = 30.0
TARGET_RATIO = 3.0

#: Scheduler settings that bound how fast a run moves from one task to the next. `default` is
#: Airflow's own values (scheduler_heartbeat_sec 5, scheduler_idle_sleep_time 1 s), `tuned`
#: what scripts/local_airflow.py sets (2 s, 0.2 s).
SCHEDULER = {
    "default": {
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "5",
        "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "1",
    },
    "tuned": {},
}

INPROC = """
import json, sys, time
t0 = time.perf_counter()
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from mlops_tasks.flow.context import RunContext, new_run_id
from mlops_tasks.flow.flows import DEPLOY, MONITOR, REQUEST, RETRAIN, run_flow
from mlops_tasks.records import Approval, Trigger
from mlops_tasks.settings import Settings
from mlops_tasks.specs import load_spec
from mlops_tasks.storage import LocalStore

store = LocalStore(Path(sys.argv[2]))
spec = load_spec(sys.argv[3])
settings = Settings.from_env()
def ctx(kind, trigger):
    return RunContext.create(spec, store, settings, new_run_id(kind), trigger)
steps = []
mon = run_flow(MONITOR, ctx("monitor", Trigger("cli", user="bench", reason="recover bench")))
request = mon.get(REQUEST)
assert request is not None, mon.to_json()
ret = run_flow(RETRAIN, ctx("retrain", Trigger.from_request(request)),
               lambda _c, _o: Approval(True, by="bench"))
assert ret.status == "success", ret.to_json()
print(json.dumps({"seconds": time.perf_counter() - t0, "monitor": mon.run_id,
                  "retrain": ret.run_id, "version": ret[DEPLOY].version}))
"""


def load() -> float:
    return os.getloadavg()[0]


def iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Service:
    """`mlops serve` on a store; `version()` is what it serves for the model."""

    def __init__(self, repo: Path, store_uri: str, spec_dir: Path, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "PYTHONPATH": str(repo),
            "MLOPS_SERVING_TOKEN": TOKEN,
            "MLOPS_SPEC_DIR": str(spec_dir),
        }
        args = ["serve", "--store", store_uri, "--port", str(self.port), "--poll-seconds", "1"]
        main = "import sys; from mlops_tasks.cli import main; sys.exit(main(sys.argv[1:]))"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", main, *args],
            env=env,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 120
        while self.version() is None:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"service did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.3)

    def version(self) -> int | None:
        try:
            with urllib.request.urlopen(f"{self.url}/v1/models/{MODEL}", timeout=5) as r:
                return json.load(r).get("serving_version")
        except OSError:
            return None

    def wait_for(self, version: int, timeout: float = 900) -> float:
        """Poll every 0.1 s; the wall-clock time when it serves `version`."""
        deadline = time.monotonic() + timeout
        while (served := self.version()) is None or served < version:
            if time.monotonic() > deadline:
                raise TimeoutError(f"service still serves v{served}, not v{version}")
            time.sleep(0.1)
        return time.time()

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=60)


def prepare(repo: Path, root: Path) -> tuple[Path, Path]:
    """A store with v1 in production and two drifted days after it; a spec dir without
    schedules (nothing but the bench starts a run) and without a cooldown."""
    sys.path.insert(0, str(repo))
    from mlops_tasks.data import synthetic
    from mlops_tasks.flow.context import RunContext, new_run_id
    from mlops_tasks.flow.flows import RETRAIN, run_flow
    from mlops_tasks.records import Approval, Trigger
    from mlops_tasks.settings import Settings
    from mlops_tasks.specs import load_spec
    from mlops_tasks.storage import LocalStore

    specs = root / "specs"
    specs.mkdir()
    text = (repo / "dags/specs/credit_default.yaml").read_text()
    for old, new in (
        ('monitor: "*/10 * * * *"', "monitor: null"),
        ('retrain: "0 3 * * 0"', "retrain: null"),
        ("cooldown_hours: 0.25", "cooldown_hours: 0"),
    ):
        assert old in text, old
        text = text.replace(old, new)
    (specs / f"{MODEL}.yaml").write_text(text)
    store = LocalStore(root / "store-airflow")
    synthetic.write_batches(days=8, rows_per_day=1000, store=store)
    spec = load_spec(specs / f"{MODEL}.yaml")
    ctx = RunContext.create(
        spec,
        store,
        Settings.from_env({"MLOPS_STORE": store.uri}),
        new_run_id("retrain"),
        Trigger("cli", user="bench", reason="v1"),
    )
    first = run_flow(RETRAIN, ctx, lambda _c, _o: Approval(True, by="bench"))
    assert first.status == "success", first.to_json()
    shutil.copytree(store.root, root / "store-inproc")
    write_drift(repo, root / "store-inproc")
    return specs, root / "store-inproc"


def write_drift(repo: Path, root: Path) -> None:
    """Two days of `covariate_shift` batches from today (the monitor's window)."""
    sys.path.insert(0, str(repo))
    from mlops_tasks.data import synthetic
    from mlops_tasks.storage import LocalStore

    synthetic.write_batches(
        start=date.today(),
        days=2,
        rows_per_day=1000,
        scenario="covariate_shift",
        store=LocalStore(root),
    )


def step_records(store_root: Path, run_id: str) -> dict[str, dict[str, Any]]:
    from mlops_tasks.reports import safe_run_id

    folder = store_root / "runs" / MODEL / safe_run_id(run_id)
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


def task_rows(af: Any, dag_id: str, run: dict[str, Any], store_root: Path) -> list[dict[str, Any]]:
    """Per task: wait (the last task end before its start, or the run's start → start), before
    (start → step start), step seconds, after (step end → task end)."""
    records = step_records(store_root, run["dag_run_id"])
    tis = sorted(
        (t for t in af.task_instances(dag_id, run["dag_run_id"]) if t.get("start_date")),
        key=lambda t: t["start_date"],
    )
    ends = [iso(t["end_date"]) for t in tis if t.get("end_date")]
    rows = []
    for ti in tis:
        start, end = iso(ti["start_date"]), iso(ti["end_date"])
        previous = max([e for e in ends if e <= start], default=iso(run["start_date"]))
        rec = records.get(ti["task_id"], {})
        row: dict[str, Any] = {
            "dag": dag_id,
            "task": ti["task_id"],
            "state": ti["state"],
            "wait": (start - previous).total_seconds(),
            "task_seconds": (end - start).total_seconds(),
        }
        if rec:
            step_start = iso(rec["started_at"])
            row["before"] = (step_start - start).total_seconds()
            row["step"] = rec["seconds"]
            row["after"] = (end - step_start).total_seconds() - rec["seconds"]
        rows.append(row)
    return rows


def run_airflow(
    repo: Path, root: Path, specs: Path, scheduler: str, service: Service, preload: str = "on"
) -> dict[str, Any]:
    sys.path.insert(0, str(repo))
    from scripts.local_airflow import LocalAirflow

    store_root = root / "store-airflow"
    af = LocalAirflow(
        root / "home",
        free_port(),
        dags=repo / "dags",
        plugins=repo / "plugins",
        extra_env={
            "PYTHONPATH": str(repo),
            "MLOPS_STORE": store_root.as_uri(),
            "MLOPS_SPEC_DIR": str(specs),
            "MLOPS_SERVING_URL": service.url,
            "MLOPS_SERVING_TOKEN": TOKEN,
            **SCHEDULER[scheduler],
            # The scheduler imports what the steps use before it forks its workers
            # (plugins/airflow_local_settings.py); `off` makes every task import them itself.
            "MLOPS_PRELOAD": "1" if preload == "on" else "0",
        },
    )
    t = time.monotonic()
    af.start()
    try:
        deadline = time.monotonic() + 180
        while {f"{MODEL}_monitor", f"{MODEL}_retrain"} - set(af.dag_ids()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"DAGs not listed: {af.dag_ids()}")
            time.sleep(1)
        started_up = time.monotonic() - t
        # Warm-up: the first tasks after start-up wait for the API server's first requests
        # (seconds). A monitor run on the not yet drifted window (no retrain) pays that once.
        t = time.monotonic()
        status, body = af.trigger(f"{MODEL}_monitor")
        assert status == 200, body
        warm_id = body["dag_run_id"]
        af.wait_for_run(f"{MODEL}_monitor", lambda r: r["dag_run_id"] == warm_id)
        warm_up = time.monotonic() - t
        write_drift(repo, store_root)
        before = service.version() or 0
        load_start = load()
        t0 = time.time()
        status, body = af.trigger(f"{MODEL}_monitor")
        assert status == 200, body
        monitor_id = body["dag_run_id"]
        served_at = service.wait_for(before + 1)
        load_end = load()
        monitor = af.wait_for_run(f"{MODEL}_monitor", lambda r: r["dag_run_id"] == monitor_id)
        retrain = af.wait_for_run(f"{MODEL}_retrain", lambda r: r["run_type"] == "asset_triggered")
        rows = task_rows(af, f"{MODEL}_monitor", monitor, store_root)
        rows += task_rows(af, f"{MODEL}_retrain", retrain, store_root)
        asset_gap = (iso(retrain["start_date"]) - iso(monitor["end_date"])).total_seconds()
        return {
            "seconds": served_at - t0,
            "monitor_start_to_served": served_at - iso(monitor["start_date"]).timestamp(),
            "trigger_to_monitor_start": iso(monitor["start_date"]).timestamp() - t0,
            "monitor_end_to_retrain_start": asset_gap,
            "retrain_end_to_served": served_at - iso(retrain["end_date"]).timestamp(),
            "startup_seconds": started_up,
            "warm_up_seconds": warm_up,
            "tasks": rows,
            "load": [load_start, load_end],
        }
    finally:
        af.stop()


def run_inproc(repo: Path, store: Path, specs: Path, service: Service) -> dict[str, Any]:
    env = {
        **os.environ,
        "PYTHONPATH": str(repo),
        "MLOPS_STORE": store.as_uri(),
        "MLOPS_SPEC_DIR": str(specs),
        "MLOPS_SERVING_URL": service.url,
        "MLOPS_SERVING_TOKEN": TOKEN,
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
        "PYTHONWARNINGS": "ignore",
    }
    before = service.version() or 0
    load_start = load()
    t0 = time.time()
    out = subprocess.run(
        [sys.executable, "-c", INPROC, str(repo), str(store), str(specs / f"{MODEL}.yaml")],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode:
        raise RuntimeError(f"in-process chain failed:\n{out.stderr[-4000:]}")
    served_at = service.wait_for(before + 1)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    steps = []
    for run_id in (res["monitor"], res["retrain"]):
        for name, rec in step_records(store, run_id).items():
            steps.append({"task": name, "step": rec["seconds"], "started_at": rec["started_at"]})
    steps.sort(key=lambda s: s["started_at"])
    return {
        "seconds": served_at - t0,
        "in_child": res["seconds"],
        "steps": steps,
        "load": [load_start, load()],
    }


def report(air: dict[str, Any], inproc: dict[str, Any], scheduler: str, preload: str) -> None:
    print(
        f"\n# Time to recover (scheduler settings: {scheduler}, preload {preload}), "
        f"{os.cpu_count()} cores\n"
    )
    print("| task | wait s | before s | step s | after s | task s |")
    print("|---|---:|---:|---:|---:|---:|")
    tot = {"wait": 0.0, "before": 0.0, "step": 0.0, "after": 0.0}
    for r in air["tasks"]:
        for k in tot:
            tot[k] += r.get(k) or 0.0
        cells = [
            f"{r[k]:.2f}" if isinstance(r.get(k), float) else "-"
            for k in ("wait", "before", "step", "after", "task_seconds")
        ]
        print(f"| {r['dag'].rsplit('_', 1)[-1]}.{r['task']} | " + " | ".join(cells) + " |")
    print(
        f"| **total** | {tot['wait']:.2f} | {tot['before']:.2f} | {tot['step']:.2f} | "
        f"{tot['after']:.2f} | |"
    )
    n = len([r for r in air["tasks"] if "before" in r]) or 1
    ratio = air["seconds"] / inproc["seconds"]
    print(
        f"\nper task: before {tot['before'] / n:.2f} s, after {tot['after'] / n:.2f} s, "
        f"wait {tot['wait'] / max(len(air['tasks']), 1):.2f} s (mean of {len(air['tasks'])})"
    )
    print(
        f"monitor end -> asset-triggered retrain start: {air['monitor_end_to_retrain_start']:.2f} s"
        f"; trigger -> monitor start: {air['trigger_to_monitor_start']:.2f} s; "
        f"served {-air['retrain_end_to_served']:.2f} s before the retrain run ended "
        "(verify_deployment waits for the service)"
    )
    print(f"in-process steps: {sum(s['step'] for s in inproc['steps']):.2f} s of work\n")
    print("| figure | seconds | load avg (start, end) | target | met |")
    print("|---|---:|---|---|---|")
    la, li = air["load"], inproc["load"]
    print(
        f"| drifted batch seen -> new version served, Airflow | {air['seconds']:.1f} | "
        f"{la[0]:.2f}, {la[1]:.2f} | <= {TARGET_SECONDS:.0f} s | "
        f"{'yes' if air['seconds'] <= TARGET_SECONDS else 'no'} |"
    )
    print(
        f"| the same chain in one process (incl. imports) | {inproc['seconds']:.1f} | "
        f"{li[0]:.2f}, {li[1]:.2f} | | |"
    )
    print(
        f"| ratio Airflow / in process | {ratio:.2f}x | | <= {TARGET_RATIO:.0f}x | "
        f"{'yes' if ratio <= TARGET_RATIO else 'no'} |"
    )
    print(
        f"\nnot counted: Airflow start-up {air['startup_seconds']:.0f} s; the warm-up monitor run "
        f"(first tasks after start-up, no drift) {air['warm_up_seconds']:.0f} s"
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repo", type=Path, default=HERE, help="checkout to run (default: this)")
    parser.add_argument("--scheduler", choices=sorted(SCHEDULER), default="tuned")
    parser.add_argument(
        "--preload",
        choices=("on", "off"),
        default="on",
        help="import the steps' libraries in the scheduler before it forks (default: on)",
    )
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, stores)")
    args = parser.parse_args()
    repo = args.repo.resolve()
    root = Path(tempfile.mkdtemp(prefix="bench-recover-"))
    services: list[Service] = []
    try:
        specs, inproc_store = prepare(repo, root)
        air_svc = Service(repo, (root / "store-airflow").as_uri(), specs, root / "serve-air.log")
        services.append(air_svc)
        inproc_svc = Service(repo, inproc_store.as_uri(), specs, root / "serve-inproc.log")
        services.append(inproc_svc)
        inproc = run_inproc(repo, inproc_store, specs, inproc_svc)
        air = run_airflow(repo, root, specs, args.scheduler, air_svc, args.preload)
        report(air, inproc, args.scheduler, args.preload)
        if args.json:
            args.json.write_text(
                json.dumps(
                    {
                        "date": datetime.now(UTC).isoformat(),
                        "repo": str(repo),
                        "scheduler": args.scheduler,
                        "preload": args.preload,
                        "airflow": air,
                        "inproc": inproc,
                    },
                    indent=2,
                )
            )
    finally:
        for svc in services:
            svc.stop()
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
