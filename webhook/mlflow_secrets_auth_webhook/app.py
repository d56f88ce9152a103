"""`create_app(settings)`: the FastAPI app serving /mutate, /healthz, /readyz and /metrics."""
from __future__ import annotations

import json
import logging
import time
from typing import Callable, Optional

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool

from .admission import BadReview, ListBindings, admit
from .metrics import Metrics
from .settings import Settings

log = logging.getLogger("mlflow_secrets_auth_webhook.app")
MAX_BODY = 3 * 1024 * 1024  # the API server caps requests near this size


def create_app(settings: Settings, list_bindings: Optional[ListBindings] = None, *,
               recheck: Optional[ListBindings] = None,
               metrics: Optional[Metrics] = None,
               ready: Optional[Callable[[], bool]] = None,
               serve_metrics: bool = True) -> FastAPI:
    """The webhook app.

    `list_bindings(namespace)` returns the namespace's raw MlflowAuthBindings from memory; it runs
    on the event loop, so it must not block. `recheck(namespace)` is an optional live (blocking)
    read, run in a worker thread only when the fast answer is a denial. By default: a watch cache
    of the cluster's bindings, re-checked live, ready once the cache has listed.
    """
    if list_bindings is None:
        from .bindings import BindingCache, KubeBindingSource, load_api_client

        api = load_api_client()
        cache = BindingCache(api).start()
        list_bindings, recheck = cache, recheck or KubeBindingSource(api)
        ready = ready or cache.synced.is_set
    ready = ready or (lambda: True)
    metrics = metrics or Metrics.create()
    app = FastAPI(title="mlflow-secrets-auth webhook", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.settings = settings
    app.state.metrics = metrics

    @app.post("/mutate")
    async def mutate(request: Request) -> Response:
        raw = await request.body()
        started = time.perf_counter()   # the webhook's own time: from the full body to the answer
        try:
            if len(raw) > MAX_BODY:
                raise BadReview(f"body larger than {MAX_BODY} bytes")
            try:
                body = json.loads(raw)
            except (ValueError, RecursionError) as exc:
                raise BadReview(f"the body is not JSON ({type(exc).__name__})") from exc
            outcome = admit(body, list_bindings, settings)
            if recheck is not None and outcome.result in ("denied", "error"):
                outcome = await run_in_threadpool(admit, body, recheck, settings)
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
        if ready():
            return PlainTextResponse("ready")
        return PlainTextResponse("not ready", status_code=503)

    if serve_metrics:
        @app.get("/metrics")
        async def prometheus() -> Response:
            return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
