"""Direct fetch from secret managers: pure functions shared by the operator and the plugin.

Each provider module exposes ``fetch(...) -> SecretValue``: explicit configuration and
credentials in, the raw secret content out. Nothing here reads environment variables or
caches; the provider's client library is imported lazily inside ``fetch`` so that importing
this package needs only the standard library (Python 3.9+).

Every failure is a :class:`ProviderError` whose ``reason`` is one of the condition reasons the
operator reports (``ProviderUnavailable``, ``AuthenticationFailed``, ``PermissionDenied``,
``SecretNotFound``, ``InvalidSecretFormat``). Messages never contain secret values.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Optional, Union


@dataclass(frozen=True)
class SecretValue:
    """The raw content of one secret version.

    ``content`` is ``str`` for text secrets (a Vault KV secret is rendered as a JSON object)
    and ``bytes`` for binary ones (AWS SecretBinary). ``repr`` hides the content.
    """

    content: Union[str, bytes]
    version: Optional[str] = None
    expires_at: Optional[datetime] = None

    def __repr__(self) -> str:
        return f"SecretValue(content=<redacted>, version={self.version!r}, expires_at={self.expires_at!r})"


class ProviderError(Exception):
    """A secret could not be fetched; ``reason`` is a condition reason, the message says why."""

    reason = "ProviderUnavailable"
    #: True when retrying later may help (outage), False when the configuration must change.
    transient = True


class ProviderUnavailable(ProviderError):
    reason = "ProviderUnavailable"


class AuthenticationFailed(ProviderError):
    reason = "AuthenticationFailed"
    transient = False


class PermissionDenied(ProviderError):
    reason = "PermissionDenied"
    transient = False


class SecretNotFound(ProviderError):
    reason = "SecretNotFound"
    transient = False


class InvalidSecretFormat(ProviderError):
    reason = "InvalidSecretFormat"
    transient = False


class MissingDependency(ProviderError):
    """The provider's client library is not installed (install the extra it names)."""

    reason = "ProviderUnavailable"
    transient = False


def require(module: str, extra: str):
    """Import a provider's client library lazily, or say which extra installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependency(
            f"{module} is not installed: pip install 'mlflow-secrets-auth[{extra}]'") from exc


__all__ = [
    "SecretValue", "ProviderError", "ProviderUnavailable", "AuthenticationFailed",
    "PermissionDenied", "SecretNotFound", "InvalidSecretFormat", "MissingDependency", "require",
]
