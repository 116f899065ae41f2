"""Decision thresholds: each rule picks what it says, checked against brute force over every
possible cut; the spec refuses a rule that is not one."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from mlops_tasks.errors import SpecError
from mlops_tasks.model.thresholds import choose
from mlops_tasks.specs import ThresholdSpec, parse_spec
from tests.conftest import REPO

SCORES = st.lists(
    st.tuples(st.integers(0, 1), st.sampled_from([0.0, 0.1, 0.25, 0.3, 0.5, 0.7, 0.9, 1.0])),
    min_size=1,
    max_size=60,
)


def brute(y: np.ndarray, p: np.ndarray) -> list[tuple[float, int, int, int]]:
    """(cut, tp, fp, fn) for every cut that changes a prediction, highest first."""
    cuts = sorted({*p.tolist(), float(np.nextafter(p.max(), np.inf))}, reverse=True)
    out = []
    for c in cuts:
        pred = p >= c
        tp, fp = int((pred & (y == 1)).sum()), int((pred & (y == 0)).sum())
        out.append((c, tp, fp, int(y.sum()) - tp))
    return out


def unzip(rows: list[tuple[int, float]]) -> tuple[np.ndarray, np.ndarray]:
    return np.array([r[0] for r in rows]), np.array([r[1] for r in rows])


@settings(max_examples=200, deadline=None, derandomize=True)
@given(SCORES, st.floats(0, 10), st.floats(0.1, 10))
def test_cost_picks_the_cheapest_cut_and_the_highest_among_equals(
    rows: list[tuple[int, float]], fp_cost: float, fn_cost: float
) -> None:
    y, p = unzip(rows)
    got = choose(ThresholdSpec(cost={"fp": fp_cost, "fn": fn_cost}), y, p)
    costs = [(fp_cost * fp + fn_cost * fn, c) for c, _, fp, fn in brute(y, p)]
    best = min(cost for cost, _ in costs)
    assert got.value == pytest.approx(min(max(next(c for cost, c in costs if cost == best), 0), 1))


@settings(max_examples=200, deadline=None, derandomize=True)
@given(SCORES)
def test_f1_picks_the_best_f1(rows: list[tuple[int, float]]) -> None:
    y, p = unzip(rows)
    got = choose(ThresholdSpec(objective="f1"), y, p)
    f1 = [
        (2 * tp / (2 * tp + fp + fn)) if (2 * tp + fp + fn) else 0.0
        for _, tp, fp, fn in brute(y, p)
    ]
    assert (got.f1 or 0.0) == pytest.approx(max(f1))


@settings(max_examples=200, deadline=None, derandomize=True)
@given(SCORES, st.sampled_from([0.5, 0.8, 1.0]))
def test_precision_at_recall_meets_the_recall_with_the_best_precision(
    rows: list[tuple[int, float]], recall: float
) -> None:
    y, p = unzip(rows)
    got = choose(ThresholdSpec(precision_at_recall=recall), y, p)
    if y.sum() == 0:
        return
    feasible = [
        tp / (tp + fp) if tp + fp else 1.0 for _, tp, fp, _ in brute(y, p) if tp / y.sum() >= recall
    ]
    assert got.recall is not None and got.recall >= recall
    assert (got.precision or 0.0) == pytest.approx(max(feasible))


def test_fixed_is_taken_as_given() -> None:
    got = choose(ThresholdSpec(fixed=0.3), np.array([0, 1, 1]), np.array([0.2, 0.35, 0.9]))
    assert got.value == 0.3 and got.recall == 1.0 and got.precision == 1.0


def test_a_costly_miss_lowers_the_threshold() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 2000)
    p = np.clip(0.35 * y + rng.normal(0.3, 0.2, 2000), 0, 1)
    even = choose(ThresholdSpec(cost={"fp": 1, "fn": 1}), y, p).value
    misses_cost_more = choose(ThresholdSpec(cost={"fp": 1, "fn": 10}), y, p).value
    assert misses_cost_more < even


BASE = yaml.safe_load((REPO / "dags" / "specs" / "credit_default.yaml").read_text())


@pytest.mark.parametrize(
    ("threshold", "message"),
    [
        ({}, "give exactly one of objective, precision_at_recall, cost, fixed"),
        ({"fixed": 0.3, "objective": "f1"}, "(got objective, fixed)"),
        ({"fixed": 1.5}, "evaluation.threshold.fixed"),
        ({"precision_at_recall": 0}, "evaluation.threshold.precision_at_recall"),
        ({"cost": {"fp": 0, "fn": 0}}, "give fp or fn a cost above 0"),
        ({"cost": {"fp": 1}}, "evaluation.threshold.cost.fn: required field is missing"),
        ({"objective": "auc"}, "evaluation.threshold.objective"),
        ({"fixed": 0.3, "validation_fraction": 0.9}, "evaluation.threshold.validation_fraction"),
    ],
)
def test_a_wrong_threshold_rule_is_a_spec_error_naming_the_field(
    threshold: dict[str, object], message: str
) -> None:
    doc = {**BASE, "evaluation": {**BASE["evaluation"], "threshold": threshold}}
    with pytest.raises(SpecError) as err:
        parse_spec(yaml.safe_dump(doc), "t.yaml")
    assert message in str(err.value)


def test_a_regression_has_no_threshold() -> None:
    doc = yaml.safe_load((REPO / "dags" / "specs" / "customer_spend.yaml").read_text())
    doc["evaluation"]["threshold"] = {"fixed": 0.5}
    with pytest.raises(SpecError, match="only a binary classifier has a decision threshold"):
        parse_spec(yaml.safe_dump(doc), "t.yaml")


@pytest.mark.parametrize(
    "id_column", [pytest.param("customer_id", id="id"), pytest.param(None, id="row-hash")]
)
def test_without_a_time_column_the_validation_split_is_a_share_of_the_training_rows(
    id_column: str | None,
) -> None:
    """The threshold's validation split used the holdout's hash: with equal fractions every
    training row lies above the cut, so it came out empty. Its own salt gives it its share."""
    from mlops_tasks.data import synthetic
    from mlops_tasks.model.modelling import split
    from mlops_tasks.model.training import THRESHOLD_SALT, fit_and_score

    data = {k: v for k, v in BASE["data"].items() if k != "time_column"}
    if id_column is None:
        data.pop("id_column")
    model = {"estimator": "logistic_regression", "params": {"max_iter": 500}, "seed": 1}
    evaluation = {**BASE["evaluation"], "threshold": {"objective": "f1"}}
    spec = parse_spec(
        yaml.safe_dump({**BASE, "data": data, "model": model, "evaluation": evaluation}), "t.yaml"
    )
    df = synthetic.demo_rows(1000).drop(columns=["event_time"])
    train, holdout, method = split(spec, df)
    fit_part, validation, _ = split(spec, train, 0.2, salt=THRESHOLD_SALT)
    assert method == "hash"
    assert 0.15 * len(train) < len(validation) < 0.25 * len(train)
    assert set(validation.index).isdisjoint(holdout.index)
    assert set(validation.index) | set(fit_part.index) == set(train.index)
    threshold = fit_and_score(spec, df, 1).threshold
    assert threshold is not None and threshold.validation_rows == len(validation)
