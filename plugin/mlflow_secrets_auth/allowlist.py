"""Which hosts may receive the credential (``MLFLOW_SECRETS_ALLOWED_HOSTS``).

Patterns are comma-separated shell-style globs matched case-insensitively against the host;
a pattern may carry a port (``mlflow:5000``, ``[::1]:5000``), in which case the request's port
(explicit, or the scheme's default) must equal it. Without a port any port matches. When the
variable is unset or empty, only ``host:port`` of ``MLFLOW_TRACKING_URI`` is allowed; when that
is unset too, nothing is (fail closed).
"""
from __future__ import annotations

import fnmatch
from typing import List, Optional, Tuple
from urllib.parse import urlsplit

ALLOWED_HOSTS_ENV = "MLFLOW_SECRETS_ALLOWED_HOSTS"
TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"

DEFAULT_PORTS = {"http": 80, "https": 443}

Pattern = Tuple[str, Optional[int]]


def _split_host_port(text: str) -> Pattern:
    text = text.strip().lower()
    if "://" in text:  # tolerate a URL: keep its netloc
        text = text.split("://", 1)[1]
    text = text.split("/", 1)[0]
    if "@" in text:
        text = text.rsplit("@", 1)[1]
    if text.startswith("["):  # [v6] or [v6]:port
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
        return host, int(port) if port.isdigit() else None
    if text.count(":") == 1:
        host, port = text.split(":")
        if port.isdigit():
            return host, int(port)
        if port == "*":
            return host, None
    return text, None


def parse_patterns(value: str) -> List[Pattern]:
    return [_split_host_port(p) for p in value.split(",") if p.strip()]


def _format(pattern: Pattern) -> str:
    host, port = pattern
    if ":" in host:
        host = "[%s]" % host
    return host if port is None else "%s:%d" % (host, port)


class Allowlist:
    """An immutable set of patterns plus where they came from (for messages)."""

    __slots__ = ("patterns", "source")

    def __init__(self, patterns: List[Pattern], source: str) -> None:
        self.patterns = patterns
        self.source = source

    @classmethod
    def from_values(cls, allowed_hosts: Optional[str], tracking_uri: Optional[str]) -> "Allowlist":
        if allowed_hosts and allowed_hosts.strip():
            return cls(parse_patterns(allowed_hosts), ALLOWED_HOSTS_ENV)
        if tracking_uri and "://" in tracking_uri:
            parts = urlsplit(tracking_uri)
            host = (parts.hostname or "").lower()
            if host and parts.scheme in DEFAULT_PORTS:
                try:
                    port = parts.port or DEFAULT_PORTS[parts.scheme]
                except ValueError:
                    return cls([], TRACKING_URI_ENV)
                return cls([(host, port)], TRACKING_URI_ENV)
        return cls([], TRACKING_URI_ENV)

    def allows(self, host: str, port: int) -> bool:
        host = host.lower()
        for pat_host, pat_port in self.patterns:
            if pat_port is not None and pat_port != port:
                continue
            if pat_host == host or fnmatch.fnmatchcase(host, pat_host):
                return True
        return False

    def describe(self) -> str:
        """What is allowed and which variable to change, in words."""
        if self.source == ALLOWED_HOSTS_ENV:
            return "%s=%s" % (ALLOWED_HOSTS_ENV, ",".join(_format(p) for p in self.patterns))
        if self.patterns:
            return "%s is unset, so only the host of %s (%s) is allowed" % (
                ALLOWED_HOSTS_ENV,
                TRACKING_URI_ENV,
                _format(self.patterns[0]),
            )
        return "%s is unset and %s has no http(s) host, so no host is allowed" % (
            ALLOWED_HOSTS_ENV,
            TRACKING_URI_ENV,
        )


def host_port_of(url: str) -> Tuple[str, int]:
    """``(host, port)`` of a URL, the port defaulted from the scheme; ``("", 0)`` if none."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    try:
        port = parts.port
    except ValueError:
        return host, -1
    if port is None:
        port = DEFAULT_PORTS.get(parts.scheme.lower(), 0)
    return host, port
