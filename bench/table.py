"""Every row of the performance table in one run: `make bench`.

Runs the benches one after the other, each in its own process and each printing its own detail:

- `bench/run.py` at 100k and 1M rows (drift against Evidently's DataDriftPreset, validation
  against the GX suite, training against a 1-thread fit);
- `bench/serving.py` (the compiled path against the full pipeline, loopback latency and
  throughput with 1 and 16 clients);
- `bench/dag_parse.py` (100 generated specs against a one-task DAG file);
- `bench/recover.py` (drifted batch seen -> new version served through a real scheduler,
  against the same chain in one process);

then gathers one table: each figure, its baseline measured in the same run, the ratio, the peak
memory where the bench measures it, the target, and whether it is met. The scaling curves
(`bench/scaling.py`) have a table of their own and run after this one in `make bench`.

    .venv/bin/python bench/table.py [--json all.json] [--skip recover,serving,...]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
BENCHES = {
    "run": ["run.py", "--rows", "100000,1000000", "--with-preset-at-1m"],
    "serving": ["serving.py"],
    "dag_parse": ["dag_parse.py"],
    "recover": ["recover.py"],
}


def run_bench(name: str, out: Path) -> dict[str, Any] | None:
    cmd = [sys.executable, str(HERE / BENCHES[name][0]), *BENCHES[name][1:], "--json", str(out)]
    shown = " ".join(["python", f"bench/{BENCHES[name][0]}", *BENCHES[name][1:]])
    print(f"\n$ {shown}", flush=True)
    started = time.monotonic()
    code = subprocess.run(cmd, check=False).returncode
    print(f"({name}: {time.monotonic() - started:.0f} s, exit {code})", flush=True)
    if code != 0 or not out.exists():
        return None
    loaded: dict[str, Any] = json.loads(out.read_text())
    return loaded


def _result(run: dict[str, Any], step: str, rows: int) -> dict[str, Any] | None:
    for r in run.get("results", []):
        if r["step"] == step and r["rows"] == rows:
            return dict(r)
    return None


def _yes(ok: bool) -> str:
    return "yes" if ok else "**no**"


def rows_of(figures: dict[str, Any]) -> list[list[str]]:
    """The table: row, figure, baseline (same run), ratio, peak memory, target, met."""
    out: list[list[str]] = []
    run = figures.get("run")
    if run:
        drift_rows = ((1_000_000, "drift, 1M vs 1M", 3.0), (100_000, "drift, 100k", 0.4))
        for rows, label, limit in drift_rows:
            fast, preset = _result(run, "drift", rows), _result(run, "preset", rows)
            if not (fast and preset):
                continue
            ratio = preset["seconds"] / fast["seconds"]
            same = fast["details"]["drifted"] == preset["details"]["drifted"]
            target = f"<= {limit:g} s" + (", >= 20x, <= 1.3 GiB" if rows == 1_000_000 else "")
            ok = fast["seconds"] <= limit and (
                rows != 1_000_000 or (ratio >= 20 and fast["peak_mib"] <= 1.3 * 1024)
            )
            out.append(
                [
                    label,
                    f"{fast['seconds']:.2f} s",
                    f"DataDriftPreset {preset['seconds']:.2f} s",
                    f"{ratio:.1f}x",
                    f"{fast['peak_mib']:.0f} MiB",
                    target + "; same decisions",
                    _yes(ok and same) + ("" if same else " (decisions differ)"),
                ]
            )
        fast, gx = _result(run, "validate", 1_000_000), _result(run, "validate_gx", 1_000_000)
        if fast and gx:
            same = fast["details"]["decisions"] == gx["details"]["decisions"]
            out.append(
                [
                    "validation, 1M",
                    f"{fast['seconds']:.2f} s",
                    f"GX suite {gx['seconds']:.2f} s",
                    f"{gx['seconds'] / fast['seconds']:.1f}x",
                    f"{fast['peak_mib']:.0f} MiB",
                    "<= 2.5 s; same decisions",
                    _yes(fast["seconds"] <= 2.5 and same),
                ]
            )
        train = _result(run, "train", 1_000_000)
        if train:
            d = train["details"]
            out.append(
                [
                    f"training, 1M (fit, {d['threads']} threads)",
                    f"{d['fit_s']:.2f} s",
                    f"1 thread {d['fit_1_thread_s']:.2f} s",
                    f"{d['fit_1_thread_s'] / d['fit_s']:.2f}x",
                    f"{train['peak_mib']:.0f} MiB",
                    "<= 15 s; threads reported",
                    _yes(d["fit_s"] <= 15),
                ]
            )
    rec = figures.get("recover")
    if rec:
        air, inproc = rec["airflow"]["seconds"], rec["inproc"]["seconds"]
        out.append(
            [
                "drifted batch seen -> new version served",
                f"{air:.1f} s (Airflow)",
                f"in one process {inproc:.1f} s",
                f"{air / inproc:.2f}x",
                "-",
                "<= 30 s, <= 3x",
                _yes(air <= 30 and air / inproc <= 3),
            ]
        )
    srv = figures.get("serving")
    if srv:
        loop = {(c["service"], c["clients"]): c for c in srv["loopback"]}
        pipeline = srv["in_process"]["full pipeline on a 1-row DataFrame (before)"]
        one = loop.get(("now, 1 worker", 1))
        if one:
            out.append(
                [
                    "serving, 1 row, 1 client",
                    f"p50 {one['p50']:.2f} ms, p99 {one['p99']:.2f} ms",
                    f"pipeline in process p50 {pipeline['p50']:.2f} ms",
                    f"{pipeline['p50'] / one['p50']:.1f}x",
                    f"{srv['server_peak_rss_mib'].get('now, 1 worker', 0):.0f} MiB",
                    "p50 <= 3 ms, p99 <= 10 ms",
                    _yes(one["p50"] <= 3 and one["p99"] <= 10),
                ]
            )
        two, base = loop.get(("now, 2 workers", 16)), loop.get(("now, 1 worker", 16))
        if two and base:
            out.append(
                [
                    "serving, 16 clients (2 workers)",
                    f"{two['rps']:.0f} req/s, p99 {two['p99']:.1f} ms",
                    f"1 worker {base['rps']:.0f} req/s, p99 {base['p99']:.1f} ms",
                    f"{two['rps'] / base['rps']:.2f}x",
                    f"{srv['server_peak_rss_mib'].get('now, 2 workers', 0):.0f} MiB",
                    ">= 400 req/s, p99 <= 25 ms",
                    _yes(two["rps"] >= 400 and two["p99"] <= 25),
                ]
            )
    parse = figures.get("dag_parse")
    if parse:
        many, base = (statistics.median(parse[k]) for k in ("generated_s", "baseline_s"))
        out.append(
            [
                f"DAG folder parse, {parse['specs']} specs",
                f"{many:.2f} s",
                f"1-task DAG file {base * 1000:.0f} ms",
                f"{many / base:.0f}x",
                "-",
                "< 2 s; each spec read once (tested)",
                _yes(many < 2),
            ]
        )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", type=Path, help="also write every bench's figures here")
    parser.add_argument(
        "--skip", default="", help=f"comma-separated benches to leave out ({', '.join(BENCHES)})"
    )
    args = parser.parse_args()
    skip = {s for s in args.skip.split(",") if s}
    if skip - set(BENCHES):
        parser.error(f"unknown bench(es): {sorted(skip - set(BENCHES))}")
    started = datetime.now(UTC)
    figures: dict[str, Any] = {}
    failed = []
    with tempfile.TemporaryDirectory(prefix="bench-table-") as tmp:
        for name in BENCHES:
            if name in skip:
                continue
            result = run_bench(name, Path(tmp) / f"{name}.json")
            if result is None:
                failed.append(name)
            else:
                figures[name] = result
    print(
        f"\n# Performance table, {started:%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores "
        f"(load average now {os.getloadavg()[0]:.2f})\n"
    )
    print("| row | figure | baseline, same run | ratio | peak memory | target | met |")
    print("|---|---|---|---:|---:|---|---|")
    for row in rows_of(figures):
        print("| " + " | ".join(row) + " |")
    if failed:
        print(f"\nnot measured (the bench failed; its output is above): {', '.join(failed)}")
    if args.json:
        args.json.write_text(json.dumps({"date": started.isoformat(), **figures}, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
