"""Airflow adapters for mlops_tasks: the only place where the two meet.

* `run_step` calls a plain mlops_tasks function from a task: it silences skops' import warnings
  inside workers and converts errors at the boundary (a failed gate or validation is final, so
  it fails the task without retries; store hiccups stay retryable).
* `trigger_from_context` turns the run's context (run type, user, Params, triggering Asset
  events) into the `triggered_by` record kept in lineage and the audit trail.
* `InvalidSpecDag` surfaces a broken spec file as an import error that names the spec file and
  field, while every other model's DAGs keep loading.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from typing import Any

from airflow.sdk import DAG, Asset
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

log = logging.getLogger(__name__)


def _final_errors() -> tuple[type[Exception], ...]:
    from mlops_tasks import errors

    return (
        errors.SpecError,
        errors.DataValidationError,
        errors.DataError,
        errors.GateFailed,
        errors.IntegrityError,
        errors.RegistryError,
        errors.DeploymentError,
        errors.NotFoundError,
    )


def run_step(
    fn: Callable[..., Any],
    *args: Any,
    skip_on: type[Exception] | tuple[type[Exception], ...] = (),
    **kwargs: Any,
) -> Any:
    """Call one mlops_tasks step; deterministic failures fail the task without retrying.

    Errors of the `skip_on` types skip the task instead (with their message in the log).
    """
    from mlops_tasks.errors import MlopsError

    with warnings.catch_warnings():
        # skops and sklearn touch deprecated Airflow-patched import paths inside workers.
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            return fn(*args, **kwargs)
        except skip_on as err:
            raise AirflowSkipException(str(err)) from None
        except _final_errors() as err:
            # Final: no retry, and no chained traceback repeating the same message.
            raise AirflowFailException(f"{type(err).__name__}: {err}") from None
        except MlopsError as err:
            log.error("%s (will retry if retries remain)", err)
            raise


def retrain_asset(model: str) -> Asset:
    """The Asset a monitor run emits to request a retrain of `model`."""
    return Asset(name=f"{model}_retrain_request", uri=f"mlops://retrain-request/{model}")


def trigger_from_context(context: Any, asset: Asset) -> dict[str, Any]:
    """Who or what started this run: schedule, manual (with user and Params) or drift."""
    dag_run = context["dag_run"]
    params = dict(context["params"])
    unknown = sorted(set(dag_run.conf or {}) - set(context["dag"].params))
    if unknown:  # Airflow accepts undeclared conf keys; a typo must not be silently ignored
        raise AirflowFailException(
            f"unknown Param(s) {unknown}; this DAG takes {sorted(context['dag'].params)}"
        )
    run_type = getattr(dag_run.run_type, "value", dag_run.run_type)
    base = {"run_id": dag_run.run_id, "run_type": run_type, "user": None, "reason": "",
            "drift": None, "force_deploy": bool(params.get("force_deploy", False)),
            "window_days": params.get("training_window_days"),
            "params": {k[3:]: v for k, v in params.items()
                       if k.startswith("hp_") and v is not None}}  # fmt: skip
    if run_type == "asset_triggered":
        events = list(context["triggering_asset_events"][asset])
        extra = dict(events[-1].extra) if events else {}
        return {**base, "kind": "drift", "user": "monitor",
                "reason": extra.get("reason", "retrain requested by the monitor"),
                "drift": {**extra, "source_run_id": events[-1].source_run_id if events else None,
                          "events": len(events)}}  # fmt: skip
    if run_type == "manual":
        user = getattr(dag_run, "triggering_user_name", None)
        return {**base, "kind": "manual", "user": user,
                "reason": params.get("reason") or f"manual trigger by {user}"}  # fmt: skip
    return {**base, "kind": "schedule", "reason": f"scheduled retrain ({run_type} run)"}


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
