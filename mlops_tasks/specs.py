"""Model specs: one YAML file per model, validated into a typed `ModelSpec`.

Adding a model means writing one spec; everything else (DAGs, validation suite, training
pipeline, gate, drift policy) is derived from it. Unknown keys and wrong types are rejected with
an error that names the file and the field path.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mlops_tasks.errors import SpecError

TaskType = Literal["classification", "regression"]

#: Metrics the evaluation knows, by task, and whether higher is better.
METRICS: dict[str, dict[str, bool]] = {
    "classification": {
        "roc_auc": True,
        "pr_auc": True,
        "f1": True,
        "accuracy": True,
        "log_loss": False,
    },
    "regression": {"rmse": False, "mae": False, "r2": True},
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


class EstimatorInfo(BaseModel):
    """An allow-listed estimator: the sklearn class, the tasks it serves, its tunable params."""

    cls: str
    tasks: tuple[TaskType, ...]
    params: dict[str, ParamRule]


_TREE = {
    "max_depth": _int(1, 64, nullable=True),
    "min_samples_leaf": _int(1, 10_000),
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
            "early_stopping": ParamRule(type="boolean"),
            **_TREE,
        },
    ),
    "random_forest": EstimatorInfo(
        cls="sklearn.ensemble.RandomForest{Task}",
        tasks=("classification", "regression"),
        params={"n_estimators": _int(1, 5_000), "max_features": _num(0.01, 1.0), **_TREE},
    ),
    "logistic_regression": EstimatorInfo(
        cls="sklearn.linear_model.LogisticRegression",
        tasks=("classification",),
        params={"C": _num(1e-6, 1e6), "max_iter": _int(10, 100_000)},
    ),
    "ridge": EstimatorInfo(
        cls="sklearn.linear_model.Ridge",
        tasks=("regression",),
        params={"alpha": _num(0.0, 1e6)},
    ),
}


def check_param(estimator: str, name: str, value: Any) -> None:
    """Raise ValueError unless `value` is allowed for hyperparameter `name` of `estimator`."""
    info = ESTIMATORS[estimator]
    rule = info.params.get(name)
    if rule is None:
        raise ValueError(
            f"unknown parameter {name!r} for estimator {estimator!r}; "
            f"allowed: {', '.join(sorted(info.params))}"
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
        raise ValueError(f"parameter {name!r} must be of type {rule.type}, got {value!r}")
    if isinstance(value, int | float):
        _check_bounds(name, float(value), rule)
    if rule.enum is not None and value not in rule.enum:
        raise ValueError(f"parameter {name!r} must be one of {rule.enum}, got {value!r}")


def _check_bounds(name: str, value: float, rule: ParamRule) -> None:
    if rule.minimum is not None and value < rule.minimum:
        raise ValueError(f"parameter {name!r} must be >= {rule.minimum}, got {value!r}")
    if rule.maximum is not None and value > rule.maximum:
        raise ValueError(f"parameter {name!r} must be <= {rule.maximum}, got {value!r}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataSpec(_Strict):
    source: str = Field(description="URI of a table, or of a prefix holding dt=YYYY-MM-DD batches")
    time_column: str | None = None
    id_column: str | None = None
    training_window_days: int | None = Field(default=None, ge=1)

    @field_validator("source")
    @classmethod
    def _uri(cls, v: str) -> str:
        if not re.match(r"^(file|s3|store)://", v):
            raise ValueError("must be a URI starting with file://, s3:// or store://")
        return v


class FeatureSpec(_Strict):
    numeric: list[str] = Field(default_factory=list)
    categorical: list[str] = Field(default_factory=list)

    @property
    def all(self) -> list[str]:
        return [*self.numeric, *self.categorical]


class ModelConfig(_Strict):
    estimator: str
    params: dict[str, Any] = Field(default_factory=dict)
    seed: int = 42

    @field_validator("estimator")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in ESTIMATORS:
            raise ValueError(f"unknown estimator {v!r}; allowed: {', '.join(sorted(ESTIMATORS))}")
        return v

    @model_validator(mode="after")
    def _params(self) -> ModelConfig:
        for name, value in self.params.items():
            check_param(self.estimator, name, value)
        return self


class Expectation(_Strict):
    """An extra Great Expectations expectation, e.g. `expect_column_values_to_match_regex`."""

    type: str = Field(pattern=r"^expect_[a-z0-9_]+$")
    kwargs: dict[str, Any] = Field(default_factory=dict)


class Range(_Strict):
    min: float | None = None
    max: float | None = None


class ValidationSpec(_Strict):
    min_rows: int = Field(default=100, ge=1)
    max_rows: int | None = Field(default=None, ge=1)
    #: Share of nulls tolerated per feature; the target and id column may have none.
    max_null_fraction: float = Field(default=0.05, ge=0.0, le=1.0)
    #: Explicit numeric ranges; columns not listed learn theirs from the reference snapshot.
    ranges: dict[str, Range] = Field(default_factory=dict)
    #: Explicit allowed categories; columns not listed learn theirs from the reference snapshot.
    categories: dict[str, list[str]] = Field(default_factory=dict)
    #: Learned ranges are widened by this share of their span on each side.
    range_tolerance: float = Field(default=0.25, ge=0.0)
    #: Share of rows that may fall outside a learned range or category set.
    mostly: float = Field(default=0.99, gt=0.0, le=1.0)
    expectations: list[Expectation] = Field(default_factory=list)


class EvaluationSpec(_Strict):
    primary_metric: str
    #: Absolute bounds: metric >= min (higher-is-better metrics) / metric <= max.
    min: dict[str, float] = Field(default_factory=dict)
    max: dict[str, float] = Field(default_factory=dict)
    #: Largest allowed loss in the primary metric against production, on the same holdout.
    max_drop: float = Field(default=0.0, ge=0.0)
    holdout_fraction: float = Field(default=0.2, gt=0.0, lt=1.0)
    slices: list[str] = Field(default_factory=list)
    #: Minimum primary metric in every slice with at least `min_slice_rows` rows.
    min_slice_metric: float | None = None
    min_slice_rows: int = Field(default=50, ge=1)


class ColumnDrift(_Strict):
    method: str | None = None
    threshold: float | None = Field(default=None, ge=0.0)


class PerformanceDrift(_Strict):
    metric: str | None = None
    max_drop: float = Field(default=0.05, ge=0.0)
    min_labelled_rows: int = Field(default=200, ge=1)


class DriftSpec(_Strict):
    columns: list[str] | None = None
    method: str | None = None
    threshold: float | None = Field(default=None, ge=0.0)
    overrides: dict[str, ColumnDrift] = Field(default_factory=dict)
    drift_share: float = Field(default=0.3, gt=0.0, le=1.0)
    consecutive_checks: int = Field(default=1, ge=1)
    cooldown_hours: float = Field(default=24.0, ge=0.0)
    min_rows: int = Field(default=200, ge=1)
    window_days: int = Field(default=3, ge=1)
    #: The current window: logged prediction traffic, the newest batches, or traffic when it
    #: has at least `min_rows` rows in the window and batches otherwise.
    current_source: Literal["auto", "inference", "batches"] = "auto"
    performance: PerformanceDrift = Field(default_factory=PerformanceDrift)


class ScheduleSpec(_Strict):
    retrain: str | None = "0 3 * * 0"
    monitor: str | None = "0 * * * *"

    @field_validator("retrain", "monitor")
    @classmethod
    def _cron(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith("@") and len(v.split()) != 5:
            raise ValueError("must be a 5-field cron expression, an @preset, or null")
        return v


class DeploymentSpec(_Strict):
    approval: Literal["auto", "manual"] = "auto"
    verify_sample_rows: int = Field(default=100, ge=1)


class ModelSpec(_Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")
    description: str = ""
    owner: str = "mlops"
    task: TaskType
    data: DataSpec
    target: str
    features: FeatureSpec
    model: ModelConfig
    validation: ValidationSpec = Field(default_factory=ValidationSpec)
    evaluation: EvaluationSpec
    drift: DriftSpec = Field(default_factory=DriftSpec)
    schedule: ScheduleSpec = Field(default_factory=ScheduleSpec)
    deployment: DeploymentSpec = Field(default_factory=DeploymentSpec)

    @model_validator(mode="after")
    def _consistent(self) -> ModelSpec:
        feats = self.features.all
        if not feats:
            raise ValueError("features: at least one numeric or categorical feature is required")
        dupes = sorted({f for f in feats if feats.count(f) > 1})
        if dupes:
            raise ValueError(f"features: listed more than once: {dupes}")
        if self.target in feats:
            raise ValueError(f"target: {self.target!r} is also listed as a feature")
        if self.task not in ESTIMATORS[self.model.estimator].tasks:
            raise ValueError(
                f"model.estimator: {self.model.estimator!r} does not support task {self.task!r}"
            )
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
                        f"{where}: unknown metric {m!r} for {self.task}; allowed: {sorted(known)}"
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
                raise ValueError(f"{where}: not a feature: {unknown}")
        return self

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
        """A copy with hyperparameters overridden; raises SpecError on a disallowed override."""
        params = {**self.model.params, **overrides}
        return _parse(
            {
                **self.model_dump(mode="json"),
                "model": {**self.model.model_dump(), "params": params},
            },
            source="<param overrides>",
        )


def _format(err: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid model spec ({err.error_count()} error(s))"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        if not loc and ": " in msg:  # a cross-field check names its field first
            loc, msg = msg.split(": ", 1)
        loc = loc or "spec"
        if e["type"] == "extra_forbidden":
            msg = "unknown key (not part of the spec schema)"
        elif e["type"] == "missing":
            msg = "required field is missing"
        elif "input" in e and e["type"] not in ("value_error", "assertion_error"):
            msg = f"{msg} (got {type(e['input']).__name__} {e['input']!r})"
        lines.append(f"  {loc}: {msg}")
    return "\n".join(lines)


def _parse(raw: Any, source: str) -> ModelSpec:
    if not isinstance(raw, dict):
        raise SpecError(
            f"{source}: a model spec must be a YAML mapping, got {type(raw).__name__}", file=source
        )
    try:
        return ModelSpec.model_validate(raw)
    except ValidationError as err:
        fields = [".".join(str(p) for p in e["loc"]) for e in err.errors()]
        raise SpecError(_format(err, source), file=source, fields=fields) from None


def parse_spec(text: str, source: str = "<string>") -> ModelSpec:
    """Parse a spec from YAML text; `source` names it in errors."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise SpecError(f"{source}: not valid YAML: {err}", file=source) from None
    return _parse(raw, source)


def load_spec(path: str | Path) -> ModelSpec:
    """Load and validate one spec file; errors name the file and the field."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise SpecError(f"{path}: cannot read spec: {err.strerror}", file=str(path)) from None
    spec = parse_spec(text, source=str(path))
    if path.stem != spec.name:
        raise SpecError(
            f"{path}: name: {spec.name!r} must match the file name ({path.stem!r}.yaml)",
            file=str(path),
            fields=["name"],
        )
    return spec


def spec_files(directory: str | Path) -> list[Path]:
    return sorted(p for p in Path(directory).glob("*.y*ml") if p.suffix in (".yaml", ".yml"))


def find_spec(name: str, directory: str | Path) -> ModelSpec:
    """Load the spec of model `name` from the spec directory."""
    directory = Path(directory)
    for path in spec_files(directory):
        if path.stem == name:
            return load_spec(path)
    names = [p.stem for p in spec_files(directory)]
    raise SpecError(f"no spec for model {name!r} in {directory} (found: {names})", model=name)
