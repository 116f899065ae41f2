"""Evidence storage: JSON + a self-contained HTML page per report under `reports/`."""

from __future__ import annotations

import html
import re
from typing import Any

from mlops_tasks.storage import ArtifactStore, encode_json

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;max-width:72rem;color:#1f2328}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:1.6rem}
table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #d0d7de;padding:.3rem .6rem;
text-align:left;font-size:.9rem}th{background:#f6f8fa}.pass{color:#1a7f37;font-weight:600}
.fail{color:#cf222e;font-weight:600}code{background:#f6f8fa;padding:0 .2rem}
"""


def safe_run_id(run_id: str) -> str:
    """A run id usable as one key segment (Airflow run ids contain ':' and '+')."""
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", run_id)[:200]


def report_key(model: str, run_id: str, name: str) -> str:
    return f"reports/{model}/{safe_run_id(run_id)}/{name}"


def esc(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return html.escape("" if value is None else str(value))


def table(rows: list[dict[str, Any]], columns: list[str] | None = None) -> str:
    if not rows:
        return "<p><em>none</em></p>"
    columns = columns or list(rows[0])
    head = "".join(f"<th>{esc(c)}</th>" for c in columns)
    body = ""
    for r in rows:
        cells = []
        for c in columns:
            v = r.get(c)
            cls = ' class="pass"' if v is True else ' class="fail"' if v is False else ""
            cells.append(f"<td{cls}>{esc(v)}</td>")
        body += "<tr>" + "".join(cells) + "</tr>"
    return f"<table><tr>{head}</tr>{body}</table>"


def page(title: str, sections: list[tuple[str, str]]) -> str:
    parts = [f"<h2>{esc(h)}</h2>{content}" for h, content in sections]
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title>"
        f"<style>{_STYLE}</style></head><body><h1>{esc(title)}</h1>{''.join(parts)}</body></html>"
    )


def store_report(
    store: ArtifactStore,
    model: str,
    run_id: str,
    name: str,
    data: dict[str, Any],
    html_page: str | None = None,
) -> dict[str, str]:
    """Write `<name>.json` (and `<name>.html`); returns their URIs."""
    json_key = report_key(model, run_id, f"{name}.json")
    store.put_bytes(json_key, encode_json(data))
    out = {"json": store.uri_for(json_key)}
    if html_page is not None:
        html_key = report_key(model, run_id, f"{name}.html")
        store.put_bytes(html_key, html_page.encode())
        out["html"] = store.uri_for(html_key)
    return out
