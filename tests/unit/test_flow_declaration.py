"""The flow declarations are the only place a flow is written down: each step's function takes
the records its declaration says, in that order, and returns the record it declares; a
wiring mistake is refused when the declaration is built."""

from __future__ import annotations

import inspect
import typing
from pathlib import Path
from typing import Any

import pytest

from mlops_tasks.flow import flows
from mlops_tasks.flow.context import RunContext
from mlops_tasks.flow.flows import CLI_FLOWS, DEPLOYMENT_FLOWS, FLOWS, Ask, Flow, Step
from mlops_tasks.records import Approval, SnapshotRef, TrainedVersion

ALL = [*FLOWS.values(), *DEPLOYMENT_FLOWS.values(), *CLI_FLOWS.values()]
STEPS = [pytest.param(f, s, id=f"{f.name}.{s.name}") for f in ALL for s in f.steps]


@pytest.mark.parametrize(("flow", "step"), STEPS)
def test_each_function_takes_and_returns_what_its_step_declares(
    flow: Flow, step: Step[Any]
) -> None:
    if step.ask is not None:
        assert step.output is Approval and not step.inputs  # a person answers
        return
    fn = step.function()
    hints = typing.get_type_hints(fn)
    params = list(inspect.signature(fn).parameters)
    assert hints[params[0]] is RunContext, f"{step.name}: first parameter is the run context"
    assert len(params) - 1 == len(step.inputs), f"{step.name}: takes {params[1:]}"
    for name, source in zip(params[1:], step.inputs, strict=True):
        wanted = source.output | None if source in step.maybe else source.output
        assert hints[name] == wanted, f"{step.name}({name}): {hints[name]} is not {wanted}"
    assert hints["return"] is step.output, f"{step.name} returns {hints['return']}"


def test_every_report_and_question_names_a_step_of_its_flow() -> None:
    for flow in ALL:
        names = {s.name for s in flow.steps}
        for step in flow.steps:
            if step.ask is not None:
                assert {step.ask.version_from, step.ask.report_of} <= names
    assert flows.STEP_REPORTS["evaluate_candidate"] == "evaluation-v"
    assert flows.APPROVAL.ask is not None and flows.APPROVAL.ask.options == ("Approve", "Reject")


def _flow(*steps: Step[Any]) -> Flow:
    return Flow("t", steps, doc="test")


def test_a_wiring_mistake_is_refused_when_the_flow_is_declared() -> None:
    first = Step("snapshot_data", SnapshotRef)
    late = Step("train_candidate", TrainedVersion, (first,))
    with pytest.raises(ValueError, match="'snapshot_data' is not an earlier step"):
        _flow(late, first)
    with pytest.raises(ValueError, match="a second step of that name"):
        _flow(first, Step("snapshot_data", SnapshotRef))
    optional = Step("approve", Approval, ask=Ask("?", "snapshot_data"), when=lambda _s: True)
    needs = Step("deploy", TrainedVersion, (first, optional))
    with pytest.raises(ValueError, match="input 'approve' may be absent; add it to maybe"):
        _flow(first, optional, needs)
    stray = Step("deploy", TrainedVersion, (first,), maybe=(optional,))
    with pytest.raises(ValueError, match="every step in maybe must be one of its inputs"):
        _flow(first, optional, stray)
    asks_later = Step("approve", Approval, ask=Ask("?", "train_candidate"))
    with pytest.raises(ValueError, match="asks about 'train_candidate', not upstream"):
        _flow(first, asks_later)


def test_a_run_hands_back_each_record_typed(tmp_path: Any) -> None:
    run = flows.FlowRun("retrain", "r1", outputs={"train_candidate": "record"})
    assert run[flows.TRAIN] == "record" and run.get(flows.DEPLOY) is None
    with pytest.raises(KeyError):
        run[flows.DEPLOY]


def test_change_production_is_a_declared_flow_that_never_retries(tmp_path: Any) -> None:
    """It was written inline in the DAG file; a rollback retried after a lost answer would
    step back twice."""
    from mlops_tasks.records import ProductionRequest, RunParams
    from mlops_tasks.registry import Registry
    from mlops_tasks.specs import find_spec
    from mlops_tasks.storage import LocalStore
    from tests.flowkit import context
    from tests.unit.test_registry import register_gated

    flow = DEPLOYMENT_FLOWS["change_production"]
    assert [s.retry for s in flow.steps] == ["never"]
    assert [p.name for p in flow.params(["a", "b"])] == ["model", "action", "version", "reason"]
    spec = find_spec("credit_default", Path(__file__).parents[2] / "dags" / "specs")
    store = LocalStore(tmp_path / "s")
    reg = Registry(store)
    for seed in (0, 1):
        reg.promote(spec.name, register_gated(reg, spec.name, seed), reason="start", actor="t")
    params = RunParams(change=ProductionRequest("rollback", "a drill of the DAG"))
    run = flows.run_flow(flow, context(spec, store, "change", params=params))
    assert run[flows.CHANGE].version == 1 and reg.alias(spec.name) == 1
    (event,) = reg.audit(spec.name, "rollback")
    assert (event["reason"], event["actor"]) == ("a drill of the DAG", "pytest")
