"""Airflow DAG factory: `<model>_retrain` and `<model>_monitor` for every spec in dags/specs/.

Thin by design: constants, a factory, `@dag`/`@task` from airflow.sdk. Task bodies import
mlops_tasks inside the function and make one call; nothing touches the store, connections or
Variables at parse time. A broken spec shows up as an import error naming the spec file and
field (see `mlops_airflow.InvalidSpecDag`); the other models' DAGs still load.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, Param, dag, task
from airflow.sdk.exceptions import AirflowSkipException
from mlops_airflow import invalid_spec_dag, retrain_asset, run_step, trigger_from_context

from mlops_tasks.errors import SpecError
from mlops_tasks.specs import ESTIMATORS, ModelSpec, load_spec, spec_files

SPEC_DIR = Path(os.environ.get("MLOPS_SPEC_DIR") or Path(__file__).resolve().parent / "specs")
START = datetime(2026, 1, 1)
IO_RETRIES: dict[str, Any] = {
    "retries": 3,
    "retry_delay": timedelta(seconds=10),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=5),
}


def _model_dag(spec: ModelSpec, kind: str) -> dict[str, Any]:
    """What every model DAG shares: id, owner, tags, retries, one run at a time, docs."""
    return {
        "dag_id": f"{spec.name}_{kind}",
        "start_date": START,
        "catchup": False,
        "max_active_runs": 1,
        "tags": ["mlops", kind, spec.name, spec.task],
        "default_args": {"owner": spec.owner, "retries": 1,
                         "retry_delay": timedelta(seconds=30)},
        "doc_md": _doc(spec, kind),
    }  # fmt: skip


def _hyperparameter_params(spec: ModelSpec) -> dict[str, Param]:
    """One optional, typed and bounded Param per tunable hyperparameter of the estimator."""
    out = {}
    for name, rule in ESTIMATORS[spec.model.estimator].params.items():
        bounds = {k: v for k, v in (("minimum", rule.minimum), ("maximum", rule.maximum))
                  if v is not None}  # fmt: skip
        out[f"hp_{name}"] = Param(
            None, type=["null", rule.type], **bounds,
            description=f"Override {spec.model.estimator}.{name} for this run "
                        f"(spec: {spec.model.params.get(name, 'default')})",
        )  # fmt: skip
    return out


def _doc(spec: ModelSpec, kind: str) -> str:
    feats = ", ".join(spec.features.all)
    return (
        f"### {spec.name} ({kind})\n\n{spec.description}\n\n"
        f"* task: **{spec.task}**, target `{spec.target}`, estimator `{spec.model.estimator}`\n"
        f"* data: `{spec.data.source}`\n* features: {feats}\n"
        f"* gate: {spec.evaluation.primary_metric}, max drop {spec.evaluation.max_drop}; "
        f"approval: {spec.deployment.approval}\n"
        f"* drift: share >= {spec.drift.drift_share}, {spec.drift.consecutive_checks} check(s), "
        f"cooldown {spec.drift.cooldown_hours} h\n* spec file: `{SPEC_DIR / spec.name}.yaml`"
    )


def build_retrain(spec: ModelSpec, spec_path: str) -> Any:
    asset = retrain_asset(spec.name)
    if spec.schedule.retrain:
        schedule: Any = AssetOrTimeSchedule(
            timetable=CronTriggerTimetable(spec.schedule.retrain, timezone="UTC"), assets=[asset]
        )
    else:
        schedule = [asset]

    @dag(
        schedule=schedule,
        **_model_dag(spec, "retrain"),
        params={
            "reason": Param("", type="string", maxLength=500,
                            description="Why you are retraining (kept in the audit trail)"),
            "force_deploy": Param(False, type="boolean",
                                  description="Skip only the champion comparison (audited); "
                                  "absolute thresholds still apply"),
            "training_window_days": Param(None, type=["null", "integer"], minimum=1,
                                          maximum=3650, description="Days of batches to train on "
                                          f"(spec: {spec.data.training_window_days})"),
            **_hyperparameter_params(spec),
        },
    )  # fmt: skip
    def retrain() -> None:
        @task
        def resolve_trigger(**context: Any) -> dict[str, Any]:
            return trigger_from_context(context, asset)

        @task(**IO_RETRIES)
        def snapshot_data(trigger: dict[str, Any]) -> dict[str, Any]:
            from mlops_tasks import pipeline

            return run_step(pipeline.snapshot_data, load_spec(spec_path),
                            window_days=trigger["window_days"])  # fmt: skip

        @task
        def validate_data(snap: dict[str, Any], **context: Any) -> dict[str, Any]:
            from mlops_tasks import pipeline

            return run_step(pipeline.validate_data, load_spec(spec_path), snap["hash"],
                            context["run_id"])  # fmt: skip

        @task
        def train_candidate(snap: dict[str, Any], trigger: dict[str, Any], _valid: Any,
                            **context: Any) -> dict[str, Any]:  # fmt: skip
            from mlops_tasks.training import train_candidate as train

            return run_step(train, load_spec(spec_path), snap["hash"], trigger,
                            run_id=context["run_id"], params=trigger["params"])  # fmt: skip

        @task
        def evaluate_candidate(trained: dict[str, Any], trigger: dict[str, Any],
                               **context: Any) -> dict[str, Any]:  # fmt: skip
            from mlops_tasks.evaluation import evaluate_candidate as evaluate

            return run_step(evaluate, load_spec(spec_path), trained["version"], context["run_id"],
                            force_deploy=trigger["force_deploy"])  # fmt: skip

        @task
        def gate(evaluation: dict[str, Any]) -> dict[str, Any]:
            from mlops_tasks.evaluation import enforce_gate

            return run_step(enforce_gate, load_spec(spec_path), evaluation)

        @task(**IO_RETRIES)
        def deploy(trained: dict[str, Any], trigger: dict[str, Any], _gate: Any,
                   approval: Any = None, **context: Any) -> dict[str, Any]:  # fmt: skip
            from mlops_tasks import pipeline

            approver = ((approval or {}).get("responded_by_user") or {}).get("name")
            return run_step(pipeline.deploy, load_spec(spec_path), trained["version"], trigger,
                            context["run_id"], actor=approver)  # fmt: skip

        @task
        def verify_deployment(deployed: dict[str, Any], snap: dict[str, Any]) -> dict[str, Any]:
            from mlops_tasks import pipeline

            return run_step(pipeline.verify_deployment, load_spec(spec_path),
                            deployed["version"], deployed["previous"], snap["hash"])  # fmt: skip

        trigger = resolve_trigger()
        snap = snapshot_data(trigger)
        valid = validate_data(snap)
        trained = train_candidate(snap, trigger, valid)
        passed = gate(evaluate_candidate(trained, trigger))
        approval = None
        if spec.deployment.approval == "manual":
            from airflow.providers.standard.operators.hitl import ApprovalOperator

            approve = ApprovalOperator(
                task_id="approve",
                subject=f"Promote {spec.name} v{{{{ ti.xcom_pull(task_ids='train_candidate')"
                        "['version'] }} to production?",
                body="The candidate passed its gate. Evaluation report: "
                     "{{ ti.xcom_pull(task_ids='evaluate_candidate')['report_uri'] }}",
                defaults="Reject",
                response_timeout=timedelta(days=3),
            )  # fmt: skip
            passed >> approve
            approval = approve.output
        deployed = deploy(trained, trigger, passed, approval)
        verify_deployment(deployed, snap)

    return retrain()


def build_monitor(spec: ModelSpec, spec_path: str) -> Any:
    asset = retrain_asset(spec.name)

    @dag(
        schedule=CronTriggerTimetable(spec.schedule.monitor, timezone="UTC")
        if spec.schedule.monitor else None,
        **_model_dag(spec, "monitor"),
    )  # fmt: skip
    def monitor() -> None:
        @task(**IO_RETRIES)
        def load_reference() -> dict[str, Any]:
            from mlops_tasks import pipeline
            from mlops_tasks.errors import NotFoundError

            # No production version yet: nothing to monitor, which is not a failure.
            return run_step(pipeline.load_reference, load_spec(spec_path), skip_on=NotFoundError)

        @task(**IO_RETRIES)
        def load_current() -> dict[str, Any]:
            from mlops_tasks import pipeline

            return run_step(pipeline.load_current, load_spec(spec_path))

        @task
        def validate_current(reference: dict[str, Any], current: dict[str, Any],
                             **context: Any) -> dict[str, Any]:  # fmt: skip
            from mlops_tasks import pipeline

            return run_step(pipeline.validate_current, load_spec(spec_path), reference, current,
                            context["run_id"])  # fmt: skip

        @task
        def detect_drift(reference: dict[str, Any], current: dict[str, Any], _valid: Any,
                         **context: Any) -> dict[str, Any]:  # fmt: skip
            from mlops_tasks import drift

            result = run_step(drift.check, load_spec(spec_path), reference, current["hash"],
                              context["run_id"])  # fmt: skip
            return {k: result[k] for k in ("data", "performance", "current_rows", "report_uri",
                                           "reference_version")}  # fmt: skip

        @task
        def decide(drift: dict[str, Any], **context: Any) -> dict[str, Any]:
            from mlops_tasks import pipeline

            return run_step(pipeline.decide, load_spec(spec_path), drift, context["run_id"])

        @task(outlets=[asset])
        def request_retrain(decision: dict[str, Any], **context: Any) -> dict[str, Any]:
            if decision["decision"] != "retrain":
                raise AirflowSkipException(f"no retrain: {decision['reason']}")
            from mlops_tasks import pipeline

            trigger = pipeline.drift_trigger(decision)
            context["outlet_events"][asset].extra = {"reason": trigger["reason"],
                                                     **trigger["drift"]}  # fmt: skip
            return trigger

        reference, current = load_reference(), load_current()
        valid = validate_current(reference, current)
        request_retrain(decide(detect_drift(reference, current, valid)))

    return monitor()


def build_change_production(models: list[str]) -> Any:
    """One manual DAG to promote or roll back any model through Airflow's auth and history."""

    @dag(
        dag_id="mlops_change_production",
        schedule=None,
        start_date=START,
        catchup=False,
        tags=["mlops", "deployment"],
        default_args={"owner": "mlops", "retries": 0},
        doc_md="Promote a version to production or roll back (default: to the previous "
        "production version). Who triggered it and why go into the model's audit trail.",
        params={
            "model": Param(models[0] if models else "", type="string", enum=models or [""]),
            "action": Param("rollback", type="string", enum=["promote", "rollback"]),
            "version": Param(None, type=["null", "integer"], minimum=1,
                             description="Required for promote; for rollback, default previous"),
            "reason": Param("", type="string", minLength=3, maxLength=500),
        },
    )  # fmt: skip
    def change_production() -> None:
        @task
        def change(**context: Any) -> dict[str, Any]:
            from mlops_tasks import pipeline

            p = context["params"]
            user = getattr(context["dag_run"], "triggering_user_name", None) or "airflow"
            return run_step(pipeline.change_production, p["model"], p["action"], p["version"],
                            p["reason"], actor=user)  # fmt: skip

        change()

    return change_production()


def _build_all() -> None:
    errors, names = [], []
    for path in spec_files(SPEC_DIR):
        try:
            spec = load_spec(path)
        except SpecError as err:
            errors.append(str(err))
            continue
        globals()[f"{spec.name}_retrain"] = build_retrain(spec, str(path))
        globals()[f"{spec.name}_monitor"] = build_monitor(spec, str(path))
        names.append(spec.name)
    globals()["mlops_change_production"] = build_change_production(names)
    if errors:
        globals()["mlops_invalid_specs"] = invalid_spec_dag(errors)


_build_all()
