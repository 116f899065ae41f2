"""How long the DAG folder takes to parse, in a fresh interpreter, as the dag-processor does.

Each round starts a new Python process that imports Airflow first (not counted: every parser
process has it loaded already) and then times `DagBag` over `dags/`, which builds every model's
DAGs from the specs. The baseline in the same run is a DAG file with one empty task, so the
factory's own cost is the difference.

    .venv/bin/python bench/dag_parse.py [--rounds 7]
"""

from __future__ import annotations

import argparse
import json
import os
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
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="bench-parse-"))
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
    ours, info = measure(REPO / "dags", args.rounds, env)
    print(f"# DAG parse time, {args.rounds} fresh processes each, {os.cpu_count()} cores\n")
    print("| folder | DAGs | min | median | max |")
    print("|---|---|---|---|---|")
    for name, t, n in (
        ("baseline (1 DAG, 1 task)", base, 1),
        ("dags/ (factory)", ours, info["dags"]),
    ):
        print(
            f"| {name} | {n} | {min(t) * 1000:.0f} ms | {statistics.median(t) * 1000:.0f} ms "
            f"| {max(t) * 1000:.0f} ms |"
        )
    print(
        f"\nratio dags/ : baseline (median) = "
        f"{statistics.median(ours) / statistics.median(base):.1f}x; import errors: "
        f"{info['errors']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
