"""The evaluation gate (`judge`) and the metrics it is fed."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlops_tasks.model.evaluation import GateDecision, judge, slice_gaps
from mlops_tasks.model.modelling import compute_metrics
from mlops_tasks.specs import ModelSpec, load_spec

SPEC_DIR = Path(__file__).resolve().parents[2] / "dags" / "specs"


def gate_spec(name: str, **evaluation: Any) -> ModelSpec:
    """A shipped spec with its evaluation section pinned to the values a test reasons about."""
    data = load_spec(SPEC_DIR / f"{name}.yaml").model_dump(mode="json")
    data["evaluation"] |= evaluation
    return ModelSpec.model_validate(data)


@pytest.fixture(scope="module")
def clf() -> ModelSpec:
    return gate_spec(
        "credit_default",
        primary_metric="roc_auc",
        min={"roc_auc": 0.70, "pr_auc": 0.40},
        max={"log_loss": 0.60},
        max_drop=0.25,  # exactly representable, so the boundary case is exact
        min_slice_metric=0.60,
        min_slice_rows=100,
    )


@pytest.fixture(scope="module")
def reg() -> ModelSpec:
    return gate_spec(
        "customer_spend",
        primary_metric="rmse",
        min={"r2": 0.5},
        max={"rmse": 3500},
        max_drop=50,
        min_slice_metric=None,
    )


GOOD = {"roc_auc": 0.80, "pr_auc": 0.55, "log_loss": 0.45, "accuracy": 0.8, "f1": 0.5}


def checks(d: GateDecision, name: str) -> list[tuple[str, bool]]:
    return [(c.metric, c.passed) for c in d.checks if c.name == name]


@pytest.mark.parametrize(
    ("candidate", "passed", "failed"),
    [
        pytest.param(GOOD, True, [], id="meets-every-threshold"),
        pytest.param(
            {**GOOD, "roc_auc": 0.69}, False, ["roc_auc 0.6900 < 0.7 (minimum)"], id="low-auc"
        ),
        pytest.param(
            {**GOOD, "log_loss": 0.61}, False, ["log_loss 0.6100 > 0.6 (maximum)"], id="high-loss"
        ),
        pytest.param(
            {k: v for k, v in GOOD.items() if k != "pr_auc"},
            False,
            ["pr_auc could not be computed"],
            id="metric-missing",
        ),
        pytest.param(
            {**GOOD, "pr_auc": math.nan}, False, ["pr_auc could not be computed"], id="metric-nan"
        ),
    ],
)
def test_first_model_is_judged_on_absolute_thresholds_only(
    clf: ModelSpec, candidate: dict[str, float], passed: bool, failed: list[str]
) -> None:
    d = judge(clf, candidate, None, None, {})
    assert d.passed is passed
    assert [c.detail for c in d.failed] == failed
    assert d.note == "first model: judged on absolute thresholds only (no production version yet)"
    assert d.compared_to is None
    assert {c.name for c in d.checks} == {"absolute"}
    assert sorted(c.metric for c in d.checks) == ["log_loss", "pr_auc", "roc_auc"]


@pytest.mark.parametrize(
    ("candidate_auc", "passed"),
    [
        pytest.param(0.90, True, id="better-than-production"),
        pytest.param(0.75, True, id="small-drop-allowed"),
        pytest.param(0.625, True, id="drop-equal-to-max-drop"),
        pytest.param(0.62, False, id="drop-beyond-max-drop"),
    ],
)
def test_max_drop_against_production(candidate_auc: float, passed: bool) -> None:
    # Absolute floors are relaxed so that only the champion check decides.
    spec = gate_spec("credit_default", min={}, max={}, max_drop=0.25, min_slice_metric=None)
    d = judge(spec, {**GOOD, "roc_auc": candidate_auc}, {**GOOD, "roc_auc": 0.875}, 7, {})
    assert d.passed is passed
    assert checks(d, "champion") == [("roc_auc", passed)]
    (champion,) = d.checks
    assert (champion.value, champion.threshold) == (candidate_auc, 0.875)
    assert champion.detail.startswith(f"roc_auc {candidate_auc:.4f} vs production 0.8750: ")
    # A higher-is-better metric that went down fell, and that is worse.
    moved = "rose, better" if candidate_auc > 0.875 else "fell, worse"
    assert champion.detail.split(": ")[1].startswith(f"{moved} by ")
    assert d.note == "compared with production v7 on the same holdout"
    assert d.compared_to == 7


def test_production_that_cannot_be_scored_loses_the_comparison(clf: ModelSpec) -> None:
    d = judge(clf, GOOD, {"roc_auc": math.nan}, 3, {})
    assert checks(d, "champion") == [("roc_auc", False)]
    d = judge(clf, GOOD, {"accuracy": 0.9}, 3, {})
    assert [c.detail for c in d.failed] == ["roc_auc missing for candidate or production"]


@pytest.mark.parametrize(
    ("candidate_rmse", "passed", "detail"),
    [
        pytest.param(900.0, True, "fell, better by 100.0000", id="lower-rmse-is-an-improvement"),
        pytest.param(1040.0, True, "rose, worse by 40.0000", id="rmse-up-within-max-drop"),
        pytest.param(1060.0, False, "rose, worse by 60.0000", id="rmse-up-beyond-max-drop"),
    ],
)
def test_lower_is_better_metric_direction(
    reg: ModelSpec, candidate_rmse: float, passed: bool, detail: str
) -> None:
    candidate = {"rmse": candidate_rmse, "mae": 700.0, "r2": 0.7}
    production = {"rmse": 1000.0, "mae": 700.0, "r2": 0.7}
    d = judge(reg, candidate, production, 2, {})
    assert d.passed is passed
    assert checks(d, "champion") == [("rmse", passed)]
    assert (
        f"rmse {candidate_rmse:.4f} vs production 1000.0000: {detail} (at most 50.0 worse allowed)"
        in [c.detail for c in d.checks]
    )


@pytest.mark.parametrize(
    ("candidate", "failed"),
    [
        pytest.param({"rmse": 3499.0, "r2": 0.51}, [], id="within-bounds"),
        pytest.param(
            {"rmse": 3501.0, "r2": 0.51}, ["rmse 3501.0000 > 3500.0 (maximum)"], id="rmse-max"
        ),
        pytest.param({"rmse": 3000.0, "r2": 0.49}, ["r2 0.4900 < 0.5 (minimum)"], id="r2-min"),
    ],
)
def test_regression_absolute_bounds(
    reg: ModelSpec, candidate: dict[str, float], failed: list[str]
) -> None:
    d = judge(reg, candidate, None, None, {})
    assert [c.detail for c in d.failed] == failed
    assert d.passed is (not failed)


SLICES = {
    "region": {
        "north": {"rows": 200, "roc_auc": 0.55},  # too weak
        "south": {"rows": 200, "roc_auc": 0.75},
        "east": {"rows": 99, "roc_auc": 0.10},  # too small to judge
        "west": {"rows": 300},  # metric not computable (one class)
    },
    "employment_type": {"salaried": {"rows": 100, "roc_auc": 0.60}},  # exactly the minimum
}


def test_slice_minimum(clf: ModelSpec) -> None:
    d = judge(clf, GOOD, None, None, SLICES)
    slices = [(c.detail, c.passed) for c in d.checks if c.name == "slice"]
    assert slices == [
        ("region=north: roc_auc 0.5500 on 200 rows", False),
        ("region=south: roc_auc 0.7500 on 200 rows", True),
        ("employment_type=salaried: roc_auc 0.6000 on 100 rows", True),
    ]
    assert d.passed is False
    assert [c.detail for c in d.failed] == ["region=north: roc_auc 0.5500 on 200 rows"]


def test_lower_is_better_slice_minimum_is_a_ceiling() -> None:
    spec = gate_spec("customer_spend", min={}, max={}, min_slice_metric=1500, min_slice_rows=10)
    slices = {
        "channel": {"online": {"rows": 50, "rmse": 1400.0}, "branch": {"rows": 50, "rmse": 1600.0}}
    }
    d = judge(spec, {"rmse": 1450.0}, None, None, slices)
    assert [(c.detail, c.passed) for c in d.checks] == [
        ("channel=online: rmse 1400.0000 on 50 rows", True),
        ("channel=branch: rmse 1600.0000 on 50 rows", False),
    ]


@pytest.mark.parametrize(
    ("candidate", "slices", "passed", "failed_checks"),
    [
        pytest.param({**GOOD, "roc_auc": 0.71}, {}, True, [], id="large-drop-allowed"),
        pytest.param(
            {**GOOD, "roc_auc": 0.65}, {}, False, ["absolute"], id="absolute-still-applies"
        ),
        pytest.param({**GOOD, "roc_auc": 0.71}, SLICES, False, ["slice"], id="slices-still-apply"),
    ],
)
def test_force_deploy_skips_only_the_champion_check(
    candidate: dict[str, float],
    slices: dict[str, Any],
    passed: bool,
    failed_checks: list[str],
) -> None:
    spec = gate_spec("credit_default", max_drop=0.01, min_slice_metric=0.60, min_slice_rows=100)
    production = {**GOOD, "roc_auc": 0.95}
    assert judge(spec, candidate, production, 4, {}).passed is False  # without force_deploy
    d = judge(spec, candidate, production, 4, slices, skip_champion=True)
    assert d.passed is passed
    assert "champion" not in {c.name for c in d.checks}
    assert sorted({c.name for c in d.failed}) == failed_checks
    assert d.note == "champion comparison against v4 skipped (force_deploy)"
    assert d.compared_to == 4


def test_gate_decision_serialises_to_json_types(clf: ModelSpec) -> None:
    d = judge(clf, GOOD, {**GOOD, "roc_auc": 0.79}, 1, SLICES)
    out = d.to_dict()
    assert out["passed"] is False and out["compared_to"] == 1
    assert out["checks"][0] == {
        "name": "absolute",
        "metric": "roc_auc",
        "value": 0.80,
        "threshold": 0.70,
        "passed": True,
        "detail": "roc_auc 0.8000 >= 0.7 (minimum)",
    }


# Metrics ------------------------------------------------------------------------------------
def test_classification_metrics() -> None:
    y = np.array([0, 0, 1, 1])
    proba = np.array([0.1, 0.4, 0.35, 0.8])
    pred = (proba >= 0.5).astype(int)
    m = compute_metrics("classification", y, pred, proba)
    assert m == pytest.approx(
        {
            "accuracy": 0.75,  # one positive missed
            "f1": 2 / 3,  # precision 1, recall 1/2
            "roc_auc": 0.75,  # 3 of 4 positive/negative pairs ordered correctly
            "pr_auc": 0.5 * 1 + 0.5 * 2 / 3,  # average precision at recall 1/2 and 1
            "log_loss": -np.mean(np.log([0.9, 0.6, 0.35, 0.8])),
        }
    )
    assert all(type(v) is float for v in m.values())


def test_classification_metrics_on_a_single_class_skip_ranking_metrics() -> None:
    m = compute_metrics("classification", np.array([1, 1, 1]), np.array([1, 0, 1]), np.ones(3))
    assert (m["accuracy"], m["f1"]) == pytest.approx((2 / 3, 0.8))
    assert m["roc_auc"] is m["pr_auc"] is m["log_loss"] is None  # null, never NaN


def test_metrics_that_cannot_be_computed_are_null_and_serialise_as_json() -> None:
    """A one-row slice used to give r2 = NaN, which `mlops show --json` printed as invalid JSON."""
    import json

    m = compute_metrics("regression", np.array([5.0]), np.array([4.0]), None)
    assert m["r2"] is None and m["rmse"] == 1.0
    assert json.loads(json.dumps(m, allow_nan=False)) == m


def test_classification_metrics_clip_certain_wrong_probabilities() -> None:
    m = compute_metrics("classification", np.array([0, 1]), np.array([1, 0]), np.array([1.0, 0]))
    assert math.isfinite(m["log_loss"]) and m["log_loss"] > 10


def test_regression_metrics() -> None:
    y = np.array([1.0, 2.0, 3.0, 4.0])
    pred = np.array([1.0, 2.0, 3.0, 6.0])
    m = compute_metrics("regression", y, pred, None)
    # squared errors 0, 0, 0, 4; total sum of squares 5
    assert m == pytest.approx({"rmse": 1.0, "mae": 0.5, "r2": 1 - 4 / 5})
    assert all(type(v) is float for v in m.values())


def test_slice_gap_is_best_minus_worst_among_judged_groups(clf: ModelSpec, reg: ModelSpec) -> None:
    slices = {
        "region": {
            "north": {"rows": 400, "roc_auc": 0.82},
            "south": {"rows": 300, "roc_auc": 0.64},
            "tiny": {"rows": 20, "roc_auc": 0.20},  # below min_slice_rows: not judged
            "one_class": {"rows": 150, "roc_auc": None},
        },
        "channel": {"web": {"rows": 500, "roc_auc": 0.75}, "app": {"rows": 500, "roc_auc": 0.73}},
        "lonely": {"only": {"rows": 900, "roc_auc": 0.7}},
    }
    gaps = slice_gaps(clf, slices)
    assert [g["column"] for g in gaps] == ["region", "channel"]  # widest first
    assert gaps[0]["gap"] == pytest.approx(0.18)
    assert (gaps[0]["best"]["value"], gaps[0]["worst"]["value"]) == ("north", "south")
    spend = {"segment": {"a": {"rows": 900, "rmse": 900.0}, "b": {"rows": 900, "rmse": 1500.0}}}
    (gap,) = slice_gaps(reg, spend)  # lower is better for rmse
    assert (gap["best"]["value"], gap["worst"]["value"], gap["gap"]) == ("a", "b", 600.0)
