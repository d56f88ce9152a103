"""HashiCorp Vault / OpenBao KV (v1 and v2) with token, Kubernetes or AppRole login (hvac)."""
from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import MutableMapping, Optional, Tuple, Union

from . import (VAULT, AuthenticationFailed, PermissionDenied, ProviderError,
               ProviderUnavailable, SecretNotFound, SecretValue, require)


@dataclass(frozen=True)
class VaultToken:
    token: str = field(repr=False)


@dataclass(frozen=True)
class VaultKubernetes:
    role: str
    jwt: str = field(repr=False)
    mount_path: str = "kubernetes"


@dataclass(frozen=True)
class VaultAppRole:
    role_id: str
    secret_id: str = field(repr=False)
    mount_path: str = "approle"


VaultAuth = Union[VaultToken, VaultKubernetes, VaultAppRole]


def fetch(address: str, path: str, auth: VaultAuth, *, mount: str = "secret",
          kv_version: str = "auto", namespace: Optional[str] = None,
          ca_bundle: Optional[str] = None, timeout: float = 10.0,
          version_cache: Optional[MutableMapping] = None, session=None) -> SecretValue:
    """Read ``mount``/``path`` from Vault's KV engine; the content is the secret's JSON object.

    ``kv_version`` is ``"1"``, ``"2"`` or ``"auto"`` (ask Vault which version the mount is).
    ``ca_bundle`` is a path to a PEM file (default: system CAs). ``version_cache``: a mapping the
    caller keeps to remember detected mount versions, so ``auto`` costs one extra call per mount
    instead of one per read. ``session``: a ``requests.Session`` to reuse connections across
    calls (one per thread).
    """
    hvac = require("hvac", "vault")
    client = _client(hvac, address, namespace, ca_bundle, timeout, session)
    mount = mount.strip("/")
    path = path.strip("/")
    with _translated(address, hvac):
        _login(client, auth, hvac)
        key = (address, namespace, mount)
        if kv_version in ("1", "2"):
            version = kv_version
        elif version_cache is not None and key in version_cache:
            version = version_cache[key]
        else:
            version = _detect_version(client, mount, hvac)
            if version_cache is not None:
                version_cache[key] = version
        try:
            return _read(client, mount, path, version, hvac)
        except SecretNotFound:
            if version_cache is not None:
                version_cache.pop(key, None)  # the mount may have been re-created
            raise


def login(address: str, auth: Union[VaultKubernetes, VaultAppRole], *,
          namespace: Optional[str] = None, ca_bundle: Optional[str] = None,
          timeout: float = 10.0, session=None) -> Tuple[str, int]:
    """Log in once; return the Vault client token and its lease in seconds (0: no expiry).

    For callers that read many paths as one identity: pass ``VaultToken(token)`` to :func:`fetch`
    afterwards instead of logging in (and creating a Vault token) on every read.
    """
    hvac = require("hvac", "vault")
    client = _client(hvac, address, namespace, ca_bundle, timeout, session)
    with _translated(address, hvac):
        answer = _login(client, auth, hvac) or {}
    grant = answer.get("auth") or {}
    if not grant.get("client_token"):
        raise AuthenticationFailed(f"Vault at {address} answered the login without a client token",
                                   provider=VAULT, where={"address": address})
    return grant["client_token"], int(grant.get("lease_duration") or 0)


def _client(hvac, address: str, namespace: Optional[str], ca_bundle: Optional[str],
            timeout: float, session):
    return hvac.Client(url=address, namespace=namespace, timeout=timeout,
                       verify=ca_bundle if ca_bundle else True, session=session)


@contextmanager
def _translated(address: str, hvac):
    """Turn transport and server failures into ProviderUnavailable (retried, never fatal)."""
    requests = require("requests", "vault")
    try:
        yield
    except ProviderError:
        raise
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
        raise ProviderUnavailable(f"Vault at {address} is unreachable ({type(exc).__name__})",
                                  provider=VAULT, where={"address": address},
                                  detail=type(exc).__name__) from None
    except (hvac.exceptions.VaultDown, hvac.exceptions.InternalServerError,
            hvac.exceptions.BadGateway) as exc:
        raise ProviderUnavailable(f"Vault at {address} is unavailable: {_errors(exc)}",
                                  provider=VAULT, where={"address": address},
                                  detail=_errors(exc)) from None
    except hvac.exceptions.VaultError as exc:
        raise ProviderUnavailable(f"Vault at {address} answered an error: {_errors(exc)}",
                                  provider=VAULT, where={"address": address},
                                  detail=_errors(exc)) from None


def _login(client, auth: VaultAuth, hvac) -> Optional[dict]:
    try:
        if isinstance(auth, VaultToken):
            client.token = auth.token
            return None
        if isinstance(auth, VaultKubernetes):
            return client.auth.kubernetes.login(role=auth.role, jwt=auth.jwt,
                                                mount_point=auth.mount_path)
        if isinstance(auth, VaultAppRole):
            return client.auth.approle.login(role_id=auth.role_id, secret_id=auth.secret_id,
                                             mount_point=auth.mount_path)
    except (hvac.exceptions.Forbidden, hvac.exceptions.Unauthorized,
            hvac.exceptions.InvalidRequest, hvac.exceptions.InvalidPath) as exc:
        method = "kubernetes" if isinstance(auth, VaultKubernetes) else "approle"
        raise AuthenticationFailed(
            f"Vault {method} login at auth/{auth.mount_path} failed: {_errors(exc)}; check the "
            f"role and that it trusts this identity", provider=VAULT,
            where={"auth_mount": auth.mount_path, "method": method}, detail=_errors(exc)) from None
    raise TypeError(f"unsupported Vault auth {type(auth).__name__}")


def _detect_version(client, mount: str, hvac) -> str:
    try:
        resp = client.adapter.get(f"/v1/sys/internal/ui/mounts/{mount}")
    except hvac.exceptions.Forbidden:
        return "2"  # the token may not describe mounts: assume the default engine version
    except hvac.exceptions.InvalidPath:
        raise SecretNotFound(f"Vault has no secrets engine mounted at {mount}/", provider=VAULT,
                             where={"mount": mount}, check=("mount",)) from None
    data = (resp or {}).get("data") or {}
    options = data.get("options") or {}
    return "2" if str(options.get("version", "1")) == "2" else "1"


def _read(client, mount: str, path: str, version: str, hvac) -> SecretValue:
    where = f"{mount}/{path} (KV v{version})"
    at = {"mount": mount, "path": path, "kv_version": version}
    try:
        if version == "2":
            resp = client.secrets.kv.v2.read_secret_version(
                path=path, mount_point=mount, raise_on_deleted_version=True)
            data = resp["data"]["data"]
            meta = resp["data"].get("metadata") or {}
            ver = str(meta["version"]) if meta.get("version") is not None else None
        else:
            resp = client.secrets.kv.v1.read_secret(path=path, mount_point=mount)
            data, ver = resp["data"], None
    except hvac.exceptions.InvalidPath:
        raise SecretNotFound(f"no secret at {where}", provider=VAULT, where=at,
                             check=("mount", "path", "kv_version")) from None
    except hvac.exceptions.Forbidden as exc:
        if not _token_valid(client, hvac):
            raise AuthenticationFailed("Vault rejected the token (invalid, expired or revoked); "
                                       "renew it or fix the login", provider=VAULT,
                                       where=at) from None
        raise PermissionDenied(f"this identity may not read {where}: {_errors(exc)}", provider=VAULT,
                               where=at, detail=_errors(exc)) from None
    except hvac.exceptions.Unauthorized as exc:
        raise AuthenticationFailed(f"Vault refused the token reading {where}: {_errors(exc)}",
                                   provider=VAULT, where=at, detail=_errors(exc)) from None
    if data is None:
        raise SecretNotFound(f"the secret at {where} is deleted", provider=VAULT, where=at,
                             check=("path",)) from None
    return SecretValue(content=json.dumps(data, sort_keys=True), version=ver)


def _token_valid(client, hvac) -> bool:
    """After a 403: is it the token (invalid/expired) or the policy? Asks Vault once."""
    try:
        client.auth.token.lookup_self()
    except hvac.exceptions.Forbidden:
        return False
    except Exception:  # noqa: BLE001 - cannot tell: report the permission problem
        return True
    return True


def _errors(exc: Exception) -> str:
    errors = getattr(exc, "errors", None)
    if errors:
        text = "; ".join(str(e) for e in errors)
    else:
        text = type(exc).__name__
    text = " ".join(text.replace("1 error occurred:", "").replace("*", " ").split())
    return text[:300]
