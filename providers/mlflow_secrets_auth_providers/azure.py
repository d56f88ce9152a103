"""Azure Key Vault secrets with a client secret, workload identity or any TokenCredential."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Union

from . import (AZURE, AuthenticationFailed, PermissionDenied, ProviderError, ProviderUnavailable,
               SecretNotFound, SecretValue, require)


@dataclass(frozen=True)
class AzureClientSecret:
    tenant_id: str
    client_id: str
    client_secret: str = field(repr=False)
    authority_host: Optional[str] = None


@dataclass(frozen=True)
class AzureWorkloadIdentity:
    """Federated credential: ``assertion`` is a token (e.g. a ServiceAccount token) Entra trusts."""

    tenant_id: str
    client_id: str
    assertion: str = field(repr=False)
    authority_host: Optional[str] = None


# Anything else passed as ``credential`` must be an azure-core TokenCredential.
AzureCredential = Union[AzureClientSecret, AzureWorkloadIdentity, Any, None]


def fetch(vault_url: str, name: str, credential: AzureCredential = None, *,
          version: Optional[str] = None, ca_bundle: Optional[str] = None,
          timeout: float = 10.0, verify_challenge_resource: bool = True,
          session=None) -> SecretValue:
    """Read one secret; ``credential=None`` uses ``DefaultAzureCredential``.

    ``session``: a ``requests.Session`` that carries the Key Vault and Entra ID calls (the
    operator's HTTP with a total deadline); default: azure-core's own.
    """
    require("azure.keyvault.secrets", "azure")
    identity = require("azure.identity", "azure")
    errors = require("azure.core.exceptions", "azure")
    from azure.keyvault.secrets import SecretClient

    transport_kwargs = {"connection_timeout": timeout, "read_timeout": timeout}
    if ca_bundle:
        transport_kwargs["connection_verify"] = ca_bundle
    if session is not None:
        from azure.core.pipeline.transport import RequestsTransport

        def transport():
            return RequestsTransport(session=session, session_owner=False, **transport_kwargs)
        token_credential = _credential(identity, credential, transport=transport())
        transport_kwargs = {"transport": transport()}
    else:
        token_credential = _credential(identity, credential)
    where = {"vault_url": vault_url, "name": name, "version": version}
    data = {"provider": AZURE, "where": where}
    client = SecretClient(vault_url=vault_url, credential=token_credential,
                          verify_challenge_resource=verify_challenge_resource, **transport_kwargs)
    try:
        secret = client.get_secret(name, version)
    except ProviderError:
        raise
    except identity.CredentialUnavailableError as exc:
        raise AuthenticationFailed(f"no Azure identity available ({type(exc).__name__})",
                                   check=("credentials",), **data) from None
    except errors.ClientAuthenticationError as exc:
        status = getattr(exc, "status_code", None)
        if status == 403:
            raise PermissionDenied(f"this identity may not read secret {name!r} in {vault_url}; "
                                   f"grant it 'Key Vault Secrets User'", **data) from None
        raise AuthenticationFailed(f"Entra ID / Key Vault rejected the credential for {vault_url} "
                                   f"({type(exc).__name__})", detail=type(exc).__name__,
                                   **data) from None
    except errors.ResourceNotFoundError:
        raise SecretNotFound(f"no secret {name!r} in {vault_url}", check=("name", "version"),
                             **data) from None
    except errors.HttpResponseError as exc:
        status = getattr(exc, "status_code", None)
        if status == 403:
            raise PermissionDenied(f"this identity may not read secret {name!r} in {vault_url}",
                                   detail="HTTP 403", **data) from None
        raise ProviderUnavailable(f"Key Vault answered HTTP {status or '?'}",
                                  detail=f"HTTP {status or '?'}", **data) from None
    except errors.ServiceRequestError as exc:
        raise ProviderUnavailable(f"Key Vault {vault_url} is unreachable ({type(exc).__name__})",
                                  detail=type(exc).__name__, **data) from None
    except errors.AzureError as exc:
        raise ProviderUnavailable(f"Key Vault call failed ({type(exc).__name__})",
                                  detail=type(exc).__name__, **data) from None
    finally:
        client.close()
    expires = secret.properties.expires_on if secret.properties else None
    if secret.value is None:
        raise SecretNotFound(f"secret {name!r} in {vault_url} has no value", check=("name",),
                             **data)
    return SecretValue(content=secret.value, version=secret.properties.version, expires_at=expires)


def _credential(identity, credential, **pipeline):
    if credential is None:
        return identity.DefaultAzureCredential(**pipeline)
    if isinstance(credential, AzureClientSecret):
        kwargs = {"authority": credential.authority_host} if credential.authority_host else {}
        return identity.ClientSecretCredential(credential.tenant_id, credential.client_id,
                                               credential.client_secret, **kwargs, **pipeline)
    if isinstance(credential, AzureWorkloadIdentity):
        kwargs = {"authority": credential.authority_host} if credential.authority_host else {}
        kwargs.update(pipeline)
        assertion = credential.assertion
        return identity.ClientAssertionCredential(credential.tenant_id, credential.client_id,
                                                  lambda: assertion, **kwargs)
    return credential
