"""What a retrain reads from the store: each snapshot and model artifact at most once per step,
and a known number of objects in all; and what a monitor reads with the default
`drift.reference` (production's training snapshot).

A real local store counts its reads; the flow runs in process on demo data, first with no
production version, then against v1 (so the champion is scored too), then a monitor against
v2. docs/benchmarks.md quotes the retrain totals asserted here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from mlops_tasks.data import synthetic
from mlops_tasks.flow import flows
from mlops_tasks.flow.flows import DEPLOY, DRIFT
from mlops_tasks.specs import load_spec
from mlops_tasks.storage import LocalStore, Token
from tests.flowkit import monitor, retrain

SPEC = load_spec(Path(__file__).resolve().parents[2] / "dags/specs/credit_default.yaml")

#: Objects read per step by the first retrain: 6 days of batches, nothing in production yet.
FIRST = {
    "snapshot_data": 12,  # each day's batch and its stored contract check
    "validate_data": 3,  # the snapshot and its metadata; the production alias (none yet)
    # The snapshot and its metadata; the alias (listing versions to find a retried run's); the
    # audit head 3 times (v1's register event is the trail's first: it anchors the empty trail
    # first, then itself).
    "train_candidate": 6,
    # The snapshot; v1's metadata 3 times (read the version, read its holdout scores, record
    # the evaluation; loading it for permutation importance reuses the first), its status,
    # evaluation, holdout scores and model; the alias twice (the champion, the model card's
    # metric history).
    "evaluate_candidate": 10,
    # The alias twice (check, move); v1's status, evaluation, metadata and model; the audit head
    # twice and the register event the promotion's event chains to.
    "deploy": 9,
    "verify_deployment": 4,  # the snapshot; the alias; the new version's metadata and model
}
#: The same for a second retrain against v1, with one more day of batches.
SECOND = {
    "snapshot_data": 14,  # one more day: its batch and its contract check
    # + v1's training snapshot (what the window is compared with), v1's metadata and evaluation.
    "validate_data": 6,
    # + v1's metadata and evaluation (listing versions); the audit head twice and the event
    # v2's register event chains to, instead of three head reads.
    "train_candidate": 8,
    # + the champion v1: its metadata twice (read it, load it), evaluation and model.
    "evaluate_candidate": 14,
    # + the event of v1's promotion and one more head read: before moving the alias, the
    # promotion checks that the alias's last move reached the trail.
    "deploy": 11,
    "verify_deployment": 4,
}

#: Objects read per step by a monitor against v2 with `drift.reference: training`: nothing
#: beyond what it read before the reference could be chosen.
MONITOR = {
    "load_reference": 3,  # the alias; v2's metadata and evaluation
    "load_current": 4,  # the window's two batches and their stored contract checks
    "validate_current": 2,  # the current snapshot and its metadata
    # v2's training snapshot and the current one; v2's metadata and model (performance).
    "detect_drift": 4,
    # The alias (production's move); a check that found drift also reads the answers to
    # earlier retrain requests: the alias again, v2's metadata and evaluation.
    "decide": 1,
}
DRIFTED_DECIDE = 4


class CountingStore(LocalStore):
    """A local store that counts every object it reads, by the step running at the time.

    Every read goes through `get_bytes` or `read_bytes_versioned` (which `read_json_versioned`
    and the registry's alias, audit and signature reads use), so counting those two counts
    each read once.
    """

    step = "-"

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.reads: Counter[tuple[str, str]] = Counter()

    def _count(self, key: str) -> None:
        self.reads[(self.step, key)] += 1

    def get_bytes(self, key: str, *, no_symlinks: bool = False) -> bytes:
        self._count(key)
        return super().get_bytes(key, no_symlinks=no_symlinks)

    def read_bytes_versioned(self, key: str) -> tuple[bytes | None, Token | None]:
        self._count(key)
        return super().read_bytes_versioned(key)


@dataclass(frozen=True)
class Reads:
    """The reads of the first retrain, of the second and of a monitor, by (step, key)."""

    first: Counter[tuple[str, str]]
    second: Counter[tuple[str, str]]
    monitor: Counter[tuple[str, str]]
    monitor_drifted: bool


@pytest.fixture(scope="module")
def reads(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Reads]:
    from threadpoolctl import threadpool_limits

    store = CountingStore(tmp_path_factory.mktemp("reads") / "store")
    synthetic.write_batches(days=6, rows_per_day=800, store=store)
    original = flows.execute_step

    def tracked(flow: Any, step: Any, ctx: Any, inputs: list[Any]) -> Any:
        store.step = step.name
        try:
            return original(flow, step, ctx, inputs)
        finally:
            store.step = "-"

    with pytest.MonkeyPatch.context() as patch, threadpool_limits(1):
        patch.setattr(flows, "execute_step", tracked)
        store.reads.clear()
        first = retrain(SPEC, store, run_id="reads-1")
        assert first.status == "success"
        first_reads = store.reads.copy()
        # A new day of data: the next window differs from production's training data.
        synthetic.write_batches(start=date.today(), days=1, rows_per_day=800, store=store)
        store.reads.clear()
        second = retrain(SPEC, store, run_id="reads-2")
        assert second.status == "success" and second[DEPLOY].previous == 1
        second_reads = store.reads.copy()
        store.reads.clear()
        checked = monitor(SPEC, store, run_id="reads-monitor")
        assert checked.stopped_at in (None, "request_retrain"), checked.message
    drifted = checked[DRIFT].detected
    yield Reads(first_reads, second_reads, store.reads.copy(), drifted)


def per_step(reads: Counter[tuple[str, str]]) -> dict[str, int]:
    steps: Counter[str] = Counter()
    for (step, _key), n in reads.items():
        steps[step] += n
    return dict(steps)


def test_each_snapshot_and_artifact_is_read_at_most_once_per_step(reads: Reads) -> None:
    for run in (reads.first, reads.second):
        heavy = {
            (step, key): n
            for (step, key), n in run.items()
            if key.endswith(("data.parquet", "model.skops", "holdout.parquet"))
        }
        assert heavy, "the flow read nothing?"
        assert {k: n for k, n in heavy.items() if n > 1} == {}


def test_a_retrain_reads_a_known_number_of_objects(reads: Reads) -> None:
    """Exact counts, so that a change that adds reads fails here and says in which step (the
    comments at FIRST and SECOND say what each step reads); update them with the docs."""
    assert per_step(reads.first) == FIRST
    assert per_step(reads.second) == SECOND
    assert (sum(reads.first.values()), sum(reads.second.values())) == (44, 57)


def test_a_monitor_with_the_training_reference_reads_a_known_number_of_objects(
    reads: Reads,
) -> None:
    expected = MONITOR | ({"decide": DRIFTED_DECIDE} if reads.monitor_drifted else {})
    assert per_step(reads.monitor) == expected
