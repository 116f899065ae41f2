"""The retrain and monitor flows, each declared once as data, and the in-process runner.

A flow is an ordered tuple of steps; each step is named after its function in `steps.py` (so a
task id is its function's name), lists the upstream steps whose records it takes, the record it
returns, and how it may be retried. Two executors read the same declaration:

* `run_flow` runs it in this process (`mlops run`, `mlops demo`, tests);
* the DAG factory (`dags/mlops_dags.py`) expands it into one Airflow task per step, with XCom
  carrying the records between them (see `plugins/mlops_airflow.py`).

Both go through `execute_step`, which also stores what each step returned under
`runs/<model>/<run>/<step>.json`, so a run leaves the same trail whichever executor ran it.
Importing this module is cheap (no pandas, no store): the DAG factory reads it at parse time.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from mlops_tasks.errors import MlopsError, StepSkipped
from mlops_tasks.records import (
    Approval,
    Decision,
    Deployment,
    DriftResult,
    Evaluation,
    Reference,
    RetrainRequest,
    SnapshotRef,
    TrainedVersion,
    ValidationResult,
    Verification,
    to_json,
)
from mlops_tasks.specs import ModelSpec

if TYPE_CHECKING:
    from mlops_tasks.context import RunContext

log = logging.getLogger(__name__)

#: `io` steps only read and write the store: retried with backoff on a store hiccup.
#: `compute` steps are retried once (a worker lost mid-fit); failures that are bound to repeat
#: (bad data, a failed gate) are never retried, whatever the step (see `MlopsError.retryable`).
Retry = Literal["io", "compute"]


@dataclass(frozen=True)
class Step:
    """One step of a flow: an Airflow task, or one call of the in-process runner."""

    name: str
    output: type[Any]
    inputs: tuple[str, ...] = ()
    retry: Retry = "compute"
    #: A person decides instead of a function (Airflow: an approval task; CLI: `approver`).
    approval: bool = False
    #: The step exists only for specs where this holds (e.g. manual approval).
    when: Callable[[ModelSpec], bool] | None = None
    #: Its record is also emitted as this event (Airflow: an Asset event's `extra`).
    emits: str | None = None

    @property
    def upstream(self) -> tuple[str, ...]:
        """Upstream step names; `name?` marks one the flow may not have (then None)."""
        return tuple(i.rstrip("?") for i in self.inputs)

    def function(self) -> Callable[..., Any]:
        """The step's body, `mlops_tasks.steps.<name>` (imported on first use)."""
        if self.approval:
            raise MlopsError(f"step {self.name!r} is decided by a person, not executed")
        fn: Callable[..., Any] = getattr(importlib.import_module("mlops_tasks.steps"), self.name)
        return fn


@dataclass(frozen=True)
class Flow:
    name: str
    steps: tuple[Step, ...]
    doc: str

    def for_spec(self, spec: ModelSpec) -> tuple[Step, ...]:
        """The steps this model's flow has (optional steps depend on its spec)."""
        return tuple(s for s in self.steps if s.when is None or s.when(spec))

    def step(self, name: str) -> Step:
        for s in self.steps:
            if s.name == name:
                return s
        raise KeyError(f"flow {self.name!r} has no step {name!r}")


def _manual_approval(spec: ModelSpec) -> bool:
    return spec.deployment.approval == "manual"


RETRAIN = Flow(
    "retrain",
    (
        Step("snapshot_data", SnapshotRef, retry="io"),
        Step("validate_data", ValidationResult, ("snapshot_data",)),
        Step(
            "train_candidate",
            TrainedVersion,
            ("snapshot_data", "validate_data"),
        ),
        Step("evaluate_candidate", Evaluation, ("train_candidate",)),
        Step("gate", Evaluation, ("evaluate_candidate",)),
        Step("approve", Approval, ("gate",), approval=True, when=_manual_approval),
        Step(
            "deploy",
            Deployment,
            ("train_candidate", "gate", "approve?"),
            retry="io",
        ),
        Step(
            "verify_deployment",
            Verification,
            ("deploy", "snapshot_data"),
        ),
    ),
    doc="snapshot → validate → train → evaluate → gate → [approve] → deploy → verify",
)

MONITOR = Flow(
    "monitor",
    (
        Step("load_reference", Reference, retry="io"),
        Step("load_current", SnapshotRef, retry="io"),
        Step(
            "validate_current",
            ValidationResult,
            ("load_reference", "load_current"),
        ),
        Step(
            "detect_drift",
            DriftResult,
            ("load_reference", "load_current", "validate_current"),
        ),
        Step("decide", Decision, ("detect_drift",)),
        Step(
            "request_retrain",
            RetrainRequest,
            ("decide",),
            emits="retrain_request",
        ),
    ),
    doc="reference → current window → validate → drift → policy → [retrain request]",
)

FLOWS = {f.name: f for f in (RETRAIN, MONITOR)}


def step_key(ctx: RunContext, step: str) -> str:
    from mlops_tasks.reports import safe_run_id

    return f"runs/{ctx.model}/{safe_run_id(ctx.run_id)}/{step}.json"


def execute_step(flow: Flow, step: Step, ctx: RunContext, inputs: list[Any]) -> Any:
    """Run one step and store its record (or its skip or error) under `runs/`."""
    from mlops_tasks.storage import encode_json

    fn = step.function()
    started = datetime.now(UTC)
    t0 = time.perf_counter()
    log.info("%s %s: %s started", ctx.model, flow.name, step.name)
    status, output, error = "success", None, None
    try:
        output = fn(ctx, *inputs)
        return output
    except StepSkipped as err:
        status, error = "skipped", str(err)
        raise
    except Exception as err:
        status, error = "failed", f"{type(err).__name__}: {err}"
        raise
    finally:
        seconds = time.perf_counter() - t0
        log.info("%s %s: %s %s in %.2f s", ctx.model, flow.name, step.name, status, seconds)
        record = {
            "model": ctx.model,
            "flow": flow.name,
            "step": step.name,
            "run_id": ctx.run_id,
            "status": status,
            "started_at": started.isoformat(),
            "seconds": round(seconds, 3),
            "output": to_json(output),
            "error": error,
        }
        ctx.store.put_bytes(step_key(ctx, step.name), encode_json(record))


#: Decides an approval step in process: an Approval, or None to stop and wait for a person.
Approver = Callable[["RunContext", dict[str, Any]], Approval | None]


@dataclass
class FlowRun:
    """What an in-process run did: every step's record, and where and why it stopped."""

    flow: str
    run_id: str
    status: Literal["success", "skipped", "awaiting_approval", "rejected"] = "success"
    outputs: dict[str, Any] = field(default_factory=dict)
    stopped_at: str | None = None
    message: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "flow": self.flow,
            "run_id": self.run_id,
            "status": self.status,
            "stopped_at": self.stopped_at,
            "message": self.message,
            "outputs": {k: to_json(v) for k, v in self.outputs.items()},
        }


def run_flow(flow: Flow, ctx: RunContext, approver: Approver | None = None) -> FlowRun:
    """Execute `flow` for `ctx` in this process, in declaration order.

    A skipped step ends the run (status `skipped`); an approval step asks `approver` and ends
    the run as `awaiting_approval` without one, or `rejected` when it says no. Errors propagate.
    """
    run = FlowRun(flow.name, ctx.run_id)
    for step in flow.for_spec(ctx.spec):
        inputs = [run.outputs.get(name) for name in step.upstream]
        if step.approval:
            approval = approver(ctx, run.outputs) if approver else None
            if approval is None or not approval.approved:
                run.status = "awaiting_approval" if approval is None else "rejected"
                run.stopped_at, run.message = step.name, f"{step.name}: {run.status}"
                return run
            run.outputs[step.name] = approval
            continue
        try:
            run.outputs[step.name] = execute_step(flow, step, ctx, inputs)
        except StepSkipped as err:
            run.status, run.stopped_at, run.message = "skipped", step.name, str(err)
            return run
    return run
