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
    provider_timeout: float = 10.0                 # MSA_PROVIDER_TIMEOUT seconds per call
    token_seconds: int = 600                       # MSA_TOKEN_SECONDS: TokenRequest lifetime
    workers: int = 16                              # MSA_WORKERS: concurrent syncs
    nudge_pods: bool = True                        # MSA_NUDGE_PODS: nudge pods after a rotation
    nudge_rate: float = 20.0                       # MSA_NUDGE_RATE: pod requests per second
    nudge_burst: int = 20                          # MSA_NUDGE_BURST
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
            token_seconds=int(_float(get("MSA_TOKEN_SECONDS", "600"), "MSA_TOKEN_SECONDS", 600)),
            workers=int(_float(get("MSA_WORKERS", "16"), "MSA_WORKERS", 1)),
            nudge_pods=_bool(get("MSA_NUDGE_PODS", "true"), "MSA_NUDGE_PODS"),
            nudge_rate=_float(get("MSA_NUDGE_RATE", "20"), "MSA_NUDGE_RATE", 0.1),
            nudge_burst=int(_float(get("MSA_NUDGE_BURST", "20"), "MSA_NUDGE_BURST", 1)),
            vault_token=get("VAULT_TOKEN") or None,
        )
