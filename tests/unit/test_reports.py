"""What reviewers read: the model card and the compact drift page show readable sections,
colours that mean what they say, inline SVG plots, the stored permutation importance and the
slice gap, and never let data or a reason inject markup."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlops_tasks import reports
from mlops_tasks.data import synthetic
from mlops_tasks.data.datasets import snapshot
from mlops_tasks.model.evaluation import (
    IMPORTANCE_REPEATS,
    evaluate_candidate,
    permutation_importance,
)
from mlops_tasks.model.training import train_candidate
from mlops_tasks.monitor import drift
from mlops_tasks.records import Reference, RetrainRequest, Trigger
from mlops_tasks.registry import Registry
from mlops_tasks.specs import ModelSpec, find_spec
from mlops_tasks.storage import LocalStore

SPEC = find_spec("credit_default", Path(__file__).resolve().parents[2] / "dags" / "specs")
SCRIPT = "<script>alert(1)</script>"
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"
CODE = {"package": "test", "git_sha": None}


def small_spec() -> ModelSpec:
    """The demo spec with a quick model and slices judged from 40 rows, for a small holdout."""
    data = SPEC.model_dump(mode="json")
    data["model"]["params"]["max_iter"] = 30
    data["evaluation"]["min_slice_rows"] = 40
    return ModelSpec.model_validate(data)


def poisoned(rows: int, seed: int, share: float) -> pd.DataFrame:
    """Demo rows whose `region` holds a script tag in `share` of the rows."""
    df = synthetic.demo_rows(rows, seed=seed)
    hit = np.random.default_rng(seed).random(rows) < share
    df.loc[hit, "region"] = SCRIPT
    return df


def assert_escaped(page: str) -> None:
    assert SCRIPT not in page
    assert "<script" not in page.lower()
    assert ESCAPED in page


# Helpers ---------------------------------------------------------------------------------------
def test_colours_follow_the_meaning_of_each_column() -> None:
    page = reports.table(
        [
            {"passed": True, "drifted": False, "flag": True},
            {"passed": False, "drifted": True, "flag": False},
        ]
    )
    cells = page.split("<td")[1:]
    assert [c.split(">")[0] for c in cells] == [
        ' class="pass"',
        ' class="neutral"',  # a column that did not drift is not an alarm
        ' class="neutral"',  # a boolean of unknown meaning is neither good nor bad
        ' class="fail"',
        ' class="fail"',
        ' class="neutral"',
    ]


def test_values_are_readable_text_never_reprs() -> None:
    assert reports.text({"A": 3, "B": 0.5}) == "A: 3, B: 0.5000"
    assert reports.text(("x", "y")) == "x, y"
    assert reports.text(None) == ""
    assert "{" not in reports.table([{"new": {"a": 1}}])


def test_links_only_to_report_schemes() -> None:
    assert (
        reports.link("file:///r/drift.html", "report")
        == '<a href="file:///r/drift.html">report</a>'
    )
    assert reports.link("javascript:alert(1)", "x") == "x"
    assert reports.link('s3://b/"><x>') == (
        '<a href="s3://b/&quot;&gt;&lt;x&gt;">s3://b/&quot;&gt;&lt;x&gt;</a>'
    )


def test_drift_trigger_reads_as_a_sentence_with_its_report_linked() -> None:
    request = RetrainRequest(
        model="m",
        reason=f"drift in {SCRIPT}",
        report_uri="file:///store/reports/m/mon-1/drift.html",
        drift_share=0.4,
        drifted_columns=("region", "income"),
        monitor_run_id="mon-1",
        check_id="c1",
    )
    out = reports.trigger_html(Trigger.from_request(request, run_id="retrain-7"))
    assert out.startswith(f"drift: drift in {ESCAPED}, run <code>retrain-7</code>, by monitor")
    # Relative to the page (reports/<model>/<run>/), so it works on disk and in the Models view.
    assert '<a href="../../m/mon-1/drift.html">drift report</a>' in out
    assert "40% of columns, drifted region, income" in out
    manual = reports.trigger_html(Trigger("manual", user="ana", reason="new features"))
    assert manual == "manual: new features, by ana"


def test_charts_are_inline_svg_with_escaped_labels() -> None:
    bars = reports.bar_chart(
        "importance", [(SCRIPT, 0.2, None), ("b", -0.05, "fail"), ("c", None, None)]
    )
    assert bars.startswith('<svg class="chart"') and bars.count("<rect") == 2
    assert 'class="bar fail"' in bars and "n/a" in bars
    hist = reports.histogram("h", ["a", SCRIPT], [0.5, 0.5], [0.2, 0.8])
    assert hist.count('class="ref"') == 2 and hist.count('class="cur"') == 2
    line = reports.line_chart("m", [("v1", 0.7, "pass"), ("v2", None, None), ("v3", 0.8, None)])
    assert "<polyline" not in line  # the gap splits the line into single points
    assert line.count("<circle") == 2
    for svg in (bars, hist):
        assert_escaped(svg)


def test_distribution_bins_are_bounded_and_shares_sum_to_one() -> None:
    ref = pd.Series(np.linspace(0, 1, 1000))
    cur = pd.Series([*np.linspace(0.5, 2, 990), *[np.nan] * 10])
    bins, r, c = drift.distribution(ref, cur, numeric=True)
    assert len(bins) == drift.NUMERIC_BINS + 1 and bins[-1] == "missing or not finite"
    assert sum(r) == pytest.approx(1) and sum(c) == pytest.approx(1)
    cats = pd.Series([f"c{i}" for i in range(40)] * 5)
    bins, r, _ = drift.distribution(cats, cats, numeric=False)
    assert len(bins) == drift.TOP_CATEGORIES + 1 and bins[-1] == "other"
    assert sum(r) == pytest.approx(1)


# The compact drift page -------------------------------------------------------------------------
def test_compact_drift_page_plots_drifted_columns_and_escapes_categories(tmp_path: Path) -> None:
    st = LocalStore(tmp_path / "store")
    ref = snapshot(synthetic.demo_rows(3000, seed=1), ["ref"], st)
    cur = snapshot(poisoned(3000, seed=2, share=0.3), ["cur"], st)
    result = drift.detect_drift(SPEC, Reference(1, ref.hash, {}), cur.hash, "run-x", st)
    assert not result.detected and "region" in result.data.drifted_columns
    page = (st.root / result.report_uri.removeprefix(st.uri + "/")).read_text()
    assert_escaped(page)
    assert 'aria-label="region: reference vs current"' in page
    assert page.count('<svg class="chart"') == len(result.data.drifted_columns)
    assert '<td class="fail">True</td>' in page and '<td class="neutral">False</td>' in page
    assert 'class="fail">' not in page.split("Columns (batches)")[0]  # the check itself is calm
    assert f"{ESCAPED}: " in page  # new categories read as "category: count"
    assert "{'" not in page


# The model card ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Card:
    spec: ModelSpec
    store: LocalStore
    html: str
    evaluation: dict[str, object]
    request: RetrainRequest


@pytest.fixture(scope="module")
def card(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Card]:
    """Two versions of a small model: v1 in production, v2 retrained on a drift request whose
    reason and data carry a script tag."""
    from threadpoolctl import threadpool_limits

    spec = small_spec()
    st = LocalStore(tmp_path_factory.mktemp("card") / "store")
    snap = snapshot(poisoned(2000, seed=5, share=0.2), ["batch"], st)
    request = RetrainRequest(
        model=spec.name,
        reason=f"region drifted: {SCRIPT}",
        report_uri=f"{st.uri}/reports/{spec.name}/monitor-1/drift.html",
        drift_share=0.3,
        drifted_columns=("region",),
        monitor_run_id="monitor-1",
        check_id="check-1",
    )
    registry = Registry(st)
    with threadpool_limits(limits=1, user_api="openmp"):
        manual = Trigger("manual", user="pytest", reason="first", run_id="run-1")
        train_candidate(spec, snap.hash, manual, "run-1", st, CODE)
        # v1 is never evaluated: the history falls back to its training metrics
        registry.promote(spec.name, 1, reason="first", actor="pytest", force=True)
        trigger = Trigger.from_request(request, run_id="run-2")
        train_candidate(spec, snap.hash, trigger, "run-2", st, CODE)
        result = evaluate_candidate(spec, 2, "run-2", st)
    html = (st.root / result.report_uri.removeprefix(st.uri + "/")).read_text()
    evaluation = registry.get_version(spec.name, 2).evaluation
    assert evaluation is not None
    yield Card(spec, st, html, evaluation, request)


def test_card_shows_the_trigger_and_lineage_readably(card: Card) -> None:
    lineage = card.html.split("<h2>Trigger and lineage</h2>")[1].split("<h2>")[0]
    assert f"drift: region drifted: {ESCAPED}, run <code>run-2</code>, by monitor" in lineage
    drift = card.request.report_uri.split("/reports/")[1]
    assert f'<a href="../../{drift}">drift report</a>' in lineage
    assert "<th>spec hash</th>" in lineage and "<th>dataset snapshot</th>" in lineage
    assert "git_sha unknown, package test" in lineage
    assert "learning_rate=0.08, max_iter=30" in lineage
    assert "{'" not in card.html and "[" not in lineage


def test_card_stores_and_shows_permutation_importance(card: Card) -> None:
    importance = card.evaluation["importance"]
    assert isinstance(importance, dict)
    features = importance["features"]
    assert [f["feature"] for f in features] != [] and importance["repeats"] == IMPORTANCE_REPEATS
    assert {f["feature"] for f in features} == set(card.spec.features.all)
    means = [f["mean"] for f in features]
    assert means == sorted(means, reverse=True) and means[0] > 0
    section = card.html.split("<h2>What drives predictions</h2>")[1].split("<h2>")[0]
    assert 'aria-label="permutation importance (roc_auc)"' in section
    assert f"<title>{features[0]['feature']}</title>" in section


def test_importance_is_the_same_when_a_retry_computes_it_again(card: Card) -> None:
    from mlops_tasks.data.datasets import load_snapshot
    from mlops_tasks.model.modelling import split

    registry = Registry(card.store)
    meta = registry.get_version(card.spec.name, 2)
    _, holdout, _ = split(card.spec, load_snapshot(meta.dataset.train, card.store))
    again = permutation_importance(card.spec, registry.load(card.spec.name, 2), holdout, meta.seed)
    assert again == card.evaluation["importance"]


def test_card_puts_the_slice_gap_beside_the_verdict(card: Card) -> None:
    gaps = card.evaluation["slice_gaps"]
    assert isinstance(gaps, list) and gaps
    widest = gaps[0]
    assert widest["gap"] == max(g["gap"] for g in gaps) > 0
    decision = card.html.split("<h2>Decision</h2>")[1].split("<h2>")[0]
    assert "class='callout" in decision and f"Slice gap {widest['gap']:.4f}" in decision
    slices = card.html.split("<h2>Who is served worse: roc_auc per slice</h2>")[1].split("<h2>")[0]
    assert slices.count('<svg class="chart"') == len(card.spec.evaluation.slices)


def test_card_plots_the_metric_across_versions(card: Card) -> None:
    metrics = card.html.split("<h2>Metrics on the holdout</h2>")[1].split("<h2>")[0]
    assert 'aria-label="roc_auc across versions"' in metrics
    assert '<circle class="pass"' in metrics  # v1, production
    assert "<title>v1: " in metrics and "<title>v2: " in metrics and "<polyline" in metrics


def test_card_escapes_categories_and_reasons(card: Card) -> None:
    assert_escaped(card.html)
    assert f"<title>{ESCAPED} (" in card.html  # the slice group, by its full name
