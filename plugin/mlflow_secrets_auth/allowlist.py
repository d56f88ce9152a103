"""Which hosts may receive the credential (``MLFLOW_SECRETS_ALLOWED_HOSTS``).

Patterns are comma-separated and parsed strictly; each is one of

- a host name or IPv4 address, optionally a glob: letters, digits, ``.``, ``-``, ``_`` and the
  wildcards ``*`` (any run of characters, dots included) and ``?`` (one character), matched
  case-insensitively (``mlflow.example.com``, ``*.internal``, ``10.0.0.*``);
- a bracketed IPv6 address, matched exactly (``[fd00::1]``), never a glob;

either optionally followed by ``:port`` (1-65535), in which case the request's port (explicit, or
the scheme's default) must equal it; without a port any port matches. Anything else (a URL, a
``[`` that does not open an IPv6 address, a character class, an unknown port) is refused: it
allows no host, and ``Allowlist.invalid`` says why, for a log line (fail closed).

When the variable is unset or empty, only ``host:port`` of ``MLFLOW_TRACKING_URI`` is allowed,
matched literally; when that is unset too, nothing is.
"""
from __future__ import annotations

import fnmatch
import ipaddress
import re
from typing import List, Optional, Tuple
from urllib.parse import urlsplit

ALLOWED_HOSTS_ENV = "MLFLOW_SECRETS_ALLOWED_HOSTS"
TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"

DEFAULT_PORTS = {"http": 80, "https": 443}

#: (kind, host, port): kind "glob" (shell wildcards * and ?), "exact" (a literal host name) or
#: "ip6" (an IPv6 address in compressed form); port None matches any port.
Pattern = Tuple[str, str, Optional[int]]

_PATTERN = re.compile(
    r"(?:\[(?P<ip6>[0-9a-f:.]+)\]|(?P<glob>[a-z0-9_.*?-]+))(?::(?P<port>[0-9]{1,5}))?")

HOW_TO_WRITE = ("write a host name or glob (mlflow.example.com, *.internal), an IPv4 address, or "
                "a bracketed IPv6 address ([fd00::1]), each optionally with :port")


def _ip6(text: str) -> Optional[str]:
    try:
        return ipaddress.IPv6Address(text).compressed
    except ValueError:
        return None


def parse_pattern(text: str) -> Pattern:
    """One pattern; ``ValueError`` with the reason when it is not one of the documented forms."""
    raw = text.strip().lower()
    m = _PATTERN.fullmatch(raw)
    if m is None:
        if "://" in raw:
            raise ValueError("a URL is not a host pattern (write only its host, and :port if "
                             "needed)")
        if raw.startswith("["):
            raise ValueError("a pattern that starts with [ must be a bracketed IPv6 address, "
                             "optionally with :port, such as [fd00::1]:5000")
        if "[" in raw or "]" in raw:
            raise ValueError("character classes ([...]) are not supported; use * or ?")
        raise ValueError("only letters, digits, '.', '-', '_', '*' and '?' may form a host "
                         "pattern, with an optional :port")
    port = int(m.group("port")) if m.group("port") else None
    if port is not None and not 0 < port < 65536:
        raise ValueError("port %d is not between 1 and 65535" % port)
    if m.group("ip6") is not None:
        address = _ip6(m.group("ip6"))
        if address is None:
            raise ValueError("%s is not an IPv6 address" % m.group("ip6"))
        return "ip6", address, port
    return "glob", m.group("glob"), port


def parse_patterns(value: str) -> Tuple[List[Pattern], List[Tuple[str, str]]]:
    """The valid patterns, and ``(pattern, reason)`` for each refused one."""
    patterns: List[Pattern] = []
    invalid: List[Tuple[str, str]] = []
    for item in value.split(","):
        if not item.strip():
            continue
        try:
            patterns.append(parse_pattern(item))
        except ValueError as exc:
            invalid.append((item.strip(), str(exc)))
    return patterns, invalid


def literal_pattern(host: str, port: Optional[int]) -> Pattern:
    """A pattern that matches exactly this host (no wildcard in it is interpreted)."""
    host = host.lower()
    address = _ip6(host) if ":" in host else None
    return ("ip6", address, port) if address else ("exact", host, port)


def format_pattern(pattern: Pattern) -> str:
    kind, host, port = pattern
    if kind == "ip6":
        host = "[%s]" % host
    return host if port is None else "%s:%d" % (host, port)


class Allowlist:
    """An immutable set of patterns plus where they came from (for messages)."""

    __slots__ = ("patterns", "source", "invalid")

    def __init__(self, patterns: List[Pattern], source: str,
                 invalid: Optional[List[Tuple[str, str]]] = None) -> None:
        self.patterns = patterns
        self.source = source
        self.invalid = invalid or []  # (pattern, reason) for each refused pattern

    @classmethod
    def from_values(cls, allowed_hosts: Optional[str], tracking_uri: Optional[str]) -> "Allowlist":
        if allowed_hosts and allowed_hosts.strip():
            # Set but all invalid still means "nothing", never a fall back to the tracking URI.
            patterns, invalid = parse_patterns(allowed_hosts)
            return cls(patterns, ALLOWED_HOSTS_ENV, invalid)
        if tracking_uri and "://" in tracking_uri:
            try:
                parts = urlsplit(tracking_uri)
                host = (parts.hostname or "").lower()
                port = parts.port
            except ValueError:
                return cls([], TRACKING_URI_ENV)
            if host and parts.scheme.lower() in DEFAULT_PORTS:
                port = port or DEFAULT_PORTS[parts.scheme.lower()]
                return cls([literal_pattern(host, port)], TRACKING_URI_ENV)
        return cls([], TRACKING_URI_ENV)

    def allows(self, host: str, port: int) -> bool:
        if not host or port <= 0:
            return False
        host = host.lower()
        address = _ip6(host) if ":" in host else None
        for kind, pat_host, pat_port in self.patterns:
            if pat_port is not None and pat_port != port:
                continue
            if kind == "ip6":
                if address == pat_host:
                    return True
            elif pat_host == host or (kind == "glob" and fnmatch.fnmatchcase(host, pat_host)):
                return True
        return False

    def describe(self) -> str:
        """What is allowed and which variable to change, in words."""
        if self.source == ALLOWED_HOSTS_ENV:
            text = "%s=%s" % (ALLOWED_HOSTS_ENV, ",".join(format_pattern(p) for p in self.patterns))
            if self.invalid:
                text += " (ignored as malformed: %s)" % ", ".join(p for p, _ in self.invalid)
            return text
        if self.patterns:
            return "%s is unset, so only the host of %s (%s) is allowed" % (
                ALLOWED_HOSTS_ENV,
                TRACKING_URI_ENV,
                format_pattern(self.patterns[0]),
            )
        return "%s is unset and %s has no http(s) host, so no host is allowed" % (
            ALLOWED_HOSTS_ENV,
            TRACKING_URI_ENV,
        )


def host_port_of(url: str) -> Tuple[str, int]:
    """``(host, port)`` of a URL, the port defaulted from the scheme; ``("", 0)`` if none."""
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
    except ValueError:  # e.g. an unbalanced [ in the netloc
        return "", 0
    try:
        port = parts.port
    except ValueError:
        return host, -1
    if port is None:
        port = DEFAULT_PORTS.get(parts.scheme.lower(), 0)
    return host, port
