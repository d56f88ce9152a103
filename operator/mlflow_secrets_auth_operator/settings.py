"""Operator settings, read once from the environment at start-up and passed in everywhere."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Mapping, Optional, Tuple


def _bool(value: str, name: str) -> bool:
    text = value.strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("", "0", "false", "no", "off"):
        return False
    raise ValueError(f"{name}={value!r}: use true or false")


def _float(value: str, name: str, minimum: float = 0.0) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{name}={value!r}: not a number") from None
    if number < minimum:
        raise ValueError(f"{name}={value!r}: must be at least {minimum:g}")
    return number


SYSTEM_NAMESPACES = ("kube-system", "kube-public", "kube-node-lease")
MAX_ANSWER_BYTES = 1024 * 1024


def _list(value: str) -> Tuple[str, ...]:
    return tuple(item.strip() for item in value.split(",") if item.strip())


@dataclass(frozen=True)
class Settings:
    """Everything the cluster admin can tune (the chart sets these env vars)."""

    allow_operator_identity: bool = False          # MSA_ALLOW_OPERATOR_IDENTITY
    namespaces: Tuple[str, ...] = ()              # MSA_NAMESPACES (comma-separated; empty = all)
    metrics_address: str = "0.0.0.0"              # MSA_METRICS_ADDRESS
    metrics_port: int = 8080                       # MSA_METRICS_PORT (0 = off)
    health_address: str = "0.0.0.0"               # MSA_HEALTH_ADDRESS
    health_port: int = 8081                        # MSA_HEALTH_PORT (0 = off); GET /healthz
    log_format: str = "json"                       # MSA_LOG_FORMAT json|text
    log_level: str = "INFO"                        # MSA_LOG_LEVEL
    peering: str = ""                              # MSA_PEERING: kopf peering name ("" = standalone)
    peering_priority: Optional[int] = None         # MSA_PEERING_PRIORITY (default: random per start)
    backoff_base: float = 2.0                      # MSA_BACKOFF_BASE seconds
    backoff_cap: float = 300.0                     # MSA_BACKOFF_CAP seconds
    refresh_jitter: float = 0.1                    # MSA_REFRESH_JITTER: refresh up to 10% early
    provider_timeout: float = 10.0                 # MSA_PROVIDER_TIMEOUT seconds per connect/read
    provider_deadline: float = 30.0                # MSA_PROVIDER_DEADLINE: total seconds per sync
    token_seconds: int = 600                       # MSA_TOKEN_SECONDS: TokenRequest lifetime
    workers: int = 16                              # MSA_WORKERS: concurrent syncs
    nudge_pods: bool = True                        # MSA_NUDGE_PODS: nudge pods after a rotation
    nudge_rate: float = 20.0                       # MSA_NUDGE_RATE: pod requests per second
    nudge_burst: int = 20                          # MSA_NUDGE_BURST
    # MSA_NAMESPACE_WORKERS: concurrent syncs of one namespace (0 = a quarter of the workers)
    namespace_workers: int = 0
    max_answer_bytes: int = MAX_ANSWER_BYTES       # MSA_MAX_ANSWER_BYTES: cap on a provider answer
    # MSA_API_AUDIENCES: the API server's audiences (refused in bindings), besides those learned
    api_audiences: Tuple[str, ...] = ()
    # MSA_OPERATOR_IDENTITY_ADDRESSES: where allowOperatorIdentity may send the operator's identity
    operator_identity_addresses: Tuple[str, ...] = ()
    # MSA_REFUSED_NAMESPACES: no binding is served there; MSA_OPERATOR_NAMESPACE is added
    refused_namespaces: Tuple[str, ...] = SYSTEM_NAMESPACES
    operator_namespace: str = ""                   # MSA_OPERATOR_NAMESPACE (the chart's release)
    vault_token: Optional[str] = field(default=None, repr=False)  # VAULT_TOKEN (operator identity)

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> "Settings":
        get = env.get
        log_format = get("MSA_LOG_FORMAT", "json").strip().lower()
        if log_format not in ("json", "text"):
            raise ValueError(f"MSA_LOG_FORMAT={log_format!r}: use json or text")
        return cls(
            allow_operator_identity=_bool(get("MSA_ALLOW_OPERATOR_IDENTITY", ""),
                                          "MSA_ALLOW_OPERATOR_IDENTITY"),
            namespaces=tuple(n.strip() for n in get("MSA_NAMESPACES", "").split(",") if n.strip()),
            metrics_address=get("MSA_METRICS_ADDRESS", "0.0.0.0"),
            metrics_port=int(_float(get("MSA_METRICS_PORT", "8080"), "MSA_METRICS_PORT")),
            health_address=get("MSA_HEALTH_ADDRESS", "0.0.0.0"),
            health_port=int(_float(get("MSA_HEALTH_PORT", "8081"), "MSA_HEALTH_PORT")),
            log_format=log_format,
            log_level=get("MSA_LOG_LEVEL", "INFO").upper(),
            peering=get("MSA_PEERING", "").strip(),
            peering_priority=(int(_float(get("MSA_PEERING_PRIORITY"), "MSA_PEERING_PRIORITY"))
                              if get("MSA_PEERING_PRIORITY") else None),
            backoff_base=_float(get("MSA_BACKOFF_BASE", "2"), "MSA_BACKOFF_BASE", 0.1),
            backoff_cap=_float(get("MSA_BACKOFF_CAP", "300"), "MSA_BACKOFF_CAP", 1.0),
            refresh_jitter=_float(get("MSA_REFRESH_JITTER", "0.1"), "MSA_REFRESH_JITTER"),
            provider_timeout=_float(get("MSA_PROVIDER_TIMEOUT", "10"), "MSA_PROVIDER_TIMEOUT", 0.5),
            provider_deadline=_float(get("MSA_PROVIDER_DEADLINE", "30"), "MSA_PROVIDER_DEADLINE",
                                     1.0),
            token_seconds=int(_float(get("MSA_TOKEN_SECONDS", "600"), "MSA_TOKEN_SECONDS", 600)),
            workers=int(_float(get("MSA_WORKERS", "16"), "MSA_WORKERS", 1)),
            nudge_pods=_bool(get("MSA_NUDGE_PODS", "true"), "MSA_NUDGE_PODS"),
            nudge_rate=_float(get("MSA_NUDGE_RATE", "20"), "MSA_NUDGE_RATE", 0.1),
            nudge_burst=int(_float(get("MSA_NUDGE_BURST", "20"), "MSA_NUDGE_BURST", 1)),
            namespace_workers=int(_float(get("MSA_NAMESPACE_WORKERS", "0"),
                                         "MSA_NAMESPACE_WORKERS")),
            max_answer_bytes=int(_float(get("MSA_MAX_ANSWER_BYTES", str(MAX_ANSWER_BYTES)),
                                        "MSA_MAX_ANSWER_BYTES", 1024)),
            api_audiences=_list(get("MSA_API_AUDIENCES", "")),
            operator_identity_addresses=_list(get("MSA_OPERATOR_IDENTITY_ADDRESSES", "")),
            refused_namespaces=_list(get("MSA_REFUSED_NAMESPACES", ",".join(SYSTEM_NAMESPACES))),
            operator_namespace=get("MSA_OPERATOR_NAMESPACE", "").strip(),
            vault_token=get("VAULT_TOKEN") or None,
        )

    @property
    def namespace_limit(self) -> int:
        """How many syncs of one namespace may run at once (its share of the workers)."""
        if self.namespace_workers > 0:
            return min(self.namespace_workers, self.workers)
        return max(1, self.workers // 4)

    @property
    def namespaces_refused(self) -> Tuple[str, ...]:
        extra = (self.operator_namespace,) if self.operator_namespace else ()
        return tuple(dict.fromkeys(self.refused_namespaces + extra))
