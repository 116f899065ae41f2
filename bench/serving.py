"""Prediction-service latency and throughput, against the raw in-process predict as the floor.

Trains the demo credit_default model into a temporary store, starts `mlops serve` (uvicorn) on
127.0.0.1 in its own process, and drives it from this process over loopback with a bounded
number of requests per case. For single-row and 100-row requests it prints p50/p99 latency and
throughput, beside the same model's in-process `predict_proba` time on the same rows, so the
service's overhead is a ratio; and the in-process cost of the data checks each request runs
(unseen categories, out-of-range numbers: `profile.FeatureChecks`) on the same rows, once as
sent and once with every row flagged, as a share of that predict time.

    .venv/bin/python bench/serving.py [--requests 400] [--concurrency 4]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from threadpoolctl import threadpool_limits

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mlops_tasks import synthetic  # noqa: E402
from mlops_tasks.modelling import prepare_features, records_frame  # noqa: E402
from mlops_tasks.profile import FeatureChecks, load_profile  # noqa: E402
from mlops_tasks.records import Trigger  # noqa: E402
from mlops_tasks.registry import Registry  # noqa: E402
from mlops_tasks.specs import find_spec  # noqa: E402
from mlops_tasks.storage import LocalStore  # noqa: E402
from tests.conftest import free_port  # noqa: E402
from tests.flowkit import retrain  # noqa: E402


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def median_time(fn: Any, arg: Any, repeat: int = 500) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn(arg)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def drive(url: str, payload: dict[str, Any], requests: int, concurrency: int) -> dict[str, float]:
    latencies: list[float] = []
    lock = threading.Lock()
    per_worker = requests // concurrency

    def worker() -> None:
        with httpx.Client(base_url=url, timeout=60) as http:
            for _ in range(per_worker):
                t = time.perf_counter()
                r = http.post("/v1/models/credit_default/predict", json=payload)
                r.raise_for_status()
                with lock:
                    latencies.append(time.perf_counter() - t)

    started = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    return {
        "p50": pct(latencies, 0.5),
        "p99": pct(latencies, 0.99),
        "rps": len(latencies) / wall,
        "n": len(latencies),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=400, help="requests per case")
    parser.add_argument("--concurrency", type=int, default=4, help="client threads")
    args = parser.parse_args()

    spec = find_spec("credit_default", REPO / "dags" / "specs")
    tmp = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    store = LocalStore(tmp / "store")
    synthetic.write_batches(days=6, rows_per_day=1500, store=store)
    retrain(spec, store, Trigger("cli", "bench", "benchmark"))
    version, model = Registry(store).load_production("credit_default")
    checks = FeatureChecks.build(spec, load_profile(store, spec.name, version), model)

    port = free_port()
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
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
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("service did not become ready")
            time.sleep(0.3)
        frame = synthetic.generate_day(synthetic.date(2026, 6, 1), 100, "stable", seed=21)
        print(
            f"# serving benchmark: {args.requests} requests per case, "
            f"{args.concurrency} client threads, {os.cpu_count()} cores\n"
        )
        print(
            "| rows/request | in-process predict p50 | service p50 | service p99 | "
            "requests/s | rows/s | p50 overhead | data checks p50 (clean / all flagged) |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for rows in (1, 100):
            part = frame.head(rows)
            records = synthetic.feature_records(part, spec.features.all)
            payload = {"records": records}
            drive(url, payload, 40, 2)  # warm up
            floor = []
            with threadpool_limits(1):  # as the service runs it
                for _ in range(200):
                    t = time.perf_counter()
                    model.predict_proba(prepare_features(spec, part))
                    floor.append(time.perf_counter() - t)
            raw = statistics.median(floor)
            clean = median_time(checks.check, records_frame(spec, records))
            unseen = [r | {"region": "atlantis", "age": 1e6} for r in records]
            flagged = median_time(checks.check, records_frame(spec, unseen))
            res = drive(url, payload, args.requests, args.concurrency)
            print(
                f"| {rows} | {raw * 1000:.2f} ms | {res['p50'] * 1000:.2f} ms | "
                f"{res['p99'] * 1000:.2f} ms | {res['rps']:.0f} | {res['rps'] * rows:.0f} | "
                f"{res['p50'] / raw:.1f}x | {clean * 1e6:.0f} / {flagged * 1e6:.0f} µs "
                f"({clean / raw:.1%} / {flagged / raw:.1%} of predict) |"
            )
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
