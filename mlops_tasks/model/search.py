"""Hyperparameter search on a version's training split (`model.search`).

Candidates are drawn from the spec's ranges with a numpy Generator seeded by `model.seed`, in
the sorted order of the param names, so the same spec (whatever its YAML layout) draws the
same candidates. Each is scored by the search metric on cross-validation folds of the training
split only; the gate's holdout is never seen:

    time   expanding windows in time order (`data.time_column`): the training rows are cut into
           folds + 1 blocks; fold k fits on blocks 1..k and scores block k + 1, so no fold
           scores rows older than the rows it was fitted on.
    hash   a row hash salted apart from the holdout's (`modelling.row_buckets`) puts each row
           in one fold; fold k scores its rows and fits on the others.

`random` scores every candidate on the whole of each fold. `halving` (successive halving)
scores every candidate on a share of each fold's fitting rows (the newest, or the first by the
row hash), keeps the best 1/factor, and scores those on factor times as many rows, until the
last round fits on the whole fold; the best of the last round wins. The first round's share is
as small as the number of candidates asks, but never below `MIN_ROUND_ROWS` rows per fold.

A candidate that fails (a combination scikit-learn refuses, a fit that raises, a metric that
is undefined on a fold) is recorded with its error and no score. Ties go to the candidate drawn
first. Every fit goes through `modelling.fit_rows` with the version's thread count, so the
whole search, and the winner refitted by `training.fit_and_score`, come out the same on every
run: `mlops reproduce` repeats it.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from mlops_tasks.errors import DataError
from mlops_tasks.model.modelling import (
    binary_labels,
    class_labels,
    compute_metrics,
    fit_rows,
    higher_is_better,
    predict_scores,
    prepare_features,
    row_buckets,
)
from mlops_tasks.model.threads import fit_threads
from mlops_tasks.records import SearchFold, SearchResult, SearchTrial
from mlops_tasks.specs import ESTIMATORS, ModelSpec, ParamRule, SearchRange, check_params, family

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

#: The salt of the row hash that puts each training row in a `hash` fold.
SEARCH_SALT = "search:"
#: Halving: the fewest rows a fold's fit uses in a round (the whole fold when it has fewer).
MIN_ROUND_ROWS = 50
#: How many draws random sampling makes to find `n_iter` distinct candidates.
_DRAWS_PER_CANDIDATE = 10
_MAX_ERROR = 300


@dataclass(frozen=True)
class Folds:
    """Positions into the training split: per fold, the fitting rows in the order a row
    budget takes them (the first `m` are the `m` a round fits on) and the validation rows."""

    fit: tuple[np.ndarray, ...]
    validation: tuple[np.ndarray, ...]
    info: tuple[SearchFold, ...]


def time_folds(n: int, folds: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Expanding-window folds over `n` rows in time order, as positions in that order: fold
    k fits on the first k of folds + 1 equal blocks and validates on block k + 1."""
    bounds = [round(n * i / (folds + 1)) for i in range(folds + 2)]
    return [
        (np.arange(0, bounds[k]), np.arange(bounds[k], bounds[k + 1])) for k in range(1, folds + 1)
    ]


def make_folds(spec: ModelSpec, train: pd.DataFrame) -> Folds:
    """The search's folds over `train` (positions), checked to be usable: each fits on and
    scores at least two rows and, for a classifier, sees two classes on both sides."""
    search = spec.model.search
    assert search is not None
    k = search.folds
    fits: list[np.ndarray] = []
    vals: list[np.ndarray] = []
    info: list[SearchFold] = []
    if search.cv == "time":
        column = spec.data.time_column
        if column is None or column not in train.columns:
            raise DataError(
                f"{spec.name}: model.search.cv: time folds order the rows by "
                f"data.time_column {column!r}, which the training rows do not have",
                field="model.search.cv",
            )
        times = train[column].reset_index(drop=True)
        order = times.sort_values(kind="mergesort").index.to_numpy()  # as `modelling.split`
        for fit, val in time_folds(len(train), k):
            fits.append(order[fit][::-1])  # newest first: a row budget keeps the newest rows
            vals.append(order[val])
            ends = [str(times.iloc[order[val[0]]]), str(times.iloc[order[val[-1]]])]
            info.append(SearchFold(len(fit), len(val), *(ends if len(val) else [])))
    else:
        bucket = row_buckets(spec, train, SEARCH_SALT) * k
        fold = np.minimum(np.floor(bucket), k - 1).astype(int)
        within = bucket - fold  # uniform in [0, 1) within each fold, whatever the fold
        for j in range(k):
            others = np.flatnonzero(fold != j)
            fits.append(others[np.argsort(within[others], kind="mergesort")])
            vals.append(np.flatnonzero(fold == j))
            info.append(SearchFold(len(fits[-1]), len(vals[-1])))
    _check_folds(spec, train, fits, vals)
    return Folds(tuple(fits), tuple(vals), tuple(info))


def _check_folds(
    spec: ModelSpec, train: pd.DataFrame, fits: list[np.ndarray], vals: list[np.ndarray]
) -> None:
    y = train[spec.target].to_numpy()
    for i, (fit, val) in enumerate(zip(fits, vals, strict=True), start=1):
        problem = None
        if len(fit) < 2 or len(val) < 2:
            problem = f"fits on {len(fit)} and scores {len(val)} rows"
        elif spec.task != "regression":
            for side, rows in (("fitting", fit), ("validation", val)):
                labels = (
                    binary_labels(spec, y[rows], "the search folds")
                    if spec.task == "classification"
                    else class_labels(y[rows])
                )
                if len(set(labels.tolist())) < 2:
                    problem = f"has a single class in its {side} rows"
                    break
        if problem:
            raise DataError(
                f"{spec.name}: model.search.folds: fold {i} of {len(fits)} {problem} "
                f"({len(train)} training rows); use fewer folds or more rows",
                field="model.search.folds",
            )


def candidates(spec: ModelSpec) -> list[dict[str, Any]]:
    """Up to `n_iter` distinct candidates drawn from the spec's ranges, seeded by
    `model.seed` (fewer when the ranges hold fewer distinct combinations)."""
    search = spec.model.search
    assert search is not None
    rules = ESTIMATORS[spec.model.estimator].rules(family(spec.task))
    rng = np.random.default_rng(spec.model.seed)
    names = sorted(search.params)
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for _ in range(search.n_iter * _DRAWS_PER_CANDIDATE):
        if len(out) == search.n_iter:
            break
        candidate = {name: draw(rng, search.params[name], rules[name]) for name in names}
        key = json.dumps(candidate, sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append(candidate)
    return out


def draw(rng: np.random.Generator, given: SearchRange, rule: ParamRule) -> Any:
    """One value of a param from its range: a choice, a whole number from low to high (both
    included) for an integer param, else a number between them; on a log scale with `log`."""
    if given.choices is not None:
        return given.choices[int(rng.integers(len(given.choices)))]
    assert given.low is not None and given.high is not None
    low, high = given.low, given.high
    if rule.type == "integer":
        lo, hi = int(low), int(high)
        if given.log:
            value = math.floor(math.exp(rng.uniform(math.log(lo), math.log(hi + 1))))
            return min(max(value, lo), hi)
        return int(rng.integers(lo, hi + 1))
    if given.log:
        return min(max(math.exp(rng.uniform(math.log(low), math.log(high))), low), high)
    return float(rng.uniform(low, high))


@dataclass(frozen=True)
class _Data:
    spec: ModelSpec
    x: pd.DataFrame
    y: np.ndarray
    folds: Folds
    metric: str
    threads: int


def _score(
    data: _Data, candidate: int, params: dict[str, Any], round_: int, share: float
) -> SearchTrial:
    """`params` scored on every fold, each fitting on `share` of its rows (at least
    `MIN_ROUND_ROWS`)."""
    spec = data.spec
    rows: list[int] = []
    scores: list[float | None] = []

    def trial(error: str | None = None) -> SearchTrial:
        mean = None if error else float(np.mean(np.asarray(scores, dtype=float)))
        return SearchTrial(candidate, round_, params, tuple(rows), tuple(scores), mean, error)

    try:
        check_params(spec.model.estimator, {**spec.model.params, **params}, family(spec.task))
    except ValueError as err:
        return trial(_short(str(err)))
    for i, (fit, val) in enumerate(zip(data.folds.fit, data.folds.validation, strict=True)):
        budget = (
            len(fit)
            if share >= 1
            else min(len(fit), max(math.ceil(share * len(fit)), MIN_ROUND_ROWS))
        )
        keep = np.sort(fit[:budget])
        rows.append(budget)
        try:
            model = fit_rows(spec, data.x.iloc[keep], data.y[keep], data.threads, params)
            with fit_threads(data.threads):  # scoring too: no more threads than the fit's
                pred, proba = predict_scores(spec, model, data.x.iloc[val])
            score = compute_metrics(spec.task, data.y[val], pred, proba, spec)[data.metric]
        except (ValueError, ArithmeticError) as err:  # what scikit-learn raises for a bad fit
            return trial(_short(f"fold {i + 1}: {type(err).__name__}: {err}"))
        if score is None:
            return trial(f"fold {i + 1}: {data.metric} is undefined on its validation rows")
        scores.append(score)
    return trial()


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_ERROR else text[: _MAX_ERROR - 3] + "..."


def _ranked(trials: list[SearchTrial], higher: bool) -> list[int]:
    """The indices of the scored `trials`, best first; ties go to the candidate drawn first."""

    def key(i: int) -> tuple[float, int]:
        mean = trials[i].mean
        assert mean is not None
        return (-mean if higher else mean, trials[i].candidate)

    return sorted((i for i, t in enumerate(trials) if t.mean is not None), key=key)


def rounds(candidates: int, factor: int, smallest_fold: int) -> int:
    """How many rounds halving runs: enough to go from `candidates` to one by keeping
    1/`factor` each round, fewer when the first round would fit a fold on fewer than
    `MIN_ROUND_ROWS` rows."""
    n = 1
    while factor**n <= candidates and smallest_fold >= MIN_ROUND_ROWS * factor**n:
        n += 1
    return n


def run_search(spec: ModelSpec, train: pd.DataFrame, threads: int = 1) -> SearchResult:
    """The spec's search on `train` (the version's training split): every trial and the
    winner. Raises DataError naming `model.search` when every candidate fails."""
    search = spec.model.search
    assert search is not None
    started = time.perf_counter()
    metric = spec.search_metric
    higher = higher_is_better(spec.task, metric)
    folds = make_folds(spec, train)
    data = _Data(
        spec, prepare_features(spec, train), train[spec.target].to_numpy(), folds, metric, threads
    )
    drawn = candidates(spec)
    factor = search.halving_factor if search.method == "halving" else None
    total = 1 if factor is None else rounds(len(drawn), factor, min(len(f) for f in folds.fit))
    trials: list[SearchTrial] = []
    alive = list(range(len(drawn)))
    for round_ in range(total):
        share = 1.0 if factor is None else float(factor) ** (round_ - (total - 1))
        scored = [_score(data, c, drawn[c], round_, share) for c in alive]
        ranked = _ranked(scored, higher)
        if not ranked:
            raise DataError(
                f"{spec.name}: model.search: every one of the {len(scored)} candidates "
                f"failed in round {round_ + 1}; the first: {scored[0].error}",
                field="model.search",
            )
        if factor is not None:
            alive = sorted(scored[i].candidate for i in ranked[: math.ceil(len(ranked) / factor)])
        ranked = [len(trials) + i for i in ranked]
        trials.extend(scored)
    best = ranked[0]
    result = SearchResult(
        method=search.method,
        metric=metric,
        higher_is_better=higher,
        cv=search.cv,
        folds=folds.info,
        trials=tuple(trials),
        best=best,
        best_params=dict(trials[best].params),
        factor=factor,
    )
    log.info(
        "%s: %s search of %d candidate(s), %d trial(s) in %.1f s: best %s %.4f with %s",
        spec.name,
        search.method,
        len(drawn),
        len(trials),
        time.perf_counter() - started,
        metric,
        trials[best].mean,
        result.best_params,
    )
    return result


def searched_spec(spec: ModelSpec, result: SearchResult) -> ModelSpec:
    """`spec` with the winner's params fixed beside `model.params` and no search: what the
    version is refitted (and its threshold chosen) with."""
    model = spec.model.model_copy(
        update={"params": {**spec.model.params, **result.best_params}, "search": None}
    )
    return spec.model_copy(update={"model": model})
