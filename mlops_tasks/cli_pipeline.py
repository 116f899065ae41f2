"""`mlops run retrain|monitor` and `mlops demo ...`: the pipeline from the command line."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, date, datetime, timedelta
from typing import Any

from mlops_tasks import pipeline, synthetic
from mlops_tasks.errors import GateFailed
from mlops_tasks.registry import current_actor
from mlops_tasks.specs import find_spec
from mlops_tasks.storage import open_store


def _print(args: argparse.Namespace, data: Any, text: str) -> None:
    print(json.dumps(data, indent=2, sort_keys=True, default=str) if args.json else text)


def cmd_run_retrain(args: argparse.Namespace) -> int:
    spec = find_spec(args.model, args.spec_dir)
    trigger = pipeline.trigger_info("cli", user=current_actor(), reason=args.reason)
    res = pipeline.run_retrain(spec, trigger, store=open_store(args.store),
                               force_deploy=args.force_deploy)  # fmt: skip
    v = res["trained"]["version"]
    where = "deployed to production" if res["deployed"] else "awaiting manual approval"
    _print(args, res, f"{spec.name} v{v} passed its gate and was {where}\n"
           f"report: {res['evaluation']['report_uri']}")  # fmt: skip
    return 0


def cmd_run_monitor(args: argparse.Namespace) -> int:
    spec = find_spec(args.model, args.spec_dir)
    store = open_store(args.store)
    decision = pipeline.run_monitor(spec, store=store)
    out: dict[str, Any] = {"monitor": decision, "retrain": None}
    text = f"{spec.name}: {decision['decision']}: {decision['reason']}\n" \
           f"report: {decision['report_uri']}"  # fmt: skip
    if decision["decision"] == "retrain" and args.retrain:
        out["retrain"] = pipeline.run_retrain(spec, pipeline.drift_trigger(decision), store=store)
        text += f"\nretrained: v{out['retrain']['trained']['version']}"
    _print(args, out, text)
    return 0


def _next_day(source: str, store: Any) -> date:
    from mlops_tasks.datasets import batch_dates

    dates = batch_dates(source, store)
    return dates[-1] + timedelta(days=1) if dates else date.today() - timedelta(days=14)


def _write_demo(store: Any, start: date, days: int, rows: int, scenario: str) -> list[str]:
    return synthetic.write_batches(synthetic.DEMO_SOURCE, start=start, days=days,
                                   rows_per_day=rows, scenario=scenario, store=store)  # fmt: skip


def cmd_demo_seed(args: argparse.Namespace) -> int:
    store = open_store(args.store)
    uris = _write_demo(store, date.today() - timedelta(days=args.days), args.days, args.rows,
                       "stable")  # fmt: skip
    _print(args, uris, f"wrote {len(uris)} stable daily batches under {store.uri}/demo/")
    return 0


def cmd_demo_drift(args: argparse.Namespace) -> int:
    store = open_store(args.store)
    start = _next_day(synthetic.DEMO_SOURCE, store)
    uris = _write_demo(store, start, args.days, args.rows, args.scenario)
    _print(args, uris, f"wrote {len(uris)} {args.scenario} batch(es) from {start}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """The whole loop in one process: seed, v1, drift, detect, retrain, v2, audit."""
    store = open_store(args.store)
    spec = find_spec("credit_default", args.spec_dir)
    say = print if not args.json else (lambda *_a: None)
    say(f"store: {store.uri}")
    _write_demo(store, date.today() - timedelta(days=14), 14, args.rows, "stable")
    say(f"wrote 14 stable daily batches under {store.uri}/demo/")
    first = pipeline.run_retrain(spec, pipeline.trigger_info("cli", current_actor(), "demo: v1"),
                                 store=store)  # fmt: skip
    say(f"v{first['trained']['version']} trained and promoted: {first['trained']['metrics']}")
    start = _next_day(synthetic.DEMO_SOURCE, store)
    _write_demo(store, start, 2, args.rows, "covariate_shift")
    say(f"wrote 2 covariate_shift batches from {start}")
    # The drift check runs "later": past the cooldown that v1's promotion started.
    later = datetime.now(UTC) + timedelta(hours=spec.drift.cooldown_hours, minutes=1)
    say(f"monitor (as of {later:%H:%M} UTC, after the {spec.drift.cooldown_hours} h cooldown):")
    decision = pipeline.run_monitor(spec, store=store, at=later)
    say(f"  {decision['decision']}: {decision['reason']}")
    if decision["decision"] == "retrain":
        try:
            second = pipeline.run_retrain(spec, pipeline.drift_trigger(decision), store=store)
            say(f"v{second['trained']['version']} promoted after drift")
        except GateFailed as err:
            say(f"retrained candidate rejected: {err}")
    again = pipeline.run_monitor(spec, store=store)
    say(f"monitor again, now: {again['decision']}: {again['reason']}")
    say("")
    from mlops_tasks.cli import main as cli_main

    cli_main(["versions", spec.name, "--store", store.uri])
    print()
    cli_main(["audit", spec.name, "--store", store.uri])
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from mlops_tasks.serving.app import serve

    serve(args.host, args.port, args.store, args.spec_dir, args.poll_seconds)
    return 0


def cmd_feedback_import(args: argparse.Namespace) -> int:
    """Import delayed labels from a CSV/Parquet file with request_id, row and label columns."""
    import pandas as pd

    from mlops_tasks.errors import DataError
    from mlops_tasks.serving.inference_log import write_feedback

    path = args.file
    try:
        frame = pd.read_parquet(path) if path.endswith(".parquet") else pd.read_csv(path)
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: cannot read labels: {err}", file=path) from err
    missing = [c for c in ("request_id", "label") if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; need request_id, label "
                        "and optionally row", file=path)  # fmt: skip
    if "row" not in frame.columns:
        frame["row"] = 0
    n = write_feedback(
        open_store(args.store),
        args.model,
        [
            {str(k): v for k, v in r.items()}
            for r in frame[["request_id", "row", "label"]].to_dict(orient="records")
        ],
    )
    _print(args, {"model": args.model, "accepted": n}, f"{args.model}: imported {n} label(s)")
    return 0


def cmd_demo_traffic(args: argparse.Namespace) -> int:
    """Send generated requests (and their labels) to a running prediction service."""
    from mlops_tasks.serving.client import ServiceClient, send_traffic

    spec = find_spec(args.model, args.spec_dir)
    frame = synthetic.generate_day(date.today(), args.rows, args.scenario, seed=args.seed)
    res = send_traffic(ServiceClient(args.url), spec, frame, batch=args.batch,
                       labels=not args.no_labels)  # fmt: skip
    _print(
        args,
        res,
        f"sent {res['rows']} {args.scenario} rows to {args.url} "
        f"(served by v{', v'.join(map(str, res['versions']))}); {res['labels']} labels",
    )
    return 0


def register(add: Any) -> None:
    run = add("run", lambda _a: 2, "run the retrain or monitor pipeline in this process")
    rsub = run.add_subparsers(dest="pipeline", required=True, metavar="PIPELINE")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--store", help="artifact store URI (default: $MLOPS_STORE or ./.mlops)")
    common.add_argument("--json", action="store_true", help="machine-readable JSON output")
    common.add_argument("--spec-dir", help="directory of model specs (default: dags/specs)")
    common.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")

    p = rsub.add_parser("retrain", parents=[common], help="snapshot, validate, train, gate, deploy")
    p.add_argument("--model", required=True, help="model name (its spec's `name`)")
    p.add_argument("--reason", default="manual run from the CLI", help="kept in the audit trail")
    p.add_argument(
        "--force-deploy", action="store_true", help="skip only the champion comparison (audited)"
    )
    p.set_defaults(func=cmd_run_retrain)
    p = rsub.add_parser("monitor", parents=[common], help="check drift and apply the policy")
    p.add_argument("--model", required=True, help="model name (its spec's `name`)")
    p.add_argument("--retrain", action="store_true", help="retrain now if the policy says so")
    p.set_defaults(func=cmd_run_monitor)

    p = add("serve", cmd_serve, "run the prediction service (every model's production version)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--spec-dir", help="directory of model specs (default: dags/specs)")
    p.add_argument(
        "--poll-seconds",
        type=float,
        default=2.0,
        help="how often to check the production aliases for a new version",
    )
    fb = add("feedback", lambda _a: 2, "delayed labels for logged predictions")
    fsub = fb.add_subparsers(dest="feedback_cmd", required=True, metavar="ACTION")
    p = fsub.add_parser("import", parents=[common], help="import labels from CSV or Parquet")
    p.add_argument("file", help="a file with request_id, label and optionally row columns")
    p.add_argument("--model", required=True, help="model the labels belong to")
    p.set_defaults(func=cmd_feedback_import)

    demo = add("demo", cmd_demo, "run the whole loop on generated data (or a part of it)")
    demo.add_argument("--spec-dir", help="directory of model specs (default: dags/specs)")
    demo.add_argument("--rows", type=int, default=1500, help="rows per daily batch")
    dsub = demo.add_subparsers(dest="demo_step", metavar="STEP")
    p = dsub.add_parser("seed", parents=[common], help="write stable daily demo batches")
    p.add_argument("--days", type=int, default=14, help="days of batches, ending yesterday")
    p.add_argument("--rows", type=int, default=1500, help="rows per daily batch")
    p.set_defaults(func=cmd_demo_seed)
    p = dsub.add_parser("drift", parents=[common], help="append drifted (or broken) batches")
    p.add_argument(
        "--scenario",
        default="covariate_shift",
        choices=synthetic.SCENARIOS,
        help="what goes wrong in the new batches",
    )
    p.add_argument("--days", type=int, default=2, help="days of batches after the newest one")
    p.add_argument("--rows", type=int, default=1500, help="rows per daily batch")
    p.set_defaults(func=cmd_demo_drift)
    p = dsub.add_parser(
        "traffic",
        parents=[common],
        help="send generated requests and labels to the prediction service",
    )
    p.add_argument("--url", default="http://127.0.0.1:8000", help="the prediction service")
    p.add_argument("--model", default="credit_default", help="model to send requests to")
    p.add_argument(
        "--scenario",
        default="stable",
        choices=synthetic.SCENARIOS,
        help="how the generated customers look",
    )
    p.add_argument("--rows", type=int, default=2000, help="rows to send in all")
    p.add_argument("--batch", type=int, default=50, help="rows per request")
    p.add_argument("--seed", type=int, default=11, help="seed of the generated rows")
    p.add_argument("--no-labels", action="store_true", help="do not send the true labels")
    p.set_defaults(func=cmd_demo_traffic)
