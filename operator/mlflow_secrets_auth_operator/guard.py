"""What a binding may make the operator do, beyond what its author's own rights allow.

Pure functions; the admission policy (charts/.../files/policies/) refuses the same things at
``kubectl apply``; these are the operator's defence in depth for bindings that got past it (no
policy installed, an older policy, a binding created before the policy).
"""
from __future__ import annotations

from typing import Iterable, Optional, Tuple
from urllib.parse import urlsplit

from .errors import SyncError

DEFAULT_PORTS = {"http": 80, "https": 443}


def origin(url: str) -> Optional[str]:
    """``scheme://host:port`` of ``url`` (lower case, default port made explicit), or None."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname or parts.username or parts.password:
        return None
    return f"{scheme}://{parts.hostname.lower()}:{port or DEFAULT_PORTS[scheme]}"


def address_allowed(address: str, allowlist: Iterable[str]) -> bool:
    """True when ``address`` has the origin (scheme, host, port) of an entry of ``allowlist``."""
    have = origin(address)
    return have is not None and any(origin(entry) == have for entry in allowlist)


def check_operator_identity_address(address: str, field: str, allowlist: Tuple[str, ...]) -> None:
    """The operator's own identity goes only to addresses the cluster admin listed."""
    if address_allowed(address, allowlist):
        return
    where = origin(address) or address
    raise SyncError("OperatorIdentityAddressNotAllowed", (
        f"{field}: the operator's own identity is only sent to the addresses the cluster admin "
        f"listed (chart value operator.operatorIdentityAddresses), and {where} is not one of them; "
        f"use a namespace identity or ask the admin to list it"))


def same_audience(a: str, b: str) -> bool:
    return a == b or a.rstrip("/") == b.rstrip("/")


def check_audience(audience: Optional[str], field: str, refused: Iterable[str]) -> str:
    """The audience of a TokenRequest: never empty, never one of the API server's own."""
    if not audience or not audience.strip():
        raise SyncError("InvalidSpec", f"{field} is empty; a token without an audience is a "
                        f"Kubernetes API credential, so the operator never requests one")
    if any(same_audience(audience, r) for r in refused):
        raise SyncError("AudienceNotAllowed", (
            f"{field}: {audience!r} is an audience of the Kubernetes API server, so a token for it "
            f"would be a credential for the Kubernetes API; set the audience your secret manager "
            f"expects (Vault: the role's audience, e.g. vault)"))
    return audience


def check_namespace(namespace: str, refused: Iterable[str]) -> None:
    """Bindings are refused in the operator's own namespace and in system namespaces."""
    if namespace in set(refused):
        raise SyncError("NamespaceNotAllowed", (
            f"bindings are not served in namespace {namespace!r} (the operator's own namespace or "
            f"a system namespace, chart value operator.refusedNamespaces); create the binding in "
            f"a team namespace"))

