"""Registry commands: models, versions, show, audit, checks, promote, rollback, verify,
repair-alias, sign, keygen, clean-temporaries, validate-spec."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_tasks import errors
from mlops_tasks.cli.base import Parser, Session, short, table

if TYPE_CHECKING:
    from mlops_tasks.records import ModelVersion, SearchResult


def _primary(v: ModelVersion) -> str:
    value = v.metrics.get(v.primary_metric)
    return f"{v.primary_metric}={value:.4f}" if value is not None else ""


def cmd_models(s: Session) -> int:
    rows = []
    for m in s.registry.models():
        nums = s.registry.version_numbers(m)
        rows.append(
            {
                "model": m,
                "versions": len(nums),
                "latest": nums[-1] if nums else None,
                "production": s.registry.alias(m),
            }
        )
    s.out(rows, lambda r: table(r, ["model", "versions", "latest", "production"]))
    return 0


def cmd_versions(s: Session) -> int:
    versions = s.registry.versions(s.args.model)
    rows = [
        {
            "version": v.version,
            "status": v.status,
            "metric": _primary(v),
            "trigger": v.triggered_by.kind,
            "dataset": v.dataset.train[:12],
            "created_at": v.created_at,
        }
        for v in versions
    ]
    cols = ["version", "status", "metric", "trigger", "dataset", "created_at"]
    s.out(rows, lambda r: table(r, cols, f"{s.args.model}: no versions yet"))
    return 0


def cmd_show(s: Session) -> int:
    version = s.registry.get_version(s.args.model, s.args.version)
    s.out(version.to_json(), lambda _d: summary(version, s.report_link))
    return 0


def summary(m: ModelVersion, link: Callable[[str | None], str | None] = lambda u: u) -> str:
    """A person's view of one version: status, lineage, metrics and the gate decision, with
    each report as `link` gives it (the Models view's URL, or the store URI)."""
    trig, ds = m.triggered_by, m.dataset
    ev = m.evaluation or {}
    decision = ev.get("decision") or {}
    metrics = ", ".join(
        f"{k}={v:.4f}" if v is not None else f"{k}=n/a" for k, v in m.metrics.items()
    )
    lines = [
        f"{m.name} v{m.version}  [{m.status}]",
        f"  created      {m.created_at} by {m.created_by}",
        f"  trigger      {trig.kind}"
        + (f" by {trig.user}" if trig.user else "")
        + (f": {short(trig.reason, 70)}" if trig.reason else ""),
        f"  run          {m.run_id or '-'}",
        f"  model        {m.custom.class_path if m.custom else m.estimator} {m.params} "
        f"seed={m.seed}"
        + (f" class_weight={m.class_weight}" if m.class_weight is not None else ""),
        f"  dataset      {ds.train} ({ds.rows} rows, {ds.split} split, {ds.holdout_rows} holdout)"
        + (
            f"; left out: {ds.out_of_scope} out of scope, {ds.unlabelled} unlabelled"
            if ds.out_of_scope or ds.unlabelled
            else ""
        ),
        f"  spec         {m.spec_hash}",
        f"  code         {m.code_version.get('package')} "
        f"git {m.code_version.get('git_sha') or '-'}",
        f"  artifact     sha256 {m.model_sha256}",
        *([f"  trusts       {', '.join(m.custom.types)}"] if m.custom else []),
        *(
            [
                f"  brought      {m.external.file} by {m.external.brought_by}: trained "
                "elsewhere, scored and gated here (`mlops reproduce` cannot rebuild it)"
            ]
            if m.external
            else []
        ),
        f"  metrics      {metrics}",
    ]
    if m.threshold is not None:
        lines.append(f"  threshold    {m.threshold.value:.4g} ({m.threshold.rule})")
    if m.search is not None:
        lines += _search_lines(m.search)
    if trig.drift:
        lines.append(f"  drift report {link(trig.drift.report_uri)}")
    if decision:
        verdict = "passed" if decision.get("passed") else "FAILED"
        lines.append(f"  gate         {verdict}: {decision.get('note')}")
        lines += [
            f"    {'ok  ' if c['passed'] else 'FAIL'} {c['detail']}"
            for c in decision.get("checks", [])
        ]
        lines.append(f"  report       {link(ev.get('report_uri'))}")
    lines.append("  (--json for the full metadata)")
    return "\n".join(lines)


#: How many of a search's trials `mlops show` lists (the model card and --json have all).
SHOWN_TRIALS = 5


def _params_text(params: dict[str, Any]) -> str:
    return ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()
    )


def _search_lines(found: SearchResult) -> list[str]:
    """The search that chose a version's params: how, the winner, and the best trials (as
    the model card numbers them: candidates in the order they were drawn)."""
    best = found.trials[found.best]
    failed = sum(t.error is not None for t in found.trials)
    lines = [
        f"  search       {found.method}, {len(found.trials)} trials by {found.metric} over "
        f"{len(found.folds)} {found.cv} folds"
        + (f" ({failed} failed)" if failed else "")
        + f": best {best.mean:.4f} with {_params_text(found.best_params)}"
    ]
    for i in found.ranked()[:SHOWN_TRIALS]:
        t = found.trials[i]
        score = "failed" if t.mean is None else f"{t.mean:.4f}"
        mark = "*" if i == found.best else " "
        where = f"candidate {t.candidate + 1:<3}" + (
            f" round {t.round + 1}" if found.method == "halving" else ""
        )
        lines.append(f"    {mark} {where}  {score:<7} {_params_text(t.params)}")
    if len(found.trials) > SHOWN_TRIALS:
        lines.append(f"      ... {len(found.trials) - SHOWN_TRIALS} more (--json, model card)")
    return lines


def _failure(failure: dict[str, Any]) -> str:
    """`expect_column_values_to_be_between` on `age` as `be_between(age)`: short enough for a
    table cell; the JSON output keeps the full records."""
    name = str(failure["expectation"])
    for prefix in ("expect_column_values_to_", "expect_column_", "expect_table_", "expect_"):
        name = name.removeprefix(prefix)
    return name + (f"({failure['column']})" if failure.get("column") else "")


def _lead(check: dict[str, Any], flag: str | None) -> str:
    """A check's first reason, and what it flags (which a `no drift` lead would hide)."""
    lead = (check.get("reasons") or [""])[0]
    return f"{lead}; {flag}" if flag else lead


def cmd_checks(s: Session) -> int:
    """Drift checks and their decisions, with the batches the data contract quarantined."""
    from mlops_tasks.data.contracts import quarantined
    from mlops_tasks.monitor.policy import check_flag, history

    checks: list[dict[str, Any]] = history(s.store, s.args.model, limit=s.args.limit)
    for q in quarantined(s.store, s.args.model):
        failed = ", ".join(_failure(f) for f in q["failures"][:3])
        if len(q["failures"]) > 3:
            failed += f" and {len(q['failures']) - 3} more"
        checks.append(
            {
                "kind": "quarantine",
                "at": q["quarantined_at"],
                "decided_for": q["day"],
                "decision": "released" if q["released"] else "quarantined",
                "current_rows": q["rows"],
                "reasons": [f"batch dt={q['day']} broke the data contract: {failed}"],
                "batch": q["batch"],
                "content_hash": q["content_hash"],
            }
        )
    checks.sort(key=lambda c: (c.get("decided_for") or c["at"], c["at"]))
    checks = checks[-s.args.limit :] if s.args.limit else checks
    rows = [
        {
            "as_of": (c.get("decided_for") or c["at"])[:19],
            "decision": c["decision"],
            "drifted": f"{c['drifted_share']:.0%}" if c.get("drifted_share") is not None else "",
            "rows": c.get("current_rows"),
            "reason": short(_lead(c, check_flag(c)), s.args.width),
        }
        for c in checks
    ]
    cols = ["as_of", "decision", "drifted", "rows", "reason"]
    none = f"{s.args.model}: no drift checks or quarantined batches yet"
    s.out(checks, lambda _c: table(rows, cols, none))
    return 0


def cmd_quarantine(s: Session) -> int:
    from mlops_tasks.data.contracts import quarantined

    held = quarantined(s.store, s.args.model)
    rows = [
        {
            "day": q["day"],
            "hash": q["content_hash"][:12],
            "rows": q["rows"],
            "state": f"released by {q['released']['by']}" if q["released"] else "quarantined",
            "batch": q["batch"],
            "failed": short(
                "; ".join(
                    f["expectation"] + (f" on {f['column']!r}" if f.get("column") else "")
                    for f in q["failures"]
                ),
                s.args.width,
            ),
        }
        for q in held
    ]
    columns = ["day", "hash", "rows", "state", "failed", "batch"]
    s.out(held, lambda _h: table(rows, columns, f"{s.args.model}: no quarantined batches"))
    return 0


def cmd_release_batch(s: Session) -> int:
    from mlops_tasks.data.contracts import release

    record = release(s.store, s.args.model, s.args.batch, actor=s.actor, reason=s.args.reason)
    s.out(record, lambda r: f"released batch {r['day']} ({r['content_hash'][:12]}): {r['batch']}")
    return 0


def cmd_promote(s: Session) -> int:
    res = s.registry.promote(
        s.args.model, s.args.version, reason=s.args.reason, actor=s.actor, force=s.args.force
    )
    s.out(
        res,
        lambda r: (
            f"{r['model']}: production is now v{r['version']}"
            + ("" if r["changed"] else " (unchanged)")
        ),
    )
    return 0


def cmd_rollback(s: Session) -> int:
    res = s.registry.rollback(s.args.model, to=s.args.to, reason=s.args.reason, actor=s.actor)
    s.out(
        res,
        lambda r: f"{r['model']}: production rolled back v{r.get('previous')} -> v{r['version']}",
    )
    return 0


def cmd_verify(s: Session) -> int:
    """Exit 0 when the model's registry is intact, else 5 with every problem found."""
    report = s.registry.verify(s.args.model)

    def text(r: dict[str, Any]) -> str:
        head = (
            f"{r['model']}: {r['events']} audit event(s), {r['versions']} version(s), "
            f"production v{r['production']}"
        )
        if r["legacy_events"]:
            head += f" ({r['legacy_events']} event(s) from before the hash chain, unchained)"
        signatures = r["signatures"]
        unchecked = (
            f"the store carries {signatures['found']} signature(s) that went unchecked: no "
            "signing key is configured (MLOPS_SIGNING_KEY)"
            if not signatures["checked"] and signatures["found"]
            else None
        )
        if not r["problems"]:
            if signatures["checked"]:
                return head + "\nok: audit chain, production alias, artifacts and signatures agree"
            ok = "ok: audit chain, production alias and artifacts agree"
            return (
                f"{head}\n{ok}; {unchecked}" if unchecked else f"{head}\n{ok} (nothing is signed)"
            )
        lines = [head, f"{len(r['problems'])} problem(s):", *(f"  - {p}" for p in r["problems"])]
        return "\n".join([*lines, unchecked] if unchecked else lines)

    s.out(report, text)
    return 0 if report.ok else errors.IntegrityError.exit_code


def cmd_repair_alias(s: Session) -> int:
    res = s.registry.repair_alias(
        s.args.model, to=s.args.to, reason=s.args.reason, actor=s.actor, force=s.args.force
    )
    s.out(res, lambda r: f"{r['model']}: production alias rewritten, production is v{r['version']}")
    return 0


def cmd_sign(s: Session) -> int:
    res = s.registry.sign(s.args.model, reason=s.args.reason, actor=s.actor, rotate=s.args.rotate)

    def text(r: dict[str, Any]) -> str:
        done = [f"v{v}" for v in r["versions"]] + (["the production alias"] if r["alias"] else [])
        done += [f"v{v} status" for v in r["statuses"]]
        done += [f"v{v} evaluation" for v in r["evaluations"]]
        done += ["the audit trail"] if r["audit_trail"] else []
        done += ["the audit head"] if r["audit_head"] else []
        lines = [f"{r['model']}: signed {', '.join(done)}"] if done else []
        rebound = r["rebound"]
        bound = [f"v{v}" for v in rebound["versions"]]
        bound += [f"v{v} status" for v in rebound["statuses"]]
        bound += [f"v{v} evaluation" for v in rebound["evaluations"]]
        if bound:
            lines.append(
                f"{r['model']}: re-signed bound to their model and version: {', '.join(bound)}"
            )
        if r["rotated"]:
            lines.append(f"{r['model']}: re-signed with the new key: {', '.join(r['rotated'])}")
        return "\n".join(lines) or f"{r['model']}: all signed"

    s.out(res, text)
    return 0


def cmd_keygen(s: Session) -> int:
    """A new Ed25519 key pair, or (--public) the public key of MLOPS_SIGNING_KEY."""
    from mlops_tasks import signing

    if s.args.public:
        if not s.settings.signing_key:
            raise errors.UsageError("--public: MLOPS_SIGNING_KEY is not set")
        public = signing.public_of(s.settings.signing_key, "MLOPS_SIGNING_KEY")
        s.out({"verify_key": public}, lambda r: f"MLOPS_VERIFY_KEYS={r['verify_key']}")
        return 0
    private, public = signing.generate()
    s.out(
        {"signing_key": private, "verify_key": public},
        lambda r: f"MLOPS_SIGNING_KEY={r['signing_key']}\nMLOPS_VERIFY_KEYS={r['verify_key']}",
    )
    return 0


def cmd_clean_temporaries(s: Session) -> int:
    """Remove the temporary files that writers killed mid-write left in a local store."""
    from mlops_tasks.storage import STALE_TEMPORARY_SECONDS

    older_than = s.args.older_than
    if older_than < 60:
        raise errors.UsageError(
            f"--older-than {older_than:g}: at least 60 seconds (default "
            f"{STALE_TEMPORARY_SECONDS:.0f}); a younger temporary file may be a live writer's"
        )
    removed = s.store.remove_stale_temporaries(older_than)
    s.out(
        {"store": s.store.uri, "removed": removed},
        lambda r: "\n".join(r["removed"]) or f"{r['store']}: no stale temporary files",
    )
    return 0


def _change(e: dict[str, Any]) -> str:
    a, b = e.get("from_version"), e.get("to_version")
    if a is None and b is None:
        return ""
    return f"v{a} -> v{b}" if a is not None else f"v{b}"


def cmd_audit(s: Session) -> int:
    events = s.registry.audit(s.args.model, action=s.args.action)
    if s.args.limit:
        events = events[-s.args.limit :]
    rows = [{**e, "change": _change(e), "reason": short(e.get("reason") or "")} for e in events]
    what = f"{s.args.action} events" if s.args.action else "audit events"
    none = f"{s.args.model}: no {what} yet"
    s.out(events, lambda _e: table(rows, ["at", "action", "actor", "change", "reason"], none))
    return 0


def _sample_text(sample: dict[str, Any] | None) -> str:
    if not sample:
        return ""
    return (
        f"; sample: {sample['rows']} of {sample['rows_read']} rows in scope and labelled "
        f"({sample['out_of_scope']} out of scope, {sample['unlabelled']} unlabelled)"
    )


def _check_sample(s: Session, spec: Any, sample: str) -> dict[str, Any]:
    """The spec against a real batch: its expressions evaluate, the columns it needs are
    there, and the batch passes the declared contract; with the rows the spec leaves out."""
    from mlops_tasks.data import datasets, joins, rows, validation

    try:
        if "://" in sample:
            frame = datasets.read_window(sample, s.store).frame
        else:
            path = Path(sample)
            frame = datasets.read_table_bytes(path.read_bytes(), path.name)
    except OSError as err:
        raise errors.UsageError(f"--sample {sample}: cannot read: {err.strerror}") from None
    joined, _ = joins.load(spec, s.store, None)  # the joined tables as they are now
    try:
        shaped = rows.shape(spec, frame, sample, joined)
    except rows.ShapeError as err:
        return {"rows_read": len(frame), "problems": [err.message]}
    missing = [c for c in spec.columns if c not in shaped.frame.columns]
    problems = [f"no column {c!r} in the batch (after data.derive)" for c in missing]
    if not missing:
        for failure in validation.check_contract(spec, shaped.frame):
            column = f" on {failure['column']!r}" if failure.get("column") else ""
            problems.append(f"contract: {failure['expectation']}{column} fails")
    return {
        "rows_read": shaped.rows_read,
        "out_of_scope": shaped.out_of_scope,
        "unlabelled": shaped.unlabelled,
        "rows": len(shaped.frame),
        "problems": problems,
    }


def _check_custom_estimator(s: Session, spec: Any) -> None:
    """A custom estimator imports, is one the platform can train, and its package is trusted
    here (`MLOPS_TRUSTED_PACKAGES`); a SpecError naming `model.class_path` otherwise."""
    from mlops_tasks.model.modelling import custom_class
    from mlops_tasks.specs import CUSTOM_ESTIMATOR

    if spec.model.estimator != CUSTOM_ESTIMATOR:
        return
    custom_class(spec)
    package = str(spec.model.class_path).split(".", 1)[0]
    if package not in s.settings.trusted_packages:
        raise errors.SpecError(
            f"{spec.name}: model.class_path: package {package!r} is not in "
            f"MLOPS_TRUSTED_PACKAGES ({', '.join(s.settings.trusted_packages) or 'not set'}); "
            "its models would be refused wherever they train or load",
            field="model.class_path",
        )


def cmd_validate_spec(s: Session) -> int:
    from mlops_tasks.specs import load_spec

    failed = 0
    results = []
    for f in s.args.files:
        try:
            spec = load_spec(f)
            if s.args.deep:
                from mlops_tasks.data.validation import declared_expectations

                declared_expectations(spec)  # resolves every extra GX expectation
                _check_custom_estimator(s, spec)
            result: dict[str, Any] = {
                "file": f,
                "ok": True,
                "model": spec.name,
                "spec_hash": spec.spec_hash(),
            }
            if s.args.sample:
                result["sample"] = _check_sample(s, spec, s.args.sample)
                if result["sample"]["problems"]:
                    failed += 1
                    result["ok"] = False
                    result["error"] = f"{f}: against {s.args.sample}:\n" + "\n".join(
                        f"  - {p}" for p in result["sample"]["problems"]
                    )
            results.append(result)
        except errors.SpecError as err:
            failed += 1
            text = str(err) if str(err).startswith(f) else f"{f}: {err}"
            results.append({"file": f, "ok": False, "error": text})
    s.out(
        results,
        lambda rs: "\n".join(
            (f"{r['file']}: OK ({r['model']})" + _sample_text(r.get("sample")))
            if r["ok"]
            else r["error"]
            for r in rs
        ),
    )
    return errors.SpecError.exit_code if failed else 0


def register(parser: Parser) -> None:
    model_help = "model name (its spec's `name`)"
    actor_help = "who (default: $MLOPS_ACTOR or the OS user)"
    parser.add("models", cmd_models, "list models with their version count and production version")
    p = parser.add("versions", cmd_versions, "list the versions of a model")
    p.add_argument("model", help=model_help)
    p = parser.add("show", cmd_show, "show one version's status, lineage, metrics and gate")
    p.add_argument("model", help=model_help)
    p.add_argument("version", type=int, help="version number")
    p = parser.add("promote", cmd_promote, "point the production alias at a version (audited)")
    p.add_argument("model", help=model_help)
    p.add_argument("version", type=int, help="version to put in production")
    p.add_argument("--reason", required=True, help="why (recorded in the audit trail)")
    p.add_argument("--actor", help=actor_help)
    p.add_argument(
        "--force",
        action="store_true",
        help="promote a candidate without a passed gate (never a rejected one); audited",
    )
    p = parser.add("rollback", cmd_rollback, "move production back (default: previous version)")
    p.add_argument("model", help=model_help)
    p.add_argument("--to", type=int, help="version to roll back to")
    p.add_argument("--reason", required=True, help="why (recorded in the audit trail)")
    p.add_argument("--actor", help=actor_help)
    p = parser.add(
        "verify",
        cmd_verify,
        "check the audit hash chain, the production alias and every artifact (exit 5 on a problem)",
    )
    p.add_argument("model", help=model_help)
    p = parser.add(
        "repair-alias",
        cmd_repair_alias,
        "rewrite a corrupt production alias from the audit trail (or --to N), audited",
    )
    p.add_argument("model", help=model_help)
    p.add_argument("--to", type=int, help="version to put in production (default: audit trail)")
    p.add_argument("--reason", required=True, help="why (recorded in the audit trail)")
    p.add_argument("--actor", help=actor_help)
    p.add_argument(
        "--force",
        action="store_true",
        help="with --to: a registered candidate without a passed gate (never a rejected one); "
        "audited",
    )
    p = parser.add(
        "sign",
        cmd_sign,
        "sign what was written before MLOPS_SIGNING_KEY was set (after a clean verify; audited)",
    )
    p.add_argument("model", help=model_help)
    p.add_argument(
        "--rotate",
        action="store_true",
        help="also re-sign with the current key what a key in MLOPS_SIGNING_PREVIOUS_KEYS signed",
    )
    p.add_argument("--reason", required=True, help="why (recorded in the audit trail)")
    p.add_argument("--actor", help=actor_help)
    p = parser.add(
        "keygen",
        cmd_keygen,
        "make an Ed25519 key pair: the private key signs (writers), the public key only checks "
        "(the prediction service); prints both as .env lines",
    )
    p.add_argument(
        "--public",
        action="store_true",
        help="print the public key of the Ed25519 key in MLOPS_SIGNING_KEY instead",
    )
    p = parser.add(
        "clean-temporaries",
        cmd_clean_temporaries,
        "remove temporary files that killed writers left in a local store (writes do it hourly)",
    )
    p.add_argument(
        "--older-than",
        type=float,
        default=3600.0,
        metavar="SECONDS",
        help="only files not modified for this long (default 3600, at least 60)",
    )
    p = parser.add("audit", cmd_audit, "show a model's audit trail, oldest first")
    p.add_argument("model", help=model_help)
    p.add_argument("--action", help="only events of this action (promote, rollback, ...)")
    p.add_argument("--limit", type=int, help="only the last N events")
    p = parser.add("checks", cmd_checks, "show a model's drift checks and retrain decisions")
    p.add_argument("model", help=model_help)
    p.add_argument("--limit", type=int, default=50, help="only the last N checks (default 50)")
    p.add_argument(
        "--width", type=int, default=120, help="characters of the reason shown (default 120)"
    )
    p = parser.add("quarantine", cmd_quarantine, "list the batches the data contract quarantined")
    p.add_argument("model", help=model_help)
    p.add_argument("--width", type=int, default=80, help="characters of the failures shown")
    p = parser.add(
        "release-batch",
        cmd_release_batch,
        "let a quarantined batch back into training and monitoring windows (audited)",
    )
    p.add_argument("model", help=model_help)
    p.add_argument("batch", help="the batch's date (YYYY-MM-DD) or content hash (8+ characters)")
    p.add_argument("--reason", required=True, help="why (recorded in the audit trail)")
    p.add_argument("--actor", help=actor_help)
    p = parser.add("validate-spec", cmd_validate_spec, "check model spec files against the schema")
    p.add_argument("files", nargs="+", metavar="FILE", help="spec file(s) to check")
    p.add_argument(
        "--sample",
        metavar="BATCH",
        help="also check the spec against a real batch (a .csv/.parquet file or a store URI): "
        "its expressions evaluate, its columns exist, the batch passes the contract",
    )
    p.add_argument(
        "--shallow",
        dest="deep",
        action="store_false",
        help="schema only; skip resolving the Great Expectations expectations and importing "
        "a custom estimator's class",
    )
