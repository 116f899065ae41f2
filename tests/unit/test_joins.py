"""As-of joins (`data.joins`): a row gets the newest row of the other table at or before its
time, never a later one; within the tolerance; unknown keys give nulls and are counted; the
same match for a batch and for request rows; spec errors name the field."""

from __future__ import annotations

import copy
from functools import cache
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from mlops_tasks.data import contracts, joins, rows
from mlops_tasks.errors import SpecError
from mlops_tasks.specs import JoinSpec, ModelSpec, parse_spec

HOUR = 3_600 * 10**9
START = pd.Timestamp("2024-03-01")


def spec(**join: Any) -> ModelSpec:
    raw: dict[str, Any] = {
        "name": "m",
        "task": "regression",
        "data": {
            "source": "store://rows/batches",
            "time_column": "at",
            "joins": [
                {
                    "source": "store://prices/batches",
                    "keys": ["shop"],
                    "time_key": "seen",
                    "columns": ["price"],
                    **join,
                }
            ],
            "derive": {"double_price": "price * 2"},
        },
        "target": "y",
        "features": {"numeric": ["price", "double_price"], "categorical": ["shop"]},
        "model": {"estimator": "ridge"},
        "evaluation": {"primary_metric": "rmse"},
    }
    return parse_spec(yaml.safe_dump(raw), "m.yaml")


def table(join: JoinSpec, frame: pd.DataFrame) -> joins.AsOfTable:
    return joins.AsOfTable(join, frame, "0" * 64)


def oracle(left: pd.DataFrame, right: pd.DataFrame, tolerance: int | None) -> pd.Series:
    """pandas' own as-of join: the newest `seen` at or before `at`, by `shop`."""
    lt = left.assign(_i=range(len(left)), at=pd.to_datetime(left["at"], utc=True))
    rt = right.assign(seen=pd.to_datetime(right["seen"], utc=True))
    lt, rt = lt.sort_values("at"), rt.sort_values("seen", kind="stable")
    out = pd.merge_asof(
        lt,
        rt,
        left_on="at",
        right_on="seen",
        by="shop",
        direction="backward",
        tolerance=None if tolerance is None else pd.Timedelta(hours=tolerance),
    )
    return out.sort_values("_i")["price"].reset_index(drop=True)


@cache
def join_within(tolerance: int | None) -> JoinSpec:
    return spec(tolerance=None if tolerance is None else f"{tolerance}h").data.joins[0]


hours = st.integers(min_value=0, max_value=200)
shops = st.sampled_from(["a", "b", "c"])


@settings(max_examples=150, deadline=None)
@given(
    left=st.lists(st.tuples(shops, hours), min_size=1, max_size=30),
    right=st.lists(st.tuples(shops, hours), min_size=0, max_size=30, unique=True),
    tolerance=st.one_of(st.none(), st.integers(min_value=0, max_value=48)),
)
def test_a_row_gets_the_newest_row_at_or_before_its_time_as_merge_asof_does(
    left: list[tuple[str, int]], right: list[tuple[str, int]], tolerance: int | None
) -> None:
    lf = pd.DataFrame(
        {"shop": [s for s, _ in left], "at": [START + pd.Timedelta(hours=h) for _, h in left]}
    )
    rf = pd.DataFrame(
        {
            "shop": pd.Series([s for s, _ in right], dtype=object),
            "seen": [(START + pd.Timedelta(hours=h)).isoformat() + "Z" for _, h in right],
            "price": [float(h) for _, h in right],  # the price is the hour it was seen
        }
    )
    join = join_within(tolerance)
    got, missing = table(join, rf).enrich(lf, "at")
    at = np.array([h for _, h in left], dtype=float)
    seen = got["price"].to_numpy(dtype=float)
    matched = ~np.isnan(seen)
    assert (seen[matched] <= at[matched]).all()  # never a row from the row's future
    if tolerance is not None:
        assert (at[matched] - seen[matched] <= tolerance).all()
    assert missing == int((~matched).sum())
    if len(rf):
        expected = oracle(lf, rf, tolerance).to_numpy(dtype=float)
        np.testing.assert_array_equal(seen, expected)
    # request rows go through the same match
    records = [{"shop": s, "at": (START + pd.Timedelta(hours=h)).isoformat()} for s, h in left]
    enriched, unmatched = table(join, rf).enrich_records(records, "at")
    assert [r["price"] for r in enriched] == [None if np.isnan(v) else v for v in seen]
    assert unmatched == np.flatnonzero(~matched).tolist()


def test_of_rows_seen_at_the_same_time_the_last_one_read_wins() -> None:
    join = spec().data.joins[0]
    rf = pd.DataFrame({"shop": ["a", "a", "a"], "seen": ["2024-03-01"] * 2 + ["2024-02-01"]})
    rf["price"] = [1.0, 2.0, 3.0]
    got, _ = table(join, rf).enrich(pd.DataFrame({"shop": ["a"], "at": ["2024-03-02"]}), "at")
    assert got["price"].tolist() == [2.0]


def test_unknown_keys_no_time_and_stale_rows_get_nulls_and_are_counted() -> None:
    s = spec(tolerance="2d")
    prices = pd.DataFrame(
        {"shop": ["a", "b", None], "seen": ["2024-03-01", "2024-03-01", "2024-03-01"]}
    ).assign(price=[10.0, 20.0, 30.0])
    batch = pd.DataFrame(
        {
            "shop": ["a", "zz", "b", "a", None],
            "at": ["2024-03-02", "2024-03-02", "2024-03-05", "not a time", "2024-03-02"],
            "y": [1.0, 2.0, 3.0, 4.0, 5.0],
        }
    )
    shaped = rows.shape(s, batch, "batch.csv", [table(s.data.joins[0], prices)])
    assert shaped.frame["price"].tolist()[0] == 10.0
    assert shaped.frame["price"].isna().tolist() == [False, True, True, True, True]
    assert shaped.frame["double_price"].tolist()[0] == 20.0  # derived after the join
    assert shaped.unmatched == {"prices": 4}


@pytest.mark.parametrize(
    ("batch", "field"),
    [
        pytest.param(
            pd.DataFrame({"at": ["2024-03-01"], "y": [1.0]}), "data.joins.0.keys", id="key"
        ),
        pytest.param(pd.DataFrame({"shop": ["a"], "y": [1.0]}), "data.time_column", id="time"),
        pytest.param(
            pd.DataFrame({"shop": ["a"], "at": ["2024-03-01"], "price": [1.0], "y": [1.0]}),
            "data.joins.0.columns",
            id="clash",
        ),
    ],
)
def test_a_batch_the_join_cannot_use_names_the_field(batch: pd.DataFrame, field: str) -> None:
    s = spec()
    prices = pd.DataFrame({"shop": ["a"], "seen": ["2024-03-01"], "price": [1.0]})
    with pytest.raises(rows.ShapeError) as info:
        rows.shape(s, batch, "batch.csv", [table(s.data.joins[0], prices)])
    assert info.value.context["field"] == field


def test_keys_may_be_named_differently_in_the_two_tables() -> None:
    s = spec(keys=[{"left": "shop", "right": "store_id"}])
    prices = pd.DataFrame({"store_id": ["a"], "seen": ["2024-03-01"], "price": [7.0]})
    batch = pd.DataFrame({"shop": ["a"], "at": ["2024-03-01T10:00:00"]})
    got, missing = table(s.data.joins[0], prices).enrich(batch, "at")
    assert got["price"].tolist() == [7.0] and missing == 0


def test_a_request_carries_the_keys_and_time_not_the_looked_up_columns() -> None:
    assert rows.required_inputs(spec()) == ["shop", "at"]
    assert rows.required_inputs(spec(at_serving="request")) == ["price", "shop"]


def test_the_join_is_named_after_its_table_and_specs_without_joins_keep_their_hash() -> None:
    assert spec().data.joins[0].name == "prices"
    assert spec(source="s3://bucket/ref/fx-rates.parquet").data.joins[0].name == "fx_rates"
    plain = spec().model_dump(mode="json")
    del plain["data"]["joins"]
    plain["features"]["numeric"] = ["double_price"]
    plain["data"]["derive"] = {"double_price": "2"}
    assert "joins" not in parse_spec(yaml.safe_dump(plain)).model_dump(mode="json")["data"]


def test_the_contract_a_batch_is_judged_under_includes_the_joined_snapshots() -> None:
    s = spec()
    assert contracts.contract_hash(s, {"prices": "a"}) != contracts.contract_hash(
        s, {"prices": "b"}
    )


def _mutated(change: Any) -> str:
    raw = spec().model_dump(mode="json")
    change(raw)
    return yaml.safe_dump(raw)


def _join(raw: dict[str, Any]) -> dict[str, Any]:
    join: dict[str, Any] = raw["data"]["joins"][0]
    return join


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        pytest.param(
            lambda r: r["data"].pop("time_column"),
            "data.joins.0.time_key",
            "data.time_column",
            id="no-time-column",
        ),
        pytest.param(
            lambda r: _join(r).pop("time_key"), "data.joins.0.time_key", "missing", id="no-time-key"
        ),
        pytest.param(
            lambda r: _join(r).update(tolerance="two days"),
            "data.joins.0.tolerance",
            "not a duration",
            id="tolerance",
        ),
        pytest.param(
            lambda r: _join(r).update(columns=["double_price"]),
            "data.joins.0.columns",
            "derived column",
            id="clash-derived",
        ),
        pytest.param(
            lambda r: _join(r).update(columns=["y"]),
            "data.joins.0.columns",
            "target",
            id="clash-target",
        ),
        pytest.param(
            lambda r: _join(r).update(columns=["prediction"]),
            "data.joins.0.columns",
            "inference log",
            id="clash-log",
        ),
        pytest.param(
            lambda r: _join(r).update(keys=["double_price"]),
            "data.joins.0.keys",
            "derived",
            id="derived-key",
        ),
        pytest.param(
            lambda r: r["data"]["joins"].append({**copy.deepcopy(_join(r)), "prefix": "p_"}),
            "data.joins.1.name",
            "another join",
            id="same-name",
        ),
        pytest.param(
            lambda r: r["data"]["derive"].update(at="shop"),
            "data.time_column",
            "derived",
            id="derived-time",
        ),
        pytest.param(
            lambda r: _join(r).update(at_serving="cache"),
            "data.joins.0.at_serving",
            "lookup",
            id="at-serving",
        ),
        pytest.param(
            lambda r: _join(r).update(source="/tmp/prices"),
            "data.joins.0.source",
            "URI",
            id="source",
        ),
    ],
)
def test_wrong_joins_name_the_field(change: Any, field: str, message: str) -> None:
    with pytest.raises(SpecError, match=message) as info:
        parse_spec(_mutated(change), "m.yaml")
    assert f"  {field}: " in str(info.value), str(info.value)


@settings(max_examples=200, deadline=None)
@given(
    at=st.datetimes(min_value=pd.Timestamp("1900-01-01"), max_value=pd.Timestamp("2200-01-01")),
    form=st.sampled_from(["T", " ", "date", "minutes", "Z", "+05:30", "-08:00", "micro"]),
)
def test_request_times_are_read_as_pandas_reads_them(at: Any, form: str) -> None:
    text = {
        "T": at.isoformat(timespec="seconds"),
        " ": at.isoformat(sep=" ", timespec="seconds"),
        "date": at.date().isoformat(),
        "minutes": at.isoformat(timespec="minutes"),
        "Z": at.isoformat(timespec="milliseconds") + "Z",
        "+05:30": at.isoformat(timespec="seconds") + "+05:30",
        "-08:00": at.isoformat(timespec="seconds") + "-08:00",
        "micro": at.isoformat(timespec="microseconds"),
    }[form]
    values = [text, None, "2013-02-30", "yesterday"]
    np.testing.assert_array_equal(joins.request_instants(values[:3]), joins.instants(values[:3]))
    np.testing.assert_array_equal(joins.request_instants(values), joins.instants(values))
