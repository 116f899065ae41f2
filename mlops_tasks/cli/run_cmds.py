"""`mlops run retrain|monitor`, `mlops register`, `mlops reproduce`, `mlops serve` and
`mlops feedback import`."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from mlops_tasks.cli.base import Parser, Session
from mlops_tasks.errors import NotReproducible, SpecError, UsageError
from mlops_tasks.flow.context import AS_OF_FORMS

if TYPE_CHECKING:
    from mlops_tasks.flow.context import RunContext
    from mlops_tasks.flow.flows import Flow, FlowRun, Step
    from mlops_tasks.model.reproduce import Reproduction
    from mlops_tasks.records import RunParams, TrainedVersion, Trigger
    from mlops_tasks.specs import ModelSpec


def as_of(s: Session) -> datetime:
    """The run's logical time: `--as-of` (see `parse_as_of`), default now."""
    from mlops_tasks.flow.context import parse_as_of

    return parse_as_of(s.args.as_of, "--as-of") or datetime.now(UTC)


def context(
    s: Session,
    spec: ModelSpec,
    kind: str,
    trigger: Trigger,
    params: RunParams | None = None,
    when: datetime | None = None,
) -> RunContext:
    from mlops_tasks.flow.context import RunContext, new_run_id

    return RunContext.create(spec, s.store, s.settings, new_run_id(kind), trigger, params, when)


def run_retrain(s: Session, ctx: RunContext, approve: bool, flow: Flow | None = None) -> FlowRun:
    """Run the retrain flow (or `flow`, which makes its candidate another way) in process."""
    from mlops_tasks.flow.flows import RETRAIN, run_flow
    from mlops_tasks.records import Approval

    def approver(_ctx: RunContext, _outputs: object) -> Approval | None:
        return Approval(True, by=s.actor) if approve else None

    return run_flow(flow or RETRAIN, ctx, approver)


def retrain_text(run: FlowRun, made_by: Step[TrainedVersion] | None = None) -> str:
    """What a retrain (or register) run did; `made_by`: the step that made its candidate."""
    from mlops_tasks.flow.flows import DEPLOY, EVALUATE, TRAIN

    trained = run.get(made_by or TRAIN)
    evaluated = run.get(EVALUATE)
    if run.status == "awaiting_approval" and trained:
        return (
            f"v{trained.version} passed its gate and awaits approval: "
            f"`mlops promote {trained.model} {trained.version} --reason ...`\n"
            f"report: {evaluated.report_uri if evaluated else '-'}"
        )
    deployed = run.get(DEPLOY)
    if deployed:
        return (
            f"{deployed.model} v{deployed.version} passed its gate and was deployed to "
            f"production\nreport: {evaluated.report_uri if evaluated else '-'}"
        )
    return f"{run.flow} {run.status}: {run.message}"


def cmd_run_retrain(s: Session) -> int:
    from mlops_tasks.records import RunParams, Trigger

    spec = s.spec(s.args.model)
    trigger = Trigger("cli", user=s.actor, reason=s.args.reason)
    params = RunParams(force_deploy=s.args.force_deploy)
    ctx = context(s, spec, "retrain", trigger, params, as_of(s))
    run = run_retrain(s, ctx, s.args.approve)
    s.out(run.to_json(), lambda _r: retrain_text(run))
    return 0


def cmd_register(s: Session) -> int:
    """Bring a model trained elsewhere: check the file, then run the register flow (the
    retrain flow with the fit replaced by the file) as of `--as-of`."""
    from pathlib import Path

    from mlops_tasks.flow.flows import BRING, REGISTER
    from mlops_tasks.model.external import check_external, read_artifact
    from mlops_tasks.records import RunParams, Trigger

    spec = s.spec(s.args.model)
    path = Path(s.args.artifact)
    # Refused here, the file leaves nothing behind (no snapshot, report or version); the
    # flow's own step checks it again, with the data.
    check_external(spec, read_artifact(str(path)), path.name)
    reason = s.args.reason or f"trained elsewhere, brought as {path.name}"
    trigger = Trigger("external", user=s.actor, reason=reason)
    params = RunParams(artifact=str(path.resolve()))
    ctx = context(s, spec, "register", trigger, params, as_of(s))
    run = run_retrain(s, ctx, s.args.approve, REGISTER)
    s.out(run.to_json(), lambda _r: retrain_text(run, BRING))
    return 0


def cmd_run_monitor(s: Session) -> int:
    from mlops_tasks.flow.flows import DECIDE, MONITOR, REQUEST, run_flow
    from mlops_tasks.records import Trigger

    spec = s.spec(s.args.model)
    when = as_of(s)
    ctx = context(s, spec, "monitor", Trigger("cli", user=s.actor, reason="monitor"), when=when)
    run = run_flow(MONITOR, ctx)
    out = {"monitor": run.to_json(), "retrain": None}
    decision = run.get(DECIDE)
    text = f"{spec.name}: monitor {run.status}: {run.message}"
    if decision:
        text = f"{spec.name}: {decision.decision}: {decision.reason}\nreport: {decision.report_uri}"
    request = run.get(REQUEST)
    if request and s.args.retrain:
        trigger = Trigger.from_request(request)
        retrain = run_retrain(s, context(s, spec, "retrain", trigger, when=when), s.args.approve)
        out["retrain"] = retrain.to_json()
        text += "\n" + retrain_text(retrain)
    s.out(out, lambda _o: text)
    return 0


def _code(version: dict[str, str | None]) -> str:
    return f"{version.get('package') or '-'} git {version.get('git_sha') or '-'}"


def reproduction_text(r: Reproduction) -> str:
    def verdict(same: bool | None) -> str:
        return {True: "identical", False: "NOT identical", None: "not compared"}[same]

    spec = "stored with the version" if r.spec_source == "stored" else "rebuilt from lineage"
    lines = [
        f"{r.model} v{r.version}: " + ("reproduced" if r.identical else "NOT reproduced"),
        f"  spec         {spec}"
        + ("" if r.spec_hash_matches else " (hash differs from the lineage's)"),
        f"  dataset      {r.dataset}" + ("" if r.snapshot_intact else " (content changed)"),
        f"  predictions  {verdict(r.predictions_identical)} on {r.holdout_rows} holdout rows",
        f"  artifact     {verdict(r.artifact_identical)} (sha256 {r.artifact_sha256[:16]}...)",
        f"  code         then {_code(r.code_then)}, now {_code(r.code_now)}"
        + ("" if r.same_code else " (different)"),
        *(f"  - {note}" for note in r.notes),
    ]
    return "\n".join(lines)


def cmd_reproduce(s: Session) -> int:
    """Exit 0 when the rebuilt version is identical, else `NotReproducible`'s code."""
    from mlops_tasks.model.reproduce import reproduce
    from mlops_tasks.records import to_json

    try:
        current = s.spec(s.args.model)
    except SpecError:
        current = None  # only versions stored without their spec need it
    result = reproduce(
        s.store, s.args.model, s.args.version, s.settings.code_version, current_spec=current
    )
    data = {**to_json(result), "identical": result.identical, "same_code": result.same_code}
    s.out(data, lambda _d: reproduction_text(result))
    return 0 if result.identical else NotReproducible.exit_code


def cmd_serve(s: Session) -> int:
    from mlops_tasks.serving.app import serve

    workers = s.args.workers or s.settings.serving_workers
    if workers < 1:
        raise UsageError(f"--workers must be at least 1, got {workers}")
    serve(s.settings, s.args.host, s.args.port, s.store, s.spec_dir, s.args.poll_seconds, workers)
    return 0


def cmd_feedback_import(s: Session) -> int:
    """Import delayed labels from a CSV/Parquet file with request_id, row and label columns."""
    import pandas as pd

    from mlops_tasks.data.traffic import write_feedback
    from mlops_tasks.errors import DataError

    path = s.args.file
    try:
        frame = pd.read_parquet(path) if path.endswith(".parquet") else pd.read_csv(path)
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: cannot read labels: {err}", file=path) from err
    missing = [c for c in ("request_id", "label") if c not in frame.columns]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {missing}; need request_id, label and optionally row",
            file=path,
        )
    if "row" not in frame.columns:
        frame["row"] = 0
    records = frame[["request_id", "row", "label"]].to_dict(orient="records")
    n = write_feedback(s.store, s.args.model, [{str(k): v for k, v in r.items()} for r in records])
    s.out({"model": s.args.model, "accepted": n}, lambda d: f"{d['model']}: imported {n} label(s)")
    return 0


def _run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="model name (its spec's `name`)")
    p.add_argument(
        "--as-of",
        help=f"logical time of the run, UTC unless it names a zone: {AS_OF_FORMS}, the same "
        "instant as the Airflow form's as_of; windows end there and the policy reads it "
        "instead of the clock (default: now)",
    )
    p.add_argument(
        "--approve",
        action="store_true",
        help="approve the candidate of a model with `approval: manual` (as yourself)",
    )


def register(parser: Parser) -> None:
    run = parser.group("run", "run the retrain or monitor flow in this process", "flow", "FLOW")
    p = parser.add("retrain", cmd_run_retrain, "snapshot, validate, train, gate, deploy", run)
    _run_options(p)
    p.add_argument("--reason", default="manual run from the CLI", help="kept in the audit trail")
    p.add_argument(
        "--force-deploy", action="store_true", help="skip only the champion comparison (audited)"
    )
    p = parser.add("monitor", cmd_run_monitor, "check drift and apply the retrain policy", run)
    _run_options(p)
    p.add_argument("--retrain", action="store_true", help="retrain now if the policy says so")

    p = parser.add(
        "register",
        cmd_register,
        "bring a model trained elsewhere (a skops file) for a model's spec: it is scored on "
        "the holdout a retrain as of --as-of would use, gated against production, audited "
        "with who brought it, then deployed and verified like any candidate",
    )
    p.add_argument("model", help="model name (its spec's `name`)")
    p.add_argument(
        "--artifact",
        required=True,
        metavar="FILE",
        help="the fitted scikit-learn pipeline or estimator, saved with skops.io.dump "
        "(uncompressed), fitted on a DataFrame with exactly the spec's feature columns; only "
        "the exact types of the platform's pipelines load, anything else is refused before "
        "it is constructed",
    )
    p.add_argument(
        "--as-of",
        help=f"logical time whose training window it is scored on, UTC unless it names a "
        f"zone: {AS_OF_FORMS} (default: now)",
    )
    p.add_argument("--reason", default="", help="why, kept in the audit trail and lineage")
    p.add_argument("--actor", help="who brought it (default: $MLOPS_ACTOR or the OS user); audited")
    p.add_argument(
        "--approve",
        action="store_true",
        help="approve it for a model with `approval: manual` (as the actor)",
    )

    p = parser.add(
        "reproduce",
        cmd_reproduce,
        "rebuild a version from its lineage; exit 0 only if its holdout predictions and "
        "artifact bytes are identical (writes nothing)",
    )
    p.add_argument("model", help="model name (its spec's `name`)")
    p.add_argument("version", type=int, help="version to rebuild")

    p = parser.add("serve", cmd_serve, "run the prediction service (every production version)")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument(
        "--poll-seconds",
        type=float,
        default=2.0,
        help="how often to check the production aliases for a new version",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="worker processes sharing one port (default $MLOPS_SERVING_WORKERS or 1)",
    )
    fb = parser.group("feedback", "delayed labels for logged predictions", "action", "ACTION")
    p = parser.add("import", cmd_feedback_import, "import labels from CSV or Parquet", fb)
    p.add_argument("file", help="a file with request_id, label and optionally row columns")
    p.add_argument("--model", required=True, help="model the labels belong to")
