"""FastAPI prediction service: `mlops serve`.

Routes: POST /v1/models/{name}/predict, POST /v1/models/{name}/feedback, GET /v1/models,
GET /v1/models/{name}, GET /healthz, GET /readyz, GET /metrics, POST /admin/reload, and the
OpenAPI docs at /docs. Each spec gets its own typed predict route, so a request is checked
against the model's features and types (422 with per-field errors) and /docs shows the schema.
"""

from __future__ import annotations

import hmac
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Header, HTTPException, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictStr, create_model

from mlops_tasks.modelling import predict_scores, records_frame
from mlops_tasks.registry import Registry
from mlops_tasks.serving.inference_log import InferenceLog
from mlops_tasks.serving.metrics import Metrics
from mlops_tasks.serving.models import ModelManager
from mlops_tasks.settings import Settings
from mlops_tasks.specs import ModelSpec, load_spec, spec_files
from mlops_tasks.storage import ArtifactStore
from mlops_tasks.traffic import write_feedback

log = logging.getLogger(__name__)
MAX_ROWS = 10_000


def row_model(spec: ModelSpec) -> type[BaseModel]:
    """The request row for `spec`: every feature present (null allowed), nothing else."""
    fields: dict[str, Any] = {}
    for f in spec.features.numeric:
        fields[f] = (StrictFloat | None, Field(..., description="numeric"))
    for f in spec.features.categorical:
        fields[f] = (StrictStr | None, Field(..., description="categorical"))
    return create_model(f"{spec.name}_row", __config__=ConfigDict(extra="forbid"), **fields)


def request_frame(spec: ModelSpec, rows: list[dict[str, Any]]) -> Any:
    """Validated request rows as the model's input frame (the same columns and dtypes as
    training's `prepare_features`)."""
    return records_frame(spec, rows)


class FeedbackItem(BaseModel):
    model_config = ConfigDict(extra="forbid")
    request_id: str = Field(min_length=1, max_length=100)
    row: int = Field(default=0, ge=0)
    label: float | int | str


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    labels: list[FeedbackItem] = Field(min_length=1, max_length=MAX_ROWS)


class Service:
    """The state behind the app: models, inference log, metrics."""

    def __init__(
        self,
        store: ArtifactStore,
        specs: list[ModelSpec],
        poll_seconds: float,
        admin_token: str | None,
        log_flush_seconds: float = 5.0,
    ) -> None:
        self.store = store
        self.metrics = Metrics()
        self._describe()
        self.manager = ModelManager(Registry(store), specs, on_event=self._model_event)
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

    def _model_event(self, kind: str, name: str, version: int) -> None:
        if kind == "loaded":
            self.metrics.set("mlops_model_loaded_version", version, model=name)
            self.metrics.inc("mlops_model_swaps_total", model=name)
        else:
            self.metrics.inc("mlops_model_load_errors_total", model=name, version=str(version))

    def predict(self, name: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
        import numpy as np

        started = time.perf_counter()
        slot = self.manager.slots.get(name)  # read once: a swap cannot change it mid-request
        if slot is None:
            self.metrics.inc("mlops_requests_total", model=name, version="none", code="503")
            raise HTTPException(503, f"model {name!r} has no production version loaded")
        spec = slot.spec
        x = request_frame(spec, rows)
        pred, proba = predict_scores(spec, slot.model, x)
        request_id = uuid.uuid4().hex
        now = datetime.now(UTC)
        preds = [p.item() if hasattr(p, "item") else p for p in np.asarray(pred)]
        probs = [float(p) for p in proba] if proba is not None else None
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
                }
                for i, row in enumerate(rows)
            ]
        )
        elapsed = time.perf_counter() - started
        v = str(slot.version)
        self.metrics.inc("mlops_requests_total", model=name, version=v, code="200")
        self.metrics.inc("mlops_predicted_rows_total", len(rows), model=name, version=v)
        self.metrics.observe_latency(elapsed, model=name, version=v)
        out: dict[str, Any] = {
            "model": name,
            "version": slot.version,
            "request_id": request_id,
            "predictions": preds,
        }
        if probs is not None:
            out["probabilities"] = probs
        return out


def create_app(
    settings: Settings,
    store: ArtifactStore,
    spec_dir: str | Path,
    poll_seconds: float = 2.0,
    log_flush_seconds: float = 5.0,
) -> FastAPI:
    st = store
    specs = [load_spec(p) for p in spec_files(spec_dir)]
    svc = Service(st, specs, poll_seconds, settings.serving_token, log_flush_seconds)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        from threadpoolctl import threadpool_limits

        # Requests already run in parallel on the server's threads; OpenMP threads inside each
        # prediction only oversubscribe the cores (measured: 5x slower under load).
        limits = threadpool_limits(settings.serving_threads)
        svc.manager.refresh()
        svc.manager.start_polling(poll_seconds)
        svc.inference.start()
        yield
        svc.manager.stop()
        svc.inference.close()
        limits.restore_original_limits()

    app = FastAPI(
        title="mlops prediction service",
        version="1",
        lifespan=lifespan,
        description="Serves the production version of every model in the registry.",
    )
    app.state.service = svc

    for spec in specs:
        _add_predict_route(app, svc, spec)

    @app.post("/v1/models/{name}/predict", include_in_schema=False)
    def predict_unknown(name: str) -> None:
        raise HTTPException(404, f"no model named {name!r}; known: {sorted(svc.manager.specs)}")

    @app.post("/v1/models/{name}/feedback")
    def feedback(name: str, body: FeedbackRequest) -> dict[str, Any]:
        """Delayed true labels for earlier predictions (request id + row)."""
        if name not in svc.manager.specs:
            raise HTTPException(404, f"no model named {name!r}")
        n = write_feedback(st, name, [item.model_dump() for item in body.labels])
        return {"model": name, "accepted": n}

    @app.get("/v1/models")
    def list_models() -> dict[str, Any]:
        return {"models": [_describe_model(svc, n) for n in sorted(svc.manager.specs)]}

    @app.get("/v1/models/{name}")
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
        return JSONResponse({"ready": ok, "models": status}, status_code=200 if ok else 503)

    @app.get("/metrics", response_class=PlainTextResponse)
    def metrics() -> Response:
        svc.metrics.set("mlops_inference_log_buffered_rows", svc.inference.buffered)
        return PlainTextResponse(svc.metrics.render(), media_type="text/plain; version=0.0.4")

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
        changes = svc.manager.refresh()
        ok, status = svc.manager.ready()
        return {"changes": changes, "ready": ok, "models": status}

    return app


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


def _add_predict_route(app: FastAPI, svc: Service, spec: ModelSpec) -> None:
    row = row_model(spec)
    request = create_model(
        f"{spec.name}_predict_request",
        __config__=ConfigDict(extra="forbid"),
        records=(list[row], Field(..., min_length=1, max_length=MAX_ROWS)),  # type: ignore[valid-type]
    )

    def predict(body: Any) -> dict[str, Any]:
        rows = [r.model_dump() for r in body.records]
        return svc.predict(spec.name, rows)

    predict.__annotations__["body"] = request  # the spec's typed body, for validation and docs

    app.add_api_route(
        f"/v1/models/{spec.name}/predict",
        predict,
        methods=["POST"],
        summary=f"Predict with {spec.name}",
        description=spec.description,
    )


def serve(
    settings: Settings,
    host: str,
    port: int,
    store: ArtifactStore,
    spec_dir: str | Path,
    poll_seconds: float,
) -> None:
    import uvicorn

    app = create_app(settings, store, spec_dir, poll_seconds)
    uvicorn.run(app, host=host, port=port, log_level="info", access_log=False)
