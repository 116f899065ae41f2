"""How long the DAG folder takes to parse, in a fresh interpreter, as the dag-processor does.

Each round starts a new Python process that imports Airflow first (not counted: every parser
process has it loaded already) and then times `DagBag` over `dags/`, which builds every model's
DAGs from the specs. The baseline in the same run is a DAG file with one empty task, so the
factory's own cost is the difference. The factory is timed twice: on the shipped specs, and on
`--specs` generated ones (copies of `credit_default` under other names, default 100; the target
is under 2 s). `tests/dags/test_dag_integrity.py` checks that each spec file is read once.

    .venv/bin/python bench/dag_parse.py [--rounds 7] [--specs 100]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PROBE = """
import json, sys, time
import airflow.sdk  # loaded in every parser process already
from airflow.dag_processing.dagbag import DagBag
t = time.perf_counter()
bag = DagBag(dag_folder=sys.argv[1])
print(json.dumps({"seconds": time.perf_counter() - t, "dags": len(bag.dag_ids),
                  "errors": len(bag.import_errors)}))
"""
BASELINE = """# airflow dag baseline
from datetime import datetime
from airflow.sdk import dag, task

@dag(schedule=None, start_date=datetime(2026, 1, 1))
def baseline():
    @task
    def noop() -> None: ...
    noop()

baseline()
"""


def measure(folder: Path, rounds: int, env: dict[str, str]) -> tuple[list[float], dict]:
    times, last = [], {}
    for _ in range(rounds):
        out = subprocess.run(
            [sys.executable, "-W", "ignore", "-c", PROBE, str(folder)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        last = json.loads(out.stdout.strip().splitlines()[-1])
        times.append(last["seconds"])
    return times, last


def main() -> int:
    home = Path(tempfile.mkdtemp(prefix="bench-parse-"))
    try:
        return run(home)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def run(home: Path) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--specs", type=int, default=100, help="generated specs (default 100)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "PYTHONPATH": str(REPO / "plugins"),
    }
    base_dir = home / "baseline"
    base_dir.mkdir()
    (base_dir / "baseline.py").write_text(BASELINE)
    base, _ = measure(base_dir, args.rounds, env)
    load = os.getloadavg()[0]
    ours, info = measure(REPO / "dags", args.rounds, env)
    specs = home / "specs"
    specs.mkdir()
    text = (REPO / "dags/specs/credit_default.yaml").read_text()
    for i in range(args.specs):
        name = f"model_{i:03d}"
        (specs / f"{name}.yaml").write_text(text.replace("name: credit_default", f"name: {name}"))
    many, many_info = measure(REPO / "dags", args.rounds, {**env, "MLOPS_SPEC_DIR": str(specs)})
    print(f"# DAG parse time, {args.rounds} fresh processes each, {os.cpu_count()} cores\n")
    print("| folder | DAGs | min | median | max | import errors |")
    print("|---|---|---|---|---|---|")
    for name, t, res in (
        ("baseline (1 DAG, 1 task)", base, {"dags": 1, "errors": 0}),
        ("dags/ (factory, shipped specs)", ours, info),
        (f"dags/ (factory, {args.specs} generated specs)", many, many_info),
    ):
        print(
            f"| {name} | {res['dags']} | {min(t) * 1000:.0f} ms | "
            f"{statistics.median(t) * 1000:.0f} ms | {max(t) * 1000:.0f} ms | {res['errors']} |"
        )
    per_spec = (statistics.median(many) - statistics.median(base)) / max(args.specs, 1)
    verdict = "met" if statistics.median(many) < 2.0 else "MISSED"
    if args.specs < 100:
        verdict = "not judged (it is for 100 specs)"
    print(
        f"\nratio dags/ : baseline (median) = "
        f"{statistics.median(ours) / statistics.median(base):.1f}x; {args.specs} specs: "
        f"{statistics.median(many):.2f} s median ({per_spec * 1000:.1f} ms per spec over the "
        f"baseline); target < 2 s: {verdict}; load average {load:.2f} -> "
        f"{os.getloadavg()[0]:.2f}"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "rounds": args.rounds,
                    "specs": args.specs,
                    "baseline_s": base,
                    "shipped_s": ours,
                    "generated_s": many,
                    "load": [load, os.getloadavg()[0]],
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
