"""The rows a model sees: a batch (or a request) with the spec's derived columns, its target
and its scope applied. One code path for training, monitoring and serving, so a derived
feature cannot be computed one way in training and another at serving.

For a batch, in order:
0. `data.joins`: each as-of join, in order (`mlops_tasks.data.joins`; rows without a match
   get nulls and are counted);
1. `data.derive`: each derived column, in the order the spec lists them;
2. `target: {expr: ...}`: the target column (a boolean becomes 0/1);
3. `data.scope`: rows where it is not TRUE are out of scope and left out;
4. rows without a label (a NULL target) are unlabelled and left out.
The counts of 3 and 4 are kept (`Shaped`) for the snapshot's lineage: leaving rows out for
being out of scope or unlabelled is what the spec asked for, never a reason to quarantine.

A request gets steps 0 (its lookup joins, by the service) and 1 only: it carries the raw
columns the derived features are made from, and the keys and time its lookup joins match on.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mlops_tasks.data.expressions import ExpressionError, parse
from mlops_tasks.errors import DataError

if TYPE_CHECKING:
    import pandas as pd

    from mlops_tasks.data.joins import AsOfTable
    from mlops_tasks.specs import ModelSpec


@dataclass(frozen=True)
class Shaped:
    """A batch as the model sees it, and how many of its rows were left out, and why."""

    frame: pd.DataFrame
    rows_read: int
    out_of_scope: int
    unlabelled: int
    #: Rows that found no match, by join name (`data.joins`).
    unmatched: dict[str, int] = field(default_factory=dict)


#: An expression's parse, once per text: a request's derived columns are not parsed again for
#: every request (an `Expression` is immutable, its evaluation pure).
parse_expression = functools.lru_cache(maxsize=4_096)(parse)


class ShapeError(DataError):
    """An expression of the spec could not be evaluated on these rows (a column missing or of
    the wrong type): names the spec field and the rows' source."""


def _value(text: str, frame: pd.DataFrame, field: str, where: str) -> pd.Series:
    try:
        return parse_expression(text).evaluate(frame)
    except ExpressionError as err:
        raise ShapeError(f"{where}: {field}: {err}", field=field, source=where) from None


def serving_derived(spec: ModelSpec) -> list[str]:
    """The derived columns a prediction needs: derived features, and the derived columns
    they are made from, in the spec's order (a derived time or id column is not needed)."""
    derived = spec.data.derive
    needed = {f for f in spec.features.all if f in derived}
    for name in reversed(list(derived)):  # a column uses only the ones listed before it
        if name in needed:
            needed.update(c for c in parse_expression(derived[name]).columns if c in derived)
    return [name for name in derived if name in needed]


def derive(
    spec: ModelSpec, frame: pd.DataFrame, where: str, only: list[str] | None = None
) -> pd.DataFrame:
    """`frame` with the spec's derived columns added, in order (or those of `only`). A column
    of that name already in the rows is an error: a derived value never silently replaces a
    raw one."""
    for name, text in spec.data.derive.items():
        if only is not None and name not in only:
            continue
        if name in frame.columns:
            raise ShapeError(
                f"{where}: data.derive.{name}: the rows already have a column {name!r}; "
                "give the derived column another name",
                field=f"data.derive.{name}",
                source=where,
            )
        frame = frame.assign(**{name: _value(text, frame, f"data.derive.{name}", where)})
    return frame


def looked_up(spec: ModelSpec) -> list[str]:
    """The columns the service adds to a request from its lookup joins."""
    return [c for j in spec.data.joins if j.at_serving == "lookup" for c in j.outputs]


def required_inputs(spec: ModelSpec) -> list[str]:
    """The columns a request must carry: features that are neither derived nor looked up,
    the raw columns the derived ones are made from, and the keys and time the lookup joins
    match on, in order of first use."""
    given = set(spec.data.derive) | set(looked_up(spec))
    out: dict[str, None] = {f: None for f in spec.features.all if f not in given}
    for name in serving_derived(spec):
        for column in parse_expression(spec.data.derive[name]).columns:
            if column not in given:
                out.setdefault(column, None)
    for join in spec.data.joins:
        if join.at_serving == "lookup":
            for column in [*join.left_keys, str(spec.data.time_column)]:
                out.setdefault(column, None)
    return list(out)


def _check_join_columns(table: AsOfTable, frame: pd.DataFrame, time: str, where: str) -> None:
    """The batch has what the join matches on, and none of the columns it adds."""
    missing = [k for k in [*table.join.left_keys, time] if k not in frame.columns]
    if missing:
        field = f"{table.field}.keys" if time not in missing else "data.time_column"
        raise ShapeError(
            f"{where}: {table.field} ({table.name}): the rows have no column(s) {missing} to "
            "match on",
            field=field,
            source=where,
        )
    clash = [c for c in table.outputs if c in frame.columns]
    if clash:
        raise ShapeError(
            f"{where}: {table.field}.columns: the rows already have column(s) {clash}; set the "
            "join's prefix",
            field=f"{table.field}.columns",
            source=where,
        )


def shape(
    spec: ModelSpec, frame: pd.DataFrame, where: str, joined: Sequence[AsOfTable] = ()
) -> Shaped:
    """The batch `frame` (read from `where`) as the model sees it, with `joined` (the spec's
    joined tables, `joins.load`); see the module docstring."""
    import pandas as pd

    if len(joined) != len(spec.data.joins):
        raise ValueError(f"{spec.name}: shape needs the {len(spec.data.joins)} joined table(s)")
    rows = len(frame)
    unmatched: dict[str, int] = {}
    for table in joined:
        time_column = str(spec.data.time_column)
        _check_join_columns(table, frame, time_column, where)
        frame, unmatched[table.name] = table.enrich(frame, time_column)
    frame = derive(spec, frame, where)
    if spec.target_expr is not None:
        if spec.target in frame.columns:
            raise ShapeError(
                f"{where}: target.name: the rows already have a column {spec.target!r}; name "
                "the derived target otherwise",
                field="target.name",
                source=where,
            )
        target = _value(spec.target_expr, frame, "target.expr", where)
        if pd.api.types.is_bool_dtype(target.dtype):
            target = target.astype("Int64") if target.isna().any() else target.astype("int64")
        frame = frame.assign(**{spec.target: target})
    out_of_scope = 0
    if spec.data.scope is not None:
        keep = _value(spec.data.scope, frame, "data.scope", where)
        if not pd.api.types.is_bool_dtype(keep.dtype) and not keep.isna().all():
            raise ShapeError(
                f"{where}: data.scope: must be TRUE or FALSE for each row, got {keep.dtype} "
                "values (write a comparison, e.g. `status = 'done'`)",
                field="data.scope",
                source=where,
            )
        keep = keep.fillna(False).astype(bool)
        out_of_scope = int((~keep).sum())
        frame = frame[keep.to_numpy()]
    unlabelled = 0
    if spec.target in frame.columns:
        labelled = frame[spec.target].notna().to_numpy()
        unlabelled = int((~labelled).sum())
        frame = frame[labelled]
        kind = frame[spec.target].dtype
        # a nullable integer target (a derived boolean with NULLs) is plain int64 once its
        # unlabelled rows are gone; a text target of an extension dtype stays text
        if pd.api.types.is_extension_array_dtype(kind) and pd.api.types.is_integer_dtype(kind):
            frame = frame.assign(**{spec.target: frame[spec.target].astype("int64")})
    return Shaped(frame.reset_index(drop=True), rows, out_of_scope, unlabelled, unmatched)


def _plain(value: Any, numeric: bool) -> Any:
    """A derived value as a request row holds one: a finite float (numeric features, as
    `prepare_features` coerces them) or a str/int/bool category, and None for a missing one."""
    import pandas as pd

    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if hasattr(value, "item"):
        value = value.item()
    if numeric:
        if isinstance(value, bool):
            return float(value)
        if isinstance(value, int | float):
            return float(value) if math.isfinite(value) else None
        try:
            number = float(str(value))
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    if isinstance(value, float):
        return None if math.isnan(value) else value
    return value if isinstance(value, str | int | bool) else str(value)


@dataclass(frozen=True)
class _RequestPlan:
    """What `derive_records` needs of a spec, worked out once per spec object."""

    spec: ModelSpec
    columns: list[str]
    derived: list[str]
    features: list[str]
    numeric: frozenset[str]


_PLANS: dict[int, _RequestPlan] = {}


def _plan(spec: ModelSpec) -> _RequestPlan:
    plan = _PLANS.get(id(spec))
    if plan is None or plan.spec is not spec:  # a spec is frozen: its plan never changes
        numeric = frozenset(spec.features.numeric)
        features = [f for f in spec.data.derive if f in numeric or f in spec.features.categorical]
        plan = _RequestPlan(
            spec,
            [*required_inputs(spec), *looked_up(spec)],
            serving_derived(spec),
            features,
            numeric,
        )
        if len(_PLANS) > 1_000:
            _PLANS.clear()
        _PLANS[id(spec)] = plan
    return plan


def derive_records(spec: ModelSpec, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Request rows with the spec's derived features added (`derive`, as for a batch)."""
    import pandas as pd

    plan = _plan(spec)
    raw = pd.DataFrame.from_records(records, columns=plan.columns)
    frame = derive(spec, raw, "request", only=plan.derived)
    numeric, features = plan.numeric, plan.features
    values = {f: frame[f].tolist() for f in features}
    return [
        {**row, **{f: _plain(values[f][i], f in numeric) for f in features}}
        for i, row in enumerate(records)
    ]
