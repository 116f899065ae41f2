"""A data batch cannot put markup or script into any stored report.

The batch's categories and one of its column names hold `</script><img src=x onerror=...>`
and similar; the batch goes through the full drift report (Evidently's page, kept when drift is
detected), the compact drift page, the validation report and the model card. Each stored page
is parsed as a browser would: every element and attribute must be one the page itself writes,
and Evidently's embedded data must still hold the values exactly. The drifted page also opens
with the project's summary of the check, above Evidently's report, which still draws.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlops_tasks.data import synthetic
from mlops_tasks.data.datasets import snapshot
from mlops_tasks.data.validation import validate
from mlops_tasks.errors import DataValidationError
from mlops_tasks.model.evaluation import evaluate_candidate
from mlops_tasks.model.training import train_candidate
from mlops_tasks.monitor import drift
from mlops_tasks.records import Reference, Trigger
from mlops_tasks.registry import Registry
from mlops_tasks.specs import ModelSpec, find_spec
from mlops_tasks.storage import LocalStore

SPEC_DIR = Path(__file__).resolve().parents[2] / "dags" / "specs"
#: Values that end a script, open an element or an attribute wherever they land unescaped.
PAYLOADS = (
    "</script><img src=x onerror=alert(1)>",
    "<svg onload=alert(2)>",
    "\"'><iframe srcdoc=x>",
    "&lt;b&gt;entity\u2028line",
)
#: A column name of the batch (a categorical feature) that is markup as well.
COLUMN = "</script><img src=x onerror=alert(3)>channel"
AS_OF = datetime(2026, 12, 7, 3, 10, tzinfo=UTC)


def hostile_spec() -> ModelSpec:
    """The demo spec with `channel` renamed to `COLUMN`, a quick model and small slices."""
    data = find_spec("credit_default", SPEC_DIR).model_dump(mode="json")
    cats = data["features"]["categorical"]
    cats[cats.index("channel")] = COLUMN
    data["evaluation"]["slices"] = ["region", COLUMN]
    data["evaluation"]["min_slice_rows"] = 40
    data["model"]["params"]["max_iter"] = 30
    return ModelSpec.model_validate(data)


def hostile(rows: int, seed: int, scenario: str = "stable", share: float = 0.3) -> pd.DataFrame:
    """Demo rows with `COLUMN` for `channel`; `share` of `region` and of `COLUMN` hold the
    payloads."""
    df = synthetic.demo_rows(rows, scenario, seed=seed).rename(columns={"channel": COLUMN})
    rng = np.random.default_rng(seed)
    for col in ("region", COLUMN):
        hit = rng.random(rows) < share
        df.loc[hit, col] = rng.choice(PAYLOADS, int(hit.sum()))
    return df


class Markup(HTMLParser):
    """Every element and attribute of a page as a browser's tokenizer reads them, and the text
    of each script."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str | None]] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs += attrs
        if tag == "script":
            self._in_script = True
            self.scripts.append("")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs += attrs

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.scripts[-1] += data


def parse(page: str) -> Markup:
    parser = Markup()
    parser.feed(page)
    parser.close()
    return parser


#: Elements and attributes the project's pages and Evidently's page write themselves.
OUR_TAGS = {
    *("html", "head", "meta", "title", "style", "body", "h1", "h2", "h3", "p", "table", "tr"),
    *("th", "td", "code", "span", "a", "em", "strong", "b", "br", "div", "section", "ul", "li"),
    *("svg", "rect", "text", "line", "polyline", "circle"),
}
OUR_ATTRS = {
    *("charset", "class", "style", "href", "role", "aria-label", "width", "height", "viewbox"),
    *("xmlns", "x", "y", "x1", "x2", "y1", "y2", "cx", "cy", "r", "points", "text-anchor"),
    *("transform", "lang", "name", "content", "id"),
}


def assert_no_markup_from_data(page: str, scripts: int = 0) -> Markup:
    found = parse(page)
    assert set(found.tags) <= OUR_TAGS | ({"script"} if scripts else set()), set(found.tags)
    assert {name for name, _ in found.attrs} <= OUR_ATTRS, {n for n, _ in found.attrs}
    assert found.tags.count("script") == scripts
    for name, value in found.attrs:
        assert not (value or "").strip().lower().startswith("javascript:"), (name, value)
        if name == "id":
            assert re.fullmatch(r"root_metric_[0-9a-f]{32}", value or ""), value
    return found


@dataclass(frozen=True)
class Stored:
    drifted: str
    compact: str
    validation: str
    card: str


def read(store: LocalStore, uri: str) -> str:
    return (store.root / uri.removeprefix(store.uri + "/")).read_text()


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> Stored:
    from threadpoolctl import threadpool_limits

    spec = hostile_spec()
    st = LocalStore(tmp_path_factory.mktemp("hostile") / "store")
    train = hostile(2000, seed=1)
    ref = snapshot(train, ["train"], st)
    reference = Reference(1, ref.hash, {})
    shifted = snapshot(hostile(2000, seed=3, scenario="covariate_shift"), ["shifted"], st)
    same = snapshot(hostile(2000, seed=2), ["same"], st)
    drifted = drift.detect_drift(spec, reference, shifted.hash, "mon-1", st, as_of=AS_OF)
    compact = drift.detect_drift(spec, reference, same.hash, "mon-2", st, as_of=AS_OF)
    assert drifted.detected and not compact.detected

    batch = hostile(600, seed=4, share=0.5)
    batch.loc[batch.index[:5], "customer_id"] = PAYLOADS[0]  # fails the declared id pattern
    with pytest.raises(DataValidationError) as failed:
        validate(spec, batch, "retrain-1", st, reference=train)

    with threadpool_limits(limits=1, user_api="openmp"):
        code = {"package": "test", "git_sha": None}
        trigger = Trigger("manual", user="pytest", reason=PAYLOADS[1], run_id="retrain-2")
        train_candidate(spec, ref.hash, trigger, "retrain-2", st, code)
        Registry(st).promote(spec.name, 1, reason="first", actor="pytest", force=True)
        train_candidate(spec, ref.hash, trigger, "retrain-3", st, code)
        card = evaluate_candidate(spec, 2, "retrain-3", st)
    return Stored(
        drifted=read(st, drifted.report_uri),
        compact=read(st, compact.report_uri),
        validation=read(st, failed.value.context["report_uri"]),
        card=read(st, card.report_uri),
    )


@pytest.mark.parametrize("page", ["compact", "validation", "card"])
def test_the_projects_pages_hold_no_markup_from_data(stored: Stored, page: str) -> None:
    html = getattr(stored, page)
    assert_no_markup_from_data(html)
    assert "&lt;/script&gt;&lt;img src=x onerror=alert(" in html  # shown, as text


def test_evidentlys_page_holds_no_markup_from_data_and_keeps_the_values(stored: Stored) -> None:
    # Evidently's page: its data, a global, its library, the call that draws.
    found = assert_no_markup_from_data(stored.drifted, scripts=4)
    data = next(s for s in found.scripts if "var metric_" in s)
    assert "<" not in data and ">" not in data and "&" not in data
    values = [
        json.loads(m.group(1)) for m in re.finditer(r"^\s*var \w+ = (.+);$", data, re.MULTILINE)
    ]
    assert len(values) == 2
    text = json.dumps(values, ensure_ascii=False)
    assert COLUMN in text and PAYLOADS[0] in text  # a column name and categories, unchanged


def test_the_drifted_page_opens_with_the_checks_summary(stored: Stored) -> None:
    html = stored.drifted
    _, _, rest = html.partition("<body>")
    summary, _, evidently = rest.partition("</section>")
    assert summary.lstrip().startswith("<section class='mlops-summary'>")
    assert re.match(r"\s*<div id=\"root_metric_[0-9a-f]{32}\">", evidently)
    assert "window.drawDashboard(" in evidently  # Evidently's page, after the summary, intact
    assert "credit_default: drift detected: data drift" in summary
    for label in ("model", "decision", "as of", "data drift", "performance", "reference"):
        assert f"<th>{label}</th>" in summary, label
    assert "2026-12-07 03:10 UTC" in summary
    assert "of columns drifted" in summary and "a retrain needs 25%" in summary
    assert "performance: " in summary  # the performance line, whatever it says
    assert "&lt;/script&gt;&lt;img src=x onerror=alert(3)&gt;channel" in summary
