"""The README's walkthrough, replayed: the `.venv/bin/mlops` commands of its steps are taken
from README.md as written and run in that order against a fresh store. The scheduled monitor
runs that `make demo`'s Airflow would make between the steps are `mlops run monitor` here, at
logical times past the demo spec's cooldown."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mlops_tasks.registry import Registry
from mlops_tasks.storage import LocalStore

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.integration]


def walkthrough_commands() -> dict[int, list[str]]:
    """Each numbered step's `.venv/bin/mlops ...` commands, as the README writes them."""
    text = (REPO / "README.md").read_text()
    section = text.split("### Walkthrough", 1)[1].split("\n## ", 1)[0]
    steps = re.split(r"(?m)^(\d+)\. ", section)[1:]
    out = {}
    for number, body in zip(steps[::2], steps[1::2], strict=True):
        found = re.findall(r"`(\.venv/bin/mlops [^`]+)`|^\s*(\.venv/bin/mlops .+)$", body, re.M)
        commands = [(inline or block).split("  #")[0].strip() for inline, block in found]
        out[int(number)] = commands
    return out


def test_the_readme_names_the_commands_this_test_runs() -> None:
    steps = walkthrough_commands()
    assert steps[6] == [".venv/bin/mlops demo drift --scenario covariate_shift"]
    assert ".venv/bin/mlops demo drift --scenario quality_break" in steps[7]
    assert ".venv/bin/mlops quarantine credit_default" in steps[7]
    assert any(c.startswith(".venv/bin/mlops rollback credit_default") for c in steps[8])


def test_the_walkthrough_does_what_the_readme_says(tmp_path: Path) -> None:
    specs = tmp_path / "specs"
    shutil.copytree(REPO / "dags" / "specs", specs)
    store = LocalStore(tmp_path / "store")
    env = {**os.environ, "MLOPS_STORE": store.uri, "MLOPS_SPEC_DIR": str(specs)}
    env.pop("AIRFLOW__API__BASE_URL", None)

    def mlops(command: str) -> str:
        argv = shlex.split(command)
        argv[0] = str(REPO / argv[0])
        done = subprocess.run(
            argv, check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, (command, done.stdout[-2000:], done.stderr[-3000:])
        assert "Traceback" not in done.stderr, (command, done.stderr[-3000:])
        return done.stdout

    clock = datetime.now(UTC)

    def scheduled_monitor() -> None:  # what the monitor DAG's next run does
        nonlocal clock
        clock += timedelta(minutes=20)
        mlops(
            ".venv/bin/mlops run monitor --model credit_default --retrain "
            f"--as-of {clock:%Y-%m-%dT%H:%M}"
        )

    steps = walkthrough_commands()
    mlops(".venv/bin/mlops demo seed")  # what `make demo` writes first
    mlops(".venv/bin/mlops run retrain --model credit_default")  # step 2's first run: v1
    reg = Registry(store)
    assert reg.alias("credit_default") == 1
    for command in steps[4]:
        assert mlops(command).strip(), command

    for command in steps[6]:
        mlops(command)
    scheduled_monitor()
    assert reg.audit("credit_default", action="retrain_request"), "step 6: no drift found"
    assert reg.alias("credit_default") == 2, "step 6: the drift retrain promoted nothing"

    held_before = mlops(".venv/bin/mlops quarantine credit_default --json")
    step7 = [c for c in steps[7] if "demo reset" not in c]
    mlops(step7[0])  # the broken batches
    scheduled_monitor()
    listing = mlops(".venv/bin/mlops quarantine credit_default")
    today = datetime.now(UTC).date()
    for day in (today - timedelta(days=1), today):
        assert f"dt={day.isoformat()}" in listing or day.isoformat() in listing, listing
    assert listing != held_before
    for command in step7[1:]:
        mlops(command)
    assert reg.alias("credit_default") == 2, "step 7: broken batches touched production"

    for command in steps[8]:
        mlops(command)
    assert reg.alias("credit_default") == 1
    (event,) = reg.audit("credit_default", action="rollback")
    assert event["reason"] == "v2 misbehaves"
