"""Serving: uvicorn over TLS with the certificate hot-reloaded, optional metrics port,
and the self-managed certificate loop when no certificate files are given."""
from __future__ import annotations

import asyncio
import logging
import os
import threading
from typing import Optional

import uvicorn

from .app import create_app
from .metrics import Metrics
from .settings import Settings
from .tls import CertReloader

log = logging.getLogger("mlflow_secrets_auth_webhook.server")
CERT_CHECK_INTERVAL = 3600.0


def build_server(settings: Settings, app, cert_file: str, key_file: Optional[str]):
    """A uvicorn server whose SSLContext is created now, so the reloader can hold the same object."""
    config = uvicorn.Config(app, host=settings.host, port=settings.port, ssl_certfile=cert_file,
                            ssl_keyfile=key_file, log_config=None, access_log=False,
                            timeout_graceful_shutdown=5)
    config.load()
    return uvicorn.Server(config), CertReloader(config.ssl, cert_file, key_file)


async def serve(server: uvicorn.Server, reloader: CertReloader, interval: float) -> None:
    async def watch_certificates() -> None:
        while not server.should_exit:
            reloader.check()
            await asyncio.sleep(interval)

    task = asyncio.create_task(watch_certificates())
    try:
        await server.serve()
    finally:
        task.cancel()


def _renew_forever(manager, stop: threading.Event) -> None:
    while not stop.wait(CERT_CHECK_INTERVAL):
        try:
            manager.sync()
        except Exception:  # noqa: BLE001 - retried on the next tick; the current pair keeps serving
            log.exception("certificate renewal failed; retrying in %ss", CERT_CHECK_INTERVAL)


def main(settings: Optional[Settings] = None) -> None:
    from .logs import configure

    configure(os.environ.get("MSA_LOG_LEVEL", "INFO").upper(), os.environ.get("MSA_LOG_FORMAT", "json"))
    settings = settings or Settings.from_env()
    api_client = None

    def kube():
        nonlocal api_client
        if api_client is None:
            from .bindings import load_api_client
            api_client = load_api_client()
        return api_client

    from .bindings import BindingSource

    stop = threading.Event()
    if settings.tls_cert_file:
        cert_file, key_file = settings.tls_cert_file, settings.tls_key_file
    else:
        from .certs import SelfManagedTLS
        manager = SelfManagedTLS(settings, kube())
        manager.sync()
        cert_file, key_file = str(manager.cert_file), str(manager.key_file)
        threading.Thread(target=_renew_forever, args=(manager, stop), daemon=True,
                         name="cert-renewal").start()

    metrics = Metrics.create()
    if settings.metrics_port:
        from prometheus_client import start_http_server
        start_http_server(settings.metrics_port, addr=settings.host, registry=metrics.registry)
    app = create_app(settings, BindingSource.from_cluster(kube()), metrics=metrics,
                     serve_metrics=not settings.metrics_port)
    server, reloader = build_server(settings, app, cert_file, key_file)
    log.info("webhook serving", extra={"port": settings.port, "cert_file": cert_file,
                                       "self_managed_tls": not settings.tls_cert_file})
    try:
        asyncio.run(serve(server, reloader, settings.cert_reload_interval))
    finally:
        stop.set()
