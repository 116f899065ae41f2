"""FastAPI prediction service: `mlops serve`.

Routes: POST /v1/models/{name}/predict, POST /v1/models/{name}/feedback, GET /v1/models,
GET /v1/models/{name}, GET /healthz, GET /readyz, GET /metrics, POST /admin/reload, and the
OpenAPI docs at /docs (served offline, see `docs.py`). Each spec gets its own typed predict
route, so a request is checked against the model's features and types (422 with per-field
errors) and /docs shows the schema.

Inputs are bounded (`limits.py`: body size, finite numbers, valid Unicode, string length,
records per request, short 422 answers), feedback is tied to the requests it labels
(`feedback.py`), `MLOPS_SERVING_API_TOKEN` turns on bearer auth (`auth.py`), and every response
is counted by route template and status code (`metrics.ResponseCounter`).

A request's rows go from the validated JSON straight to the estimator: each loaded version's
preprocessing is compiled once into arrays and lookup dicts (`compiled.py`, proven equal to the
pipeline), and a version the compiler does not cover is scored by its full pipeline. `serve`
with `workers` > 1 runs several uvicorn processes that share reloads, feedback and metrics
(`workers.py`).

Values training never saw (a new category, a number outside the training range; see
`profile.py`) are scored as usual, and counted per model, version and feature in /metrics,
flagged in the inference log's `data_issues` column and, when a request has any, listed per
record in the answer's `data_issues`.
"""

from __future__ import annotations

import collections
import functools
import hmac
import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, Header, HTTPException, Request, Response, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.security import HTTPBearer
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, create_model
from starlette.concurrency import run_in_threadpool
from typing_extensions import TypedDict  # pydantic needs this one before Python 3.12

from mlops_tasks.data import joins
from mlops_tasks.data import rows as rows_module
from mlops_tasks.data.profile import DataIssues
from mlops_tasks.data.traffic import write_feedback
from mlops_tasks.model.modelling import predict_scores, records_frame
from mlops_tasks.registry import Registry
from mlops_tasks.serving import limits as lim
from mlops_tasks.serving.auth import ANONYMOUS, CLIENT_KEY, ApiTokens, BearerAuth
from mlops_tasks.serving.docs import add_offline_docs
from mlops_tasks.serving.feedback import (
    DEFAULT_WINDOW,
    RequestIndex,
    Served,
    SharedRequestIndex,
    refusal_status,
)
from mlops_tasks.serving.inference_log import InferenceLog
from mlops_tasks.serving.metrics import Metrics, ResponseCounter
from mlops_tasks.serving.models import ModelManager, SpecChanges
from mlops_tasks.serving.workers import Workers
from mlops_tasks.settings import Settings
from mlops_tasks.specs import ModelSpec, family, load_specs
from mlops_tasks.storage import ArtifactStore

log = logging.getLogger(__name__)
MAX_ROWS = lim.MAX_ROWS
UNSEEN_CATEGORIES = "mlops_unseen_category_total"
OUT_OF_RANGE = "mlops_out_of_range_total"
JOIN_UNMATCHED = "mlops_join_unmatched_total"
CLEAN = "[]"  # the inference log's `data_issues` of a row with none


def row_model(spec: ModelSpec, max_string_length: int = lim.DEFAULT_MAX_STRING_LENGTH) -> Any:
    """The request row for `spec`: every feature present (null allowed), nothing else; numbers
    finite, text valid Unicode of at most `max_string_length` characters.

    A TypedDict, not a model class: pydantic validates it into the plain dict the service
    uses, with the same checks, errors and schema, and no object built and dumped per row."""
    fields: dict[str, Any] = {}
    derived = set(spec.data.derive) | set(rows_module.looked_up(spec))
    for f in spec.features.numeric:
        if f not in derived:
            fields[f] = Annotated[lim.FiniteNumber | None, Field(description="numeric (finite)")]
    for f in spec.features.categorical:
        if f not in derived:
            fields[f] = Annotated[
                lim.category(max_string_length) | None,
                Field(description="categorical: text, or an integer or boolean code"),
            ]
    # raw columns the derived features are made from, keys and time the lookup joins match on
    for f in rows_module.required_inputs(spec):
        fields.setdefault(
            f,
            Annotated[
                lim.FiniteNumber | lim.LabelInt | bool | lim.text(max_string_length) | None,
                Field(
                    description="input of a derived feature (data.derive) or a key or time "
                    "of a join (data.joins): a value or null"
                ),
            ],
        )
    row = TypedDict(f"{spec.name}_row", fields)  # type: ignore[misc]
    row.__pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[attr-defined]
    return row


def request_frame(spec: ModelSpec, rows: list[dict[str, Any]]) -> Any:
    """Validated request rows as the model's input frame (the same columns and dtypes as
    training's `prepare_features`)."""
    return records_frame(spec, rows)


#: The largest magnitude a float32 holds: what tree ensembles score in.
FLOAT32_MAX = 3.4028234663852886e38


def _out_of_range(x: Any, err: ValueError) -> Any:
    """422 detail for a ValueError from the estimator: the records holding a value beyond
    float32's range, or, when none does, the estimator's own message on the whole request."""
    import numpy as np

    values = np.asarray(x.select_dtypes("number") if hasattr(x, "select_dtypes") else x, float)
    rows: list[int] = []
    if values.ndim == 2:
        with np.errstate(invalid="ignore"):
            rows = np.flatnonzero((np.abs(values) > FLOAT32_MAX).any(axis=1)).tolist()
    message = (
        "a number in this record is beyond what the model computes with (about ±3.4e38)"
        if rows
        else f"the model refused the input: {str(err)[:200]}"
    )
    errors = [
        {"type": "value_out_of_range", "loc": ("body", "records", int(i)), "msg": message}
        for i in rows
    ] or [{"type": "value_out_of_range", "loc": ("body", "records"), "msg": message}]
    return lim.error_body([{**e, "input": None} for e in errors])["detail"]


def feedback_models(
    max_string_length: int = lim.DEFAULT_MAX_STRING_LENGTH,
) -> tuple[type[BaseModel], type[BaseModel]]:
    """The feedback item and request schemas (see `feedback.py` for the rules beyond them)."""
    text = lim.text(max_string_length)

    class FeedbackItem(BaseModel):
        model_config = ConfigDict(extra="forbid")
        request_id: Annotated[lim.text(100), Field(min_length=1)]  # type: ignore[valid-type]
        row: int = Field(default=0, ge=0, lt=MAX_ROWS)
        label: lim.LabelInt | lim.FiniteNumber | text  # type: ignore[valid-type]
        overwrite: StrictBool = Field(
            default=False, description="replace a label this client already gave for the row"
        )

    class FeedbackRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        labels: Annotated[
            list[FeedbackItem],
            BeforeValidator(lim.at_most(MAX_ROWS, "labels")),
            Field(min_length=1, max_length=MAX_ROWS),
        ]

    return FeedbackItem, FeedbackRequest


FeedbackItem, FeedbackRequest = feedback_models()


#: A request is scored on the event loop when it has at most INLINE_ROWS records and the
#: model's recent requests of that size took at most INLINE_SECONDS of CPU each; any other
#: request goes to the thread pool (see the predict route).
INLINE_ROWS = 64
INLINE_SECONDS = 0.005


class PerThreadLimit:
    """OpenMP threads per prediction, set in each thread that predicts.

    OpenMP keeps its thread count per thread: a limit set on the server's main thread does
    not reach the pool threads that run requests, which start with one OpenMP thread per core.
    Each pool thread then kept its own team of OpenMP threads, and once a few requests had run
    at the same time, every later prediction waited on them: one client's p50 went from
    1.6 ms to 14 ms for good (bench/serving.py). The limit is set once per thread.
    """

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self._local = threading.local()

    def apply(self) -> None:
        if getattr(self._local, "applied", False):
            return
        from threadpoolctl import threadpool_limits

        threadpool_limits(self.threads, user_api="openmp")
        self._local.applied = True


class Service:
    """The state behind the app: models, inference log, metrics."""

    def __init__(
        self,
        store: ArtifactStore,
        specs: list[ModelSpec],
        poll_seconds: float,
        admin_token: str | None,
        log_flush_seconds: float = 5.0,
        feedback_window: int | None = None,
        shared_dir: Path | None = None,
        threads: int = 1,
        cpu_clock: Callable[[], float] = time.thread_time,
        spec_dir: Path | None = None,
    ) -> None:
        self.store = store
        self.threads = PerThreadLimit(threads)
        #: The CPU seconds of the calling thread (waiting for the GIL not counted); tests give
        #: one that charges a known cost per request.
        self.cpu_clock = cpu_clock
        #: CPU seconds of a small request, moving average per (model, version); see `inline`.
        self.small_request_cpu: dict[tuple[str, int], float] = {}
        self.metrics = Metrics()
        window = feedback_window or DEFAULT_WINDOW
        self.requests = (
            SharedRequestIndex(Path(shared_dir) / "requests.sqlite", window)
            if shared_dir
            else RequestIndex(window)
        )
        self._describe()
        self.manager = ModelManager(
            Registry(store), specs, on_event=self._model_event, spec_dir=spec_dir
        )
        self.poll_seconds = poll_seconds
        self.admin_token = admin_token
        self.inference = InferenceLog(
            store,
            flush_seconds=log_flush_seconds,
            on_drop=lambda n: self.metrics.inc("mlops_inference_log_dropped_rows_total", n),
            on_flush=lambda n, ok: self.metrics.inc(
                "mlops_inference_log_flushed_rows_total"
                if ok
                else "mlops_inference_log_flush_failures_total",
                n if ok else 1,
            ),
            on_reject=lambda n: self.metrics.inc("mlops_inference_log_rejected_rows_total", n),
        )
        # Several worker processes: metrics, reloads and feedback go through `shared_dir`.
        self.workers = (
            Workers(Path(shared_dir), self.metrics, self.manager.refresh, self.manager.ready)
            if shared_dir
            else None
        )

    def _describe(self) -> None:
        m = self.metrics
        m.describe("mlops_requests_total", "counter", "Prediction requests by model, version, code")
        m.describe("mlops_predicted_rows_total", "counter", "Rows scored by model and version")
        m.describe("mlops_request_duration_seconds", "histogram", "Prediction latency")
        m.describe("mlops_model_loaded_version", "gauge", "Version each model serves")
        m.describe("mlops_model_load_errors_total", "counter", "Versions refused at load")
        m.describe("mlops_model_swaps_total", "counter", "Hot swaps to a new version")
        m.describe(
            "mlops_inference_log_dropped_rows_total",
            "counter",
            "Inference rows dropped because the buffer was full",
        )
        m.describe("mlops_inference_log_flushed_rows_total", "counter", "Rows written")
        m.describe("mlops_inference_log_flush_failures_total", "counter", "Failed flushes")
        m.describe("mlops_inference_log_buffered_rows", "gauge", "Rows waiting to be written")
        m.describe(
            "mlops_inference_log_rejected_rows_total",
            "counter",
            "Inference rows dropped because they cannot be written",
        )
        m.describe(
            UNSEEN_CATEGORIES,
            "counter",
            "Scored values of a categorical feature that training never saw, by model, version "
            "and feature",
        )
        m.describe(
            OUT_OF_RANGE,
            "counter",
            "Scored numbers outside the training range of their feature, by model, version and "
            "feature",
        )
        m.describe(
            JOIN_UNMATCHED,
            "counter",
            "Scored rows whose lookup join (data.joins) found no row, by model, version and join",
        )
        m.describe(
            "mlops_feedback_labels_total",
            "counter",
            "Labels stored by model and whether they replaced an earlier one",
        )

    def _model_event(self, kind: str, name: str, version: int) -> None:
        if kind == "loaded":
            self.metrics.set("mlops_model_loaded_version", version, model=name)
            self.metrics.inc("mlops_model_swaps_total", model=name)
        else:
            self.metrics.inc("mlops_model_load_errors_total", model=name, version=str(version))

    def inline(self, name: str, n_rows: int) -> bool:
        """Whether to score a request of `n_rows` on the event loop: a small request for a
        model whose small requests are known to be cheap (a version's first request, or a
        heavy model's, goes to the thread pool and never holds up the others or /readyz)."""
        if n_rows > INLINE_ROWS:
            return False
        slot = self.manager.slots.get(name)
        if slot is None:
            return True  # no version loaded: the 503 is immediate
        cpu = self.small_request_cpu.get((name, slot.version))
        return cpu is not None and cpu <= INLINE_SECONDS

    def predict(
        self, name: str, rows: list[dict[str, Any]], client: str = ANONYMOUS
    ) -> dict[str, Any]:
        import numpy as np

        started, cpu_started = time.perf_counter(), self.cpu_clock()
        self.threads.apply()
        slot = self.manager.slots.get(name)  # read once: a swap cannot change it mid-request
        if slot is None:
            self.metrics.inc("mlops_requests_total", model=name, version="none", code="503")
            raise HTTPException(503, f"model {name!r} has no production version loaded")
        spec = slot.spec
        unmatched: dict[int, tuple[str, ...]] = {}
        if slot.joined:  # looked up in the version's pinned tables, as training joined them
            rows, unmatched = joins.enrich_records(slot.joined, rows, str(spec.data.time_column))
        if spec.data.derive:  # the derived features, by the code path training used
            try:
                rows = rows_module.derive_records(spec, rows)
            except rows_module.ShapeError as err:
                self.metrics.inc("mlops_requests_total", model=name, version="none", code="422")
                detail = [{"type": "derive_failed", "loc": ("body", "records"), "msg": str(err)}]
                raise HTTPException(422, detail) from None
        with np.errstate(all="ignore"):  # extreme inputs: checked on the way out, below
            if slot.compiled is not None:  # the version's preprocessing, compiled at load
                x: Any = slot.compiled.encode(rows)
                model = slot.compiled.estimator
            else:
                x = request_frame(spec, rows)
                model = slot.model
            try:
                pred, proba = predict_scores(spec, model, x, slot.threshold)
            except ValueError as err:
                # Tree ensembles score in float32: a finite float64 beyond ±3.4e38 is refused
                # by sklearn's input check. Name the records, as for any other bad value.
                raise HTTPException(422, _out_of_range(x, err)) from None
        per_class = None  # a multiclass model: a probability per class, by label
        if spec.task == "multiclass" and proba is not None:
            per_class, proba = proba, proba.to_numpy(dtype=float).max(axis=1)
        outputs = per_class.to_numpy(dtype=float) if per_class is not None else proba
        if outputs is None:
            outputs = pred
        if outputs.dtype.kind != "f":
            outputs = np.asarray(outputs, dtype=float)
        finite = np.isfinite(outputs).reshape(len(outputs), -1).all(axis=1)
        if not finite.all():  # finite inputs far outside what the model knows
            bad = np.flatnonzero(~finite)
            errors = [
                {
                    "type": "prediction_not_finite",
                    "loc": ("body", "records", int(i)),
                    "msg": "the model's output for this record is not a finite number: its "
                    "values are far outside the range the model was trained on",
                    "input": None,
                }
                for i in bad
            ]
            raise HTTPException(422, lim.error_body(errors)["detail"])
        if slot.row_checks is not None:
            issues = slot.row_checks.check(rows)
        elif slot.checks is not None:
            issues = slot.checks.check(request_frame(spec, rows))
        else:
            issues = DataIssues()
        if unmatched:  # a key the pinned table does not know: scored with nulls, flagged
            issues = DataIssues(
                issues.unseen,
                issues.out_of_range,
                {
                    i: (*unmatched.get(i, ()), *issues.flags.get(i, ()))
                    for i in sorted({*unmatched, *issues.flags})
                },
            )
        flags = {i: json.dumps(list(f)) for i, f in issues.flags.items()}
        request_id = uuid.uuid4().hex
        now = datetime.now(UTC)
        preds = np.asarray(pred).tolist()  # the model's labels as plain Python values
        probs = proba.tolist() if proba is not None else None
        classes = slot.model.classes_ if family(spec.task) == "classification" else None
        self.requests.add(request_id, Served(name, slot.version, len(rows), client, classes))
        self.inference.append(
            [
                {
                    "model": name,
                    "request_id": request_id,
                    "row": i,
                    "ts": now,
                    "version": slot.version,
                    **row,
                    "prediction": preds[i],
                    "probability": probs[i] if probs else None,
                    "data_issues": flags.get(i, CLEAN),
                }
                for i, row in enumerate(rows)
            ]
        )
        elapsed = time.perf_counter() - started
        if len(rows) <= INLINE_ROWS:  # this thread's CPU only: waiting for the GIL not counted
            cpu, key = self.cpu_clock() - cpu_started, (name, slot.version)
            before = self.small_request_cpu.get(key)
            self.small_request_cpu[key] = cpu if before is None else 0.8 * before + 0.2 * cpu
        v = str(slot.version)
        self.metrics.inc("mlops_requests_total", model=name, version=v, code="200")
        self.metrics.inc("mlops_predicted_rows_total", len(rows), model=name, version=v)
        self.metrics.observe_latency(elapsed, model=name, version=v)
        for feature, n in issues.unseen.items():
            self.metrics.inc(UNSEEN_CATEGORIES, n, model=name, version=v, feature=feature)
        for feature, n in issues.out_of_range.items():
            self.metrics.inc(OUT_OF_RANGE, n, model=name, version=v, feature=feature)
        for join, n in collections.Counter(f for fs in unmatched.values() for f in fs).items():
            self.metrics.inc(JOIN_UNMATCHED, n, model=name, version=v, join=join.split(":")[1])
        out: dict[str, Any] = {
            "model": name,
            "version": slot.version,
            "request_id": request_id,
            "predictions": preds,
        }
        if per_class is not None:  # {label: probability} per row; the log keeps the top one
            labels = [str(c) for c in per_class.columns]
            out["probabilities"] = [
                dict(zip(labels, row, strict=True)) for row in per_class.to_numpy().tolist()
            ]
        elif probs is not None:
            out["probabilities"] = probs
        if issues.flags:  # only then: a clean answer keeps its usual shape
            out["data_issues"] = [list(issues.flags.get(i, ())) for i in range(len(rows))]
        return out


def create_app(
    settings: Settings,
    store: ArtifactStore,
    spec_dir: str | Path,
    poll_seconds: float = 2.0,
    log_flush_seconds: float = 5.0,
    api_tokens: str | list[str] | None = None,
    limits: lim.Limits | None = None,
    feedback_window: int | None = None,
    shared_dir: Path | None = None,
) -> FastAPI:
    """The service. `MLOPS_SERVING_API_TOKEN` (or `api_tokens`) turns on bearer auth, the
    serving limits bound the inputs, and `MLOPS_SERVING_FEEDBACK_WINDOW` (or `feedback_window`)
    is how many recent request ids accept feedback (see `Settings`). `shared_dir` is given
    to each worker process of `serve(workers=N)` (see `workers.py`)."""
    good, bad = load_specs(spec_dir)
    for err in bad:  # the others serve; /readyz lists it until the file is fixed
        log.error("spec not loaded: %s", err)
    specs = [spec for _, spec in good]
    raw_tokens = api_tokens if api_tokens is not None else settings.serving_api_tokens
    tokens = ApiTokens.parse(raw_tokens)
    bounds = limits or lim.Limits.from_settings(settings)
    window = feedback_window or settings.serving_feedback_window or DEFAULT_WINDOW
    svc = Service(
        store,
        specs,
        poll_seconds,
        settings.serving_token,
        log_flush_seconds,
        window,
        shared_dir,
        settings.serving_threads,
        spec_dir=Path(spec_dir),
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        from threadpoolctl import threadpool_limits

        # Requests already run in parallel on the server's threads; OpenMP threads inside each
        # prediction only oversubscribe the cores (measured: 5x slower under load).
        limits = threadpool_limits(settings.serving_threads)
        svc.manager.refresh()
        svc.manager.start_polling(poll_seconds)
        svc.inference.start()
        if svc.workers:
            svc.workers.start()
        yield
        if svc.workers:
            svc.workers.stop()
        svc.manager.stop()
        svc.inference.close()
        limits.restore_original_limits()

    app = FastAPI(
        title="mlops prediction service",
        version="1",
        lifespan=lifespan,
        description="Serves the production version of every model in the registry.",
        docs_url=None,
        redoc_url=None,
    )
    app.state.service = svc
    app.state.limits = bounds
    app.add_exception_handler(RequestValidationError, lim.validation_error_handler)
    # Outermost last: count every response, then authenticate, then bound the body.
    app.add_middleware(lim.BodySizeLimit, max_bytes=bounds.max_body_bytes)
    app.add_middleware(BearerAuth, tokens=tokens)
    app.add_middleware(ResponseCounter, metrics=svc.metrics, routes=lambda: app.router.routes)
    add_offline_docs(app)
    # What /docs shows: the bearer scheme on the routes that need it (enforced by BearerAuth).
    secured: list[Any] = [Security(HTTPBearer(auto_error=False))] if tokens.enabled else []

    for spec in specs:
        _add_predict_route(app, svc, spec, bounds, secured)

    @app.post("/v1/models/{name}/predict", include_in_schema=False)
    def predict_unknown(name: str) -> None:
        raise HTTPException(
            404, f"no model named {lim.shorten(name)!r}; known: {sorted(svc.manager.specs)}"
        )

    def sync_routes(changes: SpecChanges) -> None:
        """A model's typed predict route follows its spec file: added, rebuilt, removed. The
        route list is replaced whole (requests read it as they route), each model's route
        before the catch-all that answers 404 for unknown names."""
        paths = {
            f"/v1/models/{n}/predict" for n in (*changes.added, *changes.changed, *changes.removed)
        }
        routes = list(app.router.routes)
        base = [r for r in routes if getattr(r, "path", None) not in paths]
        start = len(app.router.routes)
        for n in (*changes.added, *changes.changed):
            _add_predict_route(app, svc, svc.manager.specs[n], bounds, secured)
        fresh = list(app.router.routes[start:])
        cut = next(i for i, r in enumerate(base) if getattr(r, "endpoint", None) is predict_unknown)
        app.router.routes = [*base[:cut], *fresh, *base[cut:]]
        app.openapi_schema = None  # /docs describes the models served now

    svc.manager.on_specs = sync_routes

    _add_feedback_route(app, svc, bounds, secured)
    _add_info_routes(app, svc, secured)
    return app


def _add_feedback_route(app: FastAPI, svc: Service, bounds: lim.Limits, secured: list[Any]) -> None:
    st = svc.store
    _, feedback_request = feedback_models(bounds.max_string_length)

    def feedback(name: str, body: Any, request: Request) -> Any:
        """Delayed true labels for earlier predictions (request id + row).

        Accepted only for request ids this service served for the model and still holds
        (the newest `MLOPS_SERVING_FEEDBACK_WINDOW`, default 200,000; unknown ids: 404), from
        the client that made the request (403), for a row of that request and a label the
        model knows (422); a row that has a label needs `"overwrite": true` (409). All or
        nothing: a refused item means nothing is stored."""
        if name not in svc.manager.specs:
            raise HTTPException(404, f"no model named {lim.shorten(name)!r}")
        client = request.scope.get(CLIENT_KEY, ANONYMOUS)
        items = [item.model_dump() for item in body.labels]
        rows, refusals, newly = svc.requests.claim(name, client, items)
        if refusals:
            return JSONResponse(
                lim.error_body([r.error() for r in refusals]), status_code=refusal_status(refusals)
            )
        try:
            n = write_feedback(st, name, rows)
        except Exception as err:
            svc.requests.release(newly)
            log.warning("feedback for %s not stored: %s", name, err)
            raise HTTPException(
                503, "labels not stored: the store failed; send them again"
            ) from err
        overwritten = sum(1 for r in rows if r["overwrite"])
        if overwritten:
            log.info("%s: client %s replaced %d label(s)", name, client, overwritten)
            svc.metrics.inc(
                "mlops_feedback_labels_total", overwritten, model=name, overwrite="true"
            )
        if n - overwritten:
            svc.metrics.inc(
                "mlops_feedback_labels_total", n - overwritten, model=name, overwrite="false"
            )
        return {"model": name, "accepted": n, "overwritten": overwritten}

    feedback.__annotations__["body"] = feedback_request
    refused = {"description": "refused: nothing was stored (`detail` lists the items)"}
    app.add_api_route(
        "/v1/models/{name}/feedback",
        feedback,
        methods=["POST"],
        dependencies=secured,
        responses={403: refused, 404: refused, 409: refused},
    )


def _add_info_routes(app: FastAPI, svc: Service, secured: list[Any]) -> None:
    """Model descriptions, health, readiness, metrics and the admin reload."""

    @app.get("/v1/models", dependencies=secured)
    def list_models() -> dict[str, Any]:
        return {"models": [_describe_model(svc, n) for n in sorted(svc.manager.specs)]}

    @app.get("/v1/models/{name}", dependencies=secured)
    def get_model(name: str) -> dict[str, Any]:
        if name not in svc.manager.specs:
            raise HTTPException(404, f"no model named {name!r}")
        return _describe_model(svc, name)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz() -> JSONResponse:
        ok, status = svc.manager.ready()
        body: dict[str, Any] = {"ready": ok, "models": status}
        if svc.manager.spec_errors:  # reported, not a reason to take every model out
            body["spec_errors"] = dict(svc.manager.spec_errors)
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/metrics", response_class=PlainTextResponse, dependencies=secured)
    def metrics() -> Response:
        svc.metrics.set("mlops_inference_log_buffered_rows", svc.inference.buffered)
        text = svc.workers.render_metrics() if svc.workers else svc.metrics.render()
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

    @app.post("/admin/reload")
    def reload(authorization: str = Header(default="")) -> dict[str, Any]:
        """Re-read every production alias now (the deploy task calls this)."""
        if not svc.admin_token:
            raise HTTPException(
                403, "reload is disabled: start the service with MLOPS_SERVING_TOKEN set"
            )
        given = authorization.removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), svc.admin_token.encode()):
            raise HTTPException(401, "invalid admin token")
        if svc.workers:  # every worker reloads before the answer
            return svc.workers.reload_all()
        changes = svc.manager.refresh()
        ok, status = svc.manager.ready()
        return {"changes": changes, "ready": ok, "models": status}


def _describe_model(svc: Service, name: str) -> dict[str, Any]:
    slot = svc.manager.slots.get(name)
    spec = svc.manager.specs[name]
    return {
        "name": name,
        "task": spec.task,
        "production_version": svc.manager.expected.get(name),
        "serving_version": slot.version if slot else None,
        "error": svc.manager.errors.get(name),
        "lineage": slot.lineage if slot else None,
        "features": spec.features.model_dump(),
    }


def _add_predict_route(
    app: FastAPI, svc: Service, spec: ModelSpec, bounds: lim.Limits, secured: list[Any]
) -> None:
    row = row_model(spec, bounds.max_string_length)
    records = Annotated[
        list[row],  # type: ignore[valid-type]
        BeforeValidator(lim.at_most(bounds.max_rows, "records")),  # before any row is checked
        Field(min_length=1, max_length=bounds.max_rows),
    ]
    body_model = create_model(
        f"{spec.name}_predict_request", __config__=ConfigDict(extra="forbid"), records=records
    )

    async def predict(body: Any, request: Request) -> Response:
        rows: list[dict[str, Any]] = body.records
        client = request.scope.get(CLIENT_KEY, ANONYMOUS)
        if svc.inline(spec.name, len(rows)):
            # Scored on the event loop: a few rows take about a millisecond, less than handing
            # them to a pool thread costs. Pool threads contend for the GIL, and with 16
            # clients one worker served 270 requests/s through the pool against 777 inline
            # (bench/serving.py). Large requests, and every request of a model whose small
            # ones cost more than INLINE_SECONDS, still go to the pool.
            out = svc.predict(spec.name, rows, client)
        else:
            out = await run_in_threadpool(svc.predict, spec.name, rows, client)
        return JSONResponse(out)  # already plain values: no jsonable_encoder pass

    predict.__annotations__["body"] = body_model  # the spec's typed body, for validation, docs

    app.add_api_route(
        f"/v1/models/{spec.name}/predict",
        predict,
        methods=["POST"],
        summary=f"Predict with {spec.name}",
        description=spec.description,
        dependencies=secured,
        response_model=None,
    )


def serve(
    settings: Settings,
    host: str,
    port: int,
    store: ArtifactStore,
    spec_dir: str | Path,
    poll_seconds: float,
    workers: int = 1,
) -> None:
    """Run the service; with `workers` > 1, that many uvicorn processes on one socket, each
    loading and hot-swapping the models itself and sharing metrics, reloads and feedback
    through a temporary directory (`workers.py`)."""
    import uvicorn

    if workers <= 1:
        app = create_app(settings, store, spec_dir, poll_seconds)
        uvicorn.run(app, host=host, port=port, log_level="info", access_log=False)
        return
    import shutil
    import tempfile

    from uvicorn.supervisors import Multiprocess

    shared = Path(tempfile.mkdtemp(prefix="mlops-serve-"))
    factory = functools.partial(
        worker_app, settings, store.uri, str(spec_dir), poll_seconds, str(shared)
    )
    config = uvicorn.Config(
        factory,
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="info",
        access_log=False,
        # A worker answers the parent's health pings only once its imports are done: on a busy
        # machine that takes longer than uvicorn's 5 s, and the parent would kill it as hung.
        timeout_worker_healthcheck=120,
    )
    log.info("serving with %d worker processes (shared state in %s)", workers, shared)
    try:
        Multiprocess(config, sockets=[config.bind_socket()]).run()
    finally:
        shutil.rmtree(shared, ignore_errors=True)


def worker_app(
    settings: Settings, store_uri: str, spec_dir: str, poll_seconds: float, shared_dir: str
) -> FastAPI:
    """The app of one worker process (uvicorn calls this in each, so it must be picklable)."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    store = settings.open_store(store_uri)
    return create_app(settings, store, spec_dir, poll_seconds, shared_dir=Path(shared_dir))
