"""Evidence storage: JSON + a self-contained HTML page per report under `reports/`.

Pages are read offline (from the store, attached to tickets), so everything a page shows is in
the file: charts are inline SVG drawn here, no script, no CDN. Every piece of text that comes from
data or people (column names, categories, reasons) goes through `esc`, and JSON embedded in a
script (Evidently's drift page) through `script_json`.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote, urlsplit

from mlops_tasks.records import Trigger
from mlops_tasks.storage import ArtifactStore, encode_json

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;max-width:72rem;color:#1f2328}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:1.6rem}h3{font-size:1rem;margin:1rem 0 .3rem}
table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #d0d7de;padding:.3rem .6rem;
text-align:left;font-size:.9rem;vertical-align:top}th{background:#f6f8fa}
.pass{color:#1a7f37;font-weight:600}.fail{color:#cf222e;font-weight:600}.neutral{color:#57606a}
code{background:#f6f8fa;padding:0 .2rem}.note{color:#57606a;font-size:.85rem}
.callout{border-left:.3rem solid #9a6700;background:#fff8c5;padding:.5rem .8rem;margin:.6rem 0}
.callout.fail{border-color:#cf222e;background:#ffebe9;font-weight:400;color:#1f2328}
svg.chart{display:block;margin:.4rem 0;font-size:11px;font-family:system-ui,sans-serif}
svg.chart text{fill:#1f2328}svg.chart .axis{stroke:#8c959f}
svg.chart .ref{fill:#8c959f}svg.chart .cur{fill:#0969da}svg.chart .bar{fill:#0969da}
svg.chart .bar.pass{fill:#1a7f37}svg.chart .bar.fail{fill:#cf222e}
svg.chart .bar.neutral{fill:#8c959f}svg.chart .line{fill:none;stroke:#0969da;stroke-width:2}
svg.chart circle{fill:#0969da}svg.chart circle.pass{fill:#1a7f37}
svg.chart circle.fail{fill:#cf222e}svg.chart circle.neutral{fill:#8c959f}
.legend span{display:inline-block;width:.8rem;height:.8rem;margin:0 .3rem 0 .8rem}
"""

#: What a boolean means in a column: a passed check is good news, a drifted column is bad news
#: and a column that did not drift is simply nothing to look at. Other booleans are neutral.
TONES: dict[str, dict[bool, str]] = {
    "passed": {True: "pass", False: "fail"},
    "success": {True: "pass", False: "fail"},
    "drifted": {True: "fail", False: "neutral"},
    "drift_detected": {True: "fail", False: "neutral"},
}

#: Schemes a report may link to; anything else (`javascript:`) is shown as text.
_LINKABLE = {"file", "s3", "http", "https"}


def safe_run_id(run_id: str) -> str:
    """A run id usable as one key segment (Airflow run ids contain ':' and '+')."""
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", run_id)[:200]


def report_key(model: str, run_id: str, name: str) -> str:
    return f"reports/{model}/{safe_run_id(run_id)}/{name}"


def text(value: Any) -> str:
    """A value as a person reads it: floats rounded, mappings as `key: value`, sequences
    comma-separated, nothing as empty (never a Python repr)."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {text(v)}" for k, v in value.items())
    if isinstance(value, list | tuple | set | frozenset):
        return ", ".join(text(v) for v in value)
    return str(value)


def esc(value: Any) -> str:
    """`text(value)`, escaped for HTML."""
    return html.escape(text(value))


#: What `script_json` rewrites: the characters that can end a <script> or open markup in it,
#: and the line separators older JavaScript parsers end a string at.
_SCRIPT_ESCAPES = {ord(c): f"\\u{ord(c):04x}" for c in "<>&\u2028\u2029"}


def script_json(json_text: str) -> str:
    """JSON text safe to embed in an HTML <script>: `<`, `>`, `&`, U+2028 and U+2029 as \\u
    escapes. JSON has these characters only inside strings, where the escape means the same
    character to the JSON or JavaScript parser, so the data is unchanged and no value (a
    category `</script><img onerror=...>`) can end the script."""
    return json_text.translate(_SCRIPT_ESCAPES)


def tone(column: str, value: Any) -> str | None:
    """The CSS class (pass, fail, neutral) a cell's value deserves, or None for non-booleans."""
    if not isinstance(value, bool):
        return None
    return TONES.get(column, {}).get(value, "neutral")


def link(uri: str | None, label: str | None = None) -> str:
    """An anchor to a report or run, or plain escaped text when the URI is not a safe link."""
    if not uri:
        return esc(label)
    shown = esc(label if label is not None else uri)
    if urlsplit(uri).scheme not in _LINKABLE:
        return shown
    return f'<a href="{html.escape(uri, quote=True)}">{shown}</a>'


#: `<model>/<run>/<file>` at the end of a report's URI in the store.
_REPORT_TAIL = re.compile(r"/reports/([^/?#]+/[^/?#]+/[^/?#]+\.(?:html|json))$")


def report_link(uri: str | None, label: str) -> str:
    """A link from one report to another in the same store, relative to the page (which lives
    at `reports/<model>/<run>/`): it works where the page is opened from disk or S3 and where
    the Models view serves it, unlike the store URI a browser will not follow from a web page."""
    match = _REPORT_TAIL.search(uri or "")
    if match is None:
        return link(uri, label)
    href = "../../" + "/".join(quote(part) for part in match.group(1).split("/"))
    return f'<a href="{html.escape(href, quote=True)}">{esc(label)}</a>'


def trigger_html(trigger: Trigger) -> str:
    """`drift: <reason>, run <id>, by <user>`, with the drift check's report linked."""
    parts = [f"{esc(trigger.kind)}: {esc(trigger.reason or 'no reason given')}"]
    if trigger.run_id:
        parts.append(f"run <code>{esc(trigger.run_id)}</code>")
    parts.append(f"by {esc(trigger.actor)}")
    out = ", ".join(parts)
    request = trigger.drift
    if request is not None:
        share = "" if request.drift_share is None else f"{request.drift_share:.0%} of columns, "
        cols = text(request.drifted_columns) or "no column"
        out += (
            f" ({report_link(request.report_uri, 'drift report')}: {esc(share)}drifted "
            f"{esc(cols)}; "
            f"monitor run <code>{esc(request.monitor_run_id)}</code>)"
        )
    return out


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
            cells.append(f"<td{_class(tone(c, v))}>{esc(v)}</td>")
        body += "<tr>" + "".join(cells) + "</tr>"
    return f"<table><tr>{head}</tr>{body}</table>"


def _class(name: str | None) -> str:
    return f' class="{name}"' if name else ""


def fields(items: Sequence[tuple[str, str]]) -> str:
    """A two-column table of labelled values; each value is HTML the caller already escaped."""
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{v}</td></tr>" for k, v in items)
    return f"<table>{rows}</table>"


def page(title: str, sections: list[tuple[str, str]]) -> str:
    parts = [f"<h2>{esc(h)}</h2>{content}" for h, content in sections]
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title>"
        f"<style>{_STYLE}</style></head><body><h1>{esc(title)}</h1>{''.join(parts)}</body></html>"
    )


# Charts: inline SVG, a few hundred bytes each -------------------------------------------------
_W = 640


def _num(x: float) -> str:
    return f"{x:.1f}"


def _short(label: str, limit: int) -> str:
    return label if len(label) <= limit else label[: limit - 1] + "…"


def _fmt(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"


def _svg(height: float, label: str, body: str) -> str:
    return (
        f'<svg class="chart" role="img" aria-label="{esc(label)}" width="{_W}" '
        f'height="{_num(height)}" viewBox="0 0 {_W} {_num(height)}" '
        f'xmlns="http://www.w3.org/2000/svg"><title>{esc(label)}</title>{body}</svg>'
    )


def bar_chart(label: str, bars: Sequence[tuple[str, float | None, str | None]]) -> str:
    """Horizontal bars (label, value, tone): values may be negative (a permutation importance
    below zero); a missing value is drawn as an empty row saying so."""
    if not bars:
        return "<p><em>nothing to plot</em></p>"
    values = [v for _, v, _ in bars if v is not None and math.isfinite(v)]
    lo, hi = min([0.0, *values]), max([0.0, *values])
    span = (hi - lo) or 1.0
    left, right, row = 200, 70, 20
    scale = (_W - left - right) / span
    zero = left + (0 - lo) * scale
    body = ""
    for i, (name, value, cls) in enumerate(bars):
        y = 4 + i * row
        body += (
            f'<text x="{left - 6}" y="{_num(y + 13)}" text-anchor="end">'
            f"<title>{esc(name)}</title>{esc(_short(name, 30))}</text>"
        )
        if value is None or not math.isfinite(value):
            body += f'<text x="{_num(zero + 4)}" y="{_num(y + 13)}" class="note">n/a</text>'
            continue
        x0, x1 = sorted((zero, zero + value * scale))
        body += (
            f'<rect class="bar{f" {cls}" if cls else ""}" x="{_num(x0)}" y="{y + 2}" '
            f'width="{_num(max(x1 - x0, 1))}" height="{row - 5}"><title>{esc(name)}: '
            f"{esc(_fmt(value))}</title></rect>"
            f'<text x="{_num(max(x1, zero) + 4)}" y="{_num(y + 13)}">{esc(_fmt(value))}</text>'
        )
    height = 8 + len(bars) * row
    body += f'<line class="axis" x1="{_num(zero)}" x2="{_num(zero)}" y1="2" y2="{height - 2}"/>'
    return _svg(height, label, body)


def histogram(
    label: str, bins: Sequence[str], reference: Sequence[float], current: Sequence[float]
) -> str:
    """Reference (grey) and current (blue) shares per bin, side by side."""
    top = max([*reference, *current, 1e-9])
    plot_h, base, left = 120, 130, 40
    step = (_W - left - 10) / max(len(bins), 1)
    bar_w = max(step / 2 - 1, 1)
    body = (
        f'<line class="axis" x1="{left}" x2="{_W - 10}" y1="{base}" y2="{base}"/>'
        f'<text x="{left - 4}" y="{base - plot_h + 8}" text-anchor="end">{top:.0%}</text>'
        f'<text x="{left - 4}" y="{base}" text-anchor="end">0</text>'
    )
    every = max(1, math.ceil(len(bins) / 12))  # at most ~12 tick labels
    for i, name in enumerate(bins):
        x = left + i * step
        for j, (cls, share) in enumerate((("ref", reference[i]), ("cur", current[i]))):
            h = plot_h * share / top
            who = "reference" if cls == "ref" else "current"
            body += (
                f'<rect class="{cls}" x="{_num(x + j * bar_w)}" y="{_num(base - h)}" '
                f'width="{_num(bar_w)}" height="{_num(h)}"><title>{esc(name)}: {who} '
                f"{share:.1%}</title></rect>"
            )
        if i % every == 0:
            tx = x + bar_w
            body += (
                f'<text x="{_num(tx)}" y="{base + 12}" text-anchor="end" '
                f'transform="rotate(-35 {_num(tx)} {base + 12})">{esc(_short(name, 16))}</text>'
            )
    return _svg(base + 70, label, body)


def legend() -> str:
    return (
        "<p class='legend note'><span style='background:#8c959f'></span>reference"
        "<span style='background:#0969da'></span>current</p>"
    )


def line_chart(
    label: str,
    points: Sequence[tuple[str, float | None, str | None]],
    bounds: tuple[float, float] | None = None,
) -> str:
    """Values in order (label, value, tone), e.g. a metric across versions; gaps stay gaps.

    `bounds` fixes the value axis (a share: 0 to 1); otherwise it spans the values."""
    known = [v for _, v, _ in points if v is not None and math.isfinite(v)]
    if not known:
        return "<p><em>nothing to plot</em></p>"
    if bounds is not None:
        lo, hi = min(bounds[0], *known), max(bounds[1], *known)
    else:
        lo, hi = min(known), max(known)
        pad = (hi - lo) * 0.1 or abs(hi) * 0.05 or 1.0
        lo, hi = lo - pad, hi + pad
    left, top, plot_h = 50, 10, 120
    step = (_W - left - 30) / max(len(points) - 1, 1)
    body = (
        f'<text x="{left - 4}" y="{top + 8}" text-anchor="end">{esc(_fmt(hi))}</text>'
        f'<text x="{left - 4}" y="{top + plot_h}" text-anchor="end">{esc(_fmt(lo))}</text>'
        f'<line class="axis" x1="{left}" x2="{_W - 20}" y1="{top + plot_h}" '
        f'y2="{top + plot_h}"/>'
    )
    segments: list[list[str]] = [[]]
    dots = ""
    # At most about ten axis labels, none repeated (every point keeps its label as a tooltip).
    every, shown = max(1, math.ceil(len(points) / 10)), None
    for i, (name, value, cls) in enumerate(points):
        x = left + i * step
        if (i % every == 0 or i == len(points) - 1) and name != shown:
            shown = name
            body += (
                f'<text x="{_num(x)}" y="{top + plot_h + 14}" text-anchor="middle">'
                f"{esc(_short(name, 11))}</text>"
            )
        if value is None or not math.isfinite(value):
            segments.append([])
            continue
        y = top + plot_h * (hi - value) / (hi - lo)
        segments[-1].append(f"{_num(x)},{_num(y)}")
        dots += (
            f'<circle{_class(cls)} cx="{_num(x)}" '
            f'cy="{_num(y)}" r="4"><title>{esc(name)}: {esc(_fmt(value))}</title></circle>'
        )
    lines = "".join(
        f'<polyline class="line" points="{" ".join(s)}"/>' for s in segments if len(s) > 1
    )
    return _svg(top + plot_h + 24, label, body + lines + dots)


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
