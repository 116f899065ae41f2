"""Property-based test of the whole prediction API against its own OpenAPI schema (schemathesis
drives the ASGI app): data that fits the schema and data that does not, for every operation
(predict of each model, feedback, the GET routes, reload), with real trained models loaded.
Whatever arrives, the service answers without a 5xx; 1,000+ requests in all."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis.generation import GenerationMode
from schemathesis.python import asgi

from mlops_tasks.serving.app import create_app
from mlops_tasks.settings import Settings
from tests.serving.support import MODELS, records, trained

POSITIVE, NEGATIVE = GenerationMode.POSITIVE, GenerationMode.NEGATIVE
LABELS = {  # labels each demo model knows, and some it does not
    "credit_default": st.sampled_from([0, 1, 1.0, 2, "1", True]),
    "customer_spend": st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers()),
}


def examples(label: str, mode: GenerationMode) -> int:
    """Requests per operation and mode: 1,050 in all, most where the inputs are (predict and
    feedback bodies). Negative data needs a body or a query to break: path parameters are
    any text, and the routes without parameters have nothing to get wrong."""
    if label.endswith("/predict"):
        return 150 if mode == POSITIVE else 100
    if label.endswith("/feedback"):
        return 250 if mode == POSITIVE else 150
    if mode == NEGATIVE:
        return 0
    return {"GET /v1/models/{name}": 100, "POST /admin/reload": 50}.get(label, 5)


@pytest.fixture(scope="module")
def api() -> Iterator[tuple[Any, dict[str, list[str]]]]:
    store, spec_dir = trained()
    settings = Settings.from_env({"MLOPS_STORE": store.uri})
    app = create_app(settings, store, spec_dir, log_flush_seconds=0.5, api_tokens=[])
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)  # starts the app's lifespan
    served: dict[str, list[str]] = {m: [] for m in MODELS}  # real request ids, for feedback
    with asgi.get_client(app) as client:
        for name in MODELS:
            for n in (1, 3):
                resp = client.post(
                    f"http://{asgi.HOST}/v1/models/{name}/predict",
                    json={"records": records(name, n)},
                )
                assert resp.status_code == 200, resp.text
                served[name].append(resp.json()["request_id"])
    yield schema, served
    asgi.shutdown_lifespans()  # stops the poller, flushes the inference log


def test_no_5xx_for_any_request_the_schema_allows_or_forbids(api) -> None:
    schema, served = api
    statuses: Counter[tuple[str, int]] = Counter()
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    labels = {op.label for op in operations}
    assert {f"POST /v1/models/{m}/predict" for m in MODELS} <= labels
    assert {"POST /v1/models/{name}/feedback", "GET /v1/models", "GET /metrics"} <= labels

    def explore(operation: Any, mode: GenerationMode, examples: int) -> None:
        @given(case=operation.as_strategy(generation_mode=mode), data=st.data())
        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        def run(case: Any, data: st.DataObject) -> None:
            body = case.body
            if "feedback" in operation.path and isinstance(body, dict):
                # Steer some labels at real requests, rows and classes, so that feedback gets
                # past "unknown id" to its deeper checks (row range, label type, overwrite).
                model = data.draw(st.sampled_from(MODELS))
                if data.draw(st.booleans()):
                    case.path_parameters = {"name": model}
                items = body.get("labels")
                for item in items if isinstance(items, list) else []:
                    if isinstance(item, dict) and data.draw(st.booleans()):
                        item["request_id"] = data.draw(st.sampled_from(served[model]))
                        if data.draw(st.booleans()):
                            item["row"] = data.draw(st.integers(0, 3))
                            item["label"] = data.draw(LABELS[model])
            response = case.call()
            statuses[(operation.label, response.status_code)] += 1
            if response.status_code >= 500:
                failures.append(
                    f"{operation.label} {response.status_code}: "
                    f"{json.dumps(body, default=str)[:300]} -> "
                    f"{response.text[:300]}"
                )

        try:
            run()
        except Unsatisfiable:  # nothing to get wrong: no parameters and no body
            assert mode == GenerationMode.NEGATIVE, operation.label

    for operation in operations:
        for mode in (POSITIVE, NEGATIVE):
            if n := examples(operation.label, mode):
                explore(operation, mode, n)

    total = sum(statuses.values())
    by_operation: Counter[str] = Counter()
    for (label, _), n in statuses.items():
        by_operation[label] += n
    assert not failures, "\n".join(failures[:10])
    assert total >= 1_000, by_operation
    for name in MODELS:  # each model answered real predictions, not only refusals
        assert statuses[(f"POST /v1/models/{name}/predict", 200)] > 20, statuses
        assert statuses[(f"POST /v1/models/{name}/predict", 422)] > 20, statuses
    feedback = {code for (label, code) in statuses if "feedback" in label}
    assert {200, 404, 409, 422} <= feedback, statuses
