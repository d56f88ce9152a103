"""The operator's logging: the shared redacting handler (``mlflow_secrets_auth_redaction``) with
the operator's quiet loggers.

Secret values are registered where they enter (kube.py, ports.py, exchange.py), not here.
"""
from __future__ import annotations

import logging

from mlflow_secrets_auth_redaction import Redactor
from mlflow_secrets_auth_redaction import configure as configure_root

QUIET = ("urllib3", "azure", "botocore", "kubernetes.client.rest")


def configure(log_format: str, level: str, redactor: Redactor, stream=None) -> logging.Handler:
    """One root handler (JSON or text) behind the redacting filter."""
    handler = configure_root(log_format, level, redactor, stream=stream, quiet=QUIET)
    # kopf logs every handler run at INFO ("Handler 'observe' succeeded."): one line per watch
    # event per binding. Keep its warnings; our own loggers say what happened to each binding.
    if logging.getLogger().level >= logging.INFO:
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    return handler
