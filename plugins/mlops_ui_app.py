"""The Models view: a FastAPI app mounted by `mlops_ui.MlopsUiPlugin` under `/mlops`.

Server-rendered HTML, every value escaped. Every route needs an Airflow user (the UI's session
cookie or a bearer token, checked by Airflow's own `get_user`) and asks Airflow's auth manager
whether that user may read (GET) the model's retrain DAG; actions need more:

* trigger a retrain: may trigger (POST a run of) `<model>_retrain`; the run is created by
  Airflow's REST API called with the user's own token, so Airflow checks it once more;
* promote / roll back: may trigger `mlops_change_production` (the DAG that does the same); the
  change goes through the registry's audited path with the user as actor;
* approve / reject a waiting candidate: may answer `<model>_retrain`'s required actions; the
  answer goes through Airflow's REST API, like the UI's own Required Actions page.

Reports are served from the store (local or S3) by key, never by file path: only
`reports/<model>/<run>/<file>.html|json` can be named (`mlops_tasks.overview.report_key`), and
a local store's report is read only when neither it nor a folder above it is a symbolic link.

This module imports FastAPI and Airflow's API server; `plugins/.airflowignore` keeps Airflow's
plugin loader (which imports every file of plugins/ in schedulers, DAG processors and task
processes) from importing it. The API server imports it on the first request under `/mlops`.
"""

from __future__ import annotations

import functools
import logging
import re
import urllib.parse
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import httpx
from airflow.api_fastapi.app import get_auth_manager
from airflow.api_fastapi.auth.managers.base_auth_manager import COOKIE_NAME_JWT_TOKEN
from airflow.api_fastapi.auth.managers.models.base_user import BaseUser
from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails
from airflow.api_fastapi.core_api.security import get_user
from airflow.configuration import conf
from fastapi import Depends, FastAPI, Form, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from mlops_tasks import overview
from mlops_tasks.errors import IntegrityError, MlopsError, NotFoundError, SpecError
from mlops_tasks.flow.flows import APPROVAL, PROMOTE_ASK
from mlops_tasks.records import ModelVersion
from mlops_tasks.reports import esc, fields, line_chart, page, table, text
from mlops_tasks.settings import Settings
from mlops_tasks.specs import load_specs, spec_files
from mlops_tasks.storage import ArtifactStore

log = logging.getLogger(__name__)
#: What a person answers at a retrain's approval step (`flows.APPROVAL`).
ASK = PROMOTE_ASK

PREFIX = "/mlops"
CHANGE_DAG = "mlops_change_production"

app = FastAPI(title="Models", docs_url=None, redoc_url=None, openapi_url=None)
User = Annotated[BaseUser, Depends(get_user)]

_EXTRA_STYLE = """<style>
nav.top{margin-bottom:1rem;font-size:.9rem}nav.top a{margin-right:1rem}
form.action{display:inline-block;margin:.3rem 1rem .3rem 0;padding:.5rem .7rem;
border:1px solid #d0d7de;border-radius:6px;background:#f6f8fa}
form.action input[type=text]{width:18rem}form.action input[type=number]{width:4rem}
.flash{border-left:.3rem solid #1a7f37;background:#dafbe1;padding:.5rem .8rem}
.error{border-left:.3rem solid #cf222e;background:#ffebe9;padding:.5rem .8rem}
button{font:inherit;padding:.3rem .9rem;border:1px solid #d0d7de;border-radius:6px;
background:#fff;color:#24292f;cursor:pointer}button:hover{background:#f3f4f6}
button.primary{background:#0969da;border-color:#0969da;color:#fff}
button.primary:hover{background:#0860ca}
select,input[type=text],input[type=search]{font:inherit;padding:.25rem .4rem;
border:1px solid #d0d7de;border-radius:6px}pre{white-space:pre-wrap;margin:.3rem 0}
</style>"""


# Settings, store and the API server's own REST API ------------------------------------------
@functools.cache
def settings() -> Settings:
    return Settings.from_env()


@functools.cache
def store() -> ArtifactStore:
    """The deployment's store, opened on first use (nothing is read at import)."""
    s = settings()
    if s.store_uri.startswith("s3://") and s.aws_conn_id:
        from mlops_airflow import open_store  # the tasks' connection handling

        return open_store(s)
    return s.open_store()


def api_base() -> str:
    base = conf.get("api", "base_url", fallback="") or ""
    if not base.startswith("http"):
        base = f"http://127.0.0.1:{conf.get('api', 'port', fallback='8080')}"
    return base.rstrip("/")


def _bearer(request: Request) -> str | None:
    """The token of an `Authorization: Bearer` header (a script), else None (a browser with
    the session cookie); Airflow's `get_user` takes the header first in the same way."""
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    return credentials if scheme.lower() == "bearer" and credentials else None


def _token(request: Request) -> str:
    """The credential this request came with, to call Airflow's REST API as the same user."""
    return _bearer(request) or request.cookies.get(COOKIE_NAME_JWT_TOKEN, "")


def airflow_api(request: Request, method: str, path: str, body: Any = None) -> httpx.Response:
    """Airflow's REST API, called with the requesting user's own token."""
    with httpx.Client(timeout=30) as client:
        return client.request(
            method,
            f"{api_base()}{path}",
            json=body,
            headers={"Authorization": f"Bearer {_token(request)}"},
        )


# Authorization --------------------------------------------------------------------------------
#: What a model name looks like (a spec's `name`); anything else names no model.
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,99}")


def retrain_dag(model: str) -> str:
    """The DAG whose permissions stand for the model's (404 for a name no model can have)."""
    if not _MODEL_NAME.fullmatch(model):
        raise HTTPException(404, "no such model")
    return f"{model}_retrain"


def allowed(
    user: BaseUser, dag_id: str, method: str = "GET", entity: DagAccessEntity | None = None
) -> bool:
    return bool(
        get_auth_manager().is_authorized_dag(
            method=method,  # type: ignore[arg-type]
            access_entity=entity,
            details=DagDetails(id=dag_id),
            user=user,
        )
    )


def require(
    user: BaseUser, dag_id: str, method: str = "GET", entity: DagAccessEntity | None = None
) -> None:
    if not allowed(user, dag_id, method, entity):
        what = {"GET": "read", "POST": "trigger", "PUT": "change"}.get(method, method)
        raise HTTPException(403, f"{user.get_name()} may not {what} {dag_id}")


def same_origin(request: Request) -> None:
    """Refuse a change another site's page asked for.

    A browser sends the session cookie with a form posted from anywhere, so a post the cookie
    authenticates must say where it comes from: its Origin, or where a browser sends none its
    Referer (the view's pages send it: `Referrer-Policy: same-origin`), must name this host.
    A request with a bearer token (a script) may send neither: no other site's page can add
    that header. Whichever is sent must match, whatever authenticates the request.
    """
    source = request.headers.get("origin") or request.headers.get("referer")
    if source is None:
        if _bearer(request) is None:
            raise HTTPException(
                403, "a form post without Origin or Referer is refused (send it from the view)"
            )
        return
    if urllib.parse.urlsplit(source).netloc.lower() != request.url.netloc.lower():
        raise HTTPException(403, "cross-site form post refused")


def reason_of(reason: str) -> str:
    reason = reason.strip()
    if not 3 <= len(reason) <= 500:
        raise HTTPException(400, "a reason (comment) of 3 to 500 characters is required")
    return reason


# HTML ----------------------------------------------------------------------------------------
def q(segment: str) -> str:
    return urllib.parse.quote(segment, safe="")


def a(href: str, label: Any, top: bool = False) -> str:
    """A link to a URL built here (never one taken from data); `top`: a page of Airflow's UI,
    opened by Airflow's router when the view is inside Airflow's frame (static/models.js)."""
    target = ' target="_top" data-top' if top else ""
    return f'<a href="{esc(href)}"{target}>{esc(label)}</a>'


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def model_url(model: str) -> str:
    return f"{PREFIX}/models/{q(model)}"


def served_url(key: str) -> str:
    """The route serving the report at store key `reports/...`."""
    return f"{PREFIX}/reports/{urllib.parse.quote(key.removeprefix('reports/'))}"


def _tone_span(good: bool, label: Any) -> str:
    return f'<span class="{"pass" if good else "fail"}">{esc(label)}</span>'


def report_href(uri: str | None) -> str | None:
    path = overview.report_path(uri, store().uri)
    return f"{PREFIX}/reports/{urllib.parse.quote(path)}" if path else None


def run_link(dag_id: str, run_id: str | None) -> str:
    if not run_id:
        return ""
    return a(f"/dags/{q(dag_id)}/runs/{q(run_id)}", run_id, top=True)


#: The Models view's pages run no script but static/models.js, load nothing from elsewhere,
#: post forms only to this origin and may be framed only by Airflow's UI.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'self'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
_SCRIPT = f'<script src="{PREFIX}/static/models.js" defer></script>'
_STATIC = Path(__file__).resolve().parent / "mlops_ui_static"


def html_page(
    title: str, sections: list[tuple[str, str]], note: str = "", status_code: int = 200
) -> HTMLResponse:
    nav = (
        f'<nav class="top">{a(PREFIX + "/models", "All models")}'
        f"{a('/', 'Airflow home', top=True)}</nav>"
    )
    body = page(title, [("", nav + note), *sections])
    body = body.replace("</head>", _EXTRA_STYLE + _SCRIPT + "</head>", 1).replace("<h2></h2>", "")
    return HTMLResponse(body, status_code=status_code, headers=PAGE_HEADERS)


@app.get("/static/models.js", include_in_schema=False)
def script(user: User) -> Response:
    """The view's one script (sorting, filtering, links into Airflow's UI)."""
    return Response(
        (_STATIC / "models.js").read_bytes(),
        media_type="text/javascript",
        headers={"Cache-Control": "private, max-age=300", "X-Content-Type-Options": "nosniff"},
    )


@app.exception_handler(HTTPException)
async def _http_error(request: Request, err: HTTPException) -> Response:
    detail = esc(err.detail)
    if err.status_code == 401:
        login = f"/auth/login?next={q(str(request.url))}"
        if request.method == "GET" and "text/html" in request.headers.get("accept", ""):
            return RedirectResponse(login, status_code=303)  # a browser: to Airflow's login
        detail += f" ({a(login, 'log in to Airflow', top=True)})"
    body = page(f"{err.status_code}", [("", f'<p class="error">{detail}</p>')])
    headers = {**PAGE_HEADERS, **(err.headers or {})}
    return HTMLResponse(body, status_code=err.status_code, headers=headers)


def store_error(model: str, err: MlopsError) -> HTMLResponse:
    """A model whose stored objects cannot be read: say which and why, as a page."""
    code = 404 if isinstance(err, NotFoundError) else 422
    body = (
        f'<p class="error">The store holds data for {esc(model)} that cannot be read: '
        f"{esc(err)}</p><p>Nothing was changed. <code>mlops verify {esc(model)}</code> "
        "checks the registry and says how to repair it.</p>"
    )
    response = html_page(f"{model}: cannot show this model", [("What is wrong", body)])
    response.status_code = code
    return response


# Pages ---------------------------------------------------------------------------------------
def spec_names() -> list[str]:
    return [p.stem for p in spec_files(settings().spec_dir)]


def spec_errors() -> dict[str, SpecError]:
    """The spec files that do not load, by model name (the file's stem): their models have no
    DAGs, so nothing schedules or monitors them until the file is fixed."""
    _, errors = load_specs(settings().spec_dir)
    return {Path(err.context.get("file", "")).stem: err for err in errors}


def _spec_error_note(err: SpecError) -> str:
    return (
        '<div class="error"><p><b>This model\'s spec file does not load</b>: Airflow has no DAG '
        "for it, so it is neither retrained nor monitored until the file is fixed (the other "
        "models are not affected). Airflow lists the same under Browse &rarr; DAG Import Errors."
        f"</p><pre>{esc(err)}</pre></div>"
    )


def pending_approvals(request: Request, dag_id: str = "~") -> list[dict[str, Any]]:
    """Required actions of retrain runs nobody answered yet (as the user may see them)."""
    r = airflow_api(
        request,
        "GET",
        f"/api/v2/dags/{q(dag_id)}/dagRuns/~/hitlDetails?response_received=false&limit=100",
    )
    if r.status_code != 200:
        log.warning("models view: hitlDetails answered %s", r.status_code)
        return []
    return [
        d
        for d in r.json().get("hitl_details", [])
        if d["task_instance"]["dag_id"].endswith("_retrain")
    ]


def _check_cell(check: dict[str, Any] | None) -> str:
    if not check:
        return "none yet"
    share = check.get("drifted_share")
    shown = "" if share is None else f", {share:.0%} of columns drifted"
    tone = "fail" if check.get("decision") in ("retrain", "escalate") else "neutral"
    return (
        f"{esc((check.get('decided_for') or check.get('at') or '')[:16])}: "
        f'<span class="{tone}">{esc(check.get("decision"))}</span>{esc(shown)}'
    )


def _trigger_cell(v: ModelVersion | None) -> str:
    if v is None:
        return "no version yet"
    t = v.triggered_by
    who = f" by {t.user}" if t.user else ""
    return (
        f"{a(model_url(v.name) + f'#v{v.version}', f'v{v.version}')} {esc(v.created_at[:16])}: "
        f"{esc(t.kind)}{esc(who)}, {esc(t.reason or 'no reason given')}"
    )


@app.get("/", include_in_schema=False)
def index() -> RedirectResponse:
    """`/mlops/` leads to the Models view (it reveals nothing: the view asks for a login)."""
    return RedirectResponse(f"{PREFIX}/models", status_code=307)


@app.get("/models", response_class=HTMLResponse)
def models_page(request: Request, user: User) -> HTMLResponse:
    names = [
        n
        for n in overview.model_names(store(), spec_names())
        if _MODEL_NAME.fullmatch(n) and allowed(user, retrain_dag(n))
    ]
    waiting: dict[str, int] = {}
    for d in pending_approvals(request):
        model = d["task_instance"]["dag_id"].removesuffix("_retrain")
        waiting[model] = waiting.get(model, 0) + 1
    broken = spec_errors()
    rows = []
    for name in names:
        if name in broken:
            rows.append(
                f"<tr><td>{a(model_url(name), name)}</td>"
                f'<td colspan="5" class="fail">spec invalid, not scheduled: '
                f"<pre>{esc(broken[name])}</pre></td></tr>"
            )
            continue
        s = overview.summary(store(), name)
        if s.error:
            rows.append(
                f"<tr><td>{a(model_url(name), name)}</td>"
                f'<td colspan="5" class="fail">cannot read: {esc(s.error)}</td></tr>'
            )
            continue
        held = len(s.quarantined)
        rows.append(
            "<tr>"
            f"<td>{a(model_url(name), name)}</td>"
            f'<td data-sort="{s.production or 0}">'
            f"{esc(f'v{s.production}' if s.production else 'none')} "
            f'<span class="note">({plural(s.versions, "version")})</span></td>'
            f"<td>{_trigger_cell(s.last_version)}</td>"
            f"<td>{_check_cell(s.last_check)}</td>"
            f"<td{' class=fail' if held else ''}>{held}</td>"
            f"<td{' class=fail' if waiting.get(name) else ''}>{waiting.get(name, 0)}</td>"
            "</tr>"
        )
    head = "".join(
        f"<th>{h}</th>"
        for h in (
            "model",
            "production",
            "last retrain and its trigger",
            "last drift check and decision",
            "quarantined batches",
            "pending approvals",
        )
    )
    listing = (
        f'<p><input type="search" data-filter="models" placeholder="Search models" '
        f'aria-label="search models"> <span class="note">{plural(len(rows), "model")}; '
        "click a column head to sort</span></p>"
        f'<table id="models" data-sort><tr>{head}</tr>{"".join(rows)}</table>'
        if rows
        else "<p>No models.</p>"
    )
    return html_page(
        "Models",
        [("", listing)],
        note=f'<p class="note">Signed in to Airflow as {esc(user.get_name())}.</p>',
    )


def _run_cell(model: str, v: ModelVersion) -> str:
    """The Airflow run that trained `v`, linked; a run of the CLI is not Airflow's."""
    run_id = v.triggered_by.run_id or v.run_id
    if v.triggered_by.run_type is None:
        return f"<code>{esc(run_id)}</code> (not an Airflow run)" if run_id else ""
    return run_link(retrain_dag(model), run_id)


def _search_cell(v: ModelVersion) -> str:
    """The search that chose a version's params, in one line (the model card lists every
    trial)."""
    found = v.search
    assert found is not None
    best = found.trials[found.best]
    params = ", ".join(
        f"{k}={val:.4g}" if isinstance(val, float) else f"{k}={val}"
        for k, val in found.best_params.items()
    )
    return (
        f"{esc(found.method)}, {len(found.trials)} trials over {len(found.folds)} "
        f"{esc(found.cv)} folds: best {esc(found.metric)} {esc(best.mean)} ({esc(params)})"
    )


def _versions_table(model: str, versions: list[ModelVersion]) -> str:
    rows = []
    for v in reversed(versions):
        ev = v.evaluation or {}
        decision = ev.get("decision") or {}
        gate = ""
        if decision:
            checks = decision.get("checks", [])
            lines = "".join(
                f"<li>{_tone_span(bool(c.get('passed')), c.get('detail'))}</li>" for c in checks
            )
            passed = bool(decision.get("passed"))
            failed = sum(not c.get("passed") for c in checks)
            counted = f"{plural(len(checks), 'check')}" + (f", {failed} failed" if failed else "")
            gate = (
                f"<details><summary>{_tone_span(passed, 'passed' if passed else 'failed')} "
                f'<span class="note">{esc(counted)}</span></summary><ul>{lines}</ul></details>'
            )
        report = report_href(ev.get("report_uri"))
        metrics = "<br>".join(f"{esc(k)}: {esc(val)}" for k, val in v.metrics.items())
        t = v.triggered_by
        trigger = f"{esc(t.kind)}{esc(f' by {t.user}' if t.user else '')}: {esc(t.reason)}"
        if t.drift is not None:
            drift = report_href(t.drift.report_uri)
            trigger += " (" + (a(drift, "drift report") if drift else "drift report") + ")"
        lineage = fields(
            [
                (
                    "dataset",
                    f"<code>{esc(v.dataset.train[:16])}</code> {v.dataset.rows} rows"
                    + (
                        f" ({v.dataset.out_of_scope} out of scope, "
                        f"{v.dataset.unlabelled} unlabelled left out)"
                        if v.dataset.out_of_scope or v.dataset.unlabelled
                        else ""
                    ),
                ),
                *(
                    [("threshold", f"{v.threshold.value:.4g} ({esc(v.threshold.rule)})")]
                    if v.threshold is not None
                    else []
                ),
                *([("search", _search_cell(v))] if v.search is not None else []),
                ("spec", f"<code>{esc(v.spec_hash[:16])}</code>"),
                (
                    "code",
                    f"{esc(v.code_version.get('package'))} git "
                    f"<code>{esc((v.code_version.get('git_sha') or '-')[:12])}</code>",
                ),
                ("trigger", trigger),
                ("run", _run_cell(model, v)),
            ]
        )
        status_tone = {"production": "pass", "rejected": "fail"}.get(v.status, "neutral")
        rows.append(
            f'<tr id="v{v.version}"><td>v{v.version}</td>'
            f'<td class="{status_tone}">{esc(v.status)}</td>'
            f"<td>{metrics}</td><td>{gate}</td><td>{lineage}</td>"
            f"<td>{a(report, 'model card') if report else ''}</td></tr>"
        )
    head = "".join(
        f"<th>{h}</th>" for h in ("version", "status", "metrics", "gate", "lineage", "report")
    )
    if not rows:
        return "<p>No versions.</p>"
    return (
        f'<p><input type="search" data-filter="versions" placeholder="Search versions" '
        f'aria-label="search versions"></p>'
        f'<table id="versions" data-sort><tr>{head}</tr>{"".join(rows)}</table>'
    )


def _charts(versions: list[ModelVersion]) -> str:
    tones = {"production": "pass", "rejected": "fail"}
    primary = versions[-1].primary_metric if versions else "primary metric"
    metric = line_chart(
        f"{primary} across versions",
        [
            (
                f"v{v.version}",
                ((v.evaluation or {}).get("metrics") or v.metrics).get(v.primary_metric),
                tones.get(v.status),
            )
            for v in versions
        ],
    )
    return f"<h3>{esc(primary)} across versions</h3>{metric}"


#: Checks the drift dashboard looks back over.
DASHBOARD_CHECKS = 30


def _when(check: dict[str, Any]) -> str:
    return str(check.get("decided_for") or check.get("at") or "")[:16].replace("T", " ")


def _drift_dashboard(model: str, checks: list[dict[str, Any]]) -> str:
    """The last checks over time: drifted share, live performance where labels arrived, and
    which columns drifted how often (the signature of a recurring drift)."""
    recent = checks[-DASHBOARD_CHECKS:]
    if not recent:
        return "<p><em>no drift checks yet</em></p>"
    tone = {True: "fail", False: "neutral"}
    share = line_chart(
        "drifted share of columns across checks",
        [
            (_when(c)[5:], c.get("drifted_share"), tone[bool(c.get("drift_detected"))])
            for c in recent
        ],
        bounds=(0.0, 1.0),
    )
    perf = [c.get("performance") or {} for c in recent]
    metric = next((p.get("metric") for p in perf if p.get("current") is not None), None)
    performance = ""
    if metric:
        performance = f"<h3>{esc(metric)} on labelled traffic</h3>" + line_chart(
            f"{metric} on labelled traffic across checks",
            [
                (_when(c)[5:], p.get("current"), tone[bool(p.get("drift_detected"))])
                for c, p in zip(recent, perf, strict=True)
            ],
        )
    columns: dict[str, list[dict[str, Any]]] = {}
    for c in recent:
        for col in c.get("drifted_columns") or []:
            columns.setdefault(str(col), []).append(c)
    rows = "".join(
        f'<tr><td>{esc(col)}</td><td data-sort="{len(hits)}">{len(hits)} of {len(recent)}</td>'
        f"<td>{esc(_when(hits[-1]))}</td><td>"
        + (a(href, "report") if (href := report_href(hits[-1].get("report_uri"))) else "")
        + "</td></tr>"
        for col, hits in sorted(columns.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    )
    table_ = (
        "<table data-sort><tr><th>column</th><th>drifted in</th><th>last drifted</th>"
        f"<th>last report</th></tr>{rows}</table>"
        if rows
        else "<p><em>no column drifted in these checks</em></p>"
    )
    return (
        f'<p class="note">The last {plural(len(recent), "check")} of {esc(model)}, oldest first.'
        f"</p><h3>Drifted share of columns</h3>{share}{performance}"
        f"<h3>Columns that drifted</h3>{table_}"
    )


def _actions(model: str, user: BaseUser, versions: list[ModelVersion]) -> str:
    can_retrain = allowed(user, retrain_dag(model), "POST", DagAccessEntity.RUN)
    can_change = allowed(user, CHANGE_DAG, "POST", DagAccessEntity.RUN)
    if not (can_retrain or can_change):
        return f"<p class='note'>{esc(user.get_name())} may only read this model.</p>"
    base = model_url(model)
    reason = (
        '<input type="text" name="reason" required minlength="3" maxlength="500" '
        'placeholder="reason (audited)">'
    )
    out = ""
    if can_retrain:
        out += (
            f'<form class="action" method="post" action="{base}/retrain">'
            f'<b>Retrain</b> {reason} <button type="submit">Trigger</button></form>'
        )
    if can_change:
        out += _change_forms(model, versions, reason)
    return out


def _change_forms(model: str, versions: list[ModelVersion], reason: str) -> str:
    """Promote and roll back; each names its target and leads to a confirmation first, and
    carries the production version the page showed, so a form sent twice changes it once."""
    from mlops_tasks.registry import Registry

    reg = Registry(store())
    alias = reg.production_alias(model)
    current = alias.version if alias else None
    expected = f'<input type="hidden" name="expected" value="{esc(current or "")}">'
    base = model_url(model)
    options = "".join(
        f'<option value="{v.version}">v{v.version}</option>'
        for v in sorted(versions, key=lambda v: -v.version)
        if v.version != current
    )
    out = (
        f'<form class="action" method="post" action="{base}/promote"><b>Promote</b> '
        f'<select name="version" aria-label="version to promote">{options}</select> {reason}'
        f'{expected} <button type="submit">Review promotion</button></form>'
    )
    if current is None:
        return out
    default = reg.rollback_target(model)
    earlier = []
    for h in reversed(alias.history if alias else ()):
        if h.version != current and h.version not in earlier:
            earlier.append(h.version)
    if not earlier:
        return out + '<p class="note">No earlier production version to roll back to.</p>'
    choices = "".join(
        f'<option value="{n}"{" selected" if n == default else ""}>v{n}'
        f"{' (previous production)' if n == default else ''}</option>"
        for n in earlier
    )
    return out + (
        f'<form class="action" method="post" action="{base}/rollback"><b>Roll back</b> '
        f"v{esc(current)} to "
        f'<select name="version" aria-label="version to roll back to">{choices}</select> '
        f'{reason}{expected} <button type="submit">Review rollback</button></form>'
    )


def _confirm_page(
    model: str, action: str, version: int, current: int | None, reason: str
) -> HTMLResponse:
    """What the change will do, and one button that does it (nothing changed yet)."""
    now = f"v{current}" if current else "no version"
    verb = {"promote": "Promote", "rollback": "Roll back"}[action]
    hidden = "".join(
        f'<input type="hidden" name="{k}" value="{esc(v)}">'
        for k, v in (
            ("version", version),
            ("reason", reason),
            ("expected", current or ""),
            ("confirm", "yes"),
        )
    )
    body = (
        f"<p>{esc(verb)} <b>{esc(model)}</b>: production goes from {esc(now)} to "
        f"<b>v{esc(version)}</b>. The prediction service follows within seconds.</p>"
        f"<p>Reason (kept in the audit trail): {esc(reason)}</p>"
        f'<form class="action" method="post" action="{model_url(model)}/{action}">{hidden}'
        f'<button type="submit" class="primary">{esc(verb)} to v{esc(version)}</button> '
        f"{a(model_url(model), 'Cancel')}</form>"
    )
    return html_page(f"{model}: {verb.lower()} to v{version}?", [("Confirm", body)])


#: Seconds a required action must have waited before the page offers to answer it.
SETTLE_SECONDS = 10


def _seconds_waiting(detail: dict[str, Any]) -> float:
    try:
        since = datetime.fromisoformat(str(detail.get("created_at")).replace("Z", "+00:00"))
    except ValueError:
        return SETTLE_SECONDS
    return (datetime.now(UTC) - since).total_seconds()


def _approvals(model: str, waiting: list[dict[str, Any]]) -> str:
    if not waiting:
        return "<p><em>none</em></p>"
    out = ""
    for d in waiting:
        ti = d["task_instance"]
        run_id = ti["dag_run_id"]
        report = f"{PREFIX}/runs/{q(model)}/{q(run_id)}/{q(ASK.report_of or '')}"
        buttons = (
            f'<form class="action" method="post" '
            f'action="{model_url(model)}/approvals/{q(run_id)}">'
            '<input type="text" name="comment" required minlength="3" maxlength="500" '
            'placeholder="comment (audited)" aria-label="comment"> '
            f'<button type="submit" name="option" value="{esc(ASK.approve)}" class="primary">'
            f"{esc(ASK.approve)}</button> "
            f'<button type="submit" name="option" value="{esc(ASK.reject)}">'
            f"{esc(ASK.reject)}</button></form>"
        )
        if _seconds_waiting(d) < SETTLE_SECONDS:
            # Airflow 3.3.2 loses an answer sent in the first seconds of the wait.
            buttons = '<p class="note">It has just started waiting: reload in a few seconds.</p>'
        out += (
            f'<div class="callout"><b>{esc(d.get("subject"))}</b> '
            f"(run {run_link(ti['dag_id'], run_id)}, waiting since "
            f"{esc((d.get('created_at') or '')[:16])}) {a(report, 'model card')}<br>"
            f"{buttons}</div>"
        )
    return out


def _audit_rows(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for e in reversed(events):
        change = ""
        if e.get("to_version") is not None:
            change = f"v{e.get('from_version') or '-'} → v{e['to_version']}"
        rows.append(
            {
                "at": (e.get("at") or "")[:19],
                "action": e.get("action"),
                "actor": e.get("actor"),
                "change": change,
                "reason": e.get("reason"),
            }
        )
    return rows


def _report_list(model: str, keys: list[str]) -> str:
    if not keys:
        return "<p><em>none</em></p>"
    items = "".join(
        f"<li>{a(served_url(k), k.removeprefix(f'reports/{model}/'))}</li>" for k in keys
    )
    return f'<p class="note">Newest run first.</p><ul>{items}</ul>'


@app.get("/models/{model}", response_class=HTMLResponse)
def model_page(request: Request, model: str, user: User, done: str = "") -> HTMLResponse:
    require(user, retrain_dag(model))
    broken = spec_errors().get(model)
    try:
        d = overview.detail(store(), model)
    except MlopsError as err:
        if broken is not None and isinstance(err, NotFoundError):  # nothing stored yet
            return html_page(
                f"{model}: not scheduled", [("What is wrong", _spec_error_note(broken))]
            )
        return store_error(model, err)
    from mlops_tasks.monitor.policy import check_flag

    waiting = pending_approvals(request, retrain_dag(model))
    checks = [
        {
            "as_of": (c.get("decided_for") or c.get("at") or "")[:16],
            "decision": c.get("decision"),
            "drifted": c.get("drift_detected"),
            "share": c.get("drifted_share"),
            "rows": c.get("current_rows"),
            "reason": (c.get("reasons") or [""])[0],
            "flag": check_flag(c) or "",
        }
        for c in reversed(d.checks)
    ]
    held = [
        {
            "day": qb.get("day"),
            "batch": qb.get("batch"),
            "state": f"released by {qb['released']['by']}" if qb.get("released") else "quarantined",
            "failures": ", ".join(f.get("expectation", "") for f in qb.get("failures", [])[:3]),
        }
        for qb in d.quarantined
    ]
    unreadable = "".join(
        f'<p class="error">v{n} cannot be read: {esc(msg)}</p>' for n, msg in d.unreadable
    )
    note = f'<p class="flash">{esc(done)}</p>' if done else ""
    note += (
        "<p>DAGs: "
        + " · ".join(
            a(f"/dags/{q(f'{model}_{flow}')}", f"{model}_{flow}", top=True)
            for flow in ("retrain", "monitor")
        )
        + "</p>"
    )
    if broken is not None:
        note += _spec_error_note(broken)
    prod = f"v{d.production}" if d.production else "none"
    return html_page(
        f"{model} (production: {prod})",
        [
            ("Pending approvals", _approvals(model, waiting)),
            ("Actions", _actions(model, user, d.versions)),
            ("Charts", _charts(d.versions)),
            ("Drift over time", _drift_dashboard(model, d.checks)),
            (
                "Versions",
                unreadable
                + _compare_form(model, d.versions, d.production)
                + _versions_table(model, d.versions),
            ),
            ("Drift checks", table(checks)),
            ("Quarantined batches", table(held)),
            ("Audit trail", table(_audit_rows(d.audit))),
            ("Reports", _report_list(model, d.reports)),
        ],
        note=note,
    )


def _compare_form(model: str, versions: list[ModelVersion], production: int | None) -> str:
    if len(versions) < 2:
        return "<p><em>one version: nothing to compare yet</em></p>"
    numbers = [v.version for v in reversed(versions)]
    left = production or numbers[1]
    right = next(n for n in numbers if n != left)

    def select(name: str, chosen: int) -> str:
        options = "".join(
            f'<option value="{n}"{" selected" if n == chosen else ""}>v{n}'
            f"{' (production)' if n == production else ''}</option>"
            for n in numbers
        )
        return f'<select name="{name}" aria-label="version {name}">{options}</select>'

    return (
        f'<form class="action" method="get" action="{model_url(model)}/compare">'
        f"<b>Compare</b> {select('a', left)} with {select('b', right)} "
        '<button type="submit">Compare</button></form>'
    )


@app.get("/models/{model}/compare", response_class=HTMLResponse)
def compare(model: str, user: User, a_: Annotated[int, Query(alias="a")], b: int) -> HTMLResponse:
    """Two versions side by side: metrics (with which is better), gate, parameters, data,
    spec and code, as MLflow's run comparison shows them."""
    from mlops_tasks.registry import Registry
    from mlops_tasks.specs import METRICS

    require(user, retrain_dag(model))
    reg = Registry(store())
    try:
        left, right = reg.get_version(model, a_), reg.get_version(model, b)
    except MlopsError as err:
        return store_error(model, err)
    higher = METRICS.get(left.task, {})

    def metric_row(name: str) -> str:
        x, y = left.metrics.get(name), right.metrics.get(name)
        if isinstance(x, int | float) and isinstance(y, int | float):
            better = (y > x) == higher.get(name, True) if y != x else None
            change = {True: "pass", False: "fail", None: "neutral"}[better]
            delta = f'<span class="{change}">{y - x:+.4g}</span>'
        else:
            delta = ""
        return f"<tr><td>{esc(name)}</td><td>{esc(x)}</td><td>{esc(y)}</td><td>{delta}</td></tr>"

    def gate(v: ModelVersion) -> str:
        decision = (v.evaluation or {}).get("decision") or {}
        if not decision:
            return "not evaluated"
        return "passed" if decision.get("passed") else "failed"

    def same(x: Any, y: Any) -> str:
        return "<td></td>" if x == y else '<td class="fail">differs</td>'

    facts = [
        ("status", left.status, right.status),
        ("created", left.created_at[:19], right.created_at[:19]),
        ("trigger", left.triggered_by.kind, right.triggered_by.kind),
        ("gate", gate(left), gate(right)),
        ("estimator", left.estimator, right.estimator),
        ("parameters", left.params, right.params),
        ("training rows", left.dataset.rows, right.dataset.rows),
        ("dataset", left.dataset.train[:16], right.dataset.train[:16]),
        ("spec", left.spec_hash[:16], right.spec_hash[:16]),
        ("code", left.code_version.get("git_sha"), right.code_version.get("git_sha")),
    ]
    rows = "".join(
        f"<tr><td>{esc(k)}</td><td>{esc(x)}</td><td>{esc(y)}</td>{same(x, y)}</tr>"
        for k, x, y in facts
    )
    names = sorted(set(left.metrics) | set(right.metrics))
    head = f"<tr><th></th><th>v{left.version}</th><th>v{right.version}</th><th></th></tr>"
    return html_page(
        f"{model}: v{left.version} and v{right.version}",
        [
            (
                "Metrics",
                f"<table>{head}{''.join(metric_row(n) for n in names)}</table>"
                f'<p class="note">The last column: v{right.version} minus v{left.version}, '
                "green where it is better.</p>",
            ),
            ("Version", f"<table>{head}{rows}</table>"),
        ],
        note=f"<p>{a(model_url(model), f'Back to {model}')}</p>",
    )


# Reports ---------------------------------------------------------------------------------------
_REPORT_HEADERS = {
    # A report is a page of the store's content. Evidently's pages draw with inline scripts:
    # they may run, but sandboxed (an origin of their own: no Airflow cookie, no API) and with
    # nothing loaded from anywhere.
    "Content-Security-Policy": (
        "sandbox allow-scripts; default-src 'none'; script-src 'unsafe-inline'; "
        "style-src 'unsafe-inline'; img-src data:; font-src data:"
    ),
    "X-Content-Type-Options": "nosniff",
}


@app.get("/reports/{path:path}")
def report(path: str, user: User) -> Response:
    key = overview.report_key(path)
    if key is None:
        raise HTTPException(404, "no such report")
    require(user, retrain_dag(path.split("/", 1)[0]))
    try:
        # Never through a link: one planted in a local store's folder would serve any file the
        # API server may read (its secrets, /etc/passwd) to whoever may read the model.
        data = store().get_bytes(key, no_symlinks=True)
    except NotFoundError:
        raise HTTPException(404, "no such report") from None
    except IntegrityError as err:
        log.warning("models view: report %s refused: %s", key, err)
        raise HTTPException(404, "no such report") from None
    media = "text/html; charset=utf-8" if key.endswith(".html") else "application/json"
    return Response(data, media_type=media, headers=_REPORT_HEADERS)


@app.get("/runs/{model}/{run_id}/{step}")
def step_report(model: str, run_id: str, step: str, user: User) -> Response:
    """Where a task's extra link points: the report that step of that run left."""
    require(user, retrain_dag(model))
    key = overview.step_report(store(), model, run_id, step)
    if key is None:
        raise HTTPException(404, f"{step} of run {run_id} left no report (yet)")
    return RedirectResponse(served_url(key), 303)


# Actions ---------------------------------------------------------------------------------------
def _done(model: str, message: str) -> RedirectResponse:
    return RedirectResponse(f"{model_url(model)}?done={q(message)}", 303)


@app.post("/models/{model}/retrain")
def retrain(
    request: Request, model: str, user: User, reason: Annotated[str, Form()] = ""
) -> Response:
    same_origin(request)
    require(user, retrain_dag(model), "POST", DagAccessEntity.RUN)
    why = reason_of(reason)
    r = airflow_api(
        request,
        "POST",
        f"/api/v2/dags/{q(retrain_dag(model))}/dagRuns",
        {"logical_date": None, "conf": {"reason": why}},
    )
    if r.status_code != 200:
        raise HTTPException(r.status_code, f"Airflow refused the run: {r.text[:300]}")
    run_id = r.json()["dag_run_id"]
    from mlops_tasks.registry import Registry

    Registry(store()).record_event(
        model,
        "retrain_request",
        actor=user.get_name(),
        reason=why,
        details={"run_id": run_id, "via": "models view"},
    )
    return _done(model, f"retrain run {run_id} triggered")


def _change(
    model: str,
    user: BaseUser,
    action: str,
    version: int | None,
    reason: str,
    expected: str = "",
    confirm: str = "",
) -> Response:
    """Promote or roll back: a confirmation page first, then (`confirm=yes`) the change, made
    only while production is still the version the page showed (`expected`)."""
    from mlops_tasks.model.deployment import change_production
    from mlops_tasks.registry import Registry

    retrain_dag(model)  # a model's name, not a path
    require(user, CHANGE_DAG, "POST", DagAccessEntity.RUN)
    why = reason_of(reason)
    seen = _version_field(expected, "expected")
    reg = Registry(store())
    try:
        if confirm != "yes":
            current = reg.alias(model)
            target = version if version is not None else reg.rollback_target(model)
            if target is None:
                raise HTTPException(409, f"{model} has no earlier production version")
            return _confirm_page(model, action, target, current, why)
        result = change_production(reg, model, action, version, why, user.get_name(), seen)
    except MlopsError as err:
        raise HTTPException(409, f"{action} refused: {err}") from None
    return _done(model, f"{action}: production is v{result.version}")


def _version_field(value: str, name: str) -> int | None:
    """An optional version number sent by a form ('' for none)."""
    if not value.strip():
        return None
    if not value.strip().isdigit() or not 1 <= int(value) <= 10**9:
        raise HTTPException(400, f"{name}: a version number is required")
    return int(value)


@app.post("/models/{model}/promote")
def promote(
    request: Request,
    model: str,
    user: User,
    version: Annotated[int, Form()],
    reason: Annotated[str, Form()] = "",
    expected: Annotated[str, Form()] = "",
    confirm: Annotated[str, Form()] = "",
) -> Response:
    same_origin(request)
    return _change(model, user, "promote", version, reason, expected, confirm)


@app.post("/models/{model}/rollback")
def rollback(
    request: Request,
    model: str,
    user: User,
    reason: Annotated[str, Form()] = "",
    version: Annotated[str, Form()] = "",
    expected: Annotated[str, Form()] = "",
    confirm: Annotated[str, Form()] = "",
) -> Response:
    same_origin(request)
    to = _version_field(version, "version")
    return _change(model, user, "rollback", to, reason, expected, confirm)


@app.post("/models/{model}/approvals/{run_id}")
def answer(
    request: Request,
    model: str,
    run_id: str,
    user: User,
    option: Annotated[str, Form()],
    comment: Annotated[str, Form()] = "",
) -> Response:
    same_origin(request)
    if option not in ASK.options:
        raise HTTPException(400, f"answer {ASK.approve} or {ASK.reject}")
    require(user, retrain_dag(model), "PUT", DagAccessEntity.HITL_DETAIL)
    why = reason_of(comment)
    path = (
        f"/api/v2/dags/{q(retrain_dag(model))}/dagRuns/{q(run_id)}"
        f"/taskInstances/{q(APPROVAL.name)}/-1/hitlDetails"
    )
    answer = {"chosen_options": [option], "params_input": {"comment": why}}
    r = airflow_api(request, "PATCH", path, answer)
    if r.status_code != 200:
        raise HTTPException(r.status_code, f"Airflow refused the answer: {r.text[:300]}")
    verb = "approved" if option == ASK.approve else "rejected"
    return _done(model, f"{verb} run {run_id} ({text(r.json().get('chosen_options'))})")
