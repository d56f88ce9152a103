"""Secret managers (Vault/OpenBao, AWS Secrets Manager, Azure Key Vault): pure fetch functions
used by the operator and by the plugin's direct mode.

Each provider module exposes ``fetch(...) -> SecretValue``: explicit configuration and
credentials in, the raw secret content out. Nothing here reads environment variables, caches
or logs; the provider's client library is imported lazily inside ``fetch``, so importing this
package needs only the standard library (Python 3.9+). It imports nothing else of this project
(an import-linter contract in pyproject.toml holds it to that).

Every failure is a :class:`ProviderError` that carries data, not advice for one audience:
``reason`` (a condition reason), ``provider``, ``where`` (the location, keyed by the provider
function's parameter names: ``address``, ``mount``, ``path``, ``kv_version``, ``secret_id``,
``region``, ``version_stage``, ``vault_url``, ``name``, ``version``, ...), ``check`` (which of
those parameters the user should check) and ``detail`` (the server's own words, secret-free).
Its message states what happened; each caller words the advice for its users (the operator
names binding fields, direct mode names environment variables). Messages never contain secret
values. Secret fields of the credential types are declared ``field(repr=False)``:
:func:`secret_fields` lists them, so a caller can register them for redaction.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime
from typing import Mapping, Optional, Sequence, Tuple, Union

VAULT, AWS, AZURE = "vault", "aws", "azure"


@dataclass(frozen=True)
class SecretValue:
    """The raw content of one secret version.

    ``content`` is ``str`` for text secrets (a Vault KV secret is rendered as a JSON object)
    and ``bytes`` for binary ones (AWS SecretBinary). ``repr`` hides the content.
    """

    content: Union[str, bytes] = field(repr=False)
    version: Optional[str] = None
    expires_at: Optional[datetime] = None


def secret_fields(value: object) -> Tuple[object, ...]:
    """The values of ``value``'s secret fields (dataclass fields declared ``repr=False``): the
    content of a :class:`SecretValue`, the token of a ``VaultToken``, ... (empty for others)."""
    if not dataclasses.is_dataclass(value) or isinstance(value, type):
        return ()
    return tuple(getattr(value, f.name) for f in dataclasses.fields(value) if not f.repr)


class ProviderError(Exception):
    """A secret could not be fetched. ``str(exc)`` states what happened; ``provider``, ``where``,
    ``check`` and ``detail`` carry the data a caller needs to word advice for its users."""

    reason = "ProviderUnavailable"
    #: True when retrying later may help (outage), False when the configuration must change.
    transient = True

    def __init__(self, message: str, *, provider: str = "", where: Optional[Mapping] = None,
                 check: Sequence[str] = (), detail: Optional[str] = None):
        super().__init__(message)
        self.message = message
        self.provider = provider
        self.where = dict(where or {})
        self.check = tuple(check)
        self.detail = detail


class ProviderUnavailable(ProviderError):
    reason = "ProviderUnavailable"


class AuthenticationFailed(ProviderError):
    reason = "AuthenticationFailed"
    transient = False


class PermissionDenied(ProviderError):
    reason = "PermissionDenied"
    transient = False


class SecretNotFound(ProviderError):
    """Nothing at the location: ``check`` names the parameters that locate it."""

    reason = "SecretNotFound"
    transient = False


class InvalidSecretFormat(ProviderError):
    reason = "InvalidSecretFormat"
    transient = False


class MissingDependency(ProviderError):
    """The provider's client library is not installed: ``detail`` is the extra that installs it
    (``vault``, ``aws``, ``azure``)."""

    reason = "ProviderUnavailable"
    transient = False


def require(module: str, extra: str):
    """Import a provider's client library lazily, or say which extra installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependency(
            f"{module} is not installed: pip install 'mlflow-secrets-auth[{extra}]'",
            provider=extra, detail=extra) from exc


__all__ = [
    "VAULT", "AWS", "AZURE", "SecretValue", "secret_fields", "ProviderError",
    "ProviderUnavailable", "AuthenticationFailed", "PermissionDenied", "SecretNotFound",
    "InvalidSecretFormat", "MissingDependency", "require",
]
