"""`model.search`: the spec refuses a range its param does not allow, naming the field; the
folds see only training rows, in time order where asked; the same spec and snapshot give the
same trials, winner and bytes; halving narrows down; a failing candidate is recorded, not a
crash; and the trials reach the registry, the model card, `mlops show` and `reproduce`."""

from __future__ import annotations

import copy
import functools
import itertools
import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from mlops_tasks.cli import main
from mlops_tasks.data import synthetic
from mlops_tasks.data.datasets import snapshot
from mlops_tasks.errors import DataError, SpecError
from mlops_tasks.model import search
from mlops_tasks.model.evaluation import evaluate_candidate
from mlops_tasks.model.modelling import split
from mlops_tasks.model.reproduce import reproduce
from mlops_tasks.model.training import Fit, fit_and_score, train_candidate
from mlops_tasks.records import Trigger
from mlops_tasks.registry import Registry, sha256
from mlops_tasks.specs import ESTIMATORS, ModelSpec, check_param, parse_spec
from mlops_tasks.storage import LocalStore
from tests.conftest import REPO

BASE = yaml.safe_load((REPO / "dags" / "specs" / "credit_default.yaml").read_text())
CODE = {"package": "test", "git_sha": None}
FEATURES = {
    "numeric": ["age", "income", "utilization", "num_late_payments_12m", "credit_score"],
    "categorical": ["region", "employment_type"],
}
#: A quick model with one searched number and one choice that fails (l1 needs another solver).
SEARCH = {
    "n_iter": 4,
    "params": {"C": {"low": 0.01, "high": 10.0, "log": True}, "penalty": ["l2", "l1"]},
}


@pytest.fixture(scope="module", autouse=True)
def one_openmp_thread() -> Iterator[None]:
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="openmp"):
        yield


def doc(
    search_: dict[str, Any] | None,
    params: dict[str, Any] | None = None,
    estimator: str = "logistic_regression",
    **data: Any,
) -> dict[str, Any]:
    raw = copy.deepcopy(BASE)
    raw["model"] = {
        "estimator": estimator,
        "params": {"max_iter": 500} if params is None else params,
        "seed": 5,
        **({"search": search_} if search_ is not None else {}),
    }
    raw["evaluation"] |= {"min": {}, "max": {}, "min_slice_metric": None}
    raw["features"] = FEATURES  # fewer columns: quicker fits
    raw["data"] = {k: v for k, v in {**raw["data"], **data}.items() if v is not None}
    return raw


def spec_of(search_: dict[str, Any] | None, **kw: Any) -> ModelSpec:
    return parse_spec(yaml.safe_dump(doc(search_, **kw)), "t.yaml")


# The spec ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("search_", "kw", "message"),
    [
        pytest.param(
            {"params": {"gamma": [1]}},
            {},
            "model.search.params.gamma: unknown parameter 'gamma' for estimator "
            "'logistic_regression' on classification",
            id="unknown-param",
        ),
        pytest.param(
            {"params": {"C": {"low": 1, "high": 1e7}}},
            {},
            "model.search.params.C.high: parameter 'C' must be <= 1000000.0",
            id="bound-outside-rule",
        ),
        pytest.param(
            {"params": {"max_iter": {"low": 100, "high": 900}}},
            {},
            "model.search.params.max_iter: 'max_iter' is also fixed in model.params",
            id="overlap-with-params",
        ),
        pytest.param(
            {"params": {"C": [1.0]}},
            {"time_column": None},
            "model.search.cv: time folds order the rows by data.time_column",
            id="time-folds-without-time-column",
        ),
        pytest.param(
            {"params": {"C": [1.0]}, "metric": "rmse"},
            {},
            "model.search.metric: unknown metric 'rmse' for classification",
            id="metric-of-another-task",
        ),
        pytest.param(
            {"params": {"penalty": ["l2", "l3"]}},
            {},
            "model.search.params.penalty.choices.1: parameter 'penalty' must be one of",
            id="choice-outside-enum",
        ),
        pytest.param(
            {"params": {"solver": {"low": 0, "high": 1}}},
            {},
            "model.search.params.solver: 'solver' is a string parameter: give a list of choices",
            id="range-of-a-string-param",
        ),
        pytest.param(
            {"params": {"C": {"low": 2, "high": 1}}},
            {},
            "model.search.params.C.high: 1 is less than low (2)",
            id="high-below-low",
        ),
        pytest.param(
            {"params": {"l1_ratio": {"low": 0, "high": 1, "log": True}}},
            {},
            "model.search.params.l1_ratio.low: a log range starts above 0",
            id="log-from-zero",
        ),
        pytest.param(
            {"params": {"max_iter": {"low": 10.5, "high": 50}}},
            {"params": {}},
            "model.search.params.max_iter.low: 'max_iter' is an integer parameter, got 10.5",
            id="integer-param-fraction",
        ),
        pytest.param(
            {"params": {"C": {"low": 1}}},
            {},
            "model.search.params.C.high: give low and high",
            id="half-a-range",
        ),
        pytest.param(
            {"params": {"C": 1.0}},
            {},
            "model.search.params.C: give a range {low, high} or a list of choices, got 1.0",
            id="a-bare-value",
        ),
        pytest.param(
            {"params": {"C": [1.0, 1.0]}},
            {},
            "model.search.params.C.choices.1: 1.0 is listed twice",
            id="choice-twice",
        ),
        pytest.param(
            {"params": {"C": [1.0]}, "factor": 2},
            {},
            "model.search.factor: only method halving",
            id="factor-of-random",
        ),
        pytest.param(
            {"params": {"C": [1.0]}, "n_iter": 501}, {}, "model.search.n_iter", id="n-iter"
        ),
        pytest.param({"params": {"C": [1.0]}, "folds": 1}, {}, "model.search.folds", id="folds"),
        pytest.param({"params": {}}, {}, "model.search.params", id="nothing-to-search"),
    ],
)
def test_a_wrong_search_is_a_spec_error_naming_the_field(
    search_: dict[str, Any], kw: dict[str, Any], message: str
) -> None:
    with pytest.raises(SpecError) as err:
        spec_of(search_, **kw)
    assert message in str(err.value)


def test_a_spec_without_a_search_keeps_its_hash() -> None:
    spec = spec_of(None)
    assert "search" not in spec.model_dump(mode="json")["model"]
    searched = spec_of(SEARCH)
    assert searched.spec_hash() != spec.spec_hash()
    # the YAML order of the ranges changes neither the hash nor the draws
    reordered = spec_of({**SEARCH, "params": dict(reversed(SEARCH["params"].items()))})
    assert reordered.spec_hash() == searched.spec_hash()
    assert search.candidates(reordered) == search.candidates(searched)


def test_the_guides_example_is_a_valid_search() -> None:
    guide = (REPO / "docs" / "specs.md").read_text()
    section = guide.split("**Searching hyperparameters.**")[1]
    block = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert block is not None
    raw = copy.deepcopy(BASE)
    raw["model"] = yaml.safe_load(block.group(1))["model"]
    spec = parse_spec(yaml.safe_dump(raw), "guide.yaml")
    assert spec.model.search is not None and spec.model.search.method == "halving"
    assert spec.search_metric == "pr_auc"


def test_a_run_that_fixes_a_searched_param_stops_searching_it() -> None:
    spec = spec_of(SEARCH)
    fixed = spec.with_params({"penalty": "l2"})
    assert fixed.model.params["penalty"] == "l2"
    assert fixed.model.search is not None and list(fixed.model.search.params) == ["C"]
    assert spec.with_params({"penalty": "l2", "C": 1.0}).model.search is None


NUMBER = ESTIMATORS["hist_gradient_boosting"].params["learning_rate"]  # [1e-4, 1]
INTEGER = ESTIMATORS["hist_gradient_boosting"].params["max_leaf_nodes"]  # [2, 1024]


@settings(max_examples=25, deadline=None, derandomize=True)
@given(
    st.sampled_from(["learning_rate", "max_leaf_nodes"]),
    st.floats(-5, 2000, allow_nan=False),
    st.floats(-5, 2000, allow_nan=False),
    st.booleans(),
)
def test_a_range_is_accepted_exactly_when_its_param_allows_both_ends(
    name: str, low: float, high: float, log: bool
) -> None:
    rule = NUMBER if name == "learning_rate" else INTEGER
    if rule.type == "integer":
        low, high = float(round(low)), float(round(high))
    assert rule.minimum is not None and rule.maximum is not None
    allowed = rule.minimum <= low <= high <= rule.maximum and (low > 0 or not log)
    given_ = {"params": {name: {"low": low, "high": high, "log": log}}, "n_iter": 5}
    try:
        spec = spec_of(given_, estimator="hist_gradient_boosting", params={})
    except SpecError as err:
        assert not allowed, err
        assert f"model.search.params.{name}" in str(err)
        return
    assert allowed
    for candidate in search.candidates(spec):
        value = candidate[name]
        assert low <= value <= high
        check_param("hist_gradient_boosting", name, value, "classification")
        assert isinstance(value, int) == (rule.type == "integer")


# Folds ---------------------------------------------------------------------------------------
def test_time_folds_chain_forward_over_growing_windows() -> None:
    folds = search.time_folds(100, 3)
    assert [(f[0], f[-1] + 1, v[0], v[-1] + 1) for f, v in folds] == [
        (0, 25, 25, 50),
        (0, 50, 50, 75),
        (0, 75, 75, 100),
    ]


def test_every_time_fold_scores_rows_no_older_than_those_it_fits_on() -> None:
    spec = spec_of({**SEARCH, "folds": 4})
    rows = synthetic.demo_rows(1000).sample(frac=1.0, random_state=2)  # not in time order
    train, holdout, _ = split(spec, rows)
    folds = search.make_folds(spec, train)
    times = train["event_time"].to_numpy()
    for fit, val, info in zip(folds.fit, folds.validation, folds.info, strict=True):
        assert times[fit].max() <= times[val].min()
        assert (info.fit_rows, info.validation_rows) == (len(fit), len(val))
        assert pd.Timestamp(info.validation_from) == times[val].min()
        assert len(fit) + len(val) <= len(train)
    assert [len(f) for f in folds.fit] == [160, 320, 480, 640]
    # every fold is training rows: the holdout is never seen
    assert times[np.concatenate(folds.validation)].max() <= holdout["event_time"].min()


def test_hash_folds_score_each_training_row_once() -> None:
    spec = spec_of({**SEARCH, "cv": "hash"}, time_column=None)
    train, _, method = split(spec, synthetic.demo_rows(1000))
    assert method == "hash"
    folds = search.make_folds(spec, train)
    scored = np.concatenate(folds.validation)
    assert sorted(scored.tolist()) == list(range(len(train)))
    for fit, val in zip(folds.fit, folds.validation, strict=True):
        assert set(fit.tolist()).isdisjoint(val.tolist())
        assert abs(len(val) - len(train) / 3) < 0.1 * len(train)


def test_too_few_rows_for_the_folds_is_a_data_error_naming_the_field() -> None:
    spec = spec_of({**SEARCH, "folds": 10})
    train, _, _ = split(spec, synthetic.demo_rows(60))
    with pytest.raises(DataError, match=r"model\.search\.folds: fold \d+ of 10"):
        search.make_folds(spec, train)


# Running a search ----------------------------------------------------------------------------
ROWS = synthetic.demo_rows(1000)


@functools.cache
def searched() -> Fit:
    """The quick search on `ROWS`, made once for the tests that only read it."""
    return fit_and_score(spec_of(SEARCH), ROWS, 1)


def test_the_same_spec_and_rows_give_the_same_trials_winner_and_bytes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spec, first = spec_of(SEARCH), searched()
    seen: list[pd.Index] = []
    fit_rows, predict_scores = search.fit_rows, search.predict_scores

    def spy_fit(spec_: ModelSpec, x: pd.DataFrame, *args: Any) -> Any:
        seen.append(x.index)
        return fit_rows(spec_, x, *args)

    def spy_predict(spec_: ModelSpec, model: Any, x: pd.DataFrame, *args: Any) -> Any:
        seen.append(x.index)
        return predict_scores(spec_, model, x, *args)

    monkeypatch.setattr(search, "fit_rows", spy_fit)
    monkeypatch.setattr(search, "predict_scores", spy_predict)
    again = fit_and_score(spec, ROWS, 1)
    assert first.search is not None and first.search == again.search
    assert first.artifact == again.artifact and first.holdout_scores == again.holdout_scores
    assert len(first.search.trials) == 4 and first.search.metric == "roc_auc"
    # the search fitted and scored training rows only, never the gate's holdout
    assert seen and all(set(index) <= set(first.train.index) for index in seen)
    assert not any(set(index) & set(first.holdout.index) for index in seen)
    # the winner is the best scored trial, refitted on the whole training split
    best = first.search.trials[first.search.best]
    assert best.mean == max(t.mean for t in first.search.trials if t.mean is not None)
    assert first.params(spec) == {"max_iter": 500, **first.search.best_params}
    monkeypatch.undo()
    refit = fit_and_score(spec_of(None, params=first.params(spec)), ROWS, 1)
    assert refit.artifact == first.artifact
    reseeded = doc(SEARCH)
    reseeded["model"]["seed"] = 6
    changed = parse_spec(yaml.safe_dump(reseeded), "t.yaml")
    assert search.candidates(changed) != search.candidates(spec)


def test_a_failing_candidate_is_recorded_with_its_error() -> None:
    found = searched().search
    assert found is not None
    failed = [t for t in found.trials if t.params["penalty"] == "l1"]
    assert failed, "the draw no longer holds an l1 candidate: pick another seed"
    for t in failed:
        assert t.mean is None and t.fold_scores == ()
        assert t.error is not None and "does not take penalty 'l1'" in t.error
    assert found.best_params["penalty"] == "l2"


def test_when_every_candidate_fails_the_error_names_the_search() -> None:
    spec = spec_of({"n_iter": 3, "params": {"penalty": ["l1"], "C": [0.1, 1.0]}})
    with pytest.raises(DataError, match=r"model\.search: every one of the 2 candidates failed"):
        fit_and_score(spec, ROWS, 1)


def test_halving_narrows_down_on_more_rows_and_the_best_survives(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(search, "MIN_ROUND_ROWS", 20)  # three rounds on few rows
    spec = spec_of(
        {
            "method": "halving",
            "n_iter": 4,
            "factor": 2,
            "folds": 2,
            "params": {"C": {"low": 0.001, "high": 100.0, "log": True}},
        }
    )
    found = fit_and_score(spec, ROWS, 1).search
    assert found is not None and found.factor == 2
    by_round: dict[int, list[Any]] = {}
    for t in found.trials:
        by_round.setdefault(t.round, []).append(t)
    assert [len(by_round[r]) for r in sorted(by_round)] == [4, 2, 1]
    rows = [by_round[r][0].fold_rows for r in sorted(by_round)]
    assert all(a < b for r0, r1 in itertools.pairwise(rows) for a, b in zip(r0, r1, strict=True))
    assert rows[-1] == tuple(f.fit_rows for f in found.folds)  # the last round: whole folds
    for r in (0, 1):  # each round keeps its best half
        ranked = sorted(by_round[r], key=lambda t: -t.mean)
        kept = {t.candidate for t in ranked[: math.ceil(len(ranked) / 2)]}
        assert {t.candidate for t in by_round[r + 1]} == kept
    winner = found.trials[found.best]
    assert winner.round == 2 and all(
        any(t.candidate == winner.candidate for t in by_round[r]) for r in by_round
    )


def test_a_regression_search_keeps_the_lowest_error() -> None:
    raw = yaml.safe_load((REPO / "dags" / "specs" / "customer_spend.yaml").read_text())
    raw["model"] = {
        "estimator": "ridge",
        "search": {
            "n_iter": 4,
            "cv": "hash",
            "metric": "rmse",
            "params": {"alpha": {"low": 0.01, "high": 1e4, "log": True}},
        },
    }
    spec = parse_spec(yaml.safe_dump(raw), "spend.yaml")
    found = fit_and_score(spec, ROWS, 1).search
    assert found is not None and not found.higher_is_better and found.cv == "hash"
    assert found.trials[found.best].mean == min(t.mean for t in found.trials if t.mean is not None)


# Lineage, model card, show, reproduce --------------------------------------------------------
@dataclass(frozen=True)
class Trained:
    store: LocalStore
    spec: ModelSpec
    html: str


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """v1: a searched version, registered and evaluated; v2: the same without a search."""
    store = LocalStore(tmp_path_factory.mktemp("search") / "store")
    snap = snapshot(ROWS, ["batch"], store)
    spec = spec_of(SEARCH)
    trigger = Trigger("manual", user="pytest", reason="search", run_id="run-1")
    train_candidate(spec, snap.hash, trigger, "run-1", store, CODE)
    result = evaluate_candidate(spec, 1, "run-1", store)
    train_candidate(spec_of(None), snap.hash, trigger, "run-2", store, CODE)
    html = (store.root / result.report_uri.removeprefix(store.uri + "/")).read_text()
    return Trained(store, spec, html)


def test_the_trials_round_trip_through_the_registry(trained: Trained) -> None:
    registry = Registry(trained.store)
    meta = registry.get_version(trained.spec.name, 1)
    fit = searched()
    assert meta.search == fit.search and meta.model_sha256 == sha256(fit.artifact)
    assert meta.params == fit.params(trained.spec)  # what was fitted, the winner's included
    stored = json.loads(
        trained.store.get_bytes(f"models/{trained.spec.name}/versions/1/metadata.json")
    )
    assert len(stored["search"]["trials"]) == 4
    unsearched = trained.store.get_bytes(f"models/{trained.spec.name}/versions/2/metadata.json")
    assert "search" not in json.loads(unsearched)
    assert registry.get_version(trained.spec.name, 2).search is None


def test_the_model_card_lists_every_trial_best_first(trained: Trained) -> None:
    meta = Registry(trained.store).get_version(trained.spec.name, 1)
    assert meta.search is not None
    section = trained.html.split("<h2>Hyperparameter search</h2>")[1].split("<h2>")[0]
    rows = section.split("<tr")[2:]  # after the header
    assert len(rows) == len(meta.search.trials)
    assert rows[0].startswith(" class='pass'><td>1 (winner)</td>")
    assert "does not take penalty" in section and "3 time folds" in section
    means = [float(m) for m in re.findall(r"<td>(0\.\d{4})</td><td></td></tr>", section)]
    assert means == sorted(means, reverse=True) and means


def test_mlops_show_tells_the_search(trained: Trained, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["--store", trained.store.uri, "show", trained.spec.name, "1"]) == 0
    out = capsys.readouterr().out
    assert "  search       random, 4 trials by roc_auc over 3 time folds" in out
    assert re.search(r"    \* candidate \d+ +0\.\d{4} +C=[0-9.]+, penalty=l2", out)


def test_reproduce_rebuilds_a_searched_version_bit_for_bit(trained: Trained) -> None:
    result = reproduce(trained.store, trained.spec.name, 1, CODE)
    assert result.identical and result.notes == (), result.notes
