"""Drift checks: per-column results, the drifted share, and the stored evidence."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlops_tasks.data import synthetic
from mlops_tasks.data.datasets import snapshot
from mlops_tasks.monitor import drift
from mlops_tasks.records import Reference
from mlops_tasks.specs import find_spec
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
