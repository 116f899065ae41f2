"""Bounded inputs of the prediction service, against the real app (FastAPI's TestClient) with
real trained models: finite numbers, valid Unicode, body/string/record limits, short 422s,
feedback tied to served requests, bearer auth, every response counted, offline docs."""

from __future__ import annotations

import io
import json
import os
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from mlops_tasks.data.traffic import read_traffic
from mlops_tasks.errors import UsageError
from mlops_tasks.flow.flows import TRAIN
from mlops_tasks.serving.app import create_app
from mlops_tasks.serving.auth import ApiTokens
from mlops_tasks.serving.inference_log import InferenceLog
from mlops_tasks.serving.limits import DEFAULT_MAX_BODY_BYTES, Limits
from mlops_tasks.settings import Settings
from mlops_tasks.storage import LocalStore
from tests.serving.support import labels, records, trained

PREDICT = "/v1/models/credit_default/predict"
FEEDBACK = "/v1/models/credit_default/feedback"
JSON = {"content-type": "application/json"}


def make_client(**kwargs: Any) -> TestClient:
    store, spec_dir = trained()
    kwargs.setdefault("api_tokens", [])  # auth off unless a test turns it on
    settings = Settings.from_env({**os.environ, "MLOPS_STORE": store.uri})
    app = create_app(settings, store, spec_dir, log_flush_seconds=0.2, **kwargs)
    return TestClient(app, raise_server_exceptions=False)


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with make_client() as c:
        yield c


def raw_predict(client: TestClient, field: str, raw: str, path: str = PREDICT) -> Any:
    """POST one record whose `field` is the raw JSON text `raw` (what json.dumps cannot say)."""
    row = dict(records("credit_default", 1)[0], **{field: "@@RAW@@"})
    body = json.dumps({"records": [row]}).replace('"@@RAW@@"', raw)
    return client.post(path, content=body, headers=JSON)


def stored_feedback(model: str) -> pd.DataFrame:
    store, _ = trained()
    keys = store.list_keys(f"feedback/{model}/")
    parts = [pd.read_parquet(io.BytesIO(store.get_bytes(k))) for k in keys]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def served(client: TestClient, n: int = 3, headers: dict[str, str] | None = None) -> str:
    resp = client.post(PREDICT, json={"records": records("credit_default", n)}, headers=headers)
    assert resp.status_code == 200, resp.text
    return str(resp.json()["request_id"])


# ----------------------------------------------------------------------------- numbers


@pytest.mark.parametrize("raw", ["Infinity", "-Infinity", "NaN", "1e400", "-1e400"])
def test_non_finite_numbers_are_422_naming_the_field(client: TestClient, raw: str) -> None:
    resp = raw_predict(client, "income", raw)
    assert resp.status_code == 422, resp.text
    (err,) = resp.json()["detail"]
    assert err["loc"] == ["body", "records", 0, "income"] and err["type"] == "finite_number"


def test_null_stays_allowed(client: TestClient) -> None:
    resp = raw_predict(client, "income", "null")
    assert resp.status_code == 200, resp.text


# ----------------------------------------------------------------------------- unicode


def test_lone_surrogate_is_422_naming_the_field(client: TestClient) -> None:
    resp = raw_predict(client, "region", '"north\\ud800"')
    assert resp.status_code == 422, resp.text
    (err,) = resp.json()["detail"]  # the answer itself is valid JSON: the input is escaped
    assert err["loc"] == ["body", "records", 0, "region"]
    rid = served(client, 1)
    body = '{"labels": [{"request_id": "RID", "row": 0, "label": "\\udfff"}]}'.replace("RID", rid)
    resp = client.post(FEEDBACK, content=body, headers=JSON)
    assert resp.status_code == 422
    assert any(e["loc"][:4] == ["body", "labels", 0, "label"] for e in resp.json()["detail"])


def logged_row(i: int, **extra: Any) -> dict[str, Any]:
    row = {"model": "m", "request_id": f"r{i}", "row": 0, "ts": datetime.now(UTC), "version": 1}
    return {**row, "x": float(i), "region": "north", "prediction": i % 2, **extra}


def test_a_poisoned_row_cannot_stop_later_rows_from_being_written(tmp_path) -> None:
    store = LocalStore(tmp_path / "store")
    rejected: list[int] = []
    log = InferenceLog(store, flush_seconds=60, on_reject=rejected.append)
    log.append([logged_row(i) for i in range(5)])
    log.append([logged_row(5, region="\ud800")])  # cannot be encoded as UTF-8
    log.append([logged_row(i) for i in range(6, 10)])
    assert log.flush() == 9
    log.append([logged_row(i) for i in range(10, 20)])  # later flushes are not blocked either
    assert log.flush() == 10
    assert log.buffered == 0 and rejected == [1]
    log.close()
    logged = read_traffic(store, "m", days=1)
    assert sorted(logged["request_id"]) == sorted(f"r{i}" for i in range(20) if i != 5)


def test_rows_that_only_clash_together_are_all_written(tmp_path) -> None:
    store = LocalStore(tmp_path / "store")
    log = InferenceLog(store, flush_seconds=60)
    log.append([logged_row(0, x="text where numbers were"), *[logged_row(i) for i in range(1, 8)]])
    assert log.flush() == 8  # the clashing rows land in separate parts, none is lost
    log.close()
    assert len(read_traffic(store, "m", days=1)) == 8


# ----------------------------------------------------------------------------- sizes


def test_body_over_the_limit_is_413_before_parsing() -> None:
    with make_client(limits=Limits(max_body_bytes=64 * 1024)) as small:
        junk = b"{" * 100_000  # not even JSON: the size is refused before any parsing
        resp = small.post(PREDICT, content=junk, headers=JSON)
        assert resp.status_code == 413 and len(resp.content) < 300
        assert "65536" in resp.json()["detail"]
        chunked = small.post(PREDICT, content=iter([junk[:50_000], junk[50_000:]]), headers=JSON)
        assert chunked.status_code == 413
        assert small.post(PREDICT, json={"records": records("credit_default", 5)}).is_success


def test_a_50_mb_string_is_refused_by_default(client: TestClient) -> None:
    row = dict(records("credit_default", 1)[0], region="x" * 50_000_000)
    resp = client.post(PREDICT, content=json.dumps({"records": [row]}), headers=JSON)
    assert resp.status_code == 413 and len(resp.content) < 300
    assert str(DEFAULT_MAX_BODY_BYTES) in resp.text


def test_string_longer_than_the_field_limit_is_422_without_echo(client: TestClient) -> None:
    row = dict(records("credit_default", 1)[0], region="y" * 100_000)
    resp = client.post(PREDICT, json={"records": [row]})
    assert resp.status_code == 422 and len(resp.content) < 1_000
    (err,) = resp.json()["detail"]
    assert err["loc"] == ["body", "records", 0, "region"] and err["type"] == "string_too_long"


def test_too_many_records_are_refused_before_any_record_is_checked(client: TestClient) -> None:
    rows = records("credit_default", 100) * 101  # 10,100 valid records, 6.6 MB
    resp = client.post(PREDICT, json={"records": rows})
    assert resp.status_code == 422 and len(resp.content) < 1_000  # not the input echoed back
    (err,) = resp.json()["detail"]
    assert err["loc"] == ["body", "records"] and err["type"] == "too_long"
    empty = client.post(PREDICT, json={"records": [{}] * 100_000})
    assert empty.status_code == 422 and len(empty.content) < 1_000


def test_many_errors_are_capped_and_counted(client: TestClient) -> None:
    rows = [{k: v for k, v in r.items() if k != "income"} for r in records("credit_default", 500)]
    resp = client.post(PREDICT, json={"records": rows})
    body = resp.json()
    assert resp.status_code == 422 and len(body["detail"]) == 20
    assert body["errors_total"] == 500 and len(resp.content) < 10_000


# ----------------------------------------------------------------------------- feedback


def test_row_2_70_is_422(client: TestClient) -> None:
    resp = client.post(FEEDBACK, json={"labels": [{"request_id": "x", "row": 2**70, "label": 1}]})
    assert resp.status_code == 422
    assert resp.json()["detail"][0]["loc"] == ["body", "labels", 0, "row"]


def test_mixed_label_types_are_422_and_nothing_is_stored(client: TestClient) -> None:
    rid = served(client, 2)
    items = [{"request_id": rid, "row": 0, "label": 1}, {"request_id": rid, "row": 1, "label": "a"}]
    resp = client.post(FEEDBACK, json={"labels": items})
    assert resp.status_code == 422, resp.text
    (err,) = resp.json()["detail"]
    assert err["loc"] == ["body", "labels", 1, "label"] and err["type"] == "label_invalid"
    fb = stored_feedback("credit_default")
    assert fb.empty or rid not in set(fb["request_id"])
    assert client.post(FEEDBACK, json={"labels": [{"request_id": rid, "row": 0, "label": 7}]}
                       ).status_code == 422  # fmt: skip  # not a class of the model


def test_regression_labels_are_finite_numbers(client: TestClient) -> None:
    path = "/v1/models/customer_spend"
    resp = client.post(f"{path}/predict", json={"records": records("customer_spend", 2)})
    rid = resp.json()["request_id"]
    bad = client.post(f"{path}/feedback", json={"labels": [{"request_id": rid, "label": "a"}]})
    assert bad.status_code == 422
    body = '{"labels": [{"request_id": "RID", "label": 1e400}]}'.replace("RID", rid)
    assert client.post(f"{path}/feedback", content=body, headers=JSON).status_code == 422
    item = {"request_id": rid, "row": 1, "label": labels("customer_spend", 2)[1]}
    ok = client.post(f"{path}/feedback", json={"labels": [item]})
    assert ok.status_code == 200, ok.text


def test_feedback_needs_a_served_request_and_row(client: TestClient) -> None:
    unknown = client.post(FEEDBACK, json={"labels": [{"request_id": "f" * 32, "label": 1}]})
    assert (
        unknown.status_code == 404 and unknown.json()["detail"][0]["type"] == "unknown_request_id"
    )
    rid = served(client, 2)
    beyond = client.post(FEEDBACK, json={"labels": [{"request_id": rid, "row": 2, "label": 1}]})
    assert beyond.status_code == 422 and beyond.json()["detail"][0]["type"] == "row_out_of_range"
    other_model = client.post(
        "/v1/models/customer_spend/feedback", json={"labels": [{"request_id": rid, "label": 1.0}]}
    )
    assert other_model.status_code == 404


def test_second_label_needs_overwrite_which_is_recorded_with_who() -> None:
    with make_client(api_tokens="alice:token-of-alice-0001,bob:token-of-bob-00001") as c:
        alice = {"Authorization": "Bearer token-of-alice-0001"}
        bob = {"Authorization": "Bearer token-of-bob-00001"}
        rid = served(c, 2, headers=alice)
        item = {"request_id": rid, "row": 1, "label": 1}
        first = c.post(FEEDBACK, json={"labels": [item]}, headers=alice)
        assert first.status_code == 200 and first.json()["accepted"] == 1
        again = c.post(FEEDBACK, json={"labels": [{**item, "label": 0}]}, headers=alice)
        assert again.status_code == 409 and again.json()["detail"][0]["type"] == "already_labelled"
        stolen = c.post(
            FEEDBACK, json={"labels": [{**item, "label": 0, "overwrite": True}]}, headers=bob
        )
        assert stolen.status_code == 403  # another client's request: not bob's to label
        fixed = c.post(
            FEEDBACK, json={"labels": [{**item, "label": 0, "overwrite": True}]}, headers=alice
        )
        assert fixed.status_code == 200 and fixed.json()["overwritten"] == 1
        twice = c.post(
            FEEDBACK,
            json={
                "labels": [
                    {"request_id": rid, "row": 0, "label": 1},
                    {"request_id": rid, "row": 0, "label": 0},
                ]
            },
            headers=alice,
        )
        assert twice.status_code == 409  # the same row twice in one batch counts as well
    fb = stored_feedback("credit_default")
    mine = fb[fb["request_id"] == rid].sort_values("ts")
    assert list(mine["label"]) == [1, 0] and list(mine["overwrite"]) == [False, True]
    assert set(mine["client"]) == {"alice"} and set(mine["row"]) == {1}


def test_the_request_index_is_bounded() -> None:
    with make_client(feedback_window=3) as c:
        ids = [served(c, 1) for _ in range(5)]
        assert len(c.app.state.service.requests) == 3  # type: ignore[attr-defined]
        old = c.post(FEEDBACK, json={"labels": [{"request_id": ids[0], "label": 1}]})
        assert old.status_code == 404
        new = c.post(FEEDBACK, json={"labels": [{"request_id": ids[-1], "label": 1}]})
        assert new.status_code == 200


# ----------------------------------------------------------------------------- metrics


def series(text: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith("mlops_http_responses_total{") and all(
            f'{k}="{v}"' in line for k, v in labels.items()
        ):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_every_response_is_counted_by_route_template_and_code(monkeypatch) -> None:
    with make_client(limits=Limits(max_body_bytes=10_000)) as c:
        svc = c.app.state.service  # type: ignore[attr-defined]
        slot = svc.manager.slots["credit_default"]

        def boom(_x: Any) -> Any:
            raise RuntimeError("model exploded")

        scorer = slot.compiled.estimator if slot.compiled else slot.model  # what scores
        monkeypatch.setattr(scorer, "predict_proba", boom)
        assert c.post(PREDICT, json={"records": records("credit_default", 1)}).status_code == 500
        monkeypatch.undo()
        c.get("/no/such/path-123")
        c.get("/v1/models/some-unknown-model-456")
        c.post(PREDICT, content=b"x" * 20_000, headers=JSON)
        text = c.get("/metrics").text
    assert series(text, route=PREDICT, code="500") == 1
    assert series(text, route="<unmatched>", code="404") == 1
    assert series(text, route="/v1/models/{name}", code="404") == 1
    assert series(text, route=PREDICT, code="413") == 1
    assert "path-123" not in text and "unknown-model-456" not in text  # templates, not paths


# ----------------------------------------------------------------------------- auth


def test_bearer_auth_guards_predict_feedback_and_metrics() -> None:
    with make_client(api_tokens="ci:s3cret-ci-token-0001, plain-token-00000001") as c:
        ok = {"Authorization": "Bearer s3cret-ci-token-0001"}
        body = {"records": records("credit_default", 1)}
        missing = c.post(PREDICT, json=body)
        assert missing.status_code == 401 and missing.headers["www-authenticate"].startswith(
            "Bearer"
        )
        assert (
            c.post(PREDICT, json=body, headers={"Authorization": "Bearer nope"}).status_code == 401
        )
        assert (
            c.post(
                PREDICT, json=body, headers={"Authorization": "Basic s3cret-ci-token-0001"}
            ).status_code
            == 401
        )
        assert c.post(PREDICT, json=body, headers=ok).status_code == 200
        plain = {"Authorization": "Bearer plain-token-00000001"}
        assert c.post(PREDICT, json=body, headers=plain).status_code == 200
        assert (
            c.post(FEEDBACK, json={"labels": [{"request_id": "x", "label": 1}]}).status_code == 401
        )
        assert c.get("/metrics").status_code == 401 and c.get("/metrics", headers=ok).is_success
        assert c.get("/v1/models").status_code == 401
        for open_path in ("/healthz", "/readyz", "/docs", "/openapi.json"):
            assert c.get(open_path).status_code == 200, open_path
        schema = c.get("/openapi.json").json()
        assert schema["paths"][PREDICT]["post"]["security"]  # /docs offers "Authorize"
        assert 'code="401"' in c.get("/metrics", headers=ok).text


def test_auth_comes_from_the_environment_and_is_off_when_unset(monkeypatch) -> None:
    monkeypatch.setenv("MLOPS_SERVING_API_TOKEN", "token-from-the-env")
    with make_client(api_tokens=None) as c:
        assert c.get("/metrics").status_code == 401
        assert (
            c.get("/metrics", headers={"Authorization": "Bearer token-from-the-env"}).status_code
            == 200
        )
    monkeypatch.delenv("MLOPS_SERVING_API_TOKEN")
    with make_client(api_tokens=None) as c:
        assert c.get("/metrics").status_code == 200
        assert "security" not in c.get("/openapi.json").json()["paths"][PREDICT]["post"]


def test_token_list_parsing() -> None:
    tokens = ApiTokens.parse("alice:token-of-alice-0001, token-without-a-name")
    assert tokens.identify("Bearer token-of-alice-0001") == "alice"
    assert (tokens.identify("bearer token-without-a-name") or "").startswith("token-")
    assert tokens.identify("Bearer token-of-alice") is None and tokens.identify(None) is None
    assert not ApiTokens.parse("").enabled and not ApiTokens.parse([]).enabled


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        pytest.param(",", "is set but holds no token", id="only-a-comma"),
        pytest.param(" ", "is set but holds no token", id="blank"),
        pytest.param("alice:", r"entry 1 of 1 \(alice\) has no token after ':'", id="no-token"),
        pytest.param(":token-without-a-name", "has nothing before ':'", id="no-name"),
        pytest.param("x", "entry 1 of 1: the token is shorter than 16", id="one-character"),
        pytest.param(
            "ci:token-of-ci-000001,bob:sh0rt",
            r"entry 2 of 2 \(bob\): the token is shorter",
            id="a-short-one-among-good",
        ),
        pytest.param("token-of-ci-000001,,", "entry 2 of 3 is empty", id="a-stray-comma"),
    ],
)
def test_a_token_list_that_cannot_be_meant_is_refused_at_start(
    value: str, problem: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Auth never turns off silently, and the service does not start with a token that can
    be guessed: the error names the variable and the entry, never the token."""
    env = {**os.environ, "MLOPS_SERVING_API_TOKEN": value}
    with pytest.raises(UsageError, match=rf"^MLOPS_SERVING_API_TOKEN[ :].*{problem}"):
        Settings.from_env(env)
    with pytest.raises(UsageError, match=problem):
        ApiTokens.parse(value)
    # `mlops serve` says so and exits 2 before it loads anything, with no traceback.
    from mlops_tasks.cli import main

    monkeypatch.setenv("MLOPS_SERVING_API_TOKEN", value)
    assert main(["serve", "--port", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: MLOPS_SERVING_API_TOKEN") and "Traceback" not in err
    for entry in value.split(","):
        token = entry.partition(":")[2] if ":" in entry else entry
        assert len(token.strip()) < 4 or token.strip() not in err  # names yes, tokens never


# ----------------------------------------------------------------------------- docs


def test_docs_and_every_asset_they_reference_come_from_the_service(client: TestClient) -> None:
    for page in ("/docs", "/redoc"):
        resp = client.get(page)
        assert resp.status_code == 200
        html = resp.text
        urls = re.findall(r'(?:src|href)="([^"]+)"', html) + re.findall(r"url: '([^']+)'", html)
        urls += re.findall(r'spec-url="([^"]+)"', html)
        assert len(urls) >= 2, html
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", html), "an external URL"
        for url in urls:
            asset = client.get(url)
            assert asset.status_code == 200 and asset.content, url
    js = client.get("/docs-assets/swagger-ui-bundle.js")
    assert js.headers["content-type"].startswith(("text/javascript", "application/javascript"))
    assert len(js.content) > 500_000


def test_a_number_beyond_float32_is_a_422_for_a_tree_ensemble(tmp_path) -> None:
    """Random forests score in float32: sklearn refuses a finite 1e300 with a ValueError, which
    used to be a 500. It is a 422 naming the record."""
    import yaml

    from mlops_tasks.data import synthetic
    from mlops_tasks.records import Trigger
    from mlops_tasks.registry import Registry
    from mlops_tasks.specs import find_spec
    from tests.conftest import REPO
    from tests.flowkit import retrain

    doc = yaml.safe_load((REPO / "dags" / "specs" / "credit_default.yaml").read_text())
    doc["model"] = {"estimator": "random_forest", "params": {"n_estimators": 30}, "seed": 1}
    doc["evaluation"].update(min={}, max={})  # only the serving path is under test
    spec_dir = tmp_path / "specs"
    spec_dir.mkdir()
    (spec_dir / "credit_default.yaml").write_text(yaml.safe_dump(doc))
    store = LocalStore(tmp_path / "store")
    synthetic.write_batches(days=3, rows_per_day=800, store=store)
    res = retrain(find_spec("credit_default", spec_dir), store, Trigger("cli", "t", "fixture"))
    version = int(res[TRAIN].version)
    if Registry(store).alias("credit_default") != version:
        Registry(store).promote("credit_default", version, reason="test", actor="t")
    settings = Settings.from_env({**os.environ, "MLOPS_STORE": store.uri})
    app = create_app(settings, store, spec_dir, api_tokens=[])
    rows = records("credit_default", 3)
    rows[1]["income"] = 1e300  # still beyond float32 once the pipeline has scaled it
    with TestClient(app, raise_server_exceptions=False) as client:
        resp = client.post(PREDICT, json={"records": rows})
        assert resp.status_code == 422, resp.text
        [error] = resp.json()["detail"]
        assert error["loc"] == ["body", "records", 1]
        assert "3.4e38" in error["msg"]
        rows[1]["income"] = 1e30
        assert client.post(PREDICT, json={"records": rows}).status_code == 200


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        pytest.param(" ", "is set but blank", id="blank"),
        pytest.param("reload", "shorter than 16 characters", id="short"),
    ],
)
def test_a_reload_token_that_cannot_be_meant_is_refused_at_start(
    value: str, problem: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A blank MLOPS_SERVING_TOKEN looked set and matched no request; a 1-character one was
    accepted as the token of /admin/reload."""
    with pytest.raises(UsageError, match=rf"^MLOPS_SERVING_TOKEN.*{problem}"):
        Settings.from_env({"MLOPS_SERVING_TOKEN": value})
    from mlops_tasks.cli import main

    monkeypatch.setenv("MLOPS_SERVING_TOKEN", value)
    assert main(["serve", "--port", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: MLOPS_SERVING_TOKEN") and "Traceback" not in err
    assert value.strip() not in err or not value.strip()
    assert Settings.from_env({"MLOPS_SERVING_TOKEN": " a-reload-token-of-16+ "}).serving_token == (
        "a-reload-token-of-16+"
    )
