"""Model specs: one YAML file per model, validated into a typed `ModelSpec`.

Adding a model means writing one spec; everything else (DAGs, validation suite, training
pipeline, gate, drift policy) is derived from it. Unknown keys and wrong types are rejected with
an error that names the file and the field path.

Everything is bounded when the spec is read, so a spec that loads cannot crash a task later:
numbers are finite and within ranges (seeds fit numpy, windows fit a date, row counts fit a
table), ranges have min <= max, cron schedules are checked field by field, strings and lists
have maximum lengths. The file itself must be UTF-8, at most `MAX_SPEC_BYTES`, one YAML mapping
with string keys, no duplicate keys, no anchors/aliases and at most `MAX_YAML_DEPTH` levels;
anything else is a `SpecError` naming the file (see `parse_spec`).
"""

from __future__ import annotations

import calendar
import difflib
import hashlib
import json
import math
import re
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from mlops_tasks.data.expressions import Expression, ExpressionError
from mlops_tasks.data.expressions import parse as parse_expression
from mlops_tasks.errors import SpecError
from mlops_tasks.records import ReferenceKind

#: Columns the prediction service writes beside a request's features (`mlops_tasks.data.traffic`),
#: and the label column the feedback join adds: a feature (or a target other than `label`)
#: with one of these names would be overwritten in the log, so a spec may not use them.
LOGGED_COLUMNS = frozenset(
    {"model", "request_id", "row", "ts", "version", "prediction", "probability", "data_issues"}
)
LABEL_COLUMN = "label"

TaskType = Literal["classification", "regression"]
#: What a spec's `task` may be: a binary classifier, a classifier of three or more classes
#: (text or integer labels), or a regression. A multiclass model uses the classifiers.
SpecTask = Literal["classification", "multiclass", "regression"]


def family(task: str) -> TaskType:
    """The estimators a task uses: a multiclass model is a classifier."""
    return "regression" if task == "regression" else "classification"


#: Limits on the spec file: larger files, deeper nesting are refused before they are built.
MAX_SPEC_BYTES = 256 * 1024
MAX_YAML_DEPTH = 32
#: Row counts (row bounds, minimum rows of a window or slice) beyond any table this loads.
MAX_ROWS = 10**9
MAX_COLUMNS = 1_000
MAX_LIST = 100
#: numpy's RandomState and sklearn take seeds in [0, 2**32 - 1].
MAX_SEED = 2**32 - 1
#: Lengths: column/owner names, URIs, free text; every other string has at most MAX_TEXT.
MAX_NAME = 256
MAX_URI = 2_048
MAX_TEXT = 4_096

ColumnName = Annotated[str, StringConstraints(min_length=1, max_length=MAX_NAME)]

#: Metrics the evaluation knows, by task, and whether higher is better.
METRICS: dict[str, dict[str, bool]] = {
    "classification": {
        "roc_auc": True,
        "pr_auc": True,
        "f1": True,
        "accuracy": True,
        "log_loss": False,
    },
    "multiclass": {
        "log_loss": False,
        "macro_f1": True,
        "weighted_f1": True,
        "balanced_accuracy": True,
        "accuracy": True,
        "roc_auc_ovr": True,
    },
    "regression": {"rmse": False, "mae": False, "r2": True},
}
#: Per-class scores of a multiclass model (`evaluation.min_per_class`), each in [0, 1].
PER_CLASS_METRICS = ("precision", "recall", "f1")
#: The values each metric can take (None: unbounded on that side); thresholds must lie within.
METRIC_BOUNDS: dict[str, tuple[float | None, float | None]] = {
    "roc_auc": (0.0, 1.0),
    "pr_auc": (0.0, 1.0),
    "f1": (0.0, 1.0),
    "accuracy": (0.0, 1.0),
    "log_loss": (0.0, None),
    "macro_f1": (0.0, 1.0),
    "weighted_f1": (0.0, 1.0),
    "balanced_accuracy": (0.0, 1.0),
    "roc_auc_ovr": (0.0, 1.0),
    "rmse": (0.0, None),
    "mae": (0.0, None),
    "r2": (None, 1.0),
}


class ParamRule(BaseModel):
    """What a hyperparameter may be: its type and, for numbers, its bounds."""

    type: Literal["integer", "number", "string", "boolean"]
    minimum: float | None = None
    maximum: float | None = None
    enum: list[Any] | None = None
    nullable: bool = False


def _int(lo: float | None = None, hi: float | None = None, nullable: bool = False) -> ParamRule:
    return ParamRule(type="integer", minimum=lo, maximum=hi, nullable=nullable)


def _num(lo: float | None = None, hi: float | None = None) -> ParamRule:
    return ParamRule(type="number", minimum=lo, maximum=hi)


def _one_of(*values: str) -> ParamRule:
    return ParamRule(type="string", enum=list(values))


_BOOL = ParamRule(type="boolean")


class EstimatorInfo(BaseModel):
    """An allow-listed estimator: the sklearn class, the tasks it serves, its tunable params.

    `cls` names the class; `{Task}` is `Classifier` or `Regressor` by task, `{A|B}` is `A` for
    a classifier and `B` for a regressor.

    `params` hold for every task, `task_params` for one task only (a loss that differs between
    classifier and regressor). Some params are the platform's own and are turned into sklearn
    arguments by `modelling.build_estimator` (a logistic regression's `penalty`, an MLP's
    `hidden_units`/`hidden_layers`). `defaults` are set unless the spec gives the param (a
    classifier's loss must give probabilities). `sample_weight`: its `fit` takes sample
    weights, so `model.class_weight` can weight its classes.
    """

    cls: str
    tasks: tuple[TaskType, ...]
    params: dict[str, ParamRule]
    task_params: dict[TaskType, dict[str, ParamRule]] = Field(default_factory=dict)
    defaults: dict[TaskType, dict[str, Any]] = Field(default_factory=dict)
    sample_weight: bool = True

    def rules(self, task: str | None = None) -> dict[str, ParamRule]:
        """The tunable params for `task` (for no task: those of any task, enums merged)."""
        out = dict(self.params)
        for for_task, extra in self.task_params.items():
            if task is not None and for_task != task:
                continue
            for name, rule in extra.items():
                known = out.get(name)
                if known is not None and known.enum is not None and rule.enum is not None:
                    merged = [*known.enum, *(v for v in rule.enum if v not in known.enum)]
                    out[name] = rule.model_copy(update={"enum": merged})
                else:
                    out[name] = rule
        return out


_TREE = {
    "max_depth": _int(1, 64, nullable=True),
    "min_samples_leaf": _int(1, 10_000),
}
_FOREST = {"n_estimators": _int(1, 5_000), "max_features": _num(0.01, 1.0), **_TREE}
#: Coordinate descent (lasso, elastic net): `random` updates a random coefficient each step.
_DESCENT = {
    "alpha": _num(1e-6, 1e6),
    "max_iter": _int(10, 100_000),
    "selection": _one_of("cyclic", "random"),
}
#: Penalties as a spec names them; `none` is no penalty at all.
PENALTIES = ("l2", "l1", "elasticnet", "none")
#: The logistic regression solvers that take each penalty (scikit-learn's own table).
LOGISTIC_SOLVERS: dict[str, tuple[str, ...]] = {
    "l2": ("lbfgs", "liblinear", "newton-cg", "newton-cholesky", "sag", "saga"),
    "l1": ("liblinear", "saga"),
    "elasticnet": ("saga",),
    "none": ("lbfgs", "newton-cg", "newton-cholesky", "sag", "saga"),
}
ESTIMATORS: dict[str, EstimatorInfo] = {
    "hist_gradient_boosting": EstimatorInfo(
        cls="sklearn.ensemble.HistGradientBoosting{Task}",
        tasks=("classification", "regression"),
        params={
            "learning_rate": _num(1e-4, 1.0),
            "max_iter": _int(1, 5_000),
            "max_leaf_nodes": _int(2, 1_024, nullable=True),
            "l2_regularization": _num(0.0, 1e6),
            "early_stopping": _BOOL,
            **_TREE,
        },
    ),
    "random_forest": EstimatorInfo(
        cls="sklearn.ensemble.RandomForest{Task}",
        tasks=("classification", "regression"),
        params=_FOREST,
    ),
    "extra_trees": EstimatorInfo(
        cls="sklearn.ensemble.ExtraTrees{Task}",
        tasks=("classification", "regression"),
        params={**_FOREST, "bootstrap": _BOOL},
    ),
    "gradient_boosting": EstimatorInfo(
        cls="sklearn.ensemble.GradientBoosting{Task}",
        tasks=("classification", "regression"),
        params={
            "learning_rate": _num(1e-4, 1.0),
            "n_estimators": _int(1, 5_000),
            "subsample": _num(0.01, 1.0),
            "max_features": _num(0.01, 1.0),
            **_TREE,
        },
        task_params={
            "classification": {"loss": _one_of("log_loss", "exponential")},
            "regression": {"loss": _one_of("squared_error", "absolute_error", "huber", "quantile")},
        },
    ),
    "logistic_regression": EstimatorInfo(
        cls="sklearn.linear_model.LogisticRegression",
        tasks=("classification",),
        params={
            "C": _num(1e-6, 1e6),
            "max_iter": _int(10, 100_000),
            "penalty": _one_of(*PENALTIES),
            "l1_ratio": _num(0.0, 1.0),
            "solver": _one_of(*LOGISTIC_SOLVERS["l2"]),
        },
    ),
    "sgd": EstimatorInfo(
        cls="sklearn.linear_model.SGD{Task}",
        tasks=("classification", "regression"),
        params={
            "alpha": _num(1e-8, 10.0),
            "penalty": _one_of(*PENALTIES),
            "l1_ratio": _num(0.0, 1.0),
            "max_iter": _int(1, 100_000),
            "learning_rate": _one_of("optimal", "constant", "invscaling", "adaptive"),
            "eta0": _num(1e-8, 10.0),
            "early_stopping": _BOOL,
        },
        # the platform scores classifiers by probability: only these two losses give one
        task_params={
            "classification": {"loss": _one_of("log_loss", "modified_huber")},
            "regression": {
                "loss": _one_of(
                    "squared_error", "huber", "epsilon_insensitive", "squared_epsilon_insensitive"
                )
            },
        },
        defaults={"classification": {"loss": "log_loss"}},
    ),
    "svm": EstimatorInfo(
        cls="sklearn.svm.{SVC|SVR}",
        tasks=("classification", "regression"),
        params={
            "C": _num(1e-6, 1e6),
            "kernel": _one_of("rbf", "linear", "poly", "sigmoid"),
            "degree": _int(1, 10),
            "gamma": _one_of("scale", "auto"),
        },
        task_params={"regression": {"epsilon": _num(0.0, 1e6)}},
    ),
    "knn": EstimatorInfo(
        cls="sklearn.neighbors.KNeighbors{Task}",
        tasks=("classification", "regression"),
        params={
            "n_neighbors": _int(1, 1_000),
            "weights": _one_of("uniform", "distance"),
            "p": _int(1, 2),
        },
        # brute force: no search tree to store, so nothing to trust beyond the training rows
        defaults={
            "classification": {"algorithm": "brute"},
            "regression": {"algorithm": "brute"},
        },
        sample_weight=False,
    ),
    "mlp": EstimatorInfo(
        cls="sklearn.neural_network.MLP{Task}",
        tasks=("classification", "regression"),
        params={
            "hidden_units": _int(1, 1_024),
            "hidden_layers": _int(1, 5),
            "activation": _one_of("relu", "tanh", "logistic", "identity"),
            "solver": _one_of("adam", "lbfgs", "sgd"),
            "alpha": _num(0.0, 1e3),
            "learning_rate_init": _num(1e-6, 1.0),
            "max_iter": _int(1, 10_000),
            "early_stopping": _BOOL,
        },
    ),
    "ridge": EstimatorInfo(
        cls="sklearn.linear_model.Ridge",
        tasks=("regression",),
        params={"alpha": _num(0.0, 1e6)},
    ),
    "linear_regression": EstimatorInfo(
        cls="sklearn.linear_model.LinearRegression",
        tasks=("regression",),
        params={"fit_intercept": _BOOL},
    ),
    "lasso": EstimatorInfo(
        cls="sklearn.linear_model.Lasso",
        tasks=("regression",),
        params=_DESCENT,
    ),
    "elastic_net": EstimatorInfo(
        cls="sklearn.linear_model.ElasticNet",
        tasks=("regression",),
        params={**_DESCENT, "l1_ratio": _num(0.0, 1.0)},
    ),
}


#: `model.estimator: custom`: the user's own scikit-learn estimator class, named by
#: `model.class_path`. Its params go to its constructor as they are (JSON values); training
#: checks the class and its params when it imports it (`modelling.custom_class`).
CUSTOM_ESTIMATOR = "custom"
_CLASS_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")
#: Packages a custom estimator may not come from: the platform itself and anything whose
#: classes or functions could run code when a stored model is rebuilt (`artifacts`).
_NOT_ESTIMATOR_PACKAGES = frozenset({"mlops_tasks", "airflow", "plugins", "dags", "skops"})


def check_class_path(path: str) -> str:
    """`path` if it names a class as `package.module.Class` outside the standard library and
    the platform's own packages; a ValueError saying why not (nothing is imported)."""
    import sys

    if not _CLASS_PATH.match(path):
        raise ValueError(
            f"{_short(path)} is not a dotted path to a class, e.g. acme_models.ranking.Scorer"
        )
    top = path.split(".", 1)[0]
    if top in sys.stdlib_module_names or top in _NOT_ESTIMATOR_PACKAGES or top == "builtins":
        raise ValueError(
            f"{path!r}: a custom estimator comes from the user's own package, not from "
            f"{top!r} (the standard library and the platform's packages are never trusted)"
        )
    return path


def check_plain_value(value: Any, where: str) -> None:
    """A ValueError naming `where` unless `value` is plain JSON (objects, lists, text, numbers,
    booleans, null) that a float holds exactly: numbers finite and within 2**53, text at most
    MAX_TEXT characters."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{where}: must be a finite number, got {value!r}")
    if isinstance(value, int | float) and not isinstance(value, bool) and abs(value) > 2**53:
        raise ValueError(f"{where}: {_short(value)} is too large")
    if isinstance(value, str) and len(value) > MAX_TEXT:
        raise ValueError(f"{where}: longer than {MAX_TEXT} characters")
    if isinstance(value, dict):
        for key, item in value.items():
            check_plain_value(item, f"{where}.{_short(key, 40)}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            check_plain_value(item, f"{where}.{i}")
    elif value is not None and not isinstance(value, bool | int | float | str):
        raise ValueError(f"{where}: {type(value).__name__} is not a JSON value")


def check_custom_params(params: dict[str, Any]) -> None:
    """A custom estimator's params are constructor arguments: plain JSON values
    (`check_plain_value`); its constructor is the judge of what they mean, when training
    imports it."""
    for name, value in params.items():
        if not name.isidentifier():
            raise ValueError(f"params: {_short(name, 40)} is not a Python argument name")
        check_plain_value(value, f"params.{name}")


def check_param(estimator: str, name: str, value: Any, task: str | None = None) -> None:
    """Raise ValueError unless `value` is allowed for hyperparameter `name` of `estimator`
    (on `task`; without one, on any task it serves)."""
    rules = ESTIMATORS[estimator].rules(task)
    rule = rules.get(name)
    if rule is None:
        raise ValueError(
            f"unknown parameter {_short(name)} for estimator {estimator!r}"
            + (f" on {task}" if task else "")
            + f"; allowed: {', '.join(sorted(rules))}"
        )
    if value is None:
        if rule.nullable:
            return
        raise ValueError(f"parameter {name!r} may not be null")
    expected: dict[str, tuple[type, ...]] = {
        "integer": (int,),
        "number": (int, float),
        "string": (str,),
        "boolean": (bool,),
    }
    if (isinstance(value, bool) and rule.type != "boolean") or not isinstance(
        value, expected[rule.type]
    ):
        raise ValueError(f"parameter {name!r} must be of type {rule.type}, got {_short(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"parameter {name!r} must be a finite number, got {_short(value)}")
    if isinstance(value, int | float):
        _check_bounds(name, value, rule)
    if rule.enum is not None and value not in rule.enum:
        raise ValueError(f"parameter {name!r} must be one of {rule.enum}, got {_short(value)}")


def check_params(
    estimator: str, params: dict[str, Any], task: str | None = None, combined: bool = True
) -> None:
    """Raise ValueError `params.<name>: ...` unless every param is allowed for `estimator` (on
    `task`, see `check_param`) and, with `combined`, together they make an estimator
    scikit-learn fits (a penalty its solver takes)."""
    for name, value in params.items():
        try:
            check_param(estimator, name, value, task)
        except ValueError as err:
            where = f"params.{name}" if _PLAIN_KEY.match(name) else "params"
            raise ValueError(f"{where}: {err}") from None
    if not combined:
        return
    problem = _combination_problem(estimator, params)
    if problem:
        raise ValueError(f"params.{problem[0]}: {problem[1]}")


def _combination_problem(estimator: str, params: dict[str, Any]) -> tuple[str, str] | None:
    """(param, why) when params that are each allowed do not go together."""
    if estimator not in ("logistic_regression", "sgd"):
        return None
    penalty = params.get("penalty", "l2")
    if "l1_ratio" in params and penalty != "elasticnet":
        return "l1_ratio", f"only an elasticnet penalty mixes l1 and l2 (penalty is {penalty!r})"
    if estimator == "sgd":
        return None
    if penalty == "elasticnet" and "l1_ratio" not in params:
        return "l1_ratio", "an elasticnet penalty needs l1_ratio (0: pure l2, 1: pure l1)"
    if penalty == "none" and "C" in params:
        return "C", "the penalty is none: there is no regularisation strength to set"
    solver = params.get("solver", "lbfgs")
    if solver not in LOGISTIC_SOLVERS[penalty]:
        given = "" if "solver" in params else " (the default)"
        return (
            "penalty",
            f"solver {solver!r}{given} does not take penalty {penalty!r}; "
            f"give solver: one of {', '.join(LOGISTIC_SOLVERS[penalty])}",
        )
    return None


def _check_bounds(name: str, value: float, rule: ParamRule) -> None:
    # int and float compare exactly in Python, even for ints too large for a float
    if rule.minimum is not None and value < rule.minimum:
        raise ValueError(f"parameter {name!r} must be >= {rule.minimum}, got {_short(value)}")
    if rule.maximum is not None and value > rule.maximum:
        raise ValueError(f"parameter {name!r} must be <= {rule.maximum}, got {_short(value)}")


#: Airflow 3's cron presets (`airflow.sdk.definitions.timetables._cron.CRON_PRESETS`). `@once`
#: and `@continuous` are schedules but not cron expressions: the model DAGs use a cron timetable.
CRON_PRESETS: dict[str, str] = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@quarterly": "0 0 1 */3 *",
    "@yearly": "0 0 1 1 *",
}
_MONTHS = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
_DAYS = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]
#: (name, lowest, highest, names for lowest..): minute hour day-of-month month day-of-week.
_CRON_FIELDS: list[tuple[str, int, int, list[str]]] = [
    ("minute", 0, 59, []),
    ("hour", 0, 23, []),
    ("day of month", 1, 31, []),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 7, _DAYS),  # 0 and 7 are Sunday
]
_MAX_CRON_LENGTH = 200


def _cron_value(text: str, field: str, lo: int, hi: int, names: list[str]) -> int:
    if text.upper() in names:
        return lo + names.index(text.upper())
    if not text.isdigit() or not text.isascii():
        raise ValueError(
            f"{field} field: {_short(text)} is not a number" + (" or a name" if names else "")
        )
    value = int(text)
    if not lo <= value <= hi:
        raise ValueError(f"{field} field: {value} is outside {lo}-{hi}")
    return value


def _cron_field(text: str, field: str, lo: int, hi: int, names: list[str]) -> set[int]:
    """The values one field selects; lists, ranges, steps and names, as cron reads them."""
    out: set[int] = set()
    for item in text.split(","):
        base, slash, step_text = item.partition("/")
        if base == "*":
            start, end = lo, hi
        elif "-" in base:
            a, b = base.split("-", 1)
            start = _cron_value(a, field, lo, hi, names)
            end = _cron_value(b, field, lo, hi, names)
            if start > end:
                raise ValueError(f"{field} field: range {_short(item)} runs backwards")
        else:
            start = _cron_value(base, field, lo, hi, names)
            end = hi if slash else start
        step = 1
        if slash:
            if not step_text.isdigit() or not step_text.isascii():
                raise ValueError(f"{field} field: step {_short(step_text)} is not a number")
            step = int(step_text)
            if not 1 <= step <= hi - lo + 1:
                raise ValueError(f"{field} field: step {step} is outside 1-{hi - lo + 1}")
        out.update(range(start, end + 1, step))
    return out


def check_cron(expression: str) -> None:
    """Raise ValueError unless `expression` is a cron schedule Airflow runs.

    Five fields (minute hour day-of-month month day-of-week), each `*`, a number, a range
    `a-b`, a step `*/n` or `a-b/n` or `a/n`, or a comma list of those; months and days may be
    names (JAN, MON). Or one of Airflow's presets (`CRON_PRESETS`). Also refused: a schedule
    that never fires (`0 0 30 2 *`).
    """
    if len(expression) > _MAX_CRON_LENGTH:
        raise ValueError(f"cron expression longer than {_MAX_CRON_LENGTH} characters")
    if expression.startswith("@"):
        if expression in CRON_PRESETS:
            return
        extra = (
            " (a cron timetable cannot run @once/@continuous; use null for no schedule)"
            if expression in ("@once", "@continuous")
            else ""
        )
        raise ValueError(
            f"unknown preset {expression!r}; allowed: {', '.join(CRON_PRESETS)}{extra}"
        )
    parts = expression.split()
    if len(parts) != len(_CRON_FIELDS):
        raise ValueError(
            f"must be a 5-field cron expression (minute hour day-of-month month day-of-week), "
            f"an @preset, or null; got {len(parts)} field(s)"
        )
    values = [_cron_field(text, *f) for text, f in zip(parts, _CRON_FIELDS, strict=True)]
    days, months, weekdays = values[2], values[3], parts[4]
    if weekdays == "*" and min(days) > max(calendar.monthrange(2024, m)[1] for m in months):
        raise ValueError(f"{expression!r} never fires: no selected month has those days")


class _Strict(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=True, allow_inf_nan=False, str_max_length=MAX_TEXT
    )


_URI = re.compile(r"^(file|s3|store)://")
_DURATION = re.compile(r"^\s*(\d{1,9})\s*(s|m|h|d|w)\s*$")
_SECONDS = {"s": 1, "m": 60, "h": 3_600, "d": 86_400, "w": 604_800}


def duration_seconds(text: str) -> int:
    """`"90s"`, `"30m"`, `"6h"`, `"2d"`, `"1w"` in seconds; ValueError for anything else."""
    m = _DURATION.match(text)
    if m is None:
        raise ValueError(
            f"{_short(text)} is not a duration: a whole number and a unit, s m h d or w "
            '(e.g. "6h", "2d")'
        )
    seconds = int(m.group(1)) * _SECONDS[m.group(2)]
    if seconds > 3_660 * 86_400:
        raise ValueError(f"{_short(text)} is longer than ten years")
    return seconds


class KeyPair(_Strict):
    """A join key named differently in the two tables: `{left: customer, right: id}`."""

    left: ColumnName
    right: ColumnName


class JoinSpec(_Strict):
    """A point-in-time (as-of) join: each row gets the newest row of another batched table
    with the same keys at or before the row's `data.time_column` (never a later one), within
    `tolerance` (null: however old). See `mlops_tasks.data.joins`."""

    #: What lineage and data issues call the join; default: the source's last path segment
    #: (before a trailing `/batches`): `weather` for `store://weather/batches`.
    name: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9_]{0,62}$")
    source: str = Field(max_length=MAX_URI)
    keys: list[ColumnName | KeyPair] = Field(min_length=1, max_length=8)
    #: The other table's time column.
    time_key: ColumnName
    tolerance: str | None = Field(default=None, max_length=32)
    #: The other table's columns each row gets, named `prefix` + column.
    columns: list[ColumnName] = Field(min_length=1, max_length=MAX_COLUMNS)
    prefix: str = Field(default="", pattern=r"^[A-Za-z0-9_]{0,64}$")
    #: `lookup`: the service looks the columns up in the version's pinned snapshot of the
    #: table (a request carries the keys and the time column); `request`: callers send them.
    at_serving: Literal["lookup", "request"] = "lookup"

    @model_validator(mode="before")
    @classmethod
    def _default_name(cls, raw: Any) -> Any:
        if isinstance(raw, dict) and raw.get("name") is None and isinstance(raw.get("source"), str):
            parts = [p for p in raw["source"].split("://", 1)[-1].split("/") if p]
            if len(parts) > 1 and parts[-1] == "batches":  # name the table, not its folder
                parts.pop()
            last = (parts[-1] if parts else "").split(".", 1)[0]
            name = re.sub(r"[^a-z0-9_]", "_", last.lower()).lstrip("_0123456789")[:63]
            raw = {**raw, "name": name or "joined"}
        return raw

    @field_validator("source")
    @classmethod
    def _uri(cls, v: str) -> str:
        return _check_uri(v)

    @field_validator("tolerance")
    @classmethod
    def _tolerance(cls, v: str | None) -> str | None:
        if v is not None:
            duration_seconds(v)
        return v

    @property
    def left_keys(self) -> list[str]:
        return [k if isinstance(k, str) else k.left for k in self.keys]

    @property
    def right_keys(self) -> list[str]:
        return [k if isinstance(k, str) else k.right for k in self.keys]

    @property
    def outputs(self) -> list[str]:
        """The columns the join adds to each row."""
        return [self.prefix + c for c in self.columns]

    @property
    def tolerance_seconds(self) -> int | None:
        return None if self.tolerance is None else duration_seconds(self.tolerance)


def _check_uri(v: str) -> str:
    if not _URI.match(v):
        raise ValueError("must be a URI starting with file://, s3:// or store://")
    return v


class DataSpec(_Strict):
    source: str = Field(
        description="URI of a table, or of a prefix holding dt=YYYY-MM-DD batches",
        max_length=MAX_URI,
    )
    time_column: ColumnName | None = None
    id_column: ColumnName | None = None
    #: At most ten years of batches.
    training_window_days: int | None = Field(default=None, ge=1, le=3_660)
    #: Add labelled prediction traffic (the inference log joined with its feedback labels) of
    #: the training window's days to the training data.
    include_feedback: bool = False
    #: Derived columns, in order (each may use the ones before it): name -> SQL expression over
    #: the batch's columns (`mlops_tasks.data.expressions`), e.g. `dow: dayofweek(dep_time)`.
    #: Computed by one code path wherever rows are read, training and serving alike.
    derive: dict[ColumnName, Annotated[str, StringConstraints(max_length=MAX_TEXT)]] = Field(
        default_factory=dict, max_length=MAX_LIST, exclude_if=lambda v: not v
    )
    #: The rows the model is about: a boolean SQL expression. Rows outside it, and rows
    #: without a label, are left out and counted (never quarantined for that).
    scope: str | None = Field(default=None, max_length=MAX_TEXT, exclude_if=lambda v: v is None)
    #: Point-in-time joins, applied before `derive` (so derived columns may use the joined
    #: ones); the keys and `time_column` they match on are columns of the batches.
    #: Left out of the dump when empty, so specs without joins keep their hash.
    joins: list[JoinSpec] = Field(default_factory=list, max_length=8, exclude_if=lambda v: not v)

    @field_validator("derive")
    @classmethod
    def _derive(cls, v: dict[str, str]) -> dict[str, str]:
        names = list(v)
        for i, (name, text) in enumerate(v.items()):
            expression = _expression(text, name)
            later = [c for c in expression.columns if c in names[i:]]
            if later:
                raise ValueError(
                    f"{name}: uses {_short(later)}, derived at or after it "
                    "(a derived column may use only the ones listed before it)"
                )
        return v

    @field_validator("scope")
    @classmethod
    def _scope(cls, v: str | None) -> str | None:
        if v is not None:
            _expression(v, None)
        return v

    @field_validator("source")
    @classmethod
    def _uri(cls, v: str) -> str:
        return _check_uri(v)

    @model_validator(mode="after")
    def _joins(self) -> DataSpec:
        if not self.joins:
            return self
        if self.time_column is None:
            raise ValueError(
                "joins.0.time_key: an as-of join matches each row at its time, and "
                "data.time_column (the rows' time column) is not set"
            )
        derived = set(self.derive)
        if self.time_column in derived:
            raise ValueError(
                f"time_column: {self.time_column!r} is derived; data.joins match on the "
                "batches' own columns, before data.derive"
            )
        names: set[str] = set()
        added: dict[str, str] = {}
        for i, join in enumerate(self.joins):
            where = f"joins.{i}"
            if join.name in names:
                raise ValueError(f"{where}.name: {join.name!r} names another join too")
            names.add(str(join.name))
            bad = [k for k in join.left_keys if k in derived or k == self.time_column]
            if bad:
                raise ValueError(
                    f"{where}.keys: {_short(bad)} "
                    + ("is the time column" if self.time_column in bad else "is derived")
                    + "; keys are columns of the batches (joins come before data.derive)"
                )
            for out in join.outputs:
                clash = (
                    "a derived column"
                    if out in derived
                    else "the time or id column"
                    if out in (self.time_column, self.id_column)
                    else "a key"
                    if out in join.left_keys
                    else f"a column of join {added[out]!r}"
                    if out in added
                    else "a column of the inference log"
                    if out in LOGGED_COLUMNS | {LABEL_COLUMN}
                    else None
                )
                if clash:
                    raise ValueError(
                        f"{where}.columns: {out!r} would clash with {clash}; set {where}.prefix"
                    )
                added[out] = str(join.name)
        return self


def _expression(text: str, name: str | None) -> Expression:
    """`text` parsed; a ValueError naming `name` (a derived column) and the position."""
    try:
        return parse_expression(text)
    except ExpressionError as err:
        raise ValueError(f"{name}: {err}" if name else str(err)) from None


class FeatureSpec(_Strict):
    numeric: list[ColumnName] = Field(default_factory=list, max_length=MAX_COLUMNS)
    categorical: list[ColumnName] = Field(default_factory=list, max_length=MAX_COLUMNS)

    @property
    def all(self) -> list[str]:
        return [*self.numeric, *self.categorical]


#: Bounds of a search range's ends: beyond every estimator param's own bounds.
_MAX_BOUND = 1e15


class SearchRange(_Strict):
    """Where a searched param's values come from: drawn uniformly between `low` and `high`
    (both included; on a log scale with `log`), or one of `choices`. A YAML list is short for
    `{choices: [...]}`. An integer param draws whole numbers."""

    low: float | None = Field(
        default=None, ge=-_MAX_BOUND, le=_MAX_BOUND, exclude_if=lambda v: v is None
    )
    high: float | None = Field(
        default=None, ge=-_MAX_BOUND, le=_MAX_BOUND, exclude_if=lambda v: v is None
    )
    log: bool = Field(default=False, exclude_if=lambda v: not v)
    choices: list[Any] | None = Field(
        default=None, min_length=1, max_length=MAX_LIST, exclude_if=lambda v: v is None
    )

    @model_validator(mode="before")
    @classmethod
    def _list_is_choices(cls, raw: Any) -> Any:
        if isinstance(raw, list):
            return {"choices": raw}
        if not isinstance(raw, dict | SearchRange):
            raise ValueError(f"give a range {{low, high}} or a list of choices, got {_short(raw)}")
        return raw

    @model_validator(mode="after")
    def _one_kind(self) -> SearchRange:
        if self.choices is not None:
            if self.low is not None or self.high is not None or self.log:
                raise ValueError("choices: give a list of choices or low and high, not both")
            return self
        if self.low is None or self.high is None:
            missing = "low" if self.low is None else "high"
            raise ValueError(f"{missing}: give low and high (a range) or a list of choices")
        if self.low > self.high:
            raise ValueError(f"high: {self.high:g} is less than low ({self.low:g})")
        if self.log and self.low <= 0:
            raise ValueError(f"low: a log range starts above 0, got {self.low:g}")
        return self


class SearchSpec(_Strict):
    """A hyperparameter search on the training split (`mlops_tasks.model.search`): `n_iter`
    candidates drawn from `params` with `model.seed`, each scored by `metric` over `folds`
    cross-validation folds (`time`: expanding windows in time order; `hash`: a row hash), the
    best refitted on the whole training split. `halving` scores every candidate on a share of
    each fold's rows, then the best 1/`factor` on `factor` times as many, and so on."""

    method: Literal["random", "halving"] = "random"
    n_iter: int = Field(default=20, ge=1, le=500)
    params: dict[
        Annotated[str, StringConstraints(min_length=1, max_length=MAX_NAME)], SearchRange
    ] = Field(min_length=1, max_length=MAX_LIST)
    cv: Literal["time", "hash"] = "time"
    folds: int = Field(default=3, ge=2, le=10)
    #: Default: `evaluation.primary_metric`.
    metric: str | None = Field(default=None, max_length=MAX_NAME)
    #: Halving only (default 3).
    factor: int | None = Field(default=None, ge=2, le=10)

    @model_validator(mode="after")
    def _factor(self) -> SearchSpec:
        if self.factor is not None and self.method != "halving":
            raise ValueError("factor: only method halving keeps the best 1/factor")
        return self

    @property
    def halving_factor(self) -> int:
        return self.factor or 3


class ModelConfig(_Strict):
    estimator: str = Field(max_length=MAX_NAME)
    params: dict[str, Any] = Field(default_factory=dict, max_length=MAX_LIST)
    seed: int = Field(default=42, ge=0, le=MAX_SEED)
    #: A classifier's class weights: `balanced` (inverse to each class's share of the training
    #: rows) or a weight per label, labels written as text (`"1": 5`); unlisted labels weigh 1.
    #: Given to the estimator as sample weights. Left out of the dump when not set, so specs
    #: without it keep their hash.
    class_weight: (
        Literal["balanced"]
        | Annotated[
            dict[
                Annotated[str, StringConstraints(min_length=1, max_length=MAX_NAME)],
                Annotated[float, Field(gt=0.0, le=1e6)],
            ],
            Field(min_length=1, max_length=2),
        ]
        | None
    ) = Field(default=None, exclude_if=lambda v: v is None)
    #: A hyperparameter search (`SearchSpec`); left out of the dump when not set, so specs
    #: without it keep their hash.
    search: SearchSpec | None = Field(default=None, exclude_if=lambda v: v is None)

    #: With `estimator: custom`, the user's estimator class as `package.module.Class`: a
    #: scikit-learn estimator importable wherever the model trains and serves. The types its
    #: fitted state holds are recorded in the version (signed with a key) and loaded only from
    #: the packages `MLOPS_TRUSTED_PACKAGES` names. Left out of the dump when not set.
    class_path: str | None = Field(
        default=None, max_length=MAX_NAME, exclude_if=lambda v: v is None
    )

    @field_validator("estimator")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in ESTIMATORS and v != CUSTOM_ESTIMATOR:
            allowed = ", ".join(sorted([*ESTIMATORS, CUSTOM_ESTIMATOR]))
            raise ValueError(f"unknown estimator {v!r}; allowed: {allowed}")
        return v

    @field_validator("class_path")
    @classmethod
    def _class_path(cls, v: str | None) -> str | None:
        return None if v is None else check_class_path(v)

    @model_validator(mode="after")
    def _params(self) -> ModelConfig:
        if self.estimator == CUSTOM_ESTIMATOR:
            if self.class_path is None:
                raise ValueError(
                    "class_path: estimator custom needs the class, e.g. "
                    "class_path: acme_models.ranking.Scorer"
                )
            check_custom_params(self.params)
            return self
        if self.class_path is not None:
            raise ValueError(
                f"class_path: only estimator custom takes a class (estimator is {self.estimator!r})"
            )
        # params of one task only (a loss) are checked by `ModelSpec`, which knows the task
        info = ESTIMATORS[self.estimator]
        task_only = {name for rules in info.task_params.values() for name in rules}
        check_params(
            self.estimator,
            {k: v for k, v in self.params.items() if k not in task_only},
            combined=self.search is None,  # with a search: each candidate's combination
        )
        return self


class Expectation(_Strict):
    """An extra Great Expectations expectation, e.g. `expect_column_values_to_match_regex`."""

    type: str = Field(pattern=r"^expect_[a-z0-9_]+$", max_length=MAX_NAME)
    kwargs: dict[str, Any] = Field(default_factory=dict, max_length=MAX_LIST)

    @field_validator("kwargs")
    @classmethod
    def _plain_values(cls, v: dict[str, Any]) -> dict[str, Any]:
        """GX takes these as they are: JSON-like values, numbers finite and exact in a float."""
        for key, value in v.items():
            check_plain_value(value, _short(key, 40) if not _PLAIN_KEY.match(key) else key)
        return v


class Range(_Strict):
    min: float | None = Field(default=None, ge=-(2**53), le=2**53)
    max: float | None = Field(default=None, ge=-(2**53), le=2**53)

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if self.min is None and self.max is None:
            raise ValueError("give min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min:g}) is greater than max ({self.max:g})")
        return self


class ValidationSpec(_Strict):
    min_rows: int = Field(default=100, ge=1, le=MAX_ROWS)
    max_rows: int | None = Field(default=None, ge=1, le=MAX_ROWS)
    #: Share of nulls tolerated per feature; the target and id column may have none.
    max_null_fraction: float = Field(default=0.05, ge=0.0, le=1.0)
    #: What a run does with batches that break the declared contract: leave them out and go on
    #: when `min_rows` still holds (`skip`, the default), or fail (`fail`). Either way they are
    #: quarantined and recorded.
    on_bad_batch: Literal["skip", "fail"] = "skip"
    #: Explicit numeric ranges; columns not listed learn theirs from the reference snapshot.
    ranges: dict[ColumnName, Range] = Field(default_factory=dict, max_length=MAX_COLUMNS)
    #: Explicit allowed categories; columns not listed learn theirs from the reference snapshot.
    categories: dict[
        ColumnName,
        Annotated[
            list[Annotated[str, StringConstraints(max_length=MAX_NAME)]],
            Field(min_length=1, max_length=10_000),
        ],
    ] = Field(default_factory=dict, max_length=MAX_COLUMNS)
    #: Learned ranges are widened by this share of their span on each side.
    range_tolerance: float = Field(default=0.25, ge=0.0, le=10.0)
    #: Share of rows that may fall outside a learned range or category set.
    mostly: float = Field(default=0.99, gt=0.0, le=1.0)
    expectations: list[Expectation] = Field(default_factory=list, max_length=MAX_LIST)

    @model_validator(mode="after")
    def _row_bounds(self) -> ValidationSpec:
        if self.max_rows is not None and self.max_rows < self.min_rows:
            raise ValueError(f"max_rows: {self.max_rows} is less than min_rows ({self.min_rows})")
        return self


class ThresholdCost(_Strict):
    """What one false positive and one false negative cost, in any one unit."""

    fp: float = Field(ge=0.0, le=1e12)
    fn: float = Field(ge=0.0, le=1e12)

    @model_validator(mode="after")
    def _some_cost(self) -> ThresholdCost:
        if self.fp == 0 and self.fn == 0:
            raise ValueError("give fp or fn a cost above 0")
        return self


class ThresholdSpec(_Strict):
    """How a classifier cuts its probability into a prediction (`model/thresholds.py`): one
    of `objective`, `precision_at_recall`, `cost` or `fixed`, chosen on a validation split
    of `validation_fraction` of the training rows."""

    objective: Literal["f1", "balanced_accuracy"] | None = None
    precision_at_recall: float | None = Field(default=None, gt=0.0, le=1.0)
    cost: ThresholdCost | None = None
    fixed: float | None = Field(default=None, ge=0.0, le=1.0)
    validation_fraction: float = Field(default=0.2, ge=0.05, le=0.5)

    @model_validator(mode="after")
    def _one_rule(self) -> ThresholdSpec:
        given = [
            k
            for k in ("objective", "precision_at_recall", "cost", "fixed")
            if getattr(self, k) is not None
        ]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of objective, precision_at_recall, cost, fixed"
                + (f" (got {', '.join(given)})" if given else "")
            )
        return self


class EvaluationSpec(_Strict):
    primary_metric: str = Field(max_length=MAX_NAME)
    #: Absolute bounds: metric >= min (higher-is-better metrics) / metric <= max.
    min: dict[str, float] = Field(default_factory=dict, max_length=len(METRIC_BOUNDS))
    max: dict[str, float] = Field(default_factory=dict, max_length=len(METRIC_BOUNDS))
    #: Largest allowed loss in the primary metric against production, on the same holdout.
    max_drop: float = Field(default=0.0, ge=0.0, le=1e15)
    holdout_fraction: float = Field(default=0.2, ge=0.01, le=0.9)
    slices: list[ColumnName] = Field(default_factory=list, max_length=20)
    #: Minimum primary metric in every slice with at least `min_slice_rows` rows.
    min_slice_metric: float | None = None
    min_slice_rows: int = Field(default=50, ge=1, le=MAX_ROWS)
    #: A classifier's decision threshold (default: the most probable class, 0.5).
    threshold: ThresholdSpec | None = Field(default=None, exclude_if=lambda v: v is None)
    #: A multiclass model's floor for every class: `{recall: 0.5, precision: 0.4, f1: 0.4}`,
    #: on the holdout; a class with fewer than `min_slice_rows` holdout rows is not judged.
    min_per_class: dict[Literal["precision", "recall", "f1"], float] = Field(
        default_factory=dict, max_length=3, exclude_if=lambda v: not v
    )

    @field_validator("min_per_class")
    @classmethod
    def _per_class_bounds(cls, v: dict[str, float]) -> dict[str, float]:
        for name, value in v.items():
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name}: {value:g} is outside [0, 1]")
        return v


class ColumnDrift(_Strict):
    method: str | None = Field(default=None, max_length=MAX_NAME)
    threshold: float | None = Field(default=None, ge=0.0, le=100.0)


class PerformanceDrift(_Strict):
    """How much worse production may do on labelled current rows than on its own holdout.

    `max_drop` is in the metric's units; `max_drop_pct` is relative to the holdout value (in
    percent). With neither given: 0.05 for metrics bounded to [0, 1] (AUC, F1, accuracy, R²'s
    upper part) and 10 % for error metrics (RMSE, MAE, log loss), whose units are the target's.
    """

    metric: str | None = Field(default=None, max_length=MAX_NAME)
    max_drop: float | None = Field(default=None, ge=0.0, le=1e15)
    max_drop_pct: float | None = Field(default=None, gt=0.0, le=1_000.0)
    min_labelled_rows: int = Field(default=200, ge=1, le=MAX_ROWS)

    @model_validator(mode="after")
    def _one_bound(self) -> PerformanceDrift:
        if self.max_drop is not None and self.max_drop_pct is not None:
            raise ValueError("max_drop: give max_drop (absolute) or max_drop_pct, not both")
        return self


#: What `drift.reference` may name besides `{rolling: N}`.
REFERENCE_NAMES = ("training", "previous_window", "same_period_last_year")
#: How far back `same_period_last_year` looks: 52 weeks, so each day of the current window is
#: compared with the same weekday a year before (365 days would shift every weekday by one, by
#: two across a 29 February, and a weekly rhythm would then look like drift).
YEAR_DAYS = 364


class RollingReference(_Strict):
    """`drift.reference: {rolling: N}`: the N days of batches before the current window."""

    rolling: int = Field(ge=1, le=366)


class DriftSpec(_Strict):
    columns: list[ColumnName] | None = Field(default=None, max_length=MAX_COLUMNS)
    method: str | None = Field(default=None, max_length=MAX_NAME)
    threshold: float | None = Field(default=None, ge=0.0, le=100.0)
    overrides: dict[ColumnName, ColumnDrift] = Field(default_factory=dict, max_length=MAX_COLUMNS)
    drift_share: float = Field(default=0.3, gt=0.0, le=1.0)
    consecutive_checks: int = Field(default=1, ge=1, le=1_000)
    #: At most a year.
    cooldown_hours: float = Field(default=24.0, ge=0.0, le=8_784.0)
    min_rows: int = Field(default=200, ge=1, le=MAX_ROWS)
    window_days: int = Field(default=3, ge=1, le=366)
    #: The current window: logged prediction traffic, the newest batches, or traffic when it
    #: has at least `min_rows` rows in the window and batches otherwise.
    current_source: Literal["auto", "inference", "batches"] = "auto"
    performance: PerformanceDrift = Field(default_factory=PerformanceDrift)
    #: What the current window's data drift is measured against: production's training
    #: snapshot (`training`), the `window_days` days of batches just before the current window
    #: (`previous_window`), the N days before it (`{rolling: N}`, 1 to 366), or the current
    #: window's days `YEAR_DAYS` earlier (`same_period_last_year`). A window is read from
    #: `data.source` as of the check, without quarantined batches. Performance drift always
    #: compares with production's holdout metrics. Left out of the dump when `training`, so
    #: specs without it keep their hash.
    reference: (
        Literal["training", "previous_window", "same_period_last_year"] | RollingReference
    ) = Field(default="training", exclude_if=lambda v: v == "training")

    @field_validator("reference", mode="before")
    @classmethod
    def _reference(cls, v: Any) -> Any:
        """One error that names the choices, instead of one per member of the union."""
        if isinstance(v, RollingReference) or v in REFERENCE_NAMES:
            return v
        if v == "rolling":
            raise ValueError("rolling: give its number of days, `{rolling: N}` (1 to 366)")
        if isinstance(v, dict) and set(v) == {"rolling"}:
            days = v["rolling"]
            if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= 366:
                raise ValueError(f"rolling: {_short(days)} is not a number of days from 1 to 366")
            return v
        raise ValueError(
            f"unknown reference {_short(v)}; one of training, previous_window, "
            "{rolling: N} (days, 1 to 366), same_period_last_year"
        )

    @property
    def reference_kind(self) -> ReferenceKind:
        """`drift.reference` by name: `rolling` for `{rolling: N}`."""
        return "rolling" if isinstance(self.reference, RollingReference) else self.reference


class ScheduleSpec(_Strict):
    retrain: str | None = "0 3 * * 0"
    monitor: str | None = "0 * * * *"
    #: Concurrency between models: the Airflow pool this model's tasks run in (default: the
    #: deployment's MLOPS_POOL, else Airflow's default_pool) and the slots each task takes
    #: there, so a heavy model counts for several light ones (docs/production.md).
    pool: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]{1,256}$")
    pool_slots: int = Field(default=1, ge=1, le=256)

    @field_validator("retrain", "monitor")
    @classmethod
    def _cron(cls, v: str | None) -> str | None:
        if v is not None:
            check_cron(v)
        return v


class DeploymentSpec(_Strict):
    approval: Literal["auto", "manual"] = "auto"
    #: How long a manual approval waits for an answer. Unanswered, it expires: the run fails,
    #: nothing is promoted and the candidate is not rejected (it can still be promoted later).
    approval_timeout_hours: float = Field(default=72, gt=0, le=24 * 90)
    verify_sample_rows: int = Field(default=100, ge=1, le=100_000)


class ModelSpec(_Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")
    description: str = ""
    owner: str = Field(default="mlops", min_length=1, max_length=MAX_NAME)
    task: SpecTask
    data: DataSpec
    target: ColumnName
    #: The target as a SQL expression over the batch's columns (`target: {expr: "arr_delay >
    #: 15", name: late}`), computed into the column `target` names; rows where it is NULL are
    #: unlabelled and left out of training.
    target_expr: str | None = Field(
        default=None, max_length=MAX_TEXT, exclude_if=lambda v: v is None
    )
    #: The label that counts as positive for a classifier whose labels are not 0/1 (`Yes`,
    #: `churned`, 2). Also written `target: {column: default, positive: "Yes"}`.
    positive_class: (
        Annotated[str, StringConstraints(min_length=1, max_length=MAX_NAME)]
        | Annotated[int, Field(ge=-(2**53), le=2**53)]
        | None
    ) = None
    features: FeatureSpec
    model: ModelConfig
    validation: ValidationSpec = Field(default_factory=ValidationSpec)
    evaluation: EvaluationSpec
    drift: DriftSpec = Field(default_factory=DriftSpec)
    schedule: ScheduleSpec = Field(default_factory=ScheduleSpec)
    deployment: DeploymentSpec = Field(default_factory=DeploymentSpec)

    @model_validator(mode="before")
    @classmethod
    def _target_mapping(cls, raw: Any) -> Any:
        """`target: {column: c, positive: p}` is `target: c` with `positive_class: p`;
        `target: {expr: e, name: n}` is `target: n` (default `target`) with `target_expr: e`."""
        if isinstance(raw, dict) and isinstance(raw.get("target"), dict):
            target = dict(raw["target"])
            unknown = sorted(set(target) - {"column", "positive", "expr", "name"})
            if unknown:
                raise ValueError(
                    f"target: unknown key(s) {unknown}; allowed: column, positive, expr, name"
                )
            if ("column" in target) == ("expr" in target):
                raise ValueError(
                    "target: give `column` (a column of the batches) or `expr` (an expression "
                    "over them), not both"
                )
            if "name" in target and "column" in target:
                raise ValueError("target.name: names a target `expr`; a `column` is its own name")
            if "expr" in target and raw.get("target_expr") is not None:
                raise ValueError("target: give the target expression once (target.expr)")
            if "positive" in target and "positive_class" in raw:
                raise ValueError("target: give the positive class once (target.positive)")
            if "expr" in target:
                raw = {**raw, "target": target.get("name", "target"), "target_expr": target["expr"]}
            else:
                raw = {**raw, "target": target["column"]}
            if "positive" in target:
                raw["positive_class"] = target["positive"]
        return raw

    @model_validator(mode="after")
    def _consistent(self) -> ModelSpec:
        if self.evaluation.threshold is not None and self.task != "classification":
            raise ValueError(
                "evaluation.threshold: only a binary classifier has a decision threshold"
            )
        if self.target_expr is not None:
            _expression(self.target_expr, "target.expr")
        if self.positive_class is not None and self.task != "classification":
            raise ValueError("target.positive: only a classification model has a positive class")
        feats = self.features.all
        if not feats:
            raise ValueError("features: at least one numeric or categorical feature is required")
        dupes = sorted({f for f in feats if feats.count(f) > 1})
        if dupes:
            raise ValueError(f"features: listed more than once: {dupes}")
        if self.target in feats:
            raise ValueError(f"target: {self.target!r} is also listed as a feature")
        reserved = sorted(f for f in feats if f in LOGGED_COLUMNS | {LABEL_COLUMN})
        if reserved:
            raise ValueError(
                f"features: {reserved} clash with the inference log's own columns; rename "
                f"them (reserved: {sorted(LOGGED_COLUMNS | {LABEL_COLUMN})})"
            )
        if self.target in LOGGED_COLUMNS:
            raise ValueError(
                f"target: {self.target!r} clashes with a column of the inference log; rename it"
            )
        for where, col in (
            ("data.id_column", self.data.id_column),
            ("data.time_column", self.data.time_column),
        ):
            if col is not None and col == self.target:
                raise ValueError(f"{where}: {col!r} is also the target")
        derived = list(self.data.derive)
        clash = sorted(set(derived) & (LOGGED_COLUMNS | {LABEL_COLUMN}))
        if clash:
            raise ValueError(f"data.derive: {clash} clash with the inference log's own columns")
        if self.target in derived:
            raise ValueError(
                f"data.derive: {self.target!r} is the target; derive it as target: {{expr: ...}}"
            )
        for i, join in enumerate(self.data.joins):
            if self.target in join.outputs:
                raise ValueError(
                    f"data.joins.{i}.columns: {self.target!r} is the target; a joined column "
                    "is an input (set a prefix)"
                )
        if self.data.id_column and self.data.id_column == self.data.time_column:
            raise ValueError(f"data.time_column: {self.data.id_column!r} is also the id column")
        if self.drift.reference != "training" and self.data.source.endswith((".parquet", ".csv")):
            raise ValueError(
                f"drift.reference: {self.drift.reference_kind} is a window of the dt= batches "
                "before the current one, and data.source names a single table (use a prefix "
                "of dt=YYYY-MM-DD batches, or `training`)"
            )
        custom = self.model.estimator == CUSTOM_ESTIMATOR
        if not custom and family(self.task) not in ESTIMATORS[self.model.estimator].tasks:
            raise ValueError(
                f"model.estimator: {self.model.estimator!r} does not support task {self.task!r}"
            )
        if self.evaluation.min_per_class and self.task != "multiclass":
            raise ValueError(
                "evaluation.min_per_class: only a multiclass model is judged per class "
                "(a binary classifier: evaluation.min, e.g. f1, or slices)"
            )
        try:
            if not custom:  # a custom estimator's params: checked by `ModelConfig`
                check_params(
                    self.model.estimator,
                    self.model.params,
                    family(self.task),
                    combined=self.model.search is None,
                )
        except ValueError as err:
            raise ValueError(f"model.{err}") from None
        self._check_class_weight()
        self._check_search()
        known = METRICS[self.task]
        ev = self.evaluation
        for where, names in (
            ("evaluation.primary_metric", [ev.primary_metric]),
            ("evaluation.min", list(ev.min)),
            ("evaluation.max", list(ev.max)),
            ("drift.performance.metric", [m for m in [self.drift.performance.metric] if m]),
        ):
            for m in names:
                if m not in known:
                    raise ValueError(
                        f"{where}: unknown metric {_short(m)} for {self.task}; "
                        f"allowed: {sorted(known)}"
                    )
        for where, cols in (
            ("evaluation.slices", ev.slices),
            ("drift.columns", self.drift.columns or []),
            ("drift.overrides", list(self.drift.overrides)),
            ("validation.ranges", list(self.validation.ranges)),
            ("validation.categories", list(self.validation.categories)),
        ):
            unknown = [c for c in cols if c not in feats]
            if unknown:
                raise ValueError(f"{where}: not a feature: {_short(unknown)}")
        for where, named, kind, allowed in (
            ("validation.ranges", list(self.validation.ranges), "numeric", self.features.numeric),
            (
                "validation.categories",
                list(self.validation.categories),
                "categorical",
                self.features.categorical,
            ),
        ):
            wrong = [c for c in named if c not in allowed]
            if wrong:
                raise ValueError(f"{where}: not a {kind} feature: {_short(wrong)}")
        self._check_metric_values()
        return self

    def _check_class_weight(self) -> None:
        weights = self.model.class_weight
        if weights is None:
            return
        if family(self.task) != "classification":
            raise ValueError("model.class_weight: only a classification model weights classes")
        if (
            self.model.estimator != CUSTOM_ESTIMATOR  # its fit's signature: checked at training
            and not ESTIMATORS[self.model.estimator].sample_weight
        ):
            raise ValueError(
                f"model.class_weight: estimator {self.model.estimator!r} cannot weight classes "
                "(it fits without sample weights)"
            )
        if isinstance(weights, dict) and self.positive_class is None and self.task != "multiclass":
            unknown = sorted(set(weights) - {"0", "1"})
            if unknown:
                raise ValueError(
                    f"model.class_weight: {_short(unknown)} are not labels: a classifier's "
                    'labels are 0/1 ("0", "1") unless target.positive names the positive class'
                )

    def _check_search(self) -> None:
        """Each searched param is one the estimator takes on this task, not fixed in
        `model.params`, and each end and choice of its range is a value it allows; the folds
        and the metric suit the data and the task."""
        search = self.model.search
        if search is None:
            return
        estimator = self.model.estimator
        if estimator == CUSTOM_ESTIMATOR:
            raise ValueError(
                "model.search: a custom estimator's params have no declared types or bounds "
                "to search within; search inside your class, or use a built-in estimator"
            )
        rules = ESTIMATORS[estimator].rules(family(self.task))
        for name, rng in search.params.items():
            where = f"model.search.params.{name}" if _PLAIN_KEY.match(name) else "model.search"
            if name in self.model.params:
                raise ValueError(
                    f"{where}: {_short(name)} is also fixed in model.params; "
                    "search it or fix it, not both"
                )
            rule = rules.get(name)
            if rule is None:
                raise ValueError(
                    f"{where}: unknown parameter {_short(name)} for estimator {estimator!r} "
                    f"on {self.task}; allowed: {', '.join(sorted(rules))}"
                )
            if rng.choices is not None:
                for i, value in enumerate(rng.choices):
                    if value in rng.choices[:i]:
                        raise ValueError(f"{where}.choices.{i}: {_short(value)} is listed twice")
                    try:
                        check_param(estimator, name, value, family(self.task))
                    except ValueError as err:
                        raise ValueError(f"{where}.choices.{i}: {err}") from None
                continue
            if rule.type not in ("integer", "number"):
                raise ValueError(
                    f"{where}: {name!r} is a {rule.type} parameter: give a list of choices"
                )
            for end in ("low", "high"):
                bound: float = getattr(rng, end)
                if rule.type == "integer" and not bound.is_integer():
                    raise ValueError(
                        f"{where}.{end}: {name!r} is an integer parameter, got {bound:g}"
                    )
                try:
                    check_param(
                        estimator,
                        name,
                        int(bound) if rule.type == "integer" else bound,
                        family(self.task),
                    )
                except ValueError as err:
                    raise ValueError(f"{where}.{end}: {err}") from None
        if search.cv == "time" and self.data.time_column is None:
            raise ValueError(
                "model.search.cv: time folds order the rows by data.time_column, which is not "
                "set; set it or use cv: hash"
            )
        if search.metric is not None and search.metric not in METRICS[self.task]:
            raise ValueError(
                f"model.search.metric: unknown metric {_short(search.metric)} for {self.task}; "
                f"allowed: {sorted(METRICS[self.task])}"
            )

    @property
    def search_metric(self) -> str:
        """What a search scores its candidates by: `model.search.metric`, else the primary
        metric."""
        search = self.model.search
        return (search.metric if search else None) or self.evaluation.primary_metric

    def _check_metric_values(self) -> None:
        """Thresholds lie within the values their metric can take."""
        ev, perf = self.evaluation, self.drift.performance
        checks: list[tuple[str, str, float | None, bool]] = [
            *((f"evaluation.min.{m}", m, v, False) for m, v in ev.min.items()),
            *((f"evaluation.max.{m}", m, v, False) for m, v in ev.max.items()),
            ("evaluation.min_slice_metric", ev.primary_metric, ev.min_slice_metric, False),
            ("evaluation.max_drop", ev.primary_metric, ev.max_drop, True),
            ("drift.performance.max_drop", self.performance_metric, perf.max_drop, True),
        ]
        for where, metric, value, is_drop in checks:
            lo, hi = METRIC_BOUNDS[metric]
            if value is None:
                continue
            if is_drop:  # a drop is at most the metric's whole span
                lo, hi = 0.0, (hi - lo if lo is not None and hi is not None else None)
            if (lo is not None and value < lo) or (hi is not None and value > hi):
                low = "-inf" if lo is None else f"{lo:g}"
                high = "inf" if hi is None else f"{hi:g}"
                raise ValueError(f"{where}: {value:g} is outside [{low}, {high}] for {metric}")

    def performance_allowance(self, baseline: float) -> tuple[float, str]:
        """The largest allowed drop of the performance metric from `baseline`, in its units,
        and how it was set (for reports: "0.05" or "10% of 812.3")."""
        perf = self.drift.performance
        if perf.max_drop is not None:
            return perf.max_drop, f"{perf.max_drop:g}"
        pct = perf.max_drop_pct
        if pct is None:
            if METRIC_BOUNDS[self.performance_metric][1] is not None:  # a score, not an error
                return 0.05, "0.05"
            pct = 10.0
        allowed = abs(baseline) * pct / 100
        return allowed, f"{pct:g}% of {baseline:.4g}"

    @property
    def performance_metric(self) -> str:
        return self.drift.performance.metric or self.evaluation.primary_metric

    @property
    def columns(self) -> list[str]:
        """Every column the model's data must carry: id, time, features, target."""
        extra = [c for c in (self.data.id_column, self.data.time_column) if c]
        return [*extra, *self.features.all, self.target]

    def spec_hash(self) -> str:
        """SHA-256 of the canonical JSON form: equal specs hash equal, whatever the YAML layout."""
        payload = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(payload.encode()).hexdigest()

    def with_params(self, overrides: dict[str, Any]) -> ModelSpec:
        """A copy with hyperparameters overridden; raises SpecError on a disallowed override.

        An overridden param that `model.search` searches is fixed instead (a search of no
        param left is no search)."""
        model = self.model.model_dump(mode="json")
        model["params"] = {**self.model.params, **overrides}
        if "search" in model:
            searched = {k: v for k, v in model["search"]["params"].items() if k not in overrides}
            model["search"] = {**model["search"], "params": searched} if searched else None
        return _parse({**self.model_dump(mode="json"), "model": model}, source="<param overrides>")


_FIELD_PATH = re.compile(r"^[a-z_][a-z0-9_]*(\.[A-Za-z0-9_]+)*$")


def _short(value: Any, limit: int = 80) -> str:
    """A repr that never echoes a huge input back."""
    try:
        text = repr(value)
    except ValueError:  # e.g. an int with more digits than Python converts
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_\-\[\]]{1,64}$")
_MAX_ERRORS_SHOWN = 20


def _loc(parts: tuple[Any, ...]) -> str:
    """A field path; keys that are not plain names are quoted, so a path is one short line."""
    return ".".join(str(p) if _PLAIN_KEY.match(str(p)) else _short(p, 40) for p in parts)


def _model_at(parts: tuple[Any, ...]) -> type[BaseModel] | None:
    """The spec section (a pydantic model) that the field path `parts` points into."""
    model: type[BaseModel] = ModelSpec
    for part in parts:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        if field is None:
            if isinstance(part, int):  # an item of a list of sections (expectations)
                continue
            return None
        inner: list[Any] = [field.annotation]
        while inner and not (isinstance(inner[0], type) and issubclass(inner[0], BaseModel)):
            inner = [*typing.get_args(inner[0]), *inner[1:]]
        if not inner:
            return None
        model = inner[0]
    return model


def did_you_mean(parts: tuple[Any, ...]) -> str:
    """`; did you mean 'x'?` for an unknown key close to one its section allows, else ''."""
    section = _model_at(parts[:-1])
    if section is None or not isinstance(parts[-1], str):
        return ""
    close = difflib.get_close_matches(parts[-1], list(section.model_fields), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _format(err: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid model spec ({err.error_count()} error(s))"]
    errors = err.errors()
    for e in errors[:_MAX_ERRORS_SHOWN]:
        loc = _loc(e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        head, sep, rest = msg.partition(": ")
        if sep and _FIELD_PATH.match(head):  # a cross-field check names its field first
            loc, msg = (f"{loc}.{head}" if loc else head), rest
        loc = loc or "spec"
        if e["type"] == "extra_forbidden":
            msg = f"unknown key (not part of the spec schema){did_you_mean(e['loc'])}"
        elif e["type"] == "missing":
            msg = "required field is missing"
        elif "input" in e and e["type"] not in ("value_error", "assertion_error"):
            msg = f"{msg} (got {type(e['input']).__name__} {_short(e['input'])})"
        lines.append(f"  {loc}: {msg}")
    if len(errors) > _MAX_ERRORS_SHOWN:
        lines.append(f"  ... and {len(errors) - _MAX_ERRORS_SHOWN} more")
    return "\n".join(lines)


def _parse(raw: Any, source: str) -> ModelSpec:
    if not isinstance(raw, dict):
        raise SpecError(
            f"{source}: a model spec must be a YAML mapping, got {type(raw).__name__}", file=source
        )
    try:
        return ModelSpec.model_validate(raw)
    except ValidationError as err:
        fields = [_loc(e["loc"]) for e in err.errors()]
        raise SpecError(_format(err, source), file=source, fields=fields) from None


class _SpecLoader(yaml.SafeLoader):
    """YAML as a spec may use it: no anchors/aliases, no merge keys, no duplicate or non-string
    keys, at most MAX_YAML_DEPTH levels.

    Refusing aliases is the simplest rule that bounds what a document expands to: without them
    every node is written out in the file, so the parsed spec is no larger than the file
    (at most MAX_SPEC_BYTES). A billion-laughs document is refused at its first alias, before
    anything is built. Hand-written specs lose little: they have no repeated blocks to share.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise yaml.composer.ComposerError(
                None,
                None,
                "anchors and aliases (&, *) are not allowed in a model spec",
                event.start_mark,
            )
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise yaml.composer.ComposerError(
                    None,
                    None,
                    f"nested more than {MAX_YAML_DEPTH} levels deep",
                    event.start_mark,
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
        seen: set[str] = set()
        if isinstance(node, yaml.MappingNode):
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    raise yaml.constructor.ConstructorError(
                        None,
                        None,
                        "merge keys (<<) are not allowed in a model spec",
                        key_node.start_mark,
                    )
                key = self.construct_object(key_node, deep=True)
                if not isinstance(key, str):
                    raise yaml.constructor.ConstructorError(
                        None,
                        None,
                        f"keys must be strings, got {type(key).__name__} {_short(key)}",
                        key_node.start_mark,
                    )
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {_short(key)}", key_node.start_mark
                    )
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def parse_spec(text: str, source: str = "<string>") -> ModelSpec:
    """Parse a spec from YAML text; `source` names it in errors.

    Only a `SpecError` leaves this function, whatever `text` holds.
    """
    if not isinstance(text, str):
        raise SpecError(f"{source}: a spec must be text, got {type(text).__name__}", file=source)
    if len(text) > MAX_SPEC_BYTES:
        raise SpecError(f"{source}: spec is larger than {MAX_SPEC_BYTES} bytes", file=source)
    loader = None
    try:
        loader = _SpecLoader(text)  # the reader already refuses control characters here
        loader.name = source  # YAML errors then say where
        raw = loader.get_single_data()
    except yaml.YAMLError as err:
        raise SpecError(f"{source}: not valid YAML: {err}", file=source) from None
    except (RecursionError, MemoryError, ValueError, OverflowError) as err:
        # Belt and braces: no construct in a bounded document should get here.
        raise SpecError(f"{source}: cannot read YAML: {type(err).__name__}", file=source) from None
    finally:
        if loader is not None:
            loader.dispose()
    return _parse(raw, source)


def _read(path: Path) -> str:
    """The file as text: at most MAX_SPEC_BYTES, UTF-8."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_SPEC_BYTES + 1)
    except OSError as err:
        raise SpecError(f"{path}: cannot read spec: {err.strerror}", file=str(path)) from None
    if len(data) > MAX_SPEC_BYTES:
        raise SpecError(f"{path}: spec is larger than {MAX_SPEC_BYTES} bytes", file=str(path))
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise SpecError(
            f"{path}: not UTF-8 text (byte {err.start}, line {line}: {err.reason}); "
            "save the spec as UTF-8",
            file=str(path),
        ) from None


def load_spec(path: str | Path) -> ModelSpec:
    """Load and validate one spec file; errors name the file and the field.

    Only a `SpecError` leaves this function, whatever the file holds.
    """
    path = Path(path)
    spec = parse_spec(_read(path), source=str(path))
    if path.stem != spec.name:
        raise SpecError(
            f"{path}: name: {spec.name!r} must match the file name ({path.stem!r}.yaml)",
            file=str(path),
            fields=["name"],
        )
    return spec


def spec_files(directory: str | Path) -> list[Path]:
    return sorted(p for p in Path(directory).glob("*.y*ml") if p.suffix in (".yaml", ".yml"))


def load_specs(directory: str | Path) -> tuple[list[tuple[Path, ModelSpec]], list[SpecError]]:
    """Every spec file of `directory`: those that load, and the errors of those that do not.

    One broken file never hides the others: the DAG factory schedules the good ones and
    reports the bad ones beside them.
    """
    good, bad = [], []
    for path in spec_files(directory):
        try:
            good.append((path, load_spec(path)))
        except SpecError as err:
            bad.append(err)
    return good, bad


def find_spec(name: str, directory: str | Path) -> ModelSpec:
    """Load the spec of model `name` from the spec directory."""
    directory = Path(directory)
    for path in spec_files(directory):
        if path.stem == name:
            return load_spec(path)
    names = [p.stem for p in spec_files(directory)]
    raise SpecError(f"no spec for model {name!r} in {directory} (found: {names})", model=name)
