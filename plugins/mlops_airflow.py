"""Airflow adapters for mlops_tasks: the only place where the two meet.

* `flow_task` / `approval_task` turn one step of a flow declaration (`mlops_tasks.flow.flows`) into
  an Airflow task; `dags/mlops_dags.py` only loops over the declaration and wires them.
* `run_context` turns a task's Airflow context (run type, user, Params, data interval,
  triggering Asset events) into the `RunContext` every step receives.
* `open_store` opens the deployment's store with the endpoint and keys of an Airflow `aws`
  connection, and the signing key of a generic one (`MLOPS_SIGNING_CONN_ID`), handed to
  `mlops_tasks` as plain parameters.
* `call` converts errors at the boundary: an error that is bound to repeat (bad data, a failed
  gate: `retryable = False`) fails the task without retries; a store hiccup stays retryable; a
  skipped step skips the task.
* `InvalidSpecDag` surfaces broken spec files as the import error of `dags/mlops_spec_errors.py`,
  a DAG file of its own, so every other model's DAGs keep loading.
"""

from __future__ import annotations

import logging
import re
import urllib.parse
import warnings
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import DAG, Asset, BaseOperatorLink, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from mlops_tasks.flow.flows import Ask, Flow, Step

if TYPE_CHECKING:
    from mlops_tasks.flow.context import RunContext
    from mlops_tasks.records import Approval, RetrainRequest
    from mlops_tasks.settings import Settings
    from mlops_tasks.storage import ArtifactStore, S3Credentials

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
    "never": {"retries": 0},
}


def event_asset(model: str, event: str) -> Asset:
    """The Asset a step that emits `event` (`Step.emits`) updates for `model`, and that a
    flow started by that event (`Flow.started_by`) is scheduled on."""
    return Asset(name=f"{model}_{event}", uri=f"mlops://{event.replace('_', '-')}/{model}")


def retrain_asset(model: str) -> Asset:
    """The Asset a monitor run emits to request a retrain of `model`."""
    from mlops_tasks.flow.flows import REQUEST

    assert REQUEST.emits is not None
    return event_asset(model, REQUEST.emits)


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
                log.error("%s (will retry if retries remain)", ui_links(str(err)))
                raise
            # Final: no retry, and no chained traceback repeating the same message.
            raise AirflowFailException(f"{type(err).__name__}: {ui_links(str(err))}") from None


# Reports in the UI --------------------------------------------------------------------------
#: Where the Models view (plugins/mlops_ui.py) serves reports and each step's report.
UI_PREFIX = "/mlops"


def ui_base() -> str:
    """The UI's address (`[api] base_url`), as people open it."""
    from airflow.configuration import conf

    return str(conf.get("api", "base_url", fallback="") or "").rstrip("/")


def step_report_url(model: str, run_id: str, step: str) -> str:
    """The Models view's link to the report `step` of run `run_id` left."""
    path = "/".join(urllib.parse.quote(p, safe="") for p in (model, run_id, step))
    return f"{ui_base()}{UI_PREFIX}/runs/{path}"


def ui_links(message: str, store_uri: str | None = None) -> str:
    """`message` with every report URI in the store replaced by the UI's link to it."""
    from mlops_tasks.overview import report_path
    from mlops_tasks.settings import Settings

    store_uri = (store_uri or Settings.from_env().store_uri).rstrip("/")
    pattern = re.escape(store_uri + "/reports/") + r"[^\s'\")<>]+"

    def served(match: re.Match[str]) -> str:
        path = report_path(match.group(0), store_uri)
        if path is None:
            return match.group(0)
        return f"{ui_base()}{UI_PREFIX}/reports/{urllib.parse.quote(path)}"

    return re.sub(pattern, served, message)


class StepReportLink(BaseOperatorLink):
    """The "Report" button of a validation, evaluation or drift task: the Models view's page
    for the report that step of this run left (it answers 404 until there is one)."""

    name = "Report"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        dag_id = str(ti_key.dag_id)
        model = dag_id.rsplit("_", 1)[0]  # <model>_retrain, <model>_monitor
        return step_report_url(model, str(ti_key.run_id), str(ti_key.task_id))


# The store and its credentials --------------------------------------------------------------
#: The connection read when `MLOPS_AWS_CONN_ID` names none (the Amazon provider's default).
DEFAULT_AWS_CONN_ID = "aws_default"

#: Extras of the Amazon provider's `aws` connection that change who the client is. They need
#: the provider's session factory (assume role, profiles); using the login instead would quietly
#: run as someone else, so they are refused.
_UNSUPPORTED_EXTRAS = ("role_arn", "assume_role_method", "profile_name")


def _aws_connection(conn_id: str | None) -> Any:
    """The `aws` connection for the store: the one named, else `aws_default` if defined."""
    from airflow.sdk import Connection
    from airflow.sdk.exceptions import AirflowNotFoundException

    from mlops_tasks.errors import UsageError

    try:
        conn = Connection.get(conn_id or DEFAULT_AWS_CONN_ID)
    except AirflowNotFoundException:
        if conn_id:
            raise UsageError(
                f"MLOPS_AWS_CONN_ID={conn_id!r}: no such Airflow connection (define it in the "
                f"UI, a secrets backend or AIRFLOW_CONN_{conn_id.upper()})"
            ) from None
        return None
    if conn.conn_type != "aws":
        raise UsageError(
            f"Airflow connection {conn.conn_id!r} has type {conn.conn_type!r}; the store needs "
            "an 'aws' connection (keys in login and password, extra.endpoint_url, region_name)"
        )
    return conn


def store_access(conn_id: str | None) -> tuple[str | None, S3Credentials | None]:
    """Endpoint and keys of the store's Airflow connection, read the way the Amazon provider
    reads an `aws` connection: keys in login/password (or extra `aws_access_key_id`,
    `aws_secret_access_key`), extra `aws_session_token`, `region_name`, and the endpoint in
    `service_config.s3.endpoint_url` or `endpoint_url`. (None, None) without a connection.

    Every value that identifies the caller is registered with Airflow's secrets masker, so a
    log line that ever quoted one would show `***`.
    """
    from airflow.sdk.log import mask_secret

    from mlops_tasks.errors import UsageError
    from mlops_tasks.storage import S3Credentials

    conn = _aws_connection(conn_id)
    if conn is None:
        return None, None
    extra = conn.extra_dejson
    refused = [k for k in _UNSUPPORTED_EXTRAS if extra.get(k)]
    if refused:
        raise UsageError(
            f"Airflow connection {conn.conn_id!r}: extra {refused} is not supported for the "
            "store; give it keys, or leave them out and use the workers' AWS chain (role)"
        )
    s3_config = (extra.get("service_config") or {}).get("s3") or {}
    endpoint = s3_config.get("endpoint_url") or extra.get("endpoint_url") or None
    key_id = conn.login or extra.get("aws_access_key_id")
    secret = conn.password or extra.get("aws_secret_access_key")
    token = extra.get("aws_session_token")
    for value in (key_id, secret, token):
        if value:
            mask_secret(value)
    if bool(key_id) != bool(secret):
        raise UsageError(
            f"Airflow connection {conn.conn_id!r}: an access key id needs its secret access "
            "key and the other way round"
        )
    region = extra.get("region_name") or None
    if not (key_id or region):  # an endpoint at most: keys and region from the AWS chain
        return endpoint, None
    log.info("store credentials from Airflow connection %r", conn.conn_id)
    return endpoint, S3Credentials(
        aws_access_key_id=key_id or None,
        aws_secret_access_key=secret or None,
        aws_session_token=token or None,
        region_name=region,
    )


def signing_keys(conn_id: str) -> tuple[str, tuple[str, ...]]:
    """The signing key of Airflow connection `conn_id` (its password) and the previous keys a
    rotation still accepts (extra `previous_keys`: a list, or comma-separated), each
    registered with the secrets masker."""
    from airflow.sdk import Connection
    from airflow.sdk.exceptions import AirflowNotFoundException
    from airflow.sdk.log import mask_secret

    from mlops_tasks.errors import UsageError
    from mlops_tasks.settings import check_signing_key, previous_signing_keys

    try:
        conn = Connection.get(conn_id)
    except AirflowNotFoundException:
        raise UsageError(
            f"MLOPS_SIGNING_CONN_ID={conn_id!r}: no such Airflow connection (define it in the "
            f"UI, a secrets backend or AIRFLOW_CONN_{conn_id.upper()})"
        ) from None
    previous = conn.extra_dejson.get("previous_keys") or ""
    if isinstance(previous, list):
        previous = ",".join(str(k) for k in previous)
    for value in (conn.password, *str(previous).split(",")):
        if value and value.strip():
            mask_secret(value.strip())
    where = f"Airflow connection {conn_id!r}"
    key = check_signing_key(conn.password or "", f"the password of {where} (the signing key)")
    return key, previous_signing_keys(str(previous), f"extra previous_keys of {where}")


def with_signing_key(settings: Settings) -> Settings:
    """`settings` with the keys of its signing connection (`MLOPS_SIGNING_CONN_ID`), read
    once: the result names no connection any more. Unchanged without one."""
    from mlops_tasks.errors import UsageError

    if settings.signing_conn_id is None:
        return settings
    if settings.signing_key or settings.signing_previous_keys:
        raise UsageError(
            "set the signing key in MLOPS_SIGNING_CONN_ID's connection or in "
            "MLOPS_SIGNING_KEY (and MLOPS_SIGNING_PREVIOUS_KEYS), not both"
        )
    key, previous = signing_keys(settings.signing_conn_id)
    return replace(settings, signing_key=key, signing_previous_keys=previous, signing_conn_id=None)


def open_store(settings: Settings) -> ArtifactStore:
    """The deployment's store; an S3 store with its Airflow connection's endpoint and keys,
    and the signing key of `MLOPS_SIGNING_CONN_ID`'s connection when it names one.

    Without a connection (no `MLOPS_AWS_CONN_ID` and no `aws_default`) nothing changes:
    `AWS_ENDPOINT_URL` and boto3's credential chain. A local store reads no `aws` connection.
    """
    settings = with_signing_key(settings)
    if not settings.store_uri.startswith("s3://"):
        return settings.open_store()
    endpoint, credentials = store_access(settings.aws_conn_id)
    return settings.open_store(endpoint_url=endpoint, credentials=credentials)


# The run context ----------------------------------------------------------------------------
def _request(context: Any, model: str) -> RetrainRequest | None:
    from mlops_tasks.records import RetrainRequest, from_json

    events = list(context["triggering_asset_events"][retrain_asset(model)])
    return from_json(RetrainRequest, dict(events[-1].extra)) if events else None


def run_context(context: Any, spec_path: str | Mapping[str, str]) -> RunContext:
    """The RunContext of this task's run: spec, store, settings, trigger, Params and `as_of`.

    `spec_path` is the model's spec file, or for a deployment flow the spec file of every model
    by name: the run's `model` Param chooses one."""
    from mlops_tasks.errors import UsageError
    from mlops_tasks.flow.context import RunContext, parse_as_of
    from mlops_tasks.records import ProductionRequest, RunParams, Trigger
    from mlops_tasks.settings import Settings
    from mlops_tasks.specs import load_spec

    dag_run, params = context["dag_run"], dict(context["params"])
    if not isinstance(spec_path, str):
        model = str(params.get("model"))
        if model not in spec_path:
            raise UsageError(f"Param model {model!r}: no such model; known: {sorted(spec_path)}")
        spec_path = spec_path[model]
    spec = load_spec(spec_path)
    settings = with_signing_key(Settings.from_env())
    unknown = sorted(set(dag_run.conf or {}) - set(context["dag"].params))
    if unknown:  # Airflow accepts undeclared conf keys; a typo must not be silently ignored
        raise UsageError(
            f"unknown Param(s) {unknown}; this DAG takes {sorted(context['dag'].params)}"
        )
    run_type = str(getattr(dag_run.run_type, "value", dag_run.run_type))
    run_id = dag_run.run_id
    as_of = context.get("data_interval_end") or getattr(dag_run, "run_after", None)
    if run_type == "asset_triggered" and (request := _request(context, spec.name)):
        trigger = Trigger.from_request(request)
        as_of = request.as_of or as_of
    elif run_type == "manual":
        as_of = parse_as_of(params.get("as_of"), "Param as_of") or as_of
        user = getattr(dag_run, "triggering_user_name", None)
        reason = params.get("reason") or f"manual trigger by {user}"
        trigger = Trigger("manual", user=user, reason=reason)
    else:
        trigger = Trigger("schedule", reason=f"scheduled run ({run_type})")
    trigger = replace(trigger, run_type=run_type)
    hyper = {k[3:]: v for k, v in params.items() if k.startswith("hp_") and v is not None}
    change = None
    if params.get("action") in ("promote", "rollback"):
        change = ProductionRequest(params["action"], params.get("reason") or "", params["version"])
    run_params = RunParams(
        force_deploy=bool(params.get("force_deploy", False)),
        training_window_days=params.get("training_window_days"),
        hyperparameters=hyper,
        change=change,
    )
    return RunContext.create(
        spec, open_store(settings), settings, run_id, trigger, run_params, as_of
    )


# Steps as tasks -----------------------------------------------------------------------------
def _approval(value: Any, ask: Ask) -> Approval:
    """What the approval task returned (Airflow's HITL response) as an Approval record."""
    from mlops_tasks.records import Approval

    value = value or {}
    by = (value.get("responded_by_user") or {}).get("name")
    comment = str((value.get("params_input") or {}).get("comment") or "").strip() or None
    approved = ask.approve in (value.get("chosen_options") or [])
    return Approval(approved=approved, by=by, comment=comment)


def _inputs(flow: Flow, step: Step[Any], upstream: dict[str, Any]) -> list[Any]:
    from mlops_tasks.records import from_json

    out: list[Any] = []  # each step's own output record, an Approval or None
    for name in step.upstream:
        value = upstream.get(name)
        source = flow.step(name)
        if value is None:
            out.append(None)
        elif source.ask is not None:
            out.append(_approval(value, source.ask))
        else:
            out.append(from_json(source.output, value))
    return out


def _execute(
    flow: Flow,
    step: Step[Any],
    spec_path: str | Mapping[str, str],
    upstream: dict[str, Any],
    context: Any,
) -> Any:
    from mlops_tasks.flow.flows import execute_step
    from mlops_tasks.records import to_json

    ctx = run_context(context, spec_path)
    output = execute_step(flow, step, ctx, _inputs(flow, step, upstream))
    if step.emits:
        context["outlet_events"][event_asset(ctx.model, step.emits)].extra = to_json(output)
    if report := getattr(output, "report_uri", None):
        log.info("Report: %s", ui_links(report, ctx.store.uri))
    return to_json(output)


def flow_task(
    flow: Flow,
    step: Step[Any],
    model: str | None,
    spec_path: str | Mapping[str, str],
    pool: str | None = None,
    pool_slots: int = 1,
) -> Any:
    """The Airflow task of one flow step; call it with `upstream={name: XComArg}`.

    It runs in `pool` (None: Airflow's default_pool) and takes `pool_slots` of it there.
    `model` is None for a deployment flow (see `run_context`), whose steps emit no event.
    """
    outlets = [event_asset(model, step.emits)] if step.emits and model else []

    @task(
        task_id=step.name, outlets=outlets, pool=pool, pool_slots=pool_slots, **RETRIES[step.retry]
    )
    def run_step(upstream: dict[str, Any], **context: Any) -> Any:
        return call(_execute, flow, step, spec_path, upstream, context)

    return run_step


def approval_task(step: Step[Any], model: str, timeout_hours: float = 72) -> Any:
    """A person answers the step's question (`Step.ask`) in the UI (Browse → Required Actions,
    or the Models view), with a comment kept in the audit trail.

    No default answer: an approval nobody gives within `timeout_hours` expires (the task fails,
    nothing is promoted), it is never taken as a rejection or an approval.
    """
    from airflow.providers.standard.operators.hitl import ApprovalOperator
    from airflow.sdk import Param

    ask = step.ask
    assert ask is not None
    # Airflow's approval task offers exactly these two answers.
    assert ask.options == (ApprovalOperator.APPROVE, ApprovalOperator.REJECT), ask.options
    version = f"{{{{ ti.xcom_pull(task_ids='{ask.version_from}')['version'] }}}}"
    report = ""
    if ask.report_of:
        url = step_report_url(model, "RUN_ID", ask.report_of).replace(
            "RUN_ID", "{{ run_id | urlencode }}"
        )
        report = f" [Report of {ask.report_of}]({url})."
    return ApprovalOperator(
        task_id=step.name,
        subject=ask.subject.format(model=model, version=version),
        body=f"The candidate passed its gate.{report} Unanswered, it expires after "
        f"{timeout_hours:g} h: nothing is promoted.",
        params={
            "comment": Param(
                "",
                type="string",
                maxLength=500,
                description="Why you approve or reject (kept in the audit trail)",
            )
        },
        response_timeout=timedelta(hours=timeout_hours),
    )


def expand_deployment(flow: Flow, spec_paths: Mapping[str, str]) -> dict[str, Any]:
    """One task per step of a deployment flow (`Flow.scope`), for every model in
    `spec_paths`; each run acts on the model its `model` Param names."""
    outputs: dict[str, Any] = {}
    for step in flow.steps:
        upstream = {n: outputs[n] for n in step.upstream if n in outputs}
        outputs[step.name] = flow_task(flow, step, None, dict(spec_paths))(upstream=upstream)
        for name in step.depends_on:
            if name in outputs and name not in upstream:
                outputs[name] >> outputs[step.name]
    return outputs


def expand(flow: Flow, spec: Any, spec_path: str, pool: str | None = None) -> dict[str, Any]:
    """One task per step of `flow` for `spec`, wired by the records they exchange.

    Every step that does work runs in the spec's pool (else `pool`, the deployment's) with the
    spec's `pool_slots`; an approval only waits for a person, so it takes no slot of it.
    """
    pool = spec.schedule.pool or pool
    outputs: dict[str, Any] = {}
    for step in flow.for_spec(spec):
        upstream = {n: outputs[n] for n in step.upstream if n in outputs}
        if step.approval:
            op = approval_task(step, spec.name, spec.deployment.approval_timeout_hours)
            outputs[step.name] = op.output
        else:
            make = flow_task(flow, step, spec.name, spec_path, pool, spec.schedule.pool_slots)
            outputs[step.name] = make(upstream=upstream)
            if step.report:
                outputs[step.name].operator.operator_extra_links = (StepReportLink(),)
        for name in step.depends_on:  # the records it takes wire themselves; `after` does not
            if name in outputs and name not in upstream:
                outputs[name] >> outputs[step.name]
    return outputs


class InvalidSpecDag(DAG):
    """A placeholder whose validation fails with the spec errors.

    Airflow records a DAG that fails validation as an import error of its file, with the
    error's text and no traceback. The dag-processor then marks every DAG of that file stale
    (a `DagBag` alone keeps them), so this DAG lives in a file that holds no other DAG.
    """

    spec_errors: str = ""

    def validate(self) -> None:
        raise ValueError(self.spec_errors)


def invalid_spec_dag(errors: list[str]) -> InvalidSpecDag:
    dag = InvalidSpecDag(dag_id="mlops_invalid_specs", schedule=None, tags=["mlops"])
    dag.spec_errors = (
        "invalid model spec file(s) or deployment settings (every other model's DAGs still "
        "run):\n" + "\n".join(errors)
    )
    return dag
