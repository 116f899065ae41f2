"""Benchmark the pipeline's heavy steps on the demo table for the `credit_default` spec.

For each size in `--rows` it measures, each in a fresh child process (this script re-run with
`--single STEP --n ROWS`):

* validate     declared + learned expectations, `run_checks(batch, ...)`: the fast path
               (`mlops_tasks.data.expectations`), as the pipeline runs it; GX only where needed.
* validate_gx  the baseline: the same suite through `run_suite` (Great Expectations). The
               one-time `import great_expectations` is timed separately and excluded.
* drift        `data_drift(spec, reference=stable, current=covariate_shift)`: the exact fast
               path (`mlops_tasks.monitor.drift_stats`), as the pipeline runs it (without the page).
* valuedrift   baseline: Evidently's per-column `ValueDrift` on the same prepared frames with
               the same methods and thresholds (what `data_drift` ran before the fast path).
* preset       baseline: Evidently's `DataDriftPreset`, same frames, methods and thresholds
               (only up to 100k rows unless `--with-preset-at-1m`: ~1 min, ~2.5 GiB at 1M).
* train        `build_pipeline(spec).fit(prepare_features(spec, df), y)`.

Each fast path is printed beside its baselines from the same run (seconds and peak ratios) with
a check that the decisions are identical (drifted columns; per-expectation pass/fail).

Seconds are wall-clock for the step alone. Peak RSS is per step: the child generates its data
and imports its libraries first, collects garbage and trims the allocator, records its RSS as the
baseline, resets the kernel's high-water mark (`/proc/self/clear_refs`), runs the step and reports
`VmHWM - baseline`. Where the reset is unavailable it falls back to `ru_maxrss - baseline`, which
can under-count when data generation peaked higher than the step.

The machine may be shared: each run also records the system-wide CPU pressure (Linux PSI) during
the step, and a run that spent more than `--max-cpu-wait` of its time waiting for a CPU is
retried (`--attempts`, keeping the fastest try), since contention inflates the multi-threaded
steps many times over.

    python bench/run.py --quick                 # 10k-row smoke run (~45 s)
    python bench/run.py                         # 100k and 1M rows (~2.5 min on an idle 2-core box;
                                                # up to ~12 min when other load forces retries)
    python bench/run.py --rows 100000,1000000 --steps validate,validate_gx,drift,valuedrift,preset \
        --with-preset-at-1m                      # the issue-12 comparison (~6 min)
    python bench/run.py --rows 100000 --repeat 3 --json bench/results.json

Results of a run are recorded in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import itertools
import json
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO))
SPEC = "credit_default"
STEPS = ("validate", "validate_gx", "drift", "valuedrift", "preset", "train")
LABELS = {
    "validate": "validate (fast path, run_checks)",
    "validate_gx": "validate baseline (GX suite)",
    "drift": "drift (fast path, data_drift)",
    "valuedrift": "drift baseline (per-column ValueDrift)",
    "preset": "drift baseline (DataDriftPreset)",
    "train": "train (prepare + fit)",
}
PRESET_MAX_ROWS = 100_000
RESULT_TAG = "BENCH_RESULT "
MIB = 1024  # KiB per MiB

# ---------------------------------------------------------------------------------------------
# Memory helpers (Linux /proc; ru_maxrss elsewhere)
# ---------------------------------------------------------------------------------------------


def _status_kib(field: str) -> int | None:
    """A `kB` field of /proc/self/status (VmRSS, VmHWM), or None off Linux."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _maxrss_kib() -> int:
    value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return value // 1024 if sys.platform == "darwin" else value  # bytes on macOS, KiB on Linux


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark to the current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
    except OSError:
        return False
    return True


def _cpu_stall_us() -> int | None:
    """System-wide microseconds some runnable task waited for a CPU (Linux PSI), or None."""
    try:
        with open("/proc/pressure/cpu", encoding="ascii") as fh:
            return int(fh.readline().rsplit("total=", 1)[1])
    except (OSError, IndexError, ValueError):
        return None


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _trim() -> None:
    """Collect garbage and hand freed heap pages back to the OS so the baseline is honest."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


# ---------------------------------------------------------------------------------------------
# Child side: one step at one size
# ---------------------------------------------------------------------------------------------


def _timed_import(modules: list[str]) -> float:
    import importlib

    start = time.perf_counter()
    for name in modules:
        importlib.import_module(name)
    return time.perf_counter() - start


def _drift_rows(snap_dict: dict[str, Any]) -> list[str]:
    """Drifted columns of a report, decided as `column_drift` decides them (failed tests)."""
    status = {t["metric_config"]["metric_id"]: t["status"] for t in snap_dict["tests"]}
    return sorted(
        m["config"]["column"]
        for m in snap_dict["metrics"]
        if m["config"]["type"].endswith(":ValueDrift") and status.get(m["id"]) == "FAIL"
    )


def _prepare_validate(
    spec: Any, n: int, fast: bool = True
) -> tuple[Callable[[], dict[str, Any]], float]:
    import_s = _timed_import(
        [
            "great_expectations",
            "great_expectations.expectations",
            "great_expectations.data_context.types.base",
        ]
    )
    from mlops_tasks.data.expectations import config_key
    from mlops_tasks.data.synthetic import demo_rows
    from mlops_tasks.data.validation import (
        declared_expectations,
        learned_expectations,
        run_checks,
        run_suite,
    )

    reference = demo_rows(n, "stable", seed=7)  # the production training snapshot
    batch = demo_rows(n, "stable", seed=8)  # a new day from the same distribution

    def step() -> dict[str, Any]:
        t0 = time.perf_counter()
        exps = declared_expectations(spec) + learned_expectations(spec, reference)
        t1 = time.perf_counter()
        run = run_checks if fast else run_suite
        result = run(batch, exps, spec.name)
        t2 = time.perf_counter()
        stats = dict(result.statistics)
        by_key = {config_key(r.expectation_config): bool(r.success) for r in result.results}
        return {
            "build_s": t1 - t0,
            "suite_s": t2 - t1,
            "expectations": len(exps),
            "success": bool(result.success),
            "failed": int(stats.get("unsuccessful_expectations") or 0),
            "decisions": [by_key[config_key(e.configuration)] for e in exps],
            "gx_evaluated": getattr(result, "gx_evaluated", len(exps)),
        }

    return step, import_s


def _prepare_validate_gx(spec: Any, n: int) -> tuple[Callable[[], dict[str, Any]], float]:
    return _prepare_validate(spec, n, fast=False)


def _frames_for_drift(n: int) -> tuple[Any, Any]:
    from mlops_tasks.data.synthetic import demo_rows

    return demo_rows(n, "stable"), demo_rows(n, "covariate_shift")


def _prepare_drift(spec: Any, n: int) -> tuple[Callable[[], dict[str, Any]], float]:
    import_s = _timed_import(["scipy.stats", "scipy.spatial.distance"])
    from mlops_tasks.monitor.drift import data_drift

    reference, current = _frames_for_drift(n)

    def step() -> dict[str, Any]:
        result, _page = data_drift(spec, reference, current)
        return {
            "columns": len(result.columns),
            "drifted": sorted(result.drifted_columns),
            "drift_detected": bool(result.drift_detected),
        }

    return step, import_s


def _drift_overrides(spec: Any) -> tuple[list[str], list[str], dict[str, dict[str, Any]]]:
    """The columns and per-column method/threshold resolution of `data_drift`."""
    drift = spec.drift
    cols = drift.columns or spec.features.all
    numeric = [c for c in spec.features.numeric if c in cols]
    categorical = [c for c in spec.features.categorical if c in cols]
    overrides = {c: {"method": drift.method, "threshold": drift.threshold} for c in cols}
    for c, o in drift.overrides.items():
        threshold = o.threshold if o.threshold is not None else drift.threshold
        overrides[c] = {"method": o.method or drift.method, "threshold": threshold}
    return numeric, categorical, overrides


def _prepare_valuedrift(spec: Any, n: int) -> tuple[Callable[[], dict[str, Any]], float]:
    import_s = _timed_import(["evidently", "evidently.metrics", "scipy.stats"])
    from mlops_tasks.model.modelling import prepare_features
    from mlops_tasks.monitor.drift import _evidently_drift

    reference, current = _frames_for_drift(n)
    numeric, categorical, overrides = _drift_overrides(spec)

    def step() -> dict[str, Any]:
        # Mirrors data_drift before the fast path: prepare both frames, one ValueDrift each.
        rows, _snap = _evidently_drift(
            prepare_features(spec, reference),
            prepare_features(spec, current),
            numeric,
            categorical,
            overrides,
        )
        return {"drifted": sorted(r["column"] for r in rows if r["drifted"])}

    return step, import_s


def _prepare_preset(spec: Any, n: int) -> tuple[Callable[[], dict[str, Any]], float]:
    import_s = _timed_import(["evidently", "evidently.presets", "scipy.stats"])
    import warnings

    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    from mlops_tasks.model.modelling import prepare_features

    reference, current = _frames_for_drift(n)
    drift = spec.drift
    cols = drift.columns or spec.features.all
    numeric = [c for c in spec.features.numeric if c in cols]
    categorical = [c for c in spec.features.categorical if c in cols]
    # The same per-column method/threshold resolution as data_drift.
    per_method = {c: o.method or drift.method for c, o in drift.overrides.items()}
    per_threshold = {
        c: o.threshold if o.threshold is not None else drift.threshold
        for c, o in drift.overrides.items()
    }
    preset = DataDriftPreset(
        columns=[*numeric, *categorical],
        drift_share=drift.drift_share,
        method=drift.method,
        threshold=drift.threshold,
        per_column_method={c: m for c, m in per_method.items() if m is not None} or None,
        per_column_threshold={c: t for c, t in per_threshold.items() if t is not None} or None,
    )

    def step() -> dict[str, Any]:
        # Mirrors data_drift: prepare both frames, run the report, materialise its dict.
        definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            snap = Report([preset], include_tests=True).run(
                current_data=Dataset.from_pandas(
                    prepare_features(spec, current), data_definition=definition
                ),
                reference_data=Dataset.from_pandas(
                    prepare_features(spec, reference), data_definition=definition
                ),
            )
        drifted = _drift_rows(snap.dict())
        return {"drifted": drifted}

    return step, import_s


def _prepare_train(spec: Any, n: int) -> tuple[Callable[[], dict[str, Any]], float]:
    import_s = _timed_import(["sklearn.ensemble", "sklearn.compose", "sklearn.preprocessing"])
    from mlops_tasks.data.synthetic import demo_rows
    from mlops_tasks.model.modelling import build_pipeline, prepare_features

    df = demo_rows(n, "stable")
    from mlops_tasks.model.threads import fit_threads
    from mlops_tasks.settings import usable_cores

    # The baseline, fitted before the timed step in the same run: one thread, the default.
    x, y = prepare_features(spec, df), df[spec.target].to_numpy()
    t = time.perf_counter()
    with fit_threads(1):
        build_pipeline(spec).fit(x, y)
    one_thread_s = time.perf_counter() - t
    del x, y

    def step() -> dict[str, Any]:
        t0 = time.perf_counter()
        x = prepare_features(spec, df)
        y = df[spec.target].to_numpy()
        t1 = time.perf_counter()
        with fit_threads(usable_cores()):  # MLOPS_TRAIN_THREADS at the machine's cores
            pipeline = build_pipeline(spec).fit(x, y)
        t2 = time.perf_counter()
        model = pipeline.named_steps["model"]
        # HistGradientBoosting records the OpenMP threads it fitted with.
        threads = getattr(getattr(model, "_bin_mapper", None), "n_threads", None)
        return {
            "prepare_s": t1 - t0,
            "fit_1_thread_s": one_thread_s,
            "fit_s": t2 - t1,
            "n_iter": int(getattr(model, "n_iter_", 0)),
            "threads": threads,
        }

    return step, import_s


PREPARE: dict[str, Callable[[Any, int], tuple[Callable[[], dict[str, Any]], float]]] = {
    "validate": _prepare_validate,
    "validate_gx": _prepare_validate_gx,
    "drift": _prepare_drift,
    "valuedrift": _prepare_valuedrift,
    "preset": _prepare_preset,
    "train": _prepare_train,
}


def run_single(step_name: str, n: int) -> dict[str, Any]:
    """Run one step in this (fresh) process and return its figures."""
    import logging
    import warnings

    logging.disable(logging.WARNING)
    with contextlib.suppress(OSError, AttributeError):  # die with the parent (Linux)
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    warnings.filterwarnings("ignore")
    start = time.perf_counter()
    import numpy  # noqa: F401  (imported before any timing, as the pipeline's tasks do)
    import pandas  # noqa: F401

    from mlops_tasks.specs import find_spec

    base_import_s = time.perf_counter() - start
    spec = find_spec(SPEC, REPO / "dags" / "specs")
    step, import_s = PREPARE[step_name](spec, n)
    _trim()
    baseline_kib = _status_kib("VmRSS")
    maxrss_before = _maxrss_kib()
    if baseline_kib is None:
        baseline_kib = maxrss_before
    reset = _reset_peak()

    stall0, cpu0, t0 = _cpu_stall_us(), _cpu_s(), time.perf_counter()
    details = step()
    seconds = time.perf_counter() - t0
    cpu_s, stall1 = _cpu_s() - cpu0, _cpu_stall_us()
    stall = (stall1 - stall0) / 1e6 / seconds if stall0 is not None and stall1 is not None else None

    hwm = _status_kib("VmHWM") if reset else None
    maxrss_after = _maxrss_kib()
    peak_kib = hwm if hwm is not None else maxrss_after
    return {
        "step": step_name,
        "rows": n,
        "seconds": seconds,
        "cpu_s": cpu_s,
        "cpu_stall": stall,
        "peak_mib": max(peak_kib - baseline_kib, 0) / MIB,
        "baseline_mib": baseline_kib / MIB,
        "process_peak_mib": max(maxrss_after, peak_kib) / MIB,
        "peak_method": "VmHWM after clear_refs" if hwm is not None else "ru_maxrss",
        "import_s": import_s,
        "base_import_s": base_import_s,
        "details": details,
    }


# ---------------------------------------------------------------------------------------------
# Parent side: orchestration and reporting
# ---------------------------------------------------------------------------------------------


def run_child(step: str, n: int, timeout: float) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--single", step, "--n", str(n)]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO, check=False
    )
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_TAG):
            result: dict[str, Any] = json.loads(line[len(RESULT_TAG) :])
            return result
    tail = "\n".join(proc.stderr.splitlines()[-25:])
    raise RuntimeError(f"{step} at {n} rows failed (exit {proc.returncode}):\n{tail}")


def _pressure_avg10() -> float | None:
    """Share of the last 10 s in which some task waited for a CPU (Linux PSI), or None."""
    try:
        with open("/proc/pressure/cpu", encoding="ascii") as fh:
            return float(fh.readline().split("avg10=", 1)[1].split()[0]) / 100
    except (OSError, IndexError, ValueError):
        return None


def wait_for_quiet(max_wait: float, settle: float) -> None:
    """Give other load on a shared machine up to `settle` seconds to calm down."""
    start = time.monotonic()
    first = _pressure_avg10()
    if first is None or first <= max_wait or settle <= 0:
        return
    print(
        f"    CPU pressure {first:.0%}: waiting up to {settle:.0f} s", file=sys.stderr, flush=True
    )
    while (p := _pressure_avg10()) is not None and p > max_wait:
        if time.monotonic() - start >= settle:
            print(f"    still {p:.0%}; running anyway", file=sys.stderr, flush=True)
            return
        time.sleep(2)


def measure(step: str, n: int, args: argparse.Namespace) -> dict[str, Any]:
    """Median seconds and largest peak of `--repeat` runs, every sample kept.

    A run whose CPU wait exceeds `--max-cpu-wait` (other load on the machine) is retried, up to
    `--attempts` times; the fastest try (the least disturbed) is kept.
    """
    samples = []
    for _ in range(args.repeat):
        best: dict[str, Any] | None = None
        for attempt in range(1, args.attempts + 1):
            wait_for_quiet(args.max_cpu_wait, args.settle)
            r = run_child(step, n, args.timeout)
            r["attempts"] = attempt
            stall = r["cpu_stall"]
            if best is None or r["seconds"] < best["seconds"]:
                best = {**r}
            if stall is None or stall <= args.max_cpu_wait:
                break
            more = attempt < args.attempts
            print(
                f"    {step} at {n:,}: CPU wait {stall:.0%} > {args.max_cpu_wait:.0%} "
                f"({r['seconds']:.2f} s); " + ("retrying" if more else "keeping the fastest try"),
                file=sys.stderr,
                flush=True,
            )
        assert best is not None
        best["tries"] = attempt
        samples.append(best)
    first = samples[0]
    return {
        **first,
        "seconds": statistics.median(s["seconds"] for s in samples),
        "cpu_s": statistics.median(s["cpu_s"] for s in samples),
        "cpu_stall": max((s["cpu_stall"] or 0) for s in samples)
        if first["cpu_stall"] is not None
        else None,
        "peak_mib": max(s["peak_mib"] for s in samples),
        "contended": any((s["cpu_stall"] or 0) > args.max_cpu_wait for s in samples),
        "samples": [
            {
                k: s[k]
                for k in ("seconds", "cpu_s", "cpu_stall", "peak_mib", "baseline_mib", "tries")
            }
            for s in samples
        ],
    }


def note(r: dict[str, Any]) -> str:
    d = r["details"]
    if r["step"] in ("validate", "validate_gx"):
        verdict = "passed" if d["success"] else f"FAILED {d['failed']}"
        return (
            f"build {d['build_s']:.2f} s + checks {d['suite_s']:.2f} s; "
            f"{d['expectations']} expectations, {verdict}; {d['gx_evaluated']} run by GX"
        )
    if r["step"] == "drift":
        return f"{len(d['drifted'])}/{d['columns']} columns drifted, detected={d['drift_detected']}"
    if r["step"] in ("preset", "valuedrift"):
        return f"{len(d['drifted'])} columns drifted"
    if r["step"] == "train":
        return (
            f"prepare {d['prepare_s']:.2f} s + fit {d['fit_s']:.2f} s with "
            f"{d.get('threads') or '?'} OpenMP thread(s); {d['n_iter']} boosting iterations; "
            f"baseline, same run: fit {d['fit_1_thread_s']:.2f} s on 1 thread "
            f"({d['fit_1_thread_s'] / max(d['fit_s'], 1e-9):.2f}x)"
        )
    return ""


def machine() -> dict[str, Any]:
    from importlib.metadata import version

    cpu = platform.processor() or ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as fh:
        models = [ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")]
        cpu = models[0] if models else cpu
    mem_kib = 0
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            mem_kib = int(next(ln for ln in fh if ln.startswith("MemTotal")).split()[1])
    except (OSError, StopIteration):
        pass
    libs = ["pandas", "numpy", "scikit-learn", "great_expectations", "evidently"]
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "mem_gib": round(mem_kib / 1024**2, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "libs": {lib: version(lib) for lib in libs},
    }


def _fmt_rows(n: int) -> str:
    if n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    return f"{n // 1000}k" if n % 1000 == 0 else str(n)


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.0f}%"


def report(results: list[dict[str, Any]], info: dict[str, Any], command: str) -> str:
    lines = [
        f"command: {command}",
        f"date: {info['date']}",
        f"machine: nproc={info['nproc']}, {info['mem_gib']} GiB, {info['cpu']}",
        f"python {info['python']} on {info['platform']}; "
        + ", ".join(f"{k} {v}" for k, v in info["libs"].items()),
        "",
        "| rows | step | seconds | peak RSS MiB | CPU s | CPU wait | notes |",
        "|---:|---|---:|---:|---:|---:|---|",
    ]
    for r in results:
        lines.append(
            f"| {_fmt_rows(r['rows'])} | {LABELS[r['step']]} | {r['seconds']:.2f} "
            f"| {r['peak_mib']:.0f} | {r['cpu_s']:.1f} | {_pct(r['cpu_stall'])} "
            f"| {note(r)}{' (CONTENDED: seconds inflated)' if r.get('contended') else ''} |"
        )

    by = {(r["step"], r["rows"]): r for r in results}
    sizes = sorted({r["rows"] for r in results})
    ratio_lines = []
    pairs = [
        ("drift", "preset", "drifted columns"),
        ("drift", "valuedrift", "drifted columns"),
        ("valuedrift", "preset", "drifted columns"),
        ("validate", "validate_gx", "pass/fail per expectation"),
    ]
    for n in sizes:
        for fast_step, base_step, what in pairs:
            fast, base = by.get((fast_step, n)), by.get((base_step, n))
            if not (fast and base):
                continue
            key = "drifted" if what == "drifted columns" else "decisions"
            same = fast["details"][key] == base["details"][key]
            ratio_lines.append(
                f"| {_fmt_rows(n)} | {LABELS[fast_step]} / {LABELS[base_step]} "
                f"| {fast['seconds'] / base['seconds']:.3f} "
                f"| {fast['peak_mib'] / max(base['peak_mib'], 1e-9):.3f} "
                f"| {base['seconds'] / fast['seconds']:.1f}x faster; same {what}: {same} |"
            )
    for lo, hi in itertools.pairwise(sizes):
        for step in STEPS:
            a, b = by.get((step, lo)), by.get((step, hi))
            if a and b:
                ratio_lines.append(
                    f"| {_fmt_rows(hi)} / {_fmt_rows(lo)} | {LABELS[step]} "
                    f"| {b['seconds'] / a['seconds']:.2f} "
                    f"| {b['peak_mib'] / max(a['peak_mib'], 1e-9):.2f} "
                    f"| rows x{hi / lo:.0f} |"
                )
    if ratio_lines:
        lines += [
            "",
            "| ratio | what | seconds ratio | peak RSS ratio | notes |",
            "|---|---|---:|---:|---|",
        ]
        lines += ratio_lines

    imports: dict[str, dict[str, Any]] = {}
    for r in results:  # one-time import cost, from the first (smallest) child of each step
        imports.setdefault(r["step"], r)
    lines += [
        "",
        "One-time imports in a fresh process (excluded from the step times above; measured after",
        "numpy, pandas and mlops_tasks.specs, which took "
        f"{min(r['base_import_s'] for r in results):.2f} s):",
        "",
        "| library | import seconds |",
        "|---|---:|",
    ]
    names = {
        "validate": "great_expectations (+ .expectations)",
        "validate_gx": "great_expectations (+ .expectations)",
        "drift": "scipy.stats, scipy.spatial.distance",
        "valuedrift": "evidently (+ .metrics, scipy.stats)",
        "preset": "evidently (+ .presets, scipy.stats)",
        "train": "sklearn (ensemble, compose, preprocessing)",
    }
    for step in STEPS:
        if step in imports:
            lines.append(f"| {names[step]} | {imports[step]['import_s']:.2f} |")
    method = {r["peak_method"] for r in results}
    lines += [
        "",
        f"Peak RSS = per-step increase over the child's RSS after imports and data generation "
        f"({', '.join(sorted(method))}); seconds = median of {len(results[0]['samples'])} run(s).",
        "CPU s = the child's user+sys time during the step; CPU wait = system-wide time some task",
        "waited for a CPU (PSI) as a share of the step's wall time: well above 0% means other",
        "load on the machine inflated the seconds (multi-threaded steps suffer most); runs above",
        "--max-cpu-wait are retried and the fastest try kept (see `tries` in --json).",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time and memory of validation, drift (vs DataDriftPreset) and training on "
        f"the demo table for the {SPEC} spec; each measurement in a fresh process.",
    )
    parser.add_argument(
        "--rows",
        default="100000,1000000",
        help="comma-separated table sizes (default: %(default)s)",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run at 10k rows")
    parser.add_argument(
        "--steps",
        default=",".join(STEPS),
        help="comma-separated subset of %(default)s",
    )
    parser.add_argument(
        "--with-preset-at-1m",
        action="store_true",
        help=f"also run DataDriftPreset above {PRESET_MAX_ROWS:,} rows (~1 min, 2.5 GiB at 1M)",
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs per measurement (median)")
    parser.add_argument(
        "--timeout", type=float, default=1800, help="seconds allowed per child (default 1800)"
    )
    parser.add_argument(
        "--max-cpu-wait",
        type=float,
        default=0.2,
        help="retry a run when other load made some task wait for a CPU more than this share "
        "of its time (Linux PSI; default %(default)s)",
    )
    parser.add_argument(
        "--attempts",
        type=int,
        help="tries per contended run (default 3; 1 with --quick)",
    )
    parser.add_argument(
        "--settle",
        type=float,
        help="seconds to wait for CPU pressure to drop before each run (default 30; 0 with "
        "--quick)",
    )
    parser.add_argument("--json", type=Path, help="also write raw results to this file")
    parser.add_argument("--single", choices=STEPS, help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        args.sizes = (
            [10_000] if args.quick else [int(x.replace("_", "")) for x in args.rows.split(",")]
        )
    except ValueError:
        parser.error(f"--rows must be comma-separated integers, got {args.rows!r}")
    if args.attempts is None:
        args.attempts = 1 if args.quick else 3
    if args.settle is None:
        args.settle = 0.0 if args.quick else 30.0
    if args.repeat < 1 or args.attempts < 1:
        parser.error("--repeat and --attempts must be >= 1")
    unknown = set(args.steps.split(",")) - set(STEPS)
    if unknown:
        parser.error(f"unknown step(s) {sorted(unknown)}; choose from {', '.join(STEPS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.single:
        print(RESULT_TAG + json.dumps(run_single(args.single, args.n)), flush=True)
        return 0

    sizes: list[int] = args.sizes
    steps = [s for s in STEPS if s in args.steps.split(",")]
    info = {**machine(), "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")}
    command = " ".join(["python", "bench/run.py", *(argv if argv is not None else sys.argv[1:])])
    print(f"# {command}\n# {info['nproc']} cores, python {info['python']}", file=sys.stderr)
    results = []
    started = time.perf_counter()
    for n in sorted(sizes):
        for step in steps:
            if step == "preset" and n > PRESET_MAX_ROWS and not args.with_preset_at_1m:
                print(f"  {n:>9,} {step:<9} skipped (use --with-preset-at-1m)", file=sys.stderr)
                continue
            r = measure(step, n, args)
            results.append(r)
            print(
                f"  {n:>9,} {step:<9} {r['seconds']:8.2f} s {r['peak_mib']:8.0f} MiB "
                f"cpu {r['cpu_s']:7.1f} s wait {_pct(r['cpu_stall']):>4}  {note(r)}",
                file=sys.stderr,
                flush=True,
            )
    info["wall_s"] = time.perf_counter() - started
    print(report(results, info, command))
    print(f"\ntotal wall time {info['wall_s']:.0f} s (including data generation in each child)")
    if args.json:
        args.json.write_text(
            json.dumps({"command": command, "machine": info, "results": results}, indent=2) + "\n",
            encoding="utf-8",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
