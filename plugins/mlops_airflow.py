"""Airflow adapters for mlops_tasks: the only place where the two meet.

* `flow_task` / `approval_task` turn one step of a flow declaration (`mlops_tasks.flows`) into
  an Airflow task; `dags/mlops_dags.py` only loops over the declaration and wires them.
* `run_context` turns a task's Airflow context (run type, user, Params, data interval,
  triggering Asset events) into the `RunContext` every step receives.
* `call` converts errors at the boundary: an error that is bound to repeat (bad data, a failed
  gate: `retryable = False`) fails the task without retries; a store hiccup stays retryable; a
  skipped step skips the task.
* `InvalidSpecDag` surfaces a broken spec file as an import error that names the spec file and
  field, while every other model's DAGs keep loading.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import DAG, Asset, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from mlops_tasks.flows import Flow, Step

if TYPE_CHECKING:
    from mlops_tasks.context import RunContext
    from mlops_tasks.records import Approval, RetrainRequest

log = logging.getLogger(__name__)

#: Steps that only touch the store are retried with backoff; the rest once.
RETRIES: dict[str, dict[str, Any]] = {
    "io": {
        "retries": 3,
        "retry_delay": timedelta(seconds=10),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=5),
    },
    "compute": {"retries": 1, "retry_delay": timedelta(seconds=30)},
}


def retrain_asset(model: str) -> Asset:
    """The Asset a monitor run emits to request a retrain of `model`."""
    return Asset(name=f"{model}_retrain_request", uri=f"mlops://retrain-request/{model}")


def call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call plain mlops_tasks code from a task, converting its errors for Airflow."""
    from mlops_tasks.errors import MlopsError, StepSkipped

    with warnings.catch_warnings():
        # skops and sklearn touch deprecated Airflow-patched import paths inside workers.
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            return fn(*args, **kwargs)
        except StepSkipped as err:
            raise AirflowSkipException(str(err)) from None
        except MlopsError as err:
            if err.retryable:
                log.error("%s (will retry if retries remain)", err)
                raise
            # Final: no retry, and no chained traceback repeating the same message.
            raise AirflowFailException(f"{type(err).__name__}: {err}") from None


# The run context ----------------------------------------------------------------------------
def _request(context: Any, model: str) -> RetrainRequest | None:
    from mlops_tasks.records import RetrainRequest, from_json

    events = list(context["triggering_asset_events"][retrain_asset(model)])
    return from_json(RetrainRequest, dict(events[-1].extra)) if events else None


def _as_of(value: Any) -> datetime | None:
    """The `as_of` Param: an ISO date or date-time (UTC when it names no zone), or None."""
    from mlops_tasks.errors import UsageError

    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        raise UsageError(
            f"Param as_of: {str(value)[:40]!r} is not an ISO date or date-time "
            "(e.g. 2026-03-01 or 2026-03-01T12:00:00+00:00)"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def run_context(context: Any, spec_path: str) -> RunContext:
    """The RunContext of this task's run: spec, store, settings, trigger, Params and `as_of`."""
    from mlops_tasks.context import RunContext
    from mlops_tasks.errors import UsageError
    from mlops_tasks.records import RunParams, Trigger
    from mlops_tasks.settings import Settings
    from mlops_tasks.specs import load_spec

    spec = load_spec(spec_path)
    settings = Settings.from_env()
    dag_run, params = context["dag_run"], dict(context["params"])
    unknown = sorted(set(dag_run.conf or {}) - set(context["dag"].params))
    if unknown:  # Airflow accepts undeclared conf keys; a typo must not be silently ignored
        raise UsageError(
            f"unknown Param(s) {unknown}; this DAG takes {sorted(context['dag'].params)}"
        )
    run_type = str(getattr(dag_run.run_type, "value", dag_run.run_type))
    run_id = dag_run.run_id
    as_of = context.get("data_interval_end") or getattr(dag_run, "run_after", None)
    if run_type == "asset_triggered" and (request := _request(context, spec.name)):
        trigger = Trigger.from_request(request, run_id)
        as_of = request.as_of or as_of
    elif run_type == "manual":
        as_of = _as_of(params.get("as_of")) or as_of
        user = getattr(dag_run, "triggering_user_name", None)
        reason = params.get("reason") or f"manual trigger by {user}"
        trigger = Trigger("manual", user=user, reason=reason, run_id=run_id)
    else:
        trigger = Trigger("schedule", reason=f"scheduled run ({run_type})", run_id=run_id)
    trigger = replace(trigger, run_type=run_type)
    hyper = {k[3:]: v for k, v in params.items() if k.startswith("hp_") and v is not None}
    run_params = RunParams(
        force_deploy=bool(params.get("force_deploy", False)),
        training_window_days=params.get("training_window_days"),
        hyperparameters=hyper,
    )
    return RunContext(
        spec=spec,
        store=settings.open_store(),
        settings=settings,
        run_id=run_id,
        trigger=trigger,
        params=run_params,
        as_of=as_of or datetime.now(UTC),
    )


# Steps as tasks -----------------------------------------------------------------------------
def _approval(value: Any) -> Approval:
    """What the approval task returned (Airflow's HITL response) as an Approval record."""
    from mlops_tasks.records import Approval

    value = value or {}
    by = (value.get("responded_by_user") or {}).get("name")
    return Approval(approved="Approve" in (value.get("chosen_options") or []), by=by)


def _inputs(flow: Flow, step: Step, upstream: dict[str, Any]) -> list[Any]:
    from mlops_tasks.records import from_json

    out = []
    for name in step.upstream:
        value = upstream.get(name)
        source = flow.step(name)
        if value is None:
            out.append(None)
        elif source.approval:
            out.append(_approval(value))
        else:
            out.append(from_json(source.output, value))
    return out


def _execute(flow: Flow, step: Step, spec_path: str, upstream: dict[str, Any], context: Any) -> Any:
    from mlops_tasks.flows import execute_step
    from mlops_tasks.records import to_json

    ctx = run_context(context, spec_path)
    output = execute_step(flow, step, ctx, _inputs(flow, step, upstream))
    if step.emits:
        context["outlet_events"][retrain_asset(ctx.model)].extra = to_json(output)
    return to_json(output)


def flow_task(flow: Flow, step: Step, model: str, spec_path: str) -> Any:
    """The Airflow task of one flow step; call it with `upstream={name: XComArg}`."""
    outlets = [retrain_asset(model)] if step.emits else []

    @task(task_id=step.name, outlets=outlets, **RETRIES[step.retry])
    def run_step(upstream: dict[str, Any], **context: Any) -> Any:
        return call(_execute, flow, step, spec_path, upstream, context)

    return run_step


def approval_task(step: Step, model: str) -> Any:
    """A person approves the candidate in the UI (Browse → Required Actions)."""
    from airflow.providers.standard.operators.hitl import ApprovalOperator

    return ApprovalOperator(
        task_id=step.name,
        subject=f"Promote {model} v{{{{ ti.xcom_pull(task_ids='train_candidate')['version'] }}}}"
        " to production?",
        body="The candidate passed its gate. Evaluation report: "
        "{{ ti.xcom_pull(task_ids='evaluate_candidate')['report_uri'] }}",
        defaults="Reject",
        response_timeout=timedelta(days=3),
    )


def expand(flow: Flow, spec: Any, spec_path: str) -> dict[str, Any]:
    """One task per step of `flow` for `spec`, wired by the records they exchange."""
    outputs: dict[str, Any] = {}
    for step in flow.for_spec(spec):
        upstream = {n: outputs[n] for n in step.upstream if n in outputs}
        if step.approval:
            op = approval_task(step, spec.name)
            for ref in upstream.values():
                ref >> op
            outputs[step.name] = op.output
        else:
            outputs[step.name] = flow_task(flow, step, spec.name, spec_path)(upstream=upstream)
    return outputs


class InvalidSpecDag(DAG):
    """A placeholder whose validation fails with the spec errors.

    Airflow records a DAG that fails validation as an import error of its file and still loads
    the file's other DAGs, so one broken spec does not take the other models down.
    """

    spec_errors: str = ""

    def validate(self) -> None:
        raise ValueError(self.spec_errors)


def invalid_spec_dag(errors: list[str]) -> InvalidSpecDag:
    dag = InvalidSpecDag(dag_id="mlops_invalid_specs", schedule=None, tags=["mlops"])
    dag.spec_errors = "invalid model spec file(s):\n" + "\n".join(errors)
    return dag
