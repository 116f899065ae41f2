"""Values training never saw, at serving time: scored (HTTP 200), counted per model, version and
feature in /metrics, flagged in the answer and in the inference log. Real trained models, the
real app (FastAPI's TestClient)."""

from __future__ import annotations

import functools
import json
import math
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlops_tasks.data.profile import PROFILE_FILE, load_profile
from mlops_tasks.registry import Registry
from mlops_tasks.serving.app import OUT_OF_RANGE, UNSEEN_CATEGORIES, create_app
from mlops_tasks.settings import Settings
from mlops_tasks.specs import ModelSpec, find_spec
from mlops_tasks.storage import LocalStore
from tests.serving.support import MODELS, records, trained

MODEL = "credit_default"


def make_client(store: LocalStore, spec_dir: Path) -> TestClient:
    settings = Settings.from_env({**os.environ, "MLOPS_STORE": store.uri})
    app = create_app(settings, store, spec_dir, log_flush_seconds=60, api_tokens=[])
    return TestClient(app, raise_server_exceptions=False)


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with make_client(*trained()) as c:
        yield c


def read(text: str, name: str, **labels: str) -> float:
    """One series of a counter in /metrics text, as a scraper reads it (0 when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith(f"{name}{{{want}}} "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def counter(client: TestClient, name: str, **labels: str) -> float:
    return read(client.get("/metrics").text, name, **labels)


@functools.cache
def production(model: str) -> tuple[int, dict[str, Any]]:
    """The production version of `model` in the shared store, and its profile."""
    store, _ = trained()
    version = Registry(store).alias(model)
    assert version is not None
    profile = load_profile(store, model, version)
    assert profile is not None  # the retrain pipeline stored it
    return version, profile


def clean_records(n: int) -> list[dict[str, Any]]:
    """`n` rows with every number inside the production version's training range. The
    synthetic day's draw depends on the date: a long-tailed column of a few rows drawn today
    can lie past what training saw, which is a data issue of its own."""
    _, profile = production(MODEL)
    ranges = profile["numeric"]
    rows = [
        r
        for r in records(MODEL, 200)
        if all(r.get(c) is None or ranges[c]["min"] <= r[c] <= ranges[c]["max"] for c in ranges)
    ]
    assert len(rows) >= n
    return rows[:n]


def logged(client: TestClient, request_id: str) -> list[Any]:
    """The flushed inference-log rows of one request, in row order, as (row, data_issues)."""
    from mlops_tasks.data.traffic import read_traffic

    client.app.state.service.inference.flush()  # type: ignore[attr-defined]
    store, _ = trained()
    frame = read_traffic(store, MODEL, days=1)
    mine = frame[frame["request_id"] == request_id].sort_values("row")
    return [json.loads(v) for v in mine["data_issues"]]


def test_unseen_category_and_out_of_range_are_scored_counted_and_logged(
    client: TestClient,
) -> None:
    version, profile = production(MODEL)
    v = str(version)
    age_max = profile["numeric"]["age"]["max"]
    labels = {"model": MODEL, "version": v}
    before_unseen = counter(client, UNSEEN_CATEGORIES, feature="region", **labels)
    before_range = counter(client, OUT_OF_RANGE, feature="age", **labels)
    rows = clean_records(3)
    rows[1] |= {"region": "atlantis", "age": age_max + 10}
    rows[2] |= {"region": None, "age": None}  # missing is not unseen
    resp = client.post(f"/v1/models/{MODEL}/predict", json={"records": rows})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert len(body["predictions"]) == 3
    assert body["data_issues"] == [[], ["range:age", "unseen:region"], []]
    assert counter(client, UNSEEN_CATEGORIES, feature="region", **labels) == before_unseen + 1
    assert counter(client, OUT_OF_RANGE, feature="age", **labels) == before_range + 1
    text = client.get("/metrics").text
    assert f"# HELP {UNSEEN_CATEGORIES} " in text and f"# TYPE {OUT_OF_RANGE} counter" in text
    assert logged(client, body["request_id"]) == [[], ["range:age", "unseen:region"], []]


def test_a_clean_request_keeps_its_usual_answer(client: TestClient) -> None:
    resp = client.post(f"/v1/models/{MODEL}/predict", json={"records": clean_records(2)})
    assert resp.status_code == 200 and "data_issues" not in resp.json()
    assert logged(client, resp.json()["request_id"]) == [[], []]


@pytest.mark.parametrize("profile", [None, b"{not json"], ids=["no-profile", "broken-profile"])
def test_a_version_without_a_usable_profile_still_serves_with_its_encoders_categories(
    tmp_path, profile: bytes | None
) -> None:
    store, spec_dir = trained()
    shutil.copytree(store.root, tmp_path / "store")
    copy = LocalStore(tmp_path / "store")
    version = Registry(copy).alias(MODEL)
    assert version is not None
    key = f"models/{MODEL}/versions/{version}/{PROFILE_FILE}"
    copy.delete(key)  # as registered before profiles existed
    if profile is not None:
        copy.put_bytes(key, profile)
    with make_client(copy, spec_dir) as c:
        row = records(MODEL, 1)[0] | {"region": "atlantis", "age": 1e9}
        resp = c.post(f"/v1/models/{MODEL}/predict", json={"records": [row]})
        assert resp.status_code == 200, resp.text
        assert resp.json()["data_issues"] == [["unseen:region"]]  # no range to check against
        labels = {"model": MODEL, "version": str(version)}
        assert counter(c, UNSEEN_CATEGORIES, feature="region", **labels) == 1
        assert counter(c, OUT_OF_RANGE, feature="age", **labels) == 0


# ----------------------------------------------------------------------------- property


@functools.cache
def spec_of(model: str) -> ModelSpec:
    return find_spec(model, trained()[1])


def expected_flags(spec: ModelSpec, profile: dict[str, Any], row: dict[str, Any]) -> set[str]:
    """The flags of one record, computed from the profile alone (the oracle)."""
    flags = set()
    for f in spec.features.numeric:
        p, x = profile["numeric"][f], row[f]
        if x is not None and (x < p["min"] or x > p["max"]):
            flags.add(f"range:{f}")
    for f in spec.features.categorical:
        if row[f] is not None and row[f] not in profile["categorical"][f]["categories"]:
            flags.add(f"unseen:{f}")
    return flags


def value(kind: str, entry: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Any value the schema allows, with the training bounds and categories well represented."""
    if kind == "numeric":
        lo, hi = entry["min"], entry["max"]
        edges = [lo, hi, math.nextafter(lo, -math.inf), math.nextafter(hi, math.inf)]
        finite = st.floats(allow_nan=False, allow_infinity=False)
        return st.one_of(st.none(), st.sampled_from(edges), finite, st.floats(lo, hi))
    known = sorted(entry["categories"])
    return st.one_of(st.none(), st.sampled_from(known), st.text(max_size=12))


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, list[dict[str, Any]]]:
    model = draw(st.sampled_from(MODELS))
    spec = spec_of(model)
    _, profile = production(model)
    fields = {
        **{f: value("numeric", profile["numeric"][f]) for f in spec.features.numeric},
        **{f: value("categorical", profile["categorical"][f]) for f in spec.features.categorical},
    }
    rows = draw(st.lists(st.fixed_dictionaries(fields), min_size=1, max_size=4))
    return model, rows


@given(case=requests())
@settings(
    max_examples=120,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
def test_any_feature_values_are_answered_and_counts_match_the_flags(
    client: TestClient, case: tuple[str, list[dict[str, Any]]]
) -> None:
    model, rows = case
    spec = spec_of(model)
    version, profile = production(model)
    labels = {"model": model, "version": str(version)}
    series = [(UNSEEN_CATEGORIES, f) for f in spec.features.categorical] + [
        (OUT_OF_RANGE, f) for f in spec.features.numeric
    ]
    metrics = client.app.state.service.metrics  # type: ignore[attr-defined]
    before = {(name, f): metrics.counter(name, feature=f, **labels) for name, f in series}
    resp = client.post(f"/v1/models/{model}/predict", json={"records": rows})
    assert resp.status_code < 500, resp.text
    delta = {k: metrics.counter(k[0], feature=k[1], **labels) - n for k, n in before.items()}
    if resp.status_code != 200:  # e.g. a linear model's output overflowing: not scored
        assert resp.status_code == 422 and not any(delta.values())
        return
    wanted = [expected_flags(spec, profile, row) for row in rows]
    got = resp.json().get("data_issues", [[] for _ in rows])
    assert [set(g) for g in got] == wanted
    for (name, f), n in delta.items():
        kind = "unseen" if name == UNSEEN_CATEGORIES else "range"
        assert n == sum(f"{kind}:{f}" in w for w in wanted), (name, f)
