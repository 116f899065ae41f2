"""Time of a hyperparameter search (`model.search`) beside one fit on the same rows, same run.

Builds `--rows` rows of the demo consumer-credit table (`synthetic.demo_rows`: 20 numeric and 5
categorical features, one day of event times), splits them as training does (the newest 20 %
held out), and on the training split times:

* one fit of the `credit_default` spec's pipeline (gradient-boosted trees, `max_iter` 100,
  the other params at their defaults), the baseline;
* `search.run_search` of `--trials` candidates (`random`, or `halving` with `--method`) over 3
  time folds (expanding windows: the folds fit on 1/4, 2/4 and 3/4 of the training rows);

* the winner refitted on the whole training split (what `fit_and_score` does next);

and prints the search's total time, its time per trial, and both as multiples of the one fit.
A random trial fits three folds of 1/4 to 3/4 of the rows each, about 1.5 fits' worth of rows,
plus scoring; scikit-learn's trees stop early only on more than 10,000 rows, so below that a
fold's fit runs all its iterations. No assertion is made on any time.

    PYTHONPATH=$PWD .venv/bin/python bench/search.py                       # 50 trials, 100k rows
    PYTHONPATH=$PWD .venv/bin/python bench/search.py --rows 20000 --trials 8   # a smoke run
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import sklearn  # noqa: E402

from mlops_tasks.data import synthetic  # noqa: E402
from mlops_tasks.model.modelling import split  # noqa: E402
from mlops_tasks.model.search import run_search, searched_spec  # noqa: E402
from mlops_tasks.model.training import fit_pipeline  # noqa: E402
from mlops_tasks.specs import ModelSpec, load_spec  # noqa: E402

RANGES = {
    "learning_rate": {"low": 0.01, "high": 0.3, "log": True},
    "max_leaf_nodes": {"low": 8, "high": 64},
    "min_samples_leaf": {"low": 10, "high": 200, "log": True},
    "l2_regularization": {"low": 0.0, "high": 10.0},
}


def spec_for(trials: int, method: str) -> ModelSpec:
    raw = load_spec(REPO / "dags" / "specs" / "credit_default.yaml").model_dump(mode="json")
    raw["model"] = {
        "estimator": "hist_gradient_boosting",
        "params": {"max_iter": 100},
        "seed": 42,
        "search": {"method": method, "n_iter": trials, "cv": "time", "folds": 3, "params": RANGES},
    }
    return ModelSpec.model_validate(raw)


def cpu_wait_us() -> int:
    """Microseconds some task on the machine has waited for a CPU (Linux PSI), -1 without."""
    try:
        line = Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except OSError:
        return -1
    return int(line.rsplit("total=", 1)[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="rows of demo data (100000)")
    parser.add_argument("--trials", type=int, default=50, help="candidates to draw (50)")
    parser.add_argument("--method", choices=["random", "halving"], default="random")
    parser.add_argument("--threads", type=int, default=1, help="native threads per fit (1)")
    args = parser.parse_args()

    spec = spec_for(args.trials, args.method)
    df = synthetic.demo_rows(args.rows)
    train, holdout, _ = split(spec, df)
    print(
        f"search bench: {args.rows} rows ({len(train)} training, {len(holdout)} held out), "
        f"{args.trials} {args.method} trials, 3 time folds, {args.threads} thread(s); "
        f"python {platform.python_version()}, scikit-learn {sklearn.__version__}, "
        f"nproc {os.cpu_count()}"
    )

    fixed = spec.model_copy(
        update={"model": spec.model.model_copy(update={"search": None})}
    )  # the same pipeline without a search
    fit_pipeline(fixed, train.head(2_000), args.threads)  # warm up imports and thread pools
    started = time.perf_counter()
    fit_pipeline(fixed, train, args.threads)
    one_fit = time.perf_counter() - started

    waited = cpu_wait_us()
    started = time.perf_counter()
    result = run_search(spec, train, args.threads)
    total = time.perf_counter() - started
    waited = cpu_wait_us() - waited

    winner = searched_spec(spec, result)
    started = time.perf_counter()
    fit_pipeline(winner, train, args.threads)
    refit = time.perf_counter() - started

    trials = len(result.trials)
    failed = sum(t.error is not None for t in result.trials)
    best = result.trials[result.best]
    per_trial = total / trials
    rows = [
        (f"one fit on {len(train)} rows", one_fit),
        (f"search, {trials} trials ({failed} failed)", total),
        ("per trial", per_trial),
        ("the winner refitted", refit),
    ]
    for label, seconds in rows:
        print(f"  {label:<34} {seconds:8.2f} s  = {seconds / one_fit:6.2f} x one fit")
    if waited >= 0:
        print(f"  CPU wait during the search: {waited / 1e6 / total:.0%} (Linux PSI, machine-wide)")
    params = ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
        for k, v in result.best_params.items()
    )
    print(f"  best {result.metric} {best.mean:.4f} (mean of the folds) with {params}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
