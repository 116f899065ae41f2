"""The retrain and monitor flows, each declared once as data, and the in-process runner.

A flow is an ordered tuple of steps. Each step is a module-level constant (`TRAIN`, `GATE`,
...) that names its function (`mlops_tasks.flow.steps.<name>` unless it says otherwise; its name is
also its Airflow task id), the record it returns, the steps whose records it takes (`inputs`,
in the order of the function's parameters), the steps it only runs after (`after`), how it may
be retried, and what an adapter shows of it (the report it leaves, the question a person
answers). A step refers to its upstream steps by constant, so a misspelled one is a NameError
here, and `check_flow` (run on import) refuses an input that no earlier step produces;
`tests/unit/test_flow_declaration.py` checks each function's parameters and return type
against its declaration.

Two executors read the same declaration:

* `run_flow` runs it in this process (`mlops run`, `mlops demo`, tests); the run's records are
  read back typed: `run[TRAIN]` is a `TrainedVersion`;
* the DAG factory (`dags/mlops_dags.py`) expands it into one Airflow task per step, with XCom
  carrying the records between them (see `plugins/mlops_airflow.py`), and takes each flow's
  schedule, the event that also starts it and its Params from the declaration.

Both go through `execute_step`, which also stores what each step returned under
`runs/<model>/<run>/<step>.json`, so a run leaves the same trail whichever executor ran it.
Importing this module is cheap (no pandas, no store): the DAG factory reads it at parse time.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar, overload

from mlops_tasks.errors import MlopsError, StepSkipped
from mlops_tasks.records import (
    Approval,
    Decision,
    Deployment,
    DriftResult,
    Evaluation,
    ProductionChange,
    Reference,
    RetrainRequest,
    SnapshotRef,
    TrainedVersion,
    ValidationResult,
    Verification,
    to_json,
)
from mlops_tasks.specs import ModelSpec, family

if TYPE_CHECKING:
    from mlops_tasks.flow.context import RunContext

log = logging.getLogger(__name__)

T = TypeVar("T")

#: `io` steps only read and write the store: retried with backoff on a store hiccup.
#: `compute` steps are retried once (a worker lost mid-fit); failures that are bound to repeat
#: (bad data, a failed gate) are never retried, whatever the step (see `MlopsError.retryable`).
#: `never` steps are not retried at all: a rollback retried after a lost answer would step back
#: twice.
Retry = Literal["io", "compute", "never"]


@dataclass(frozen=True)
class Ask:
    """What a person is asked at an approval step (Airflow: a required action; the Models
    view shows the same question and options). `subject` may name `{model}` and `{version}`,
    the version the record of step `version_from` names."""

    subject: str
    version_from: str
    approve: str = "Approve"
    reject: str = "Reject"
    #: The step whose report the person should read first.
    report_of: str | None = None

    @property
    def options(self) -> tuple[str, str]:
        return (self.approve, self.reject)


@dataclass(frozen=True, eq=False)
class Step(Generic[T]):
    """One step of a flow: an Airflow task, or one call of the in-process runner."""

    name: str
    output: type[T]
    #: The steps whose records the function takes after the run context, in order; a step in
    #: `maybe` may be absent from a model's flow (its `when` is false): then None.
    inputs: tuple[Step[Any], ...] = ()
    #: Steps this one runs after without taking their records (ordering only).
    after: tuple[Step[Any], ...] = ()
    maybe: tuple[Step[Any], ...] = ()
    retry: Retry = "compute"
    #: A person decides instead of a function (Airflow: an approval task; CLI: `approver`).
    ask: Ask | None = None
    #: The step exists only for specs where this holds (e.g. manual approval).
    when: Callable[[ModelSpec], bool] | None = None
    #: Its record is also emitted as this event (Airflow: an Asset event's `extra`).
    emits: str | None = None
    #: The report it leaves: the file-name prefix under its run's reports (the Models view and
    #: the task's "Report" link find it there).
    report: str | None = None
    #: "module:function" of its body; default `mlops_tasks.flow.steps:<name>`.
    function_ref: str = ""

    @property
    def approval(self) -> bool:
        return self.ask is not None

    @property
    def upstream(self) -> tuple[str, ...]:
        """The names of the steps whose records the function takes, in order."""
        return tuple(s.name for s in self.inputs)

    @property
    def depends_on(self) -> tuple[str, ...]:
        """Every step this one waits for: its inputs and the steps it runs after."""
        return tuple(dict.fromkeys(s.name for s in (*self.inputs, *self.after)))

    def function(self) -> Callable[..., Any]:
        """The step's body (imported on first use)."""
        if self.ask is not None:
            raise MlopsError(f"step {self.name!r} is decided by a person, not executed")
        ref = self.function_ref or f"mlops_tasks.flow.steps:{self.name}"
        module, _, attr = ref.partition(":")
        fn: Callable[..., Any] = getattr(importlib.import_module(module), attr)
        return fn


@dataclass(frozen=True)
class Param:
    """A typed, optional run parameter a person may give (Airflow: a Param of the trigger
    form; the CLI has flags of its own). `types` are JSON-schema types; the bounds are shown
    in the description, as Airflow's form clamps numbers to them silently."""

    name: str
    types: tuple[str, ...]
    default: Any
    description: str
    minimum: float | None = None
    maximum: float | None = None
    min_length: int | None = None
    max_length: int | None = None
    enum: tuple[Any, ...] | None = None


@dataclass(frozen=True)
class Flow:
    name: str
    steps: tuple[Step[Any], ...]
    doc: str
    #: Its cron for a model (None: no schedule).
    schedule: Callable[[ModelSpec], str | None] = lambda _spec: None
    #: An event another flow emits that starts this one too (`Step.emits`).
    started_by: str | None = None
    #: The Params of a run: given the model's spec, or for a deployment flow the names of
    #: every model it may act on.
    params: Callable[[Any], tuple[Param, ...]] = lambda _spec: ()
    #: `model`: one DAG per model (`<model>_<name>`); `deployment`: one DAG for every model
    #: (`mlops_<name>`), whose run acts on the model its `model` Param names.
    scope: Literal["model", "deployment"] = "model"

    def __post_init__(self) -> None:
        check_flow(self)

    def for_spec(self, spec: ModelSpec) -> tuple[Step[Any], ...]:
        """The steps this model's flow has (optional steps depend on its spec)."""
        return tuple(s for s in self.steps if s.when is None or s.when(spec))

    def step(self, name: str) -> Step[Any]:
        for s in self.steps:
            if s.name == name:
                return s
        raise KeyError(f"flow {self.name!r} has no step {name!r}")

    @property
    def reports(self) -> dict[str, str]:
        """The report each step leaves, by step name."""
        return {s.name: s.report for s in self.steps if s.report}


def check_flow(flow: Flow) -> None:
    """Refuse a declaration whose wiring cannot run: duplicate step names, an input or `after`
    step that is not earlier in the flow, an input that may be absent without being declared
    in `maybe` (or one in `maybe` that is no input), an approval question about a step that
    is not upstream of it."""
    seen: dict[str, Step[Any]] = {}
    for step in flow.steps:
        where = f"flow {flow.name!r}, step {step.name!r}"
        if step.name in seen:
            raise ValueError(f"{where}: a second step of that name")
        for dep in (*step.inputs, *step.after):
            if seen.get(dep.name) is not dep:
                raise ValueError(f"{where}: {dep.name!r} is not an earlier step of the flow")
            absent = dep.when is not None and step.when is None and dep in step.inputs
            if absent and dep not in step.maybe:
                raise ValueError(f"{where}: input {dep.name!r} may be absent; add it to maybe")
        if any(m not in step.inputs for m in step.maybe):
            raise ValueError(f"{where}: every step in maybe must be one of its inputs")
        if step.ask is not None and step.ask.version_from not in seen:
            raise ValueError(f"{where}: asks about {step.ask.version_from!r}, not upstream")
        seen[step.name] = step


def _manual_approval(spec: ModelSpec) -> bool:
    return spec.deployment.approval == "manual"


# The retrain flow ---------------------------------------------------------------------------
SNAPSHOT = Step("snapshot_data", SnapshotRef, retry="io")
VALIDATE = Step("validate_data", ValidationResult, (SNAPSHOT,), report="validation.html")
TRAIN = Step("train_candidate", TrainedVersion, (SNAPSHOT,), after=(VALIDATE,))
EVALUATE = Step("evaluate_candidate", Evaluation, (TRAIN,), report="evaluation-v")
GATE = Step("gate", Evaluation, (EVALUATE,))
#: What a person answers before a candidate reaches production (where the spec asks it).
PROMOTE_ASK = Ask(
    "Promote {model} v{version} to production?",
    version_from=TRAIN.name,
    report_of=EVALUATE.name,
)
APPROVE = Step("approve", Approval, after=(GATE,), ask=PROMOTE_ASK, when=_manual_approval)
DEPLOY = Step("deploy", Deployment, (TRAIN, APPROVE), after=(GATE,), maybe=(APPROVE,), retry="io")
VERIFY = Step("verify_deployment", Verification, (DEPLOY, SNAPSHOT))

# The monitor flow ---------------------------------------------------------------------------
REFERENCE = Step("load_reference", Reference, retry="io")
CURRENT = Step("load_current", SnapshotRef, retry="io")
VALIDATE_CURRENT = Step(
    "validate_current", ValidationResult, (REFERENCE, CURRENT), report="validation-current.html"
)
DRIFT = Step(
    "detect_drift",
    DriftResult,
    (REFERENCE, CURRENT),
    after=(VALIDATE_CURRENT,),
    report="drift.html",
)
DECIDE = Step("decide", Decision, (DRIFT,))
REQUEST = Step("request_retrain", RetrainRequest, (DECIDE,), emits="retrain_request")


def _retrain_params(spec: ModelSpec) -> tuple[Param, ...]:
    from mlops_tasks.specs import ESTIMATORS

    def bounds(minimum: float | None, maximum: float | None) -> str:
        if minimum is not None and maximum is not None:
            return f"; {minimum:g} to {maximum:g}"
        if minimum is not None:
            return f"; at least {minimum:g}"
        return f"; at most {maximum:g}" if maximum is not None else ""

    searched = set(spec.model.search.params) if spec.model.search else set()
    hyperparameters = tuple(
        Param(
            f"hp_{name}",
            ("null", rule.type),
            None,
            f"Optional: override {spec.model.estimator}.{name} for this run "
            f"(spec: {spec.model.params.get(name, 'searched' if name in searched else 'default')}"
            f"{bounds(rule.minimum, rule.maximum)})",
            minimum=rule.minimum,
            maximum=rule.maximum,
            # null (keep the spec's value) is one of the choices, or JSON schema refuses it
            enum=None if rule.enum is None else (None, *rule.enum),
        )
        for name, rule in (
            ESTIMATORS[spec.model.estimator].rules(family(spec.task))
            if spec.model.estimator in ESTIMATORS  # a custom estimator has no typed params
            else {}
        ).items()
    )
    return (
        *_as_of_params(spec),
        Param(
            "reason",
            ("null", "string"),
            None,
            "Optional: why you are retraining (kept in the audit trail)",
            max_length=500,
        ),
        Param(
            "force_deploy",
            ("null", "boolean"),
            False,
            "Optional, off by default: skip only the champion comparison (audited); absolute "
            "thresholds still apply",
        ),
        Param(
            "training_window_days",
            ("null", "integer"),
            None,
            "Optional: days of batches to train on "
            f"(spec: {spec.data.training_window_days}; 1 to 3650)",
            minimum=1,
            maximum=3650,
        ),
        *hyperparameters,
    )


def _as_of_params(_spec: ModelSpec) -> tuple[Param, ...]:
    from mlops_tasks.flow.context import AS_OF_FORMS

    return (
        Param(
            "as_of",
            ("null", "string"),
            None,
            "Optional: the logical time the run works as of, UTC unless it names a zone: "
            f"{AS_OF_FORMS}, the same instant as `mlops run --as-of`; windows end there, "
            "cooldowns count from it. Default: the trigger time",
            max_length=40,
        ),
    )


RETRAIN = Flow(
    "retrain",
    (SNAPSHOT, VALIDATE, TRAIN, EVALUATE, GATE, APPROVE, DEPLOY, VERIFY),
    doc="snapshot → validate → train → evaluate → gate → [approve] → deploy → verify",
    schedule=lambda spec: spec.schedule.retrain,
    started_by=REQUEST.emits,
    params=_retrain_params,
)


def _with_step(
    steps: tuple[Step[Any], ...], old: Step[Any], new: Step[Any]
) -> tuple[Step[Any], ...]:
    """`steps` with `old` replaced by `new`: every step that takes, follows or asks about
    `old` is copied to take, follow or ask about `new`, so both flows share one wiring."""
    swapped: dict[Step[Any], Step[Any]] = {old: new}
    out = []
    for step in steps:
        if step in swapped:
            out.append(swapped[step])
            continue

        def sub(deps: tuple[Step[Any], ...]) -> tuple[Step[Any], ...]:
            return tuple(swapped.get(d, d) for d in deps)

        ask = step.ask
        if ask is not None and ask.version_from == old.name:
            ask = replace(ask, version_from=new.name)
        copy = replace(
            step, inputs=sub(step.inputs), after=sub(step.after), maybe=sub(step.maybe), ask=ask
        )
        changed = (copy.inputs, copy.after, copy.maybe, copy.ask) != (
            step.inputs,
            step.after,
            step.maybe,
            step.ask,
        )
        if changed:
            swapped[step] = copy
        out.append(copy if changed else step)
    return tuple(out)


# The register flow: a model trained elsewhere, judged and deployed as a retrain's -----------
#: Checks the file a person brought (`RunParams.artifact`), scores it on the snapshot's
#: holdout and registers it. Not retried: a refused file is refused again.
BRING = Step("bring_candidate", TrainedVersion, (SNAPSHOT,), after=(VALIDATE,), retry="never")

REGISTER = Flow(
    "register",
    _with_step(RETRAIN.steps, TRAIN, BRING),
    doc="snapshot → validate → bring (a model trained elsewhere) → evaluate → gate → "
    "[approve] → deploy → verify",
)

MONITOR = Flow(
    "monitor",
    (REFERENCE, CURRENT, VALIDATE_CURRENT, DRIFT, DECIDE, REQUEST),
    doc="reference → current window → validate → drift → policy → [retrain request]",
    schedule=lambda spec: spec.schedule.monitor,
    params=_as_of_params,
)

# Change production (one flow for the deployment) -------------------------------------------
CHANGE = Step(
    "change",
    ProductionChange,
    retry="never",
    function_ref="mlops_tasks.flow.steps:change_production",
)


def _change_params(models: list[str]) -> tuple[Param, ...]:
    return (
        Param("model", ("string",), models[0] if models else "", "The model", enum=(*models,)),
        Param(
            "action", ("string",), "rollback", "promote or roll back", enum=("promote", "rollback")
        ),
        Param(
            "version",
            ("null", "integer"),
            None,
            "Required for promote; for rollback, default the previous production version "
            "(at least 1)",
            minimum=1,
        ),
        Param(
            "reason",
            ("string",),
            "",
            "Why (3 to 500 characters; kept in the audit trail)",
            min_length=3,
            max_length=500,
        ),
    )


CHANGE_PRODUCTION = Flow(
    "change_production",
    (CHANGE,),
    doc="Promote a version to production or roll back (default: to the previous production "
    "version). Who triggered it and why go into the model's audit trail.",
    params=_change_params,
    scope="deployment",
)

#: The flows of each model (one DAG per model and flow).
FLOWS = {f.name: f for f in (RETRAIN, MONITOR)}
#: The flows of the deployment (one DAG each, for every model).
DEPLOYMENT_FLOWS = {f.name: f for f in (CHANGE_PRODUCTION,)}
#: The flows of each model that only run in process (`mlops register`): a person brings a
#: file from their own machine, which an Airflow worker could not read.
CLI_FLOWS = {f.name: f for f in (REGISTER,)}
#: The report each step of every flow leaves, by step name (= task id).
STEP_REPORTS = {
    name: prefix
    for f in (*FLOWS.values(), *DEPLOYMENT_FLOWS.values(), *CLI_FLOWS.values())
    for name, prefix in f.reports.items()
}
#: The step at which a person approves a retrain's candidate.
APPROVAL = APPROVE


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

    @overload
    def __getitem__(self, step: Step[T]) -> T: ...
    @overload
    def __getitem__(self, step: str) -> Any: ...
    def __getitem__(self, step: Step[T] | str) -> Any:
        """The record a step returned (KeyError when it did not run)."""
        return self.outputs[step if isinstance(step, str) else step.name]

    def get(self, step: Step[T]) -> T | None:
        """The record a step returned, None when the run stopped before it."""
        out: T | None = self.outputs.get(step.name)
        return out

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
