"""A public dataset nobody here wrote, through the `mlops` command, replayed in logical time.

ISLP's Bikeshare table (hourly rentals in Washington DC in 2011; see `tests/realdata.py` for
its source) is written to a store as daily batches. A model is added by a spec alone, trained
`--as-of` the end of February, then monitored week by week through spring with `mlops run
monitor --as-of D --retrain`, as a scheduler would replay it: the seasons change (temperature,
the season code, demand), the monitor must see that as drift, record it, ask for a retrain,
and the retrain must go through the gate.
"""

from __future__ import annotations

import contextlib
import io
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

from mlops_tasks.cli import main
from mlops_tasks.registry import Registry
from mlops_tasks.storage import LocalStore
from tests import realdata

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODEL = "bikeshare"
TRAINED_AS_OF = date(2011, 2, 28)
#: Every Monday from early March to late April: late winter, then spring.
REPLAY = [date(2011, 3, 7) + timedelta(weeks=i) for i in range(8)]
#: Checks up to here compare winter with winter (the season code changes on 21 March).
WINTER_UNTIL = date(2011, 3, 14)


@dataclass
class Outcome:
    """One `mlops` call: its exit code, its JSON output (when it succeeded) and its errors."""

    argv: list[str]
    code: int
    out: Any
    err: str


@dataclass
class Replay:
    """The store, the spec directory and every call of the replay, in order."""

    store: LocalStore
    specs: Path
    trained: Outcome | None = None
    monitors: dict[date, Outcome] = field(default_factory=dict)
    cpu_seconds: float = 0.0

    def mlops(self, *argv: str) -> Outcome:
        """`mlops ARGV --store S --spec-dir D --json` in this process."""
        args = [*argv, "--store", self.store.uri, "--spec-dir", str(self.specs), "--json"]
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(args)
        text = out.getvalue()
        return Outcome(args, code, json.loads(text) if code == 0 and text else None, err.getvalue())

    def checks(self) -> list[dict[str, Any]]:
        got = self.mlops("checks", MODEL)
        assert got.code == 0, got.err
        return sorted(got.out, key=lambda c: c["decided_for"])


@pytest.fixture(scope="module")
def replay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replay]:
    """Batches and spec only; train at the end of February; monitor every Monday after."""
    root = tmp_path_factory.mktemp("realdata")
    specs = root / "specs"
    specs.mkdir()
    (specs / f"{MODEL}.yaml").write_text(realdata.spec_text())
    run = Replay(LocalStore(root / "store"), specs)
    realdata.write_batches(run.store)
    started = time.process_time()
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLOPS_SERVING_URL", raising=False)  # verify against the registry only
        run.trained = run.mlops("run", "retrain", "--model", MODEL, "--as-of", str(TRAINED_AS_OF))
        if run.trained.code == 0:
            for day in REPLAY:
                run.monitors[day] = run.mlops(
                    "run", "monitor", "--model", MODEL, "--as-of", str(day), "--retrain"
                )
    run.cpu_seconds = time.process_time() - started
    print(f"real-data replay: {len(run.monitors)} monitor run(s), {run.cpu_seconds:.1f} s CPU")
    yield run


def test_a_spec_alone_adds_the_model_and_it_trains_on_early_data(replay: Replay) -> None:
    checked = replay.mlops("validate-spec", str(replay.specs / f"{MODEL}.yaml"))
    assert checked.code == 0 and checked.out[0]["model"] == MODEL, checked.err
    trained = replay.trained
    assert trained is not None and trained.code == 0, trained.err if trained else "not run"
    assert trained.out["status"] == "success", trained.out
    snapshot = trained.out["outputs"]["snapshot_data"]
    # training_window_days: 28 up to the as-of date, nothing after it
    assert (snapshot["start"], snapshot["end"]) == ("2011-02-01", "2011-02-28")
    assert snapshot["sources"] == 28 and 600 < snapshot["rows"] <= 28 * 24
    assert trained.out["outputs"]["deploy"]["version"] == 1
    first = replay.mlops("audit", MODEL, "--action", "promote").out[0]
    assert (first["to_version"], first["from_version"]) == (1, None)
    v1 = replay.mlops("show", MODEL, "1").out
    assert v1["metrics"]["r2"] >= 0.5 and v1["triggered_by"]["kind"] == "cli"
    assert v1["dataset"]["train"] == snapshot["hash"]


def test_the_first_weeks_of_march_are_checked_and_recorded(replay: Replay) -> None:
    """Winter against winter: the monitor runs and its checks are in `mlops checks`."""
    winter = [d for d in REPLAY if d <= WINTER_UNTIL]
    for day in winter:
        got = replay.monitors[day]
        assert got.code == 0, got.err
        decision = got.out["monitor"]["outputs"]["decide"]
        assert decision["as_of"].startswith(str(day))
    recorded = {c["decided_for"][:10]: c for c in replay.checks()}
    assert {str(d) for d in winter} <= set(recorded)
    for day in winter:
        check = recorded[str(day)]
        assert check["reference_version"] == 1 and check["current_rows"] >= 100
        assert check["performance"]["labelled_rows"] >= 100  # batches carry the target


def test_seasonal_drift_is_detected_and_recorded(replay: Replay) -> None:
    failed = {d: o.err.strip().splitlines()[:3] for d, o in replay.monitors.items() if o.code}
    assert not failed, failed
    checks = replay.checks()
    assert [c["decided_for"][:10] for c in checks] == [str(d) for d in REPLAY]
    spring = [c for c in checks if date.fromisoformat(c["decided_for"][:10]) > WINTER_UNTIL]
    drifted = [c for c in spring if c["drift_detected"]]
    assert drifted, [(c["decided_for"], c["reasons"][0]) for c in spring]
    # What changed is the season: warmer days under a new season code.
    assert {"temp", "season"} <= set(drifted[0]["drifted_columns"]), drifted[0]
    report = drifted[0]["report_uri"].removeprefix(replay.store.uri + "/")
    assert (replay.store.root / report).is_file()


def test_drift_requests_a_retrain_that_goes_through_the_gate(replay: Replay) -> None:
    checks = replay.checks()
    asked = [c for c in checks if c["decision"] == "retrain"]
    assert asked, [(c["decided_for"], c["reasons"][0]) for c in checks]
    first = asked[0]
    day = date.fromisoformat(first["decided_for"][:10])
    got = replay.monitors[day]
    registry = Registry(replay.store)
    version = registry.get_version(MODEL, 2)
    # The retrain ran as of the monitor that asked for it, on the window ending there.
    assert version.triggered_by.kind == "drift"
    assert version.triggered_by.drift is not None
    assert version.triggered_by.drift.check_id == first["check_id"]
    if got.code == 0:
        retrain = got.out["retrain"]["outputs"]
        assert retrain["snapshot_data"]["end"] == str(day)
        assert retrain["gate"]["passed"] is True
        assert (registry.alias(MODEL) or 0) >= 2
        later = [c for c in checks if c["decided_for"] > first["decided_for"]]
        assert all(c["reference_version"] >= 2 for c in later)
    else:  # rejected at the gate, with its evidence stored
        assert "gate" in got.err and "Report:" in got.err, got.err
        assert registry.alias(MODEL) == 1
