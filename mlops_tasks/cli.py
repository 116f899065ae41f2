"""`mlops`: inspect and change the registry, validate specs, run the pipeline.

Human-readable tables by default, `--json` for scripts. Exit codes: 0 success, 1 unexpected
error, 2 bad usage, and each MlopsError subclass has its own code (see `mlops --help`).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from mlops_tasks import errors
from mlops_tasks.errors import MlopsError

EXIT_CODES = "\n".join(
    f"  {cls.exit_code:>2}  {cls.__name__}: {(cls.__doc__ or '').strip().splitlines()[0]}"
    for cls in sorted(
        {c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, MlopsError)},
        key=lambda c: (c.exit_code, c.__name__),
    )
)


def _out(args: argparse.Namespace, data: Any, table: Callable[[Any], str]) -> None:
    if args.json:
        print(json.dumps(data, indent=2, sort_keys=True, default=str))
    else:
        print(table(data))


def _table(rows: list[dict[str, Any]], cols: list[str]) -> str:
    if not rows:
        return "(none)"
    cells = [[("" if r.get(c) is None else str(r.get(c))) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    line = "  ".join(c.upper().ljust(w) for c, w in zip(cols, widths, strict=True))
    body = ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join([line, *body])


def _registry(args: argparse.Namespace) -> Any:
    from mlops_tasks.registry import Registry
    from mlops_tasks.storage import open_store

    return Registry(open_store(args.store))


def _primary(meta: dict[str, Any]) -> str:
    metrics = meta.get("metrics") or {}
    name = meta.get("primary_metric")
    return f"{name}={metrics[name]:.4f}" if name in metrics else ""


def cmd_models(args: argparse.Namespace) -> int:
    reg = _registry(args)
    rows = []
    for m in reg.models():
        nums = reg.version_numbers(m)
        rows.append(
            {
                "model": m,
                "versions": len(nums),
                "latest": nums[-1] if nums else None,
                "production": reg.alias(m),
            }
        )
    _out(args, rows, lambda r: _table(r, ["model", "versions", "latest", "production"]))
    return 0


def cmd_versions(args: argparse.Namespace) -> int:
    reg = _registry(args)
    rows = [
        {
            "version": v["version"],
            "status": v["status"],
            "metric": _primary(v),
            "trigger": (v.get("triggered_by") or {}).get("kind"),
            "dataset": (v.get("dataset") or {}).get("train", "")[:12],
            "created_at": v.get("created_at"),
        }
        for v in reg.versions(args.model)
    ]
    if not rows and args.model not in reg.models():
        raise errors.NotFoundError(f"no model named {args.model!r} in {reg.store.uri}")
    _out(
        args,
        rows,
        lambda r: _table(r, ["version", "status", "metric", "trigger", "dataset", "created_at"]),
    )
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    meta = _registry(args).get_version(args.model, args.version)
    _out(args, meta, _summary)
    return 0


def _summary(m: dict[str, Any]) -> str:
    """A person's view of one version: status, lineage, metrics and the gate decision."""
    trig = m.get("triggered_by") or {}
    ds = m.get("dataset") or {}
    ev = m.get("evaluation") or {}
    decision = ev.get("decision") or {}
    lines = [
        f"{m['name']} v{m['version']}  [{m['status']}]",
        f"  created      {m.get('created_at')} by {m.get('created_by')}",
        f"  trigger      {trig.get('kind')}"
        + (f" by {trig['user']}" if trig.get("user") else "")
        + (f": {_short(trig.get('reason') or '', 70)}" if trig.get("reason") else ""),
        f"  airflow run  {m.get('airflow_run_id') or '-'}",
        f"  model        {m.get('estimator')} {m.get('params')} seed={m.get('seed')}",
        f"  dataset      {ds.get('train')} ({ds.get('rows')} rows, {ds.get('split')} split, "
        f"{ds.get('holdout_rows')} holdout)",
        f"  spec         {m.get('spec_hash')}",
        f"  code         {(m.get('code_version') or {}).get('package')} "
        f"git {(m.get('code_version') or {}).get('git_sha') or '-'}",
        f"  artifact     sha256 {m.get('model_sha256')}",
        "  metrics      " + ", ".join(f"{k}={v:.4f}" for k, v in (m.get("metrics") or {}).items()),
    ]
    if (drift := trig.get("drift")) and drift.get("report_uri"):
        lines.append(f"  drift report {drift['report_uri']}")
    if decision:
        verdict = "passed" if decision.get("passed") else "FAILED"
        lines.append(f"  gate         {verdict}: {decision.get('note')}")
        lines += [f"    {'ok  ' if c['passed'] else 'FAIL'} {c['detail']}"
                  for c in decision.get("checks", [])]  # fmt: skip
        lines.append(f"  report       {ev.get('report_uri')}")
    lines.append("  (--json for the full metadata)")
    return "\n".join(lines)


def cmd_checks(args: argparse.Namespace) -> int:
    from mlops_tasks.policy import history
    from mlops_tasks.storage import open_store

    checks = history(open_store(args.store), args.model, limit=args.limit)
    rows = [{"at": c["at"], "decision": c["decision"],
             "drifted": f"{c['drifted_share']:.0%}" if c.get("drifted_share") is not None else "",
             "rows": c.get("current_rows"), "reason": _short(c["reasons"][0] if c.get("reasons")
                                                             else "", 80)}
            for c in checks]  # fmt: skip
    _out(args, checks, lambda _c: _table(rows, ["at", "decision", "drifted", "rows", "reason"]))
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    res = _registry(args).promote(args.model, args.version, reason=args.reason, actor=args.actor)
    _out(
        args,
        res,
        lambda r: (
            f"{r['model']}: production is now v{r['version']}"
            + ("" if r["changed"] else " (unchanged)")
        ),
    )
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    res = _registry(args).rollback(args.model, to=args.to, reason=args.reason, actor=args.actor)
    _out(
        args,
        res,
        lambda r: f"{r['model']}: production rolled back v{r.get('previous')} -> v{r['version']}",
    )
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    events = _registry(args).audit(args.model, action=args.action)
    if args.limit:
        events = events[-args.limit :]
    rows = [{**e, "change": _change(e), "reason": _short(e.get("reason") or "")} for e in events]
    _out(args, events, lambda _e: _table(rows, ["at", "action", "actor", "change", "reason"]))
    return 0


def _short(text: str, width: int = 90) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def _change(e: dict[str, Any]) -> str:
    a, b = e.get("from_version"), e.get("to_version")
    if a is None and b is None:
        return ""
    return f"v{a} -> v{b}" if a is not None else f"v{b}"


def cmd_validate_spec(args: argparse.Namespace) -> int:
    from mlops_tasks.specs import load_spec

    failed = 0
    results = []
    for f in args.files:
        try:
            spec = load_spec(f)
            if args.deep:
                from mlops_tasks.validation import build_expectations

                build_expectations(spec, None)  # resolves every extra GX expectation
            results.append(
                {"file": f, "ok": True, "model": spec.name, "spec_hash": spec.spec_hash()}
            )
        except errors.SpecError as err:
            failed += 1
            text = str(err) if str(err).startswith(f) else f"{f}: {err}"
            results.append({"file": f, "ok": False, "error": text})
    _out(
        args,
        results,
        lambda rs: "\n".join(
            f"{r['file']}: OK ({r['model']})" if r["ok"] else r["error"] for r in rs
        ),
    )
    return errors.SpecError.exit_code if failed else 0


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--store", help="artifact store URI (default: $MLOPS_STORE or ./.mlops)")
    common.add_argument("--json", action="store_true", help="machine-readable JSON output")
    common.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")

    parser = argparse.ArgumentParser(
        prog="mlops",
        description="Drift-aware ML retraining platform: registry, specs and pipeline.",
        epilog=f"exit codes:\n   0  success\n   2  bad usage\n{EXIT_CODES}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func: Callable[[argparse.Namespace], int], help_: str) -> Any:
        p = sub.add_parser(name, help=help_, description=help_, parents=[common])
        p.set_defaults(func=func)
        return p

    model_help = "model name (its spec's `name`)"
    add("models", cmd_models, "list models with their version count and production version")
    p = add("versions", cmd_versions, "list the versions of a model")
    p.add_argument("model", help=model_help)
    p = add("show", cmd_show, "show one version's status, lineage, metrics and gate decision")
    p.add_argument("model", help=model_help)
    p.add_argument("version", type=int, help="version number")
    p = add("promote", cmd_promote, "point the production alias at a version (audited)")
    p.add_argument("model", help=model_help)
    p.add_argument("version", type=int, help="version to put in production")
    p.add_argument("--reason", required=True, help="why (recorded in the audit trail)")
    p.add_argument("--actor", help="who (default: $MLOPS_ACTOR or the OS user)")
    p = add("rollback", cmd_rollback, "move production back (default: the previous version)")
    p.add_argument("model", help=model_help)
    p.add_argument("--to", type=int, help="version to roll back to")
    p.add_argument("--reason", required=True, help="why (recorded in the audit trail)")
    p.add_argument("--actor", help="who (default: $MLOPS_ACTOR or the OS user)")
    p = add("audit", cmd_audit, "show a model's audit trail, oldest first")
    p.add_argument("model", help=model_help)
    p.add_argument("--action", help="only events of this action (promote, rollback, ...)")
    p.add_argument("--limit", type=int, help="only the last N events")
    p = add("checks", cmd_checks, "show a model's drift checks and retrain decisions")
    p.add_argument("model", help=model_help)
    p.add_argument("--limit", type=int, default=50, help="only the last N checks (default 50)")
    p = add("validate-spec", cmd_validate_spec, "check model spec files against the schema")
    p.add_argument("files", nargs="+", metavar="FILE", help="spec file(s) to check")
    p.add_argument(
        "--shallow",
        dest="deep",
        action="store_false",
        help="schema only; skip resolving the Great Expectations expectations",
    )
    _add_pipeline_commands(add)
    return parser


def _add_pipeline_commands(add: Any) -> None:
    """Commands that run the pipeline; registered by mlops_tasks.pipeline when it exists."""
    try:
        from mlops_tasks.pipeline import add_cli_commands
    except ImportError:
        return
    add_cli_commands(add)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        code: int = args.func(args)
        return code
    except MlopsError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
