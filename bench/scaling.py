"""Scaling curves: drift and validation time and peak memory against rows and against columns.

Each point runs in a fresh child process (this script re-run with `--single`), measured the way
`bench/run.py` measures a step (wall seconds, CPU seconds, peak RSS over the step's own
baseline via `/proc/self/clear_refs`, CPU pressure). The step is the pipeline's fast path:

* drift     `drift.data_drift(spec, reference, current)`: stable reference, `covariate_shift`
            current window, both of `rows` rows;
* validate  `validation.run_checks(batch, declared + learned expectations)`.

Rows: the demo table (25 features) at each of `--rows`. Columns: `--cols` features at
`--cols-rows` rows, made by repeating the demo's 20 numeric and 5 categorical features with a
suffix (numeric copies scaled by 1 + k/100 so no two columns are equal); the spec lists them all.

For each curve the growth exponent k of time ~ n^k is fitted by least squares on log-log (k = 1:
linear; n log n fits slightly above 1 over a decade), and the peak is set against the size of the
input frames (`memory_usage(deep=True)` of reference + current, or of the batch), which shows
where memory goes.

    python bench/scaling.py                 # rows 100k, 1M; columns 25, 100, 300 at 100k (~4 min)
    python bench/scaling.py --big           # adds 5M rows (several GiB; minutes more)
    python bench/scaling.py --json out.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
RESULT_TAG = "SCALING_RESULT "
MIB = 1024 * 1024


def _bench_run() -> Any:
    """bench/run.py as a module (its memory and CPU helpers)."""
    spec = importlib.util.spec_from_file_location("bench_run", REPO / "bench" / "run.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def widen(spec: Any, frames: list[Any], cols: int) -> tuple[Any, list[Any]]:
    """The spec and frames with `cols` features: the demo's 25, repeated with a suffix."""
    import pandas as pd

    from mlops_tasks.specs import ModelSpec

    numeric, categorical = list(spec.features.numeric), list(spec.features.categorical)
    base = len(numeric) + len(categorical)
    if cols <= base:
        return spec, frames
    copies = math.ceil(cols / base) - 1
    extra_num, extra_cat = [], []
    out = []
    for frame in frames:
        added: dict[str, Any] = {}
        for k in range(1, copies + 1):
            for c in numeric:
                added[f"{c}_{k}"] = frame[c] * (1 + k / 100)
            for c in categorical:
                added[f"{c}_{k}"] = frame[c]
        out.append(pd.concat([frame, pd.DataFrame(added, index=frame.index)], axis=1))
    for k in range(1, copies + 1):
        extra_num += [f"{c}_{k}" for c in numeric]
        extra_cat += [f"{c}_{k}" for c in categorical]
    budget = cols - base
    num_n = round(budget * len(numeric) / base)
    data = spec.model_dump()
    data["features"] = {
        "numeric": numeric + extra_num[:num_n],
        "categorical": categorical + extra_cat[: budget - num_n],
    }
    return ModelSpec.model_validate(data), out


def single(step: str, rows: int, cols: int) -> dict[str, Any]:
    import logging
    import warnings

    br = _bench_run()
    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")
    from mlops_tasks.data.synthetic import demo_rows
    from mlops_tasks.specs import find_spec

    spec = find_spec("credit_default", REPO / "dags" / "specs")
    if step == "drift":
        import scipy.stats  # noqa: F401  (one-time imports, not timed)

        from mlops_tasks.monitor.drift import data_drift

        spec, (reference, current) = widen(
            spec, [demo_rows(rows, "stable"), demo_rows(rows, "covariate_shift")], cols
        )
        input_bytes = sum(int(f.memory_usage(deep=True).sum()) for f in (reference, current))

        def run() -> dict[str, Any]:
            result, _page = data_drift(spec, reference, current)
            return {"columns": len(result.columns), "drifted": len(result.drifted_columns)}

    else:
        from mlops_tasks.data.validation import (
            declared_expectations,
            learned_expectations,
            run_checks,
        )

        spec, (reference, batch) = widen(
            spec, [demo_rows(rows, "stable", seed=7), demo_rows(rows, "stable", seed=8)], cols
        )
        input_bytes = int(batch.memory_usage(deep=True).sum())

        def run() -> dict[str, Any]:
            exps = declared_expectations(spec) + learned_expectations(spec, reference)
            result = run_checks(batch, exps, spec.name)
            return {"expectations": len(exps), "success": bool(result.success)}

    br._trim()
    baseline = br._status_kib("VmRSS") or br._maxrss_kib()
    reset = br._reset_peak()
    stall0, cpu0, t0 = br._cpu_stall_us(), br._cpu_s(), time.perf_counter()
    details = run()
    seconds = time.perf_counter() - t0
    cpu_s, stall1 = br._cpu_s() - cpu0, br._cpu_stall_us()
    peak = (br._status_kib("VmHWM") if reset else None) or br._maxrss_kib()
    stall = (stall1 - stall0) / 1e6 / seconds if stall0 is not None and stall1 else None
    return {
        "step": step,
        "rows": rows,
        "cols": len(spec.features.all),
        "seconds": seconds,
        "cpu_s": cpu_s,
        "cpu_stall": stall,
        "peak_mib": max(peak - baseline, 0) / 1024,
        "process_peak_mib": peak / 1024,
        "input_mib": input_bytes / MIB,
        "details": details,
    }


def child(step: str, rows: int, cols: int) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--single", step, str(rows), str(cols)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, check=False)
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_TAG):
            out: dict[str, Any] = json.loads(line[len(RESULT_TAG) :])
            out["load"] = os.getloadavg()[0]
            return out
    raise RuntimeError(f"{step} {rows}x{cols} failed:\n{proc.stderr[-3000:]}")


def exponent(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of log(y) on log(x)."""
    if len(points) < 2:
        return None
    xs = [math.log(x) for x, _ in points]
    ys = [math.log(max(y, 1e-9)) for _, y in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else None


def _size(n: int) -> str:
    return f"{n // 1_000_000}M" if n >= 1_000_000 else f"{n // 1000}k"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", default="100000,1000000", help="row counts (25 columns)")
    parser.add_argument("--big", action="store_true", help="add 5,000,000 rows")
    parser.add_argument("--cols", default="25,100,300", help="column counts")
    parser.add_argument("--cols-rows", type=int, default=100_000, help="rows of the column curve")
    parser.add_argument("--steps", default="drift,validate")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--single", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.single:
        step, rows, cols = args.single
        print(RESULT_TAG + json.dumps(single(step, int(rows), int(cols))), flush=True)
        return 0
    rows = [int(x) for x in args.rows.split(",")] + ([5_000_000] if args.big else [])
    cols = [int(x) for x in args.cols.split(",")]
    results: list[dict[str, Any]] = []
    print(f"# Scaling, {os.cpu_count()} cores (one fresh process per point)\n")
    print("| step | rows | cols | seconds | CPU s | peak MiB | input MiB | peak / input | load |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for step in args.steps.split(","):
        points = [(step, n, 25) for n in rows] + [(step, args.cols_rows, c) for c in cols]
        for s, n, c in dict.fromkeys(points):
            r = child(s, n, c)
            results.append(r)
            print(
                f"| {s} | {_size(n)} | {r['cols']} | {r['seconds']:.2f} | {r['cpu_s']:.2f} | "
                f"{r['peak_mib']:.0f} | {r['input_mib']:.0f} | "
                f"{r['peak_mib'] / max(r['input_mib'], 1e-9):.2f} | {r['load']:.2f} |",
                flush=True,
            )
    print("\n| step | curve | points | k, wall (time ~ n^k) | k, CPU seconds | k, peak memory |")
    print("|---|---|---|---:|---:|---:|")
    for step in args.steps.split(","):
        mine = [r for r in results if r["step"] == step]
        for curve, key, fixed in (("rows", "rows", 25), ("columns", "cols", None)):
            pts = [
                r for r in mine if (r["cols"] == fixed if fixed else r["rows"] == args.cols_rows)
            ]
            pts = list({r[key]: r for r in pts}.values())
            k_t = exponent([(r[key], r["seconds"]) for r in pts])
            k_c = exponent([(r[key], r["cpu_s"]) for r in pts])
            k_m = exponent([(r[key], r["peak_mib"]) for r in pts])
            ks = " | ".join("-" if k is None else f"{k:.2f}" for k in (k_t, k_c, k_m))
            print(f"| {step} | {curve} | {', '.join(str(r[key]) for r in pts)} | {ks} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
