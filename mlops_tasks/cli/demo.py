"""`mlops demo ...`: the whole loop on generated data, or one part of it."""

from __future__ import annotations

import argparse
from datetime import UTC, date, datetime, timedelta
from typing import Any

from mlops_tasks.cli import registry_cmds
from mlops_tasks.cli.base import Parser, Session
from mlops_tasks.cli.run_cmds import context, run_retrain
from mlops_tasks.data import synthetic
from mlops_tasks.errors import GateFailed


def _drift_start(days: int) -> date:
    """Drifted batches end today, inside the monitor's window whatever ran before (a day
    that holds data gets them as a further part). They used to follow the newest batch, so
    a second `demo drift` wrote days in the future that no monitor looked at yet."""
    return date.today() - timedelta(days=days - 1)


def _write(s: Session, start: date, days: int, rows: int, scenario: str) -> list[str]:
    return synthetic.write_batches(
        synthetic.DEMO_SOURCE,
        start=start,
        days=days,
        rows_per_day=rows,
        scenario=scenario,
        store=s.store,
    )


def cmd_demo_seed(s: Session) -> int:
    days = s.args.days
    uris = _write(s, date.today() - timedelta(days=days), days, s.args.rows, "stable")
    s.out(uris, lambda u: f"wrote {len(u)} stable daily batches under {s.store.uri}/demo/")
    return 0


def cmd_demo_drift(s: Session) -> int:
    start = _drift_start(s.args.days)
    uris = _write(s, start, s.args.days, s.args.rows, s.args.scenario)
    s.out(uris, lambda u: f"wrote {len(u)} {s.args.scenario} batch(es) from {start}")
    return 0


def cmd_demo_reset(s: Session) -> int:
    """Undo `demo drift`: replace every demo batch with stable ones ending yesterday.

    The registry, its audit trail, production and the data-contract verdicts are kept, so
    the next monitor compares production with clean data again.
    """
    from mlops_tasks.data.datasets import list_batches

    st, batches = list_batches(synthetic.DEMO_SOURCE, s.store)
    for _day, key in batches:
        st.delete(key)
    days = s.args.days
    uris = _write(s, date.today() - timedelta(days=days), days, s.args.rows, "stable")
    s.out(
        {"removed": len(batches), "written": uris},
        lambda r: (
            f"removed {r['removed']} demo batch(es) and wrote {len(uris)} stable ones under "
            f"{s.store.uri}/demo/; the registry is unchanged"
        ),
    )
    return 0


def cmd_demo(s: Session) -> int:
    """The whole loop in one process: seed, v1, drift, detect, retrain, v2, audit.

    The monitor runs at logical times after v1's promotion (past the cooldown), the way a
    scheduled monitor would an hour later; every time printed is that logical time.
    """
    from mlops_tasks.flow.flows import DECIDE, DEPLOY, MONITOR, REQUEST, TRAIN, run_flow
    from mlops_tasks.records import Trigger

    spec = s.spec("credit_default")
    s.say(f"store: {s.store.uri}")
    _write(s, date.today() - timedelta(days=14), 14, s.args.rows, "stable")
    s.say(f"wrote 14 stable daily batches under {s.store.uri}/demo/")
    first = run_retrain(s, context(s, spec, "retrain", Trigger("cli", s.actor, "demo: v1")), True)
    trained = first[TRAIN]
    s.say(f"v{trained.version} trained and promoted: {_metrics(trained.metrics)}")
    start = _drift_start(2)
    _write(s, start, 2, s.args.rows, "covariate_shift")
    s.say(f"wrote 2 covariate_shift batches from {start}")
    later = datetime.now(UTC) + timedelta(hours=spec.drift.cooldown_hours, minutes=1)
    monitor = Trigger("cli", s.actor, "demo monitor")
    ahead = round((later - datetime.now(UTC)).total_seconds() / 60)
    s.say(
        f"monitor at logical time {later:%H:%M} UTC, {ahead} min ahead of the clock (simulated, "
        f"past the {spec.drift.cooldown_hours} h cooldown):"
    )
    run = run_flow(MONITOR, context(s, spec, "monitor", monitor, when=later))
    decision = run[DECIDE]
    s.say(f"  {decision.decision}: {decision.reason}")
    if request := run.get(REQUEST):
        ctx = context(s, spec, "retrain", Trigger.from_request(request), when=later)
        try:
            second = run_retrain(s, ctx, True)
            s.say(f"v{second[DEPLOY].version} promoted after drift")
        except GateFailed as err:
            s.say(f"retrained candidate rejected: {err}")
    again_at = later + timedelta(minutes=1)
    again = run_flow(MONITOR, context(s, spec, "monitor", monitor, when=again_at))
    verdict = again[DECIDE]
    s.say(
        f"monitor again at logical time {again_at:%H:%M} UTC (simulated): "
        f"{verdict.decision}: {verdict.reason}\n"
    )
    if not s.args.json:
        shown = Session(argparse.Namespace(**{**vars(s.args), "model": spec.name}), s.settings)
        registry_cmds.cmd_versions(shown)
        print()
        registry_cmds.cmd_audit(
            Session(
                argparse.Namespace(**{**vars(shown.args), "action": None, "limit": None}),
                s.settings,
            )
        )
    return 0


def _metrics(metrics: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.3f}" for k, v in metrics.items() if v is not None)


def cmd_demo_traffic(s: Session) -> int:
    """Send generated requests (and their labels) to a running prediction service."""
    from mlops_tasks.service_client import ServiceClient, send_traffic

    spec = s.spec(s.args.model)
    frame = synthetic.generate_day(date.today(), s.args.rows, s.args.scenario, seed=s.args.seed)
    client = ServiceClient(s.args.url, api_token=s.settings.serving_client_token)
    res = send_traffic(client, spec, frame, batch=s.args.batch, labels=not s.args.no_labels)
    served = ", v".join(map(str, res["versions"]))
    s.out(
        res,
        lambda r: (
            f"sent {r['rows']} {s.args.scenario} rows to {s.args.url} (served by "
            f"v{served}); {r['labels']} labels"
        ),
    )
    return 0


def register(parser: Parser) -> None:
    demo = parser.add("demo", cmd_demo, "run the whole loop on generated data (or a part of it)")
    demo.add_argument("--rows", type=int, default=1500, help="rows per daily batch")
    steps = demo.add_subparsers(dest="demo_step", metavar="STEP")
    p = parser.add("seed", cmd_demo_seed, "write stable daily demo batches", steps)
    p.add_argument("--days", type=int, default=14, help="days of batches, ending yesterday")
    p.add_argument("--rows", type=int, default=1500, help="rows per daily batch")
    p = parser.add(
        "reset", cmd_demo_reset, "replace every demo batch with stable ones (undo drift)", steps
    )
    p.add_argument("--days", type=int, default=14, help="days of batches, ending yesterday")
    p.add_argument("--rows", type=int, default=1500, help="rows per daily batch")
    p = parser.add("drift", cmd_demo_drift, "append drifted (or broken) batches", steps)
    p.add_argument(
        "--scenario",
        default="covariate_shift",
        choices=synthetic.SCENARIOS,
        help="what goes wrong in the new batches",
    )
    p.add_argument("--days", type=int, default=2, help="days of batches, ending today")
    p.add_argument("--rows", type=int, default=1500, help="rows per daily batch")
    p = parser.add(
        "traffic", cmd_demo_traffic, "send generated requests and labels to the service", steps
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
