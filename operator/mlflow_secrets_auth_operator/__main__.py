"""``python -m mlflow_secrets_auth_operator``: run the operator with settings from the environment."""
from __future__ import annotations

import logging
import random
import sys

import kopf
from prometheus_client import start_http_server

from mlflow_secrets_auth_redaction import Redactor

from . import handlers  # noqa: F401 - registers the kopf handlers
from .logs import configure
from .metrics import Metrics
from .settings import Settings

log = logging.getLogger("mlflow_secrets_auth_operator")


def main() -> int:
    try:
        settings = Settings.from_env()
    except ValueError as exc:
        print(f"mlflow-secrets-auth-operator: {exc}", file=sys.stderr)
        return 2
    redactor = Redactor()
    configure(settings.log_format, settings.log_level, redactor)
    metrics = Metrics()
    if settings.metrics_port:
        start_http_server(settings.metrics_port, addr=settings.metrics_address,
                          registry=metrics.registry)
    liveness = (f"http://{settings.health_address}:{settings.health_port}/healthz"
                if settings.health_port else None)
    # kopf pauses every replica when peers share a priority: each replica draws its own, so
    # exactly one is active and the others stand by until its heartbeat stops
    priority = settings.peering_priority
    if priority is None:
        priority = random.SystemRandom().randint(1, 2**31 - 1)
    kopf.run(
        clusterwide=not settings.namespaces,
        namespaces=list(settings.namespaces),
        standalone=not settings.peering,
        peering_name=settings.peering or None,
        priority=priority,
        liveness_endpoint=liveness,
        memo=kopf.Memo(settings=settings, metrics=metrics, redactor=redactor),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
