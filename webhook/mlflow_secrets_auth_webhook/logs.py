"""The webhook's logging: the shared redacting handler (``mlflow_secrets_auth_redaction``), with
uvicorn's loggers sent through it."""
from __future__ import annotations

import logging
from typing import Optional

from mlflow_secrets_auth_redaction import Redactor
from mlflow_secrets_auth_redaction import configure as configure_root

#: The webhook's registry. The only secrets the webhook handles are its own TLS private keys,
#: registered at the TLS Secret's port (certs.register_private_keys).
REDACTOR = Redactor(capacity=1_000)


def configure(level: str = "INFO", fmt: str = "json", redactor: Optional[Redactor] = None,
              stream=None) -> logging.Handler:
    """`fmt`: "json" (default) or "text" (for a terminal)."""
    handler = configure_root(fmt, level, REDACTOR if redactor is None else redactor, stream=stream)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    return handler
