"""Prediction-service latency and throughput, beside the baselines measured in the same run.

Trains the demo credit_default model (the real spec: HistGradientBoosting) into a temporary
store and measures, for single-row requests:

- in process, one thread (as the service runs it): the full pipeline on a 1-row DataFrame
  (`prepare_features` + `predict_proba`, what the service did before), the compiled path
  (`serving/compiled.py`: rows to an encoded array, then the estimator), and the final
  estimator alone on an already-encoded row (the floor);
- over loopback: `mlops serve` with 1 and with 2 worker processes, driven by 1 client and by
  16 concurrent clients: p50, p99, requests/s, and each server's peak resident memory;
- with `--baseline-code DIR` (a checkout of an earlier commit, e.g. `git worktree add
  /tmp/before e694ccb`), the same service from that code, 1 worker: the old path, same run.

Load comes from Debian's `wrk` when it is installed (`apt-get install wrk`), else from a
bounded Python load generator (threads, one keep-alive connection each), which on a small
machine competes with the server for the cores. The load average is printed beside each case.

    .venv/bin/python bench/serving.py [--seconds 10] [--baseline-code DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from threadpoolctl import threadpool_limits

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mlops_tasks.data import synthetic  # noqa: E402
from mlops_tasks.model.modelling import predict_scores, prepare_features  # noqa: E402
from mlops_tasks.records import Trigger  # noqa: E402
from mlops_tasks.registry import Registry  # noqa: E402
from mlops_tasks.serving.compiled import compile_model  # noqa: E402
from mlops_tasks.specs import find_spec  # noqa: E402
from mlops_tasks.storage import LocalStore  # noqa: E402
from tests.conftest import free_port  # noqa: E402
from tests.flowkit import retrain  # noqa: E402

PREDICT = "/v1/models/credit_default/predict"
TARGETS = {"p50_1": 3.0, "p99_1": 10.0, "rps_16": 400.0, "p99_16": 25.0}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def timed(fn: Any, repeat: int) -> dict[str, float]:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return {"p50": statistics.median(times) * 1e3, "p99": pct(times, 0.99) * 1e3}


# load generators ---------------------------------------------------------------------------
def wrk(url: str, body: str, clients: int, seconds: float) -> dict[str, float]:
    script = Path(tempfile.mkdtemp(prefix="bench-wrk-")) / "post.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = {json.dumps(body)}\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
    )
    cmd = ["wrk", f"-t{min(clients, 2)}", f"-c{clients}", f"-d{seconds:g}s", "--latency"]
    out = subprocess.run(
        [*cmd, "-s", str(script), url + PREDICT],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    shutil.rmtree(script.parent)
    if "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"wrk saw errors:\n{out}")

    def ms(label: str) -> float:
        m = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        assert m, out
        return float(m[1]) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m[2]]

    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert rps, out
    return {"p50": ms("50"), "p99": ms("99"), "rps": float(rps[1])}


def python_load(url: str, body: str, clients: int, seconds: float) -> dict[str, float]:
    latencies: list[float] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client() -> None:
        mine = []
        headers = {"content-type": "application/json"}
        with httpx.Client(base_url=url, timeout=60) as http:
            while time.monotonic() < stop:
                t = time.perf_counter()
                http.post(PREDICT, content=body, headers=headers).raise_for_status()
                mine.append(time.perf_counter() - t)
        with lock:
            latencies.extend(mine)

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    return {
        "p50": pct(latencies, 0.5) * 1e3,
        "p99": pct(latencies, 0.99) * 1e3,
        "rps": len(latencies) / wall,
    }


# the service -------------------------------------------------------------------------------
class Server:
    def __init__(self, store: LocalStore, workers: int, code: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONPATH": str(code)}
        main = "import sys; from mlops_tasks.cli import main; sys.exit(main())"
        cmd = [sys.executable, "-c", main, "serve", "--store", store.uri]
        cmd += ["--port", str(self.port)] + (["--workers", str(workers)] if workers > 1 else [])
        self.proc = subprocess.Popen(
            cmd, env=env, cwd=code, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 300
        ready = 0
        while ready < 3:  # three answers in a row: every worker has started
            try:
                ok = httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200
                ready = ready + 1 if ok else 0
            except httpx.TransportError:
                ready = 0
            if time.monotonic() > deadline:
                raise TimeoutError("service did not become ready")
            time.sleep(0.5)

    def peak_rss_mib(self) -> float:
        """Peak resident memory of the server's processes (parent and workers), summed."""
        pids = [self.proc.pid]
        pids += [int(p) for p in _children(self.proc.pid)]
        total = 0
        for pid in pids:
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            m = re.search(r"VmHWM:\s+(\d+) kB", status)
            total += int(m[1]) if m else 0
        return total / 1024

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)


def _children(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.1f}/{five:.1f}"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10, help="seconds of load per case")
    parser.add_argument("--baseline-code", type=Path, help="checkout of the code before")
    parser.add_argument("--python-load", action="store_true", help="do not use wrk")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    use_wrk = shutil.which("wrk") is not None and not args.python_load
    drive = wrk if use_wrk else python_load

    spec = find_spec("credit_default", REPO / "dags" / "specs")
    tmp = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    store = LocalStore(tmp / "store")
    synthetic.write_batches(days=6, rows_per_day=1500, store=store)
    retrain(spec, store, Trigger("cli", "bench", "benchmark"))
    _, model = Registry(store).load_production("credit_default")
    compiled = compile_model(spec, model)
    frame = synthetic.generate_day(synthetic.date(2026, 6, 1), 1, "stable", seed=21)
    records = synthetic.feature_records(frame, spec.features.all)
    body = json.dumps({"records": records})

    print(
        f"# serving benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: credit_default "
        f"(HistGradientBoosting), 1-row requests, {os.cpu_count()} cores, "
        f"load {'wrk' if use_wrk else 'Python threads'}, {args.seconds:g} s per case\n"
    )
    with threadpool_limits(1):  # as the service runs it
        encoded = compiled.encode(records)
        floor = {
            "full pipeline on a 1-row DataFrame (before)": timed(
                lambda: predict_scores(spec, model, prepare_features(spec, frame)), 300
            ),
            "compiled: rows -> array -> estimator (now)": timed(
                lambda: predict_scores(spec, compiled.estimator, compiled.encode(records)), 300
            ),
            "final estimator on an encoded row (floor)": timed(
                lambda: compiled.estimator.predict_proba(encoded), 300
            ),
        }
    base = floor["full pipeline on a 1-row DataFrame (before)"]["p50"]
    print(f"in process, 1 thread (load {load()}):\n")
    print("| path | p50 | p99 | p50 vs pipeline |")
    print("|---|---|---|---|")
    for name, t in floor.items():
        print(f"| {name} | {t['p50']:.2f} ms | {t['p99']:.2f} ms | {base / t['p50']:.1f}x |")

    cases: list[tuple[str, int, Path]] = []
    if args.baseline_code:
        cases.append(("before (baseline code), 1 worker", 1, args.baseline_code.resolve()))
    cases += [("now, 1 worker", 1, REPO), ("now, 2 workers", 2, REPO)]
    print("\nover loopback:\n")
    print("| service | clients | p50 | p99 | requests/s | server peak RSS | load (1/5 min) |")
    print("|---|---|---|---|---|---|---|")
    results: dict[tuple[str, int], dict[str, float]] = {}
    rss: dict[str, float] = {}
    for name, workers, code in cases:
        server = Server(store, workers, code)
        try:
            drive(server.url, body, 4, 2)  # warm up every worker
            for clients in (1, 16):
                res = drive(server.url, body, clients, args.seconds)
                results[(name, clients)] = res
                rss[name] = server.peak_rss_mib()
                print(
                    f"| {name} | {clients} | {res['p50']:.2f} ms | {res['p99']:.2f} ms | "
                    f"{res['rps']:.0f} | {server.peak_rss_mib():.0f} MiB | {load()} |",
                    flush=True,
                )
        finally:
            server.stop()
    one, two = results[("now, 1 worker", 1)], results[("now, 2 workers", 16)]
    print("\ntargets (issue 12): ")
    checks = [
        ("1 client p50 <= 3 ms", min(one["p50"], results[("now, 2 workers", 1)]["p50"]), 3.0),
        ("1 client p99 <= 10 ms", min(one["p99"], results[("now, 2 workers", 1)]["p99"]), 10.0),
        ("16 clients p99 <= 25 ms (2 workers)", two["p99"], 25.0),
    ]
    for label, value, limit in checks:
        print(f"- {label}: {value:.2f} ms {'met' if value <= limit else 'MISSED'}")
    print(
        f"- 16 clients >= 400 req/s (2 workers): {two['rps']:.0f} "
        f"{'met' if two['rps'] >= 400 else 'MISSED'}"
    )
    if args.baseline_code:
        old = results[("before (baseline code), 1 worker", 1)]
        old16 = results[("before (baseline code), 1 worker", 16)]
        print(
            f"- vs before: 1 client p50 {old['p50'] / one['p50']:.1f}x lower, "
            f"16 clients {two['rps'] / old16['rps']:.1f}x the requests/s"
        )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"- this process peak RSS {peak:.0f} MiB (training the model, in-process timings)")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "date": datetime.now(UTC).isoformat(),
                    "load_generator": "wrk" if use_wrk else "python",
                    "in_process": floor,
                    "loopback": [
                        {"service": name, "clients": clients, **res}
                        for (name, clients), res in results.items()
                    ],
                    "server_peak_rss_mib": rss,
                },
                indent=2,
            )
        )
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
