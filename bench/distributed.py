"""Retrain latency on the one-machine stack vs the distributed one, and 8 models at once.

Both deployments come from scripts/local_airflow.py and share one artifact store, moto's S3
server over HTTP on 127.0.0.1, so the figures differ only by executor and metadata database:

1. **One retrain, trigger -> promoted**: a REST trigger of `credit_default_retrain` until the
   registry's `production` alias points at the new version, on the `local` profile
   (LocalExecutor + SQLite), then on the `distributed` profile (CeleryExecutor + PostgreSQL,
   Redis broker) with one Celery worker.
2. **8 models at once**: eight copies of the credit_default spec (different names, a shorter
   training window and fewer boosting iterations) triggered together on the distributed
   deployment, wall time from the first trigger to the last promotion; first with one Celery
   worker, then, after `add_worker()` starts a second one in the same deployment, with two
   (a second set of eight copies, so both rounds train first versions).

Every model trains on the same synthetic batches (`mlops_tasks.data.synthetic`).
Schedules are off in the copied specs, so only the triggered runs execute. Needs PostgreSQL on
127.0.0.1:5432 and Redis on 127.0.0.1:6379 (as the distributed tests do).

    .venv/bin/python bench/distributed.py [--models 8] [--worker-concurrency 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO))

from mlops_tasks.data import synthetic  # noqa: E402
from mlops_tasks.registry import Registry  # noqa: E402
from mlops_tasks.storage import S3Store  # noqa: E402
from scripts.local_airflow import REPO as _REPO  # noqa: E402
from scripts.local_airflow import LocalAirflow  # noqa: E402

SPEC = "credit_default"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def reachable(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def write_specs(spec_dir: Path, small: list[str]) -> None:
    """credit_default as shipped (schedules off) plus `small` copies with less to train."""
    spec_dir.mkdir(parents=True)
    text = (_REPO / f"dags/specs/{SPEC}.yaml").read_text()
    text = text.replace('retrain: "0 3 * * 0"', "retrain: null")
    text = text.replace('monitor: "*/10 * * * *"', "monitor: null")
    assert "retrain: null" in text and "monitor: null" in text
    (spec_dir / f"{SPEC}.yaml").write_text(text)
    small_text = text.replace("training_window_days: 14", "training_window_days: 4")
    small_text = small_text.replace("max_iter: 150", "max_iter: 60")
    assert "training_window_days: 4" in small_text and "max_iter: 60" in small_text
    for name in small:
        (spec_dir / f"{name}.yaml").write_text(small_text.replace(f"name: {SPEC}", f"name: {name}"))


def wait_dags(af: LocalAirflow, dag_ids: list[str], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not set(dag_ids) <= set(af.dag_ids()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"DAGs {dag_ids} not all parsed within {timeout:.0f} s")
        time.sleep(2)


def cpu_wait_us() -> int | None:
    """Microseconds some task on the machine waited for a CPU so far (Linux PSI), or None."""
    try:
        with open("/proc/pressure/cpu", encoding="ascii") as fh:
            return int(fh.readline().rsplit("total=", 1)[1])
    except (OSError, IndexError, ValueError):
        return None


def retrain_together(
    af: LocalAirflow, reg: Registry, models: list[str], timeout: float = 3600
) -> dict[str, Any]:
    """Trigger every model's retrain at once; seconds until each one's new version is live.

    The end is the promotion's own audit timestamp (the registry's compare-and-swap), so
    polling intervals do not enter the figures.
    """
    before = {m: reg.alias(m) for m in models}
    wait0, t0 = cpu_wait_us(), datetime.now(UTC)
    for m in models:
        status, body = af.trigger(f"{m}_retrain", {"reason": "bench/distributed.py"})
        if status != 200:
            raise RuntimeError(f"trigger {m}: HTTP {status} {body}")
    waiting, checked = set(models), time.monotonic()
    while waiting:
        waiting = {m for m in waiting if reg.alias(m) in (None, before[m])}
        if time.monotonic() - checked > 10:  # a failed run would otherwise wait for the timeout
            checked = time.monotonic()
            failed = [r for m in waiting for r in af.runs(f"{m}_retrain") if r["state"] == "failed"]
            if failed:
                raise RuntimeError(
                    f"retrain failed: {failed[0]['dag_id']} {failed[0]['dag_run_id']}"
                )
        if (datetime.now(UTC) - t0).total_seconds() > timeout:
            raise TimeoutError(f"{sorted(waiting)} not promoted within {timeout:.0f} s")
        time.sleep(1)
    wait1, elapsed = cpu_wait_us(), (datetime.now(UTC) - t0).total_seconds()
    # This machine may be shared: how much of the time something (this deployment included)
    # waited for a CPU, and the load average, say how contended the figure is.
    contention = {
        "cpu_wait_share": (wait1 - wait0) / 1e6 / elapsed
        if wait0 is not None and wait1 is not None
        else None,
        "load_avg_1m": os.getloadavg()[0],
    }
    done = {}
    for m in models:
        at = reg.audit(m, action="promote")[-1]["at"]
        done[m] = (datetime.fromisoformat(at.replace("Z", "+00:00")) - t0).total_seconds()
    hosts: dict[str, int] = {}
    for m in models:
        for run in af.runs(f"{m}_retrain"):
            for ti in af.task_instances(f"{m}_retrain", run["dag_run_id"]):
                if ti["state"] in ("success", "failed"):  # verify_deployment may still run
                    hosts[ti["hostname"]] = hosts.get(ti["hostname"], 0) + 1
    return {
        "wall_s": max(done.values()),
        "per_model_s": done,
        **contention,
        "mean_model_s": statistics.mean(done.values()),
        "task_hosts": hosts,
    }


def busy(r: dict[str, Any]) -> str:
    share = r["cpu_wait_share"]
    return (f"CPU wait {share:.0%}, " if share is not None else "") + f"load {r['load_avg_1m']:.1f}"


def deployment(
    root: Path, name: str, store: S3Store, endpoint: str, spec_dir: Path, **kwargs: Any
) -> LocalAirflow:
    env = {
        "MLOPS_STORE": store.uri,
        "AWS_ENDPOINT_URL": endpoint,
        "MLOPS_SPEC_DIR": str(spec_dir),
        **{
            k: os.environ[k]
            for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")
        },
    }
    return LocalAirflow(root / name, free_port(), extra_env=env, **kwargs)


def summary(results: dict[str, Any], n: int) -> None:
    rows = [
        ("one retrain, trigger -> promoted, LocalExecutor + SQLite", "local_one_retrain"),
        ("one retrain, trigger -> promoted, Celery + PostgreSQL", "celery_one_retrain"),
        (f"{n} models at once, 1 Celery worker", f"celery_{n}_models_1_worker"),
        (f"{n} models at once, 2 Celery workers", f"celery_{n}_models_2_worker"),
    ]
    print(f"\n{'figure':58} {'seconds':>8} {'CPU wait':>9} {'load':>5}")
    for label, key in rows:
        r, share = results[key], results[key]["cpu_wait_share"]
        print(
            f"{label:58} {r['wall_s']:8.1f} {'' if share is None else f'{share:.0%}':>9} "
            f"{r['load_avg_1m']:5.1f}"
        )
    one_local, one_celery = results["local_one_retrain_s"], results["celery_one_retrain_s"]
    w1, w2 = results[f"celery_{n}_models_1_worker_s"], results[f"celery_{n}_models_2_worker_s"]
    print(
        f"\nCelery+PostgreSQL / LocalExecutor+SQLite, one retrain: {one_celery / one_local:.2f}x\n"
        f"{n} models, 1 worker / 2 workers (speed-up from the second worker): {w1 / w2:.2f}x\n"
        f"{n} models on 1 worker / {n} x one retrain alone on Celery: {w1 / (n * one_celery):.2f}\n"
        f"start-up: local {results['local_startup_s']:.0f} s, distributed "
        f"{results['distributed_startup_s']:.0f} s"
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", type=int, default=8, help="models retrained at once")
    parser.add_argument("--worker-concurrency", type=int, default=2, help="tasks per worker")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    missing = [
        f"{n} (127.0.0.1:{p})"
        for n, p in (("PostgreSQL", 5432), ("Redis", 6379))
        if not reachable(p)
    ]
    if missing:
        print(f"needs {' and '.join(missing)}", file=sys.stderr)
        return 2

    from moto.server import ThreadedMotoServer

    for k, v in (
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
    ):
        os.environ.setdefault(k, v)
    port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    endpoint = f"http://127.0.0.1:{port}"
    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "models": args.models,
        "worker_concurrency": args.worker_concurrency,
    }
    rounds = {w: [f"bench_w{w}_m{i + 1}" for i in range(args.models)] for w in (1, 2)}
    try:
        with tempfile.TemporaryDirectory(prefix="mlops-bench-dist-") as tmp:
            root = Path(tmp)
            store = S3Store(f"bench-{uuid.uuid4().hex[:8]}", "store", endpoint_url=endpoint)
            store.client.create_bucket(Bucket=store.bucket)
            synthetic.write_batches(days=14, rows_per_day=1500, store=store)
            spec_dir = root / "specs"
            write_specs(spec_dir, rounds[1] + rounds[2])
            reg = Registry(store)

            print("local profile (LocalExecutor + SQLite): starting ...", flush=True)
            af = deployment(root, "local", store, endpoint, spec_dir)
            t = time.monotonic()
            try:
                af.start()
                results["local_startup_s"] = time.monotonic() - t
                wait_dags(af, [f"{SPEC}_retrain"])
                one = retrain_together(af, reg, [SPEC])
                results["local_one_retrain_s"], results["local_one_retrain"] = one["wall_s"], one
                print(
                    f"  one retrain, trigger -> promoted: {one['wall_s']:.1f} s ({busy(one)})",
                    flush=True,
                )
            finally:
                af.stop()

            print(
                "distributed profile (CeleryExecutor + PostgreSQL, 1 worker): starting ...",
                flush=True,
            )
            af = deployment(
                root,
                "distributed",
                store,
                endpoint,
                spec_dir,
                profile="distributed",
                workers=1,
                parallelism=4 * args.models,
                worker_concurrency=args.worker_concurrency,
            )
            t = time.monotonic()
            try:
                af.start()
                results["distributed_startup_s"] = time.monotonic() - t
                wait_dags(af, [f"{m}_retrain" for m in [SPEC, *rounds[1], *rounds[2]]])
                one = retrain_together(af, reg, [SPEC])
                results["celery_one_retrain_s"], results["celery_one_retrain"] = one["wall_s"], one
                print(
                    f"  one retrain, trigger -> promoted: {one['wall_s']:.1f} s ({busy(one)})",
                    flush=True,
                )
                for workers in (1, 2):
                    if workers == 2:
                        af.add_worker()
                    many = retrain_together(af, reg, rounds[workers])
                    results[f"celery_{args.models}_models_{workers}_worker_s"] = many["wall_s"]
                    results[f"celery_{args.models}_models_{workers}_worker"] = many
                    print(
                        f"  {args.models} models at once, {workers} worker(s): "
                        f"{many['wall_s']:.1f} s wall (mean per model "
                        f"{many['mean_model_s']:.1f} s; tasks per host "
                        f"{many['task_hosts']}; {busy(many)})",
                        flush=True,
                    )
            finally:
                af.stop()
    finally:
        moto.stop()

    summary(results, args.models)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
