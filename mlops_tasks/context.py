"""What every flow step receives: the spec, the store, the settings and the run's identity."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from mlops_tasks.records import RunParams, Trigger
from mlops_tasks.settings import Settings
from mlops_tasks.specs import ModelSpec
from mlops_tasks.storage import ArtifactStore


def new_run_id(kind: str) -> str:
    return f"{kind}__{datetime.now(UTC).strftime('%Y-%m-%dT%H%M%S.%fZ')}"


@dataclass(frozen=True)
class RunContext:
    """One run of a flow for one model.

    `as_of` is the run's logical time: a scheduled Airflow run's data interval end, a manual
    run's trigger time, a drift-triggered retrain the time of the monitor run that asked for it.
    Policies (cooldowns, streaks) read it, never the wall clock.
    """

    spec: ModelSpec
    store: ArtifactStore
    settings: Settings
    run_id: str
    trigger: Trigger
    params: RunParams = field(default_factory=RunParams)
    as_of: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def model(self) -> str:
        return self.spec.name
