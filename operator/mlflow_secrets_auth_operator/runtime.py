"""Start-up wiring: settings -> clients, metrics, executor, placed in kopf's memo."""
from __future__ import annotations

import asyncio
import logging
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Optional

import kopf

from mlflow_secrets_auth_api import GROUP

from .kube import KubeApi, api_client
from .logs import Redactor
from .loop import NamespaceLimiter, PeeringGate, Scheduler
from .metrics import Metrics
from .nudger import Nudger
from .reconcile import Context
from .settings import Settings

log = logging.getLogger(__name__)
# the finalizer of versions with a daemon per binding: no handler needs it now, so kopf removes
# it from every binding it still blocks (deleting them after an upgrade is not held up)
FINALIZER = f"{GROUP}/operator"
LIST_CHUNK = 500       # objects per page of kopf's initial list (kopf's default: all in one)
KOPF_CONNECTIONS = 20  # kopf's own API connections (watches, finalizer patches); kopf's default: no limit


def bounded_session(info: kopf.ConnectionInfo) -> kopf.AiohttpSession:
    """kopf's API session as kopf builds it, but with at most ``KOPF_CONNECTIONS`` connections.

    kopf's built-in session has no limit, so a burst of new bindings opened one TLS connection per
    concurrent finalizer patch (130 at 1,000 bindings), each with asyncio's 256 KiB read buffer:
    over 30 MiB of the operator's peak memory. Calls beyond the limit wait for a free connection.
    Must be called inside the event loop.
    """
    import aiohttp

    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=KOPF_CONNECTIONS, ssl=info.as_ssl_context()),
        headers=info.as_http_headers(),  # the bearer token or basic auth
        proxy=info.proxy_url, trust_env=info.trust_env)
    return kopf.AiohttpSession(server=info.server, default_namespace=info.default_namespace,
                               priority=info.priority, expiration=info.expiration,
                               aiohttp_session=session)


def configure_kopf(settings: kopf.OperatorSettings) -> None:
    settings.posting.enabled = False              # we post our own Events, on transitions only
    settings.persistence.finalizer = FINALIZER     # the old one, so that kopf removes it
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration")
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.batching.idle_timeout = 1.0  # kopf's per-object worker task ends 1 s after an event
    settings.watching.chunk_size = LIST_CHUNK   # a restart lists 10,000 bindings in chunks


def start(memo: kopf.Memo) -> None:
    """Fill ``memo`` with what handlers need (settings, metrics and redactor may be given)."""
    settings: Settings = memo.get("settings") or Settings.from_env()
    metrics: Metrics = memo.get("metrics") or Metrics()
    redactor: Redactor = memo.get("redactor") or Redactor()
    exchange_client = None
    try:
        from . import deadline
        from .exchange import TokenClient
        exchange_client = TokenClient(
            session_factory=lambda: deadline.session(settings.max_answer_bytes))
    except ImportError:  # pragma: no cover - exchange is part of the package
        log.warning("OAuth2 exchange unavailable")
    memo["settings"], memo["metrics"], memo["redactor"] = settings, metrics, redactor
    memo["ca_dir"] = tempfile.TemporaryDirectory(prefix="msa-ca-")
    memo["executor"] = ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="sync")
    memo["limiter"] = NamespaceLimiter(settings.namespace_limit)  # one namespace's share of it
    memo["api_client"] = api_client(pool_size=max(settings.workers * 2, 8))
    kube = KubeApi(memo["api_client"])
    settings = memo["settings"] = with_api_audiences(settings, kube)
    memo["context"] = Context(settings=settings, kube=kube, metrics=metrics,
                              redactor=redactor, exchange=exchange_client,
                              ca_dir=Path(memo["ca_dir"].name), nudger=start_nudger(memo, kube))
    start_scheduler(memo)
    log.info("operator started", extra={
        "namespaces": list(settings.namespaces) or "all",
        "refused_namespaces": list(settings.namespaces_refused),
        "refused_audiences": list(settings.api_audiences),
        "allow_operator_identity": settings.allow_operator_identity,
        "peering": settings.peering or "standalone", "nudge_pods": settings.nudge_pods})


def start_nudger(memo: kopf.Memo, kube) -> Optional[Nudger]:
    """The task that nudges pods after a rotation (nudger.py), or None when it is off
    (``MSA_NUDGE_PODS=false``: the operator then makes no pod requests at all). Must be called
    inside the event loop."""
    settings: Settings = memo["settings"]
    if not settings.nudge_pods:
        return None
    nudger = Nudger(kube, memo["metrics"], rate=settings.nudge_rate, burst=settings.nudge_burst)
    memo["nudge_task"] = asyncio.get_running_loop().create_task(nudger.run(), name="nudge-pods")
    return nudger


def start_scheduler(memo: kopf.Memo) -> Scheduler:
    """The one scheduler of every binding (loop.Scheduler) and its task; with peering it starts
    paused, as kopf does, until kopf resumes this replica. Must be called inside the event loop."""
    settings: Settings = memo["settings"]
    scheduler = Scheduler(memo["context"], memo["executor"], memo["limiter"],
                          active=not settings.peering)
    loop = asyncio.get_running_loop()
    memo["scheduler"] = scheduler
    memo["scheduler_task"] = loop.create_task(scheduler.run(), name="scheduler")
    if settings.peering:
        memo["peering_gate"] = PeeringGate(scheduler, loop).attach()
    return scheduler


SERVICE_ACCOUNT_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")


def with_api_audiences(settings: Settings, kube, token_file: Path = SERVICE_ACCOUNT_TOKEN
                       ) -> Settings:
    """``settings`` with every audience the API server accepts as its own: those the admin
    configured (``MSA_API_AUDIENCES``), the ServiceAccount issuer from the server's OIDC
    discovery (the default of --api-audiences), and the audiences of the operator's own
    ServiceAccount token (the kubelet requests it for exactly the API server's audiences).
    Bindings naming any of them are refused (guard.check_audience)."""
    from .jwt_claims import audiences

    learned = list(settings.api_audiences)
    issuer = kube.service_account_issuer()
    if issuer:
        learned.append(issuer)
    try:
        learned.extend(audiences(token_file.read_text().strip()))
    except OSError:
        pass  # not in a pod (a kubeconfig): discovery and the configured list must do
    if not learned:
        log.warning("could not learn the API server's audiences (no OIDC discovery, no "
                    "MSA_API_AUDIENCES): set the chart value operator.apiAudiences")
    return replace(settings, api_audiences=tuple(dict.fromkeys(learned)))


def stop(memo: kopf.Memo) -> None:
    if memo.get("scheduler_task") is not None:
        memo["scheduler_task"].cancel()
    if memo.get("peering_gate") is not None:
        memo["peering_gate"].detach()
    if memo.get("nudge_task") is not None:
        memo["nudge_task"].cancel()
    executor = memo.get("executor")
    if executor is not None:
        executor.shutdown(wait=False, cancel_futures=True)
    if memo.get("api_client") is not None:
        memo["api_client"].close()
    if memo.get("ca_dir") is not None:
        memo["ca_dir"].cleanup()


def probe(memo: kopf.Memo) -> int:
    """Liveness detail: how many bindings are Ready (a number, no names)."""
    metrics: Metrics = memo["metrics"]
    return int(sum(sample.value for metric in metrics.ready.collect() for sample in metric.samples))
