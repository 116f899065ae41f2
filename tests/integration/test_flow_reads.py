"""Per retrain run, each snapshot and each model artifact is read at most once per step.

A real local store counts its reads; the flow runs in process on demo data, first with no
production version, then against v1 (so the champion is scored too).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from mlops_tasks import flows, synthetic
from mlops_tasks.specs import load_spec
from mlops_tasks.storage import LocalStore
from tests.flowkit import retrain

SPEC = load_spec(Path(__file__).resolve().parents[2] / "dags/specs/credit_default.yaml")


class CountingStore(LocalStore):
    """A local store that counts every read, by the step running at the time."""

    step = "-"

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.reads: Counter[tuple[str, str]] = Counter()

    def _count(self, key: str) -> None:
        self.reads[(self.step, key)] += 1

    def get_bytes(self, key: str) -> bytes:
        self._count(key)
        return super().get_bytes(key)

    def read_json_versioned(self, key: str) -> tuple[Any, str | None]:
        self._count(key)
        return super().read_json_versioned(key)


@pytest.fixture
def counting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[CountingStore]:
    store = CountingStore(tmp_path / "store")
    synthetic.write_batches(days=6, rows_per_day=800, store=store)
    original = flows.execute_step

    def tracked(flow: Any, step: Any, ctx: Any, inputs: list[Any]) -> Any:
        store.step = step.name
        try:
            return original(flow, step, ctx, inputs)
        finally:
            store.step = "-"

    monkeypatch.setattr(flows, "execute_step", tracked)
    yield store


def heavy_reads(store: CountingStore) -> dict[tuple[str, str], int]:
    return {
        (step, key): n
        for (step, key), n in store.reads.items()
        if key.endswith(("data.parquet", "model.skops", "holdout.parquet"))
    }


def test_each_snapshot_and_artifact_is_read_at_most_once_per_step(counting: CountingStore) -> None:
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        first = retrain(SPEC, counting, run_id="reads-1")
        assert first.status == "success"
        # A new day of data: the next window differs from production's training data.
        synthetic.write_batches(start=date.today(), days=1, rows_per_day=800, store=counting)
        counting.reads.clear()
        second = retrain(SPEC, counting, run_id="reads-2")
    assert second.status == "success" and second.outputs["deploy"].previous == 1
    heavy = heavy_reads(counting)
    assert heavy, "the flow read nothing?"
    assert {k: n for k, n in heavy.items() if n > 1} == {}
    per_step = Counter(step for step, _ in heavy)
    # validate: window + production's training data; evaluate: window + holdout scores +
    # the champion + the candidate (its permutation importance on the holdout); verify: window
    # + the new version.
    assert per_step == {
        "validate_data": 2,
        "train_candidate": 1,
        "evaluate_candidate": 4,
        "deploy": 1,
        "verify_deployment": 2,
    }
    alias = {
        step: n for (step, key), n in counting.reads.items() if key.endswith("production.json")
    }
    print(f"store reads in one retrain: {sum(counting.reads.values())}; alias reads {alias}")
    assert all(n <= 2 for n in alias.values()), alias
