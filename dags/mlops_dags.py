"""Airflow DAG factory: `<model>_retrain` and `<model>_monitor` for every spec in the spec dir,
and `mlops_change_production` for all of them.

Wiring only. The flows are declared once in `mlops_tasks.flow.flows` (steps, inputs, ordering,
retries, the approval question, schedules, the event that starts a flow, Params);
`mlops_airflow.expand` turns each step into a task. This file turns the declaration into
Airflow's own objects: timetables, Assets, Params and docs. Nothing touches the store,
connections or Variables at parse time.

A broken spec is skipped here, never raised: Airflow's dag-processor marks every DAG of a file
with an import error stale, so one typo would unschedule every model. `mlops_spec_errors.py`, a
DAG file of its own with no DAG, reports the broken specs as its import error instead.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, Param, dag
from mlops_airflow import event_asset, expand, expand_deployment

from mlops_tasks.flow.flows import DEPLOYMENT_FLOWS, FLOWS, Flow
from mlops_tasks.settings import ParseSettings
from mlops_tasks.specs import ModelSpec, load_specs

SETTINGS = ParseSettings.from_env()  # only what parsing needs (see ParseSettings)
SPEC_DIR = SETTINGS.spec_dir
START = datetime(2026, 1, 1)


def _params(of: Any, flow: Flow) -> dict[str, Param]:
    """The flow's declared Params (`Flow.params` of a model's spec, or of every model's name
    for a deployment flow) as Airflow Params of the trigger form."""
    out = {}
    for p in flow.params(of):
        # JSON-schema keywords, which Param takes as **kwargs beside its own arguments
        schema: dict[str, Any] = {
            k: v
            for k, v in (
                ("minimum", p.minimum),
                ("maximum", p.maximum),
                ("minLength", p.min_length),
                ("maxLength", p.max_length),
                ("enum", list(p.enum or ()) or None),
            )
            if v is not None
        }
        types = list(p.types)
        out[p.name] = Param(
            p.default,
            type=types if len(types) > 1 else types[0],
            description=p.description,
            **schema,
        )
    return out


def _doc(spec: ModelSpec, flow: Flow) -> str:
    return (
        f"### {spec.name} ({flow.name})\n\n{spec.description}\n\n"
        f"* flow: {flow.doc}\n"
        f"* task: **{spec.task}**, target `{spec.target}`, estimator `{spec.model.estimator}`\n"
        f"* data: `{spec.data.source}`\n* features: {', '.join(spec.features.all)}\n"
        f"* gate: {spec.evaluation.primary_metric}, max drop {spec.evaluation.max_drop}; "
        f"approval: {spec.deployment.approval}\n"
        f"* drift: share >= {spec.drift.drift_share}, {spec.drift.consecutive_checks} check(s), "
        f"cooldown {spec.drift.cooldown_hours} h\n* spec file: `{SPEC_DIR / spec.name}.yaml`"
    )


def _schedule(spec: ModelSpec, flow: Flow) -> Any:
    """The flow's cron (`Flow.schedule`), or the event that starts it (`Flow.started_by`: the
    Asset of the step that emits it), or either."""
    cron = flow.schedule(spec)
    timetable = CronTriggerTimetable(cron, timezone="UTC") if cron else None
    if flow.started_by is None:
        return timetable
    asset = event_asset(spec.name, flow.started_by)
    return AssetOrTimeSchedule(timetable=timetable, assets=[asset]) if timetable else [asset]


def build_flow_dag(spec: ModelSpec, spec_path: str, flow: Flow) -> Any:
    """`<model>_<flow>`: one task per step of the flow's declaration."""

    @dag(
        dag_id=f"{spec.name}_{flow.name}",
        schedule=_schedule(spec, flow),
        start_date=START,
        catchup=False,
        max_active_runs=1,
        tags=["mlops", flow.name, spec.name, spec.task],
        default_args={"owner": spec.owner},
        params=_params(spec, flow),
        doc_md=_doc(spec, flow),
    )
    def model_flow() -> None:
        expand(flow, spec, spec_path, pool=SETTINGS.airflow_pool)

    return model_flow()


def build_deployment_dag(flow: Flow, spec_paths: dict[str, str]) -> Any:
    """`mlops_<flow>`: a manual DAG for every model (`Flow.scope` "deployment"), such as
    promoting or rolling back any model through Airflow's auth and history."""

    @dag(
        dag_id=f"mlops_{flow.name}",
        schedule=None,
        start_date=START,
        catchup=False,
        tags=["mlops", "deployment"],
        default_args={"owner": "mlops"},
        doc_md=flow.doc,
        params=_params(list(spec_paths), flow),
    )
    def deployment_flow() -> None:
        expand_deployment(flow, spec_paths)

    return deployment_flow()


def _build_all() -> None:
    specs, errors = load_specs(SPEC_DIR)
    for err in errors:  # reported by mlops_spec_errors.py; here only in this file's parse log
        logging.getLogger(__name__).warning("skipped: %s", err)
    for path, spec in specs:
        for flow in FLOWS.values():
            globals()[f"{spec.name}_{flow.name}"] = build_flow_dag(spec, str(path), flow)
    paths = {spec.name: str(path) for path, spec in specs}
    for flow in DEPLOYMENT_FLOWS.values():
        globals()[f"mlops_{flow.name}"] = build_deployment_dag(flow, paths)


_build_all()
