"""What every flow step receives: the spec, the store, the settings and the run's identity."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time
from typing import TYPE_CHECKING

from mlops_tasks.errors import UsageError

if TYPE_CHECKING:  # the CLI imports this module to build its parser, before any command runs
    from mlops_tasks.records import RunParams, Trigger
    from mlops_tasks.settings import Settings
    from mlops_tasks.specs import ModelSpec
    from mlops_tasks.storage import ArtifactStore

#: What `parse_as_of` says it accepts, in its errors and in the CLI's and the form's help.
AS_OF_FORMS = "YYYY-MM-DD (the end of that day) or YYYY-MM-DDTHH:MM[:SS][+HH:MM]"

#: The instant a bare date stands for: its last second, so that the day's data is in.
END_OF_DAY = time(23, 59, 59)


def new_run_id(kind: str) -> str:
    return f"{kind}__{datetime.now(UTC).strftime('%Y-%m-%dT%H%M%S.%fZ')}"


def parse_as_of(value: object, name: str) -> datetime | None:
    """The `as_of` a person gave (`--as-of`, the `as_of` Param), in UTC; None when empty.

    An ISO date-time is that instant, in UTC when it names no zone. A bare date means the end
    of that day, 23:59:59 UTC: windows end at `as_of`'s date, so a run as of 2026-03-01 reads
    that day's batches and labels, and it comes after everything else that day (a promotion at
    10:00 that day is almost 14 h before it for the cooldown, not 10 h after it). The CLI and the
    Airflow form both parse with this, so the same text is the same instant in both.
    `name` is what the person typed it into (`--as-of`, `Param as_of`), named in the error.
    """
    text = "" if value is None else str(value).strip()
    if not text:
        return None
    try:
        day = date.fromisoformat(text)
    except ValueError:
        pass
    else:
        return datetime.combine(day, END_OF_DAY, tzinfo=UTC)
    try:
        parsed = datetime.fromisoformat(text)
        return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)
    except (ValueError, OverflowError):
        raise UsageError(f"{name} {text[:40]!r}: use {AS_OF_FORMS}") from None


@dataclass(frozen=True)
class RunContext:
    """One run of a flow for one model; build it with `RunContext.create`.

    `as_of` is the run's logical time, in UTC: a scheduled Airflow run's data interval end, a
    manual run's `as_of` (`parse_as_of`) else its trigger time, a drift-triggered retrain the
    time of the monitor run that asked for it. Policies (cooldowns, streaks) read it, never the
    wall clock.
    """

    spec: ModelSpec
    store: ArtifactStore
    settings: Settings
    run_id: str
    trigger: Trigger
    params: RunParams
    as_of: datetime

    @classmethod
    def create(
        cls,
        spec: ModelSpec,
        store: ArtifactStore,
        settings: Settings,
        run_id: str,
        trigger: Trigger,
        params: RunParams | None = None,
        as_of: datetime | None = None,
    ) -> RunContext:
        """The context of run `run_id`, which the trigger then names too, as of `as_of`
        (default now; a time without a zone is UTC) converted to UTC, so that windows (which
        end at its date) and cooldowns read the same day whoever started the run."""
        from mlops_tasks.records import RunParams

        when = as_of or datetime.now(UTC)
        return cls(
            spec=spec,
            store=store,
            settings=settings,
            run_id=run_id,
            trigger=replace(trigger, run_id=run_id),
            params=params or RunParams(),
            as_of=(when if when.tzinfo else when.replace(tzinfo=UTC)).astimezone(UTC),
        )

    @property
    def model(self) -> str:
        return self.spec.name
