"""`create_app(settings)`: the FastAPI app serving /mutate, /healthz, /readyz and /metrics."""
from __future__ import annotations

import json
import logging
import time
from typing import Any, Optional

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .admission import BadReview, admit, parse_review
from .bindings import BindingSource
from .metrics import Metrics
from .settings import Settings

log = logging.getLogger("mlflow_secrets_auth_webhook.app")
MAX_BODY = 3 * 1024 * 1024  # the API server caps requests near this size


def create_app(settings: Settings, bindings: BindingSource, *,
               metrics: Optional[Metrics] = None, serve_metrics: bool = True) -> FastAPI:
    """The webhook app over its collaborators: the settings, where bindings are read
    (`BindingSource.from_cluster(api)` in the server) and the metrics (a fresh registry unless
    given). /readyz follows `bindings.ready()`."""
    metrics = metrics or Metrics.create()
    app = FastAPI(title="mlflow-secrets-auth webhook", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.settings = settings
    app.state.metrics = metrics

    @app.post("/mutate")
    async def mutate(request: Request) -> Response:
        raw = await request.body()
        started = time.perf_counter()   # the webhook's own time: from the full body to the answer
        try:
            review = parse_review(_json(raw))
            outcome = await bindings.answer(lambda source: admit(review, source, settings))
        except BadReview as exc:
            metrics.admissions.labels(result="bad_request").inc()
            return JSONResponse({"error": str(exc)}, status_code=400)
        except Exception:  # noqa: BLE001 - never a 5xx to the API server; log and answer 400
            log.exception("unexpected error while admitting")
            metrics.admissions.labels(result="bad_request").inc()
            return JSONResponse({"error": "the review could not be processed"}, status_code=400)
        finally:
            metrics.latency.observe(time.perf_counter() - started)
        metrics.admissions.labels(result=outcome.result).inc()
        return JSONResponse(outcome.body)

    @app.get("/healthz")
    async def healthz() -> Response:
        return PlainTextResponse("ok")

    @app.get("/readyz")
    async def readyz() -> Response:
        if bindings.ready():
            return PlainTextResponse("ready")
        return PlainTextResponse("not ready", status_code=503)

    if serve_metrics:
        @app.get("/metrics")
        async def prometheus() -> Response:
            return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def _json(raw: bytes) -> Any:
    if len(raw) > MAX_BODY:
        raise BadReview(f"body larger than {MAX_BODY} bytes")
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise BadReview(f"the body is not JSON ({type(exc).__name__})") from exc
