"""Drift checks: per-column results, the drifted share, and the stored evidence."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlops_tasks.data import synthetic
from mlops_tasks.data.datasets import snapshot
from mlops_tasks.monitor import drift
from mlops_tasks.records import PerformanceDrift, Reference
from mlops_tasks.specs import ModelSpec, find_spec
from mlops_tasks.storage import LocalStore

SPEC = find_spec("credit_default", Path(__file__).resolve().parents[2] / "dags" / "specs")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[LocalStore, Reference, str, str]:
    st = LocalStore(tmp_path_factory.mktemp("drift") / "store")
    ref = snapshot(synthetic.demo_rows(3000, seed=1), ["ref"], st)
    same = snapshot(synthetic.demo_rows(3000, seed=2), ["same"], st)
    shifted = snapshot(synthetic.demo_rows(3000, "covariate_shift", seed=3), ["shift"], st)
    reference = Reference(version=1, hash=ref.hash, metrics={})
    return st, reference, same.hash, shifted.hash


@pytest.mark.parametrize(
    ("which", "detected", "title", "min_kib", "max_kib"),
    [
        pytest.param(2, False, "no drift", 1, 200, id="stable-compact-page"),
        pytest.param(3, True, "", 1000, 100_000, id="shifted-full-evidently-page"),
    ],
)
def test_check_result_and_report(store, which, detected, title, min_kib, max_kib) -> None:
    st, reference, *currents = store
    result = drift.detect_drift(SPEC, reference, currents[which - 2], f"run-{which}", st)
    data = result.data
    assert data.drift_detected is detected
    assert len(data.columns) == len(SPEC.features.all)
    assert data.drifted_share == len(data.drifted_columns) / len(data.columns)
    income = next(c for c in data.columns if c.column == "income")
    assert (income.method, income.threshold) == ("psi", 0.1)  # the spec's override
    key = result.report_uri.removeprefix(st.uri + "/")
    size_kib = (st.root / key).stat().st_size / 1024
    assert min_kib <= size_kib <= max_kib
    assert title in (st.root / key).read_text()
    assert st.exists(key.replace(".html", ".json"))
    assert result.performance is not None
    assert result.performance.labelled_rows == 3000  # present, but no baseline metric


class FixedScorer:
    """A fitted classifier's stand-in: every row gets probability `p` of the positive class."""

    classes_ = np.array([0, 1])

    def __init__(self, p: np.ndarray) -> None:
        self.p = p

    def predict_proba(self, x: pd.DataFrame) -> np.ndarray:
        return np.column_stack([1 - self.p[: len(x)], self.p[: len(x)]])


class OneVersion:
    """The registry as `performance_drift` reads it: production's scorer, no threshold."""

    def __init__(self, scorer: FixedScorer) -> None:
        self.scorer = scorer

    def load_scorer(self, model: str, version: int) -> tuple[FixedScorer, None]:
        return self.scorer, None


def measure(metric: str, baseline: float, labels: np.ndarray, p: np.ndarray) -> PerformanceDrift:
    data = SPEC.model_dump(mode="json")
    data["drift"]["performance"] = {"metric": metric, "max_drop": 0.04, "min_labelled_rows": 10}
    spec = ModelSpec.model_validate(data)
    rows = synthetic.demo_rows(len(labels), seed=4).assign(default=labels)
    reference = Reference(version=1, hash="0" * 64, metrics={metric: baseline})
    perf = drift.performance_drift(spec, reference, rows, OneVersion(FixedScorer(p)))
    assert perf is not None
    return perf


#: 400 labelled rows, half of each class, scored with a constant 0.3: log loss 0.7803, ROC AUC 0.5.
LABELS = np.tile([0, 1], 200)
FLAT = np.full(400, 0.3)


@pytest.mark.parametrize(
    ("metric", "baseline", "words", "drifted"),
    [
        pytest.param("log_loss", 0.41, "rose, worse by 0.3703", True, id="lower-is-better-rose"),
        pytest.param("log_loss", 0.95, "fell, better by 0.1697", False, id="lower-is-better-fell"),
        pytest.param("roc_auc", 0.81, "fell, worse by 0.3100", True, id="higher-is-better-fell"),
        pytest.param("roc_auc", 0.45, "rose, better by 0.0500", False, id="higher-is-better-rose"),
    ],
)
def test_the_performance_summary_says_which_way_the_metric_went(
    metric: str, baseline: float, words: str, drifted: bool
) -> None:
    """A log loss that went up rose and is worse; a ROC AUC that went down fell and is worse."""
    perf = measure(metric, baseline, LABELS, FLAT)
    assert perf.summary == (
        f"performance: {metric} {perf.current:.4f} on 400 labelled rows vs {baseline:.4f} at "
        f"training ({words}; at most 0.04 worse allowed)"
    )
    assert (perf.drift_detected, perf.undefined) == (drifted, None)


@pytest.mark.parametrize("label", [0, 1])
def test_a_one_class_window_flags_the_metric_undefined(label: int) -> None:
    perf = measure("roc_auc", 0.81, np.full(400, label), FLAT)
    why = f"the labelled window holds one class (all {label})"
    assert (perf.drift_detected, perf.current, perf.undefined) == (False, None, why)
    assert perf.summary == (
        f"performance: metric undefined: {why}, so roc_auc cannot be computed on its 400 "
        "labelled rows; not checked"
    )
