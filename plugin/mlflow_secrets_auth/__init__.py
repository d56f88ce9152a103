"""mlflow_secrets_auth: the MLflow request auth provider that reads a mounted credential.

Select it with ``MLFLOW_TRACKING_AUTH=mlflow_secrets_auth``. MLflow calls ``get_auth()`` on every
request; the first call builds one auth object from the environment and later calls return it.

Importing this module costs almost nothing: the ``requests``-based auth object, the direct-mode
providers and their optional clients load only when first needed.
"""
from __future__ import annotations

import os
from itertools import repeat

__version__ = "0.1.0"

NAME = "mlflow_secrets_auth"
DIR_ENV = "MLFLOW_SECRETS_AUTH_DIR"
DEFAULT_DIR = "/var/run/secrets/mlflow-secrets-auth"
LOG_LEVEL_ENV = "MLFLOW_SECRETS_LOG_LEVEL"
#: Seconds between checks of the credential for rotation (default 0.5; kubelet's swap is seen
#: by the first request after that).
CHECK_INTERVAL_ENV = "MLFLOW_SECRETS_AUTH_CHECK_INTERVAL"

_auth = None


def resolve_mode(environ=os.environ):
    """``("file", directory)`` or ``("direct", provider_name)``: which source this process uses.

    The mounted directory wins (``MLFLOW_SECRETS_AUTH_DIR``, else the default path if it exists);
    otherwise the first enabled direct provider; otherwise the default directory, whose absence
    the auth object reports with the fix.
    """
    directory = environ.get(DIR_ENV)
    if directory:
        return "file", directory
    if os.path.isdir(DEFAULT_DIR):
        return "file", DEFAULT_DIR
    from .direct import enabled_provider

    provider = enabled_provider(environ)
    if provider:
        return "direct", provider
    return "file", DEFAULT_DIR


def build_source(environ=os.environ):
    import time

    mode, where = resolve_mode(environ)
    if mode == "file":
        from .sources import FileSource

        return FileSource(where)
    from .credentials import CredentialError
    from .direct import source_from_env

    try:
        return source_from_env(where, environ, clock=time.monotonic)
    except CredentialError as exc:
        from .sources import ErrorSource

        return ErrorSource(exc, "direct mode (%s)" % where)


def build_auth(environ=os.environ):
    """A new auth object configured from ``environ`` (the CLI and tests use this directly)."""
    import logging

    from .auth import SecretsAuth
    from .cache import CredentialCache

    level = environ.get(LOG_LEVEL_ENV)
    if level:
        try:
            logging.getLogger(NAME).setLevel(level.strip().upper())
        except ValueError:
            logging.getLogger(NAME).warning(
                "mlflow_secrets_auth: %s=%r is not a log level (DEBUG, INFO, WARNING, ERROR)",
                LOG_LEVEL_ENV,
                level,
            )
    interval = 0.5
    raw = environ.get(CHECK_INTERVAL_ENV)
    if raw:
        try:
            interval = max(0.0, float(raw))
        except ValueError:
            logging.getLogger(NAME).warning(
                "mlflow_secrets_auth: %s=%r is not a number of seconds; using 0.5",
                CHECK_INTERVAL_ENV,
                raw,
            )
    return SecretsAuth(CredentialCache(build_source(environ), interval=interval))


class SecretsAuthProvider:
    """MLflow's ``RequestAuthProvider`` interface (duck-typed, so importing MLflow is not needed).

    MLflow calls ``get_name()`` on every registered provider and ``get_auth()`` on ours for every
    request. Both answer a constant, so each instance replaces them with C-level callables that
    return it (``itertools.repeat(x).__next__``): about half the cost of a Python method call.
    """

    def __init__(self) -> None:
        self.get_name = repeat(NAME).__next__  # type: ignore[method-assign]

    def get_name(self) -> str:
        return NAME

    def get_auth(self):
        auth = _auth
        if auth is None:
            auth = _create_shared_auth()
        self.get_auth = repeat(auth).__next__  # type: ignore[method-assign]
        return auth


def _create_shared_auth():
    global _auth
    import threading  # loaded by MLflow long before this first call

    with _LOCKS.setdefault("auth", threading.Lock()):
        if _auth is None:
            _auth = build_auth()
        return _auth


_LOCKS: dict = {}
