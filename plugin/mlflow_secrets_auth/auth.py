"""The ``requests`` auth adapter MLflow attaches to every tracking request.

Imported only when MLflow first asks for the auth (``requests`` is loaded by then). It is thin:
which header to send, and when to look at the source again, is the ``CredentialCache``'s business
(``cache.py``); this adapter decides where the header may go. Per request it does what a header
assignment costs: one attribute load of the cache's ``fresh`` header, one ``str.startswith``
against the tuple of ``scheme://netloc/`` prefixes already found allowed, the header assignment
and a hook append. When the cache has a poll due (or no credential), the slow path re-reads the
allowlist from the environment too (and before refusing a host), so ``mlflow.set_tracking_uri``
is honoured without a restart.

Safety rules, each with its own code path:

- the credential goes only to an allowed ``host:port`` (fail closed, one WARNING per refused
  host naming ``MLFLOW_SECRETS_ALLOWED_HOSTS``, never the value); malformed patterns allow
  nothing and are logged once;
- a credential whose header would frame or route the request, or whose value holds a control
  or non-Latin-1 character, is refused when it is loaded (``credentials._check_header``), so the
  hot path never checks it;
- each redirect hop first loses every header name a credential of this process has used, then
  gets the current value only if its target is allowed and the hop is no https -> http downgrade
  (``requests`` strips ``Authorization`` across hosts, but not a custom header, and keeps any
  header on a downgrade to an allowed host);
- on 401/403 the source is re-read once and, if it holds a different credential and the URL is
  still allowed, the same request object is updated in place and re-sent through the same adapter
  with the original ``verify``/``cert``/``timeout``/``proxies``; a redirect of that answer is
  guarded like any other hop (``requests`` copies that object for it, so no old value survives).
"""
from __future__ import annotations

import logging
import os
from typing import Callable, Optional, Set

from requests.auth import AuthBase

from .allowlist import (ALLOWED_HOSTS_ENV, HOW_TO_WRITE, TRACKING_URI_ENV, Allowlist,
                        host_port_of)
from .cache import CredentialCache
from .credentials import Credential

logger = logging.getLogger("mlflow_secrets_auth")

_REDIRECT_CODES = frozenset((301, 302, 303, 307, 308))
_RETRY_CODES = frozenset((401, 403))
_PREFIX_LIMIT = 16


def _env_allowlist_values(environ=os.environ):
    return environ.get(ALLOWED_HOSTS_ENV), environ.get(TRACKING_URI_ENV)


class SecretsAuth(AuthBase):
    """Sets the cache's header on requests to allowed hosts; see the module docstring."""

    def __init__(
        self,
        cache: CredentialCache,
        *,
        allowlist_values: Callable[[], tuple] = _env_allowlist_values,
    ) -> None:
        self.cache = cache
        self._allowlist_values = allowlist_values
        self._ok: tuple = ()  # "scheme://netloc/" prefixes found allowed (a str.startswith arg)
        self._warned_hosts: Set[str] = set()
        self._allow_key = None
        self._allowlist = Allowlist([], TRACKING_URI_ENV)
        self._hook = self._on_response
        self._sync_allowlist()

    # ---- hot path -------------------------------------------------------------------------
    def __call__(self, r):
        header = self.cache.fresh
        if header is None:
            self._sync_allowlist()
            header = self.cache.get()
            if header is None:
                return r
        if r.url.startswith(self._ok) or self._admit(r.url):
            name, value = header
            r.headers[name] = value
            r.hooks["response"].append(self._hook)
        return r

    # ---- allowlist ------------------------------------------------------------------------
    def _sync_allowlist(self) -> bool:
        key = self._allowlist_values()
        if key == self._allow_key:
            return False
        self._allow_key = key
        self._allowlist = Allowlist.from_values(*key)
        self._ok = ()
        self._warned_hosts = set()
        for pattern, reason in self._allowlist.invalid:
            logger.warning(
                "mlflow_secrets_auth: ignoring the allowed-host pattern %r in %s: %s. It allows "
                "no host; %s",
                pattern,
                ALLOWED_HOSTS_ENV,
                reason,
                HOW_TO_WRITE,
            )
        return True

    def allows_url(self, url: str) -> bool:
        host, port = host_port_of(url)
        return bool(host) and port > 0 and self._allowlist.allows(host, port)

    def _admit(self, url: str) -> bool:
        """Slow path for a URL whose ``scheme://netloc/`` is not yet known to be allowed."""
        self._sync_allowlist()
        i = url.find("/", url.find("//") + 2) if "//" in url else -1
        prefix = url[: i + 1] if i >= 0 else url + "/"
        if self.allows_url(prefix):
            known = self._ok if len(self._ok) < _PREFIX_LIMIT else ()
            self._ok = known + (prefix,)
            return True
        host, port = host_port_of(prefix)
        label = "%s:%s" % (host or "?", port)
        self._warn_once(
            label,
            "mlflow_secrets_auth: not sending the credential to %s: host not allowed (%s). "
            "To allow it, add it to %s",
            label,
            self._allowlist.describe(),
            ALLOWED_HOSTS_ENV,
        )
        return False

    def _warn_once(self, key: str, message: str, *args) -> None:
        """Log ``message`` the first time ``key`` (a host, a downgrade) comes up in this process."""
        if key not in self._warned_hosts:
            self._warned_hosts.add(key)
            logger.warning(message, *args)

    # ---- responses ------------------------------------------------------------------------
    # Every request that leaves with our credential goes through one of three doors: __call__
    # (the first send), _retry_after_refusal (the re-send) and _guard_redirect (each redirect
    # hop, which requests builds by copying the request it answers). The last two strip every
    # credential header we have ever set and add the current one only where __call__ would.
    def _on_response(self, r, **kwargs):
        code = r.status_code
        if code in _REDIRECT_CODES:
            self._guard_redirect(r)
        elif code in _RETRY_CODES:
            return self._retry_after_refusal(r, kwargs)
        return r

    def _strip(self, headers) -> None:
        for name in self.cache.names:
            if name in headers:  # requests' headers: case-insensitive
                del headers[name]

    def _guard_redirect(self, r) -> None:
        """Set up the request ``requests`` is about to copy for the redirect: the current
        credential if the target is allowed and the hop is no https -> http downgrade, else none."""
        location = r.headers.get("location")
        if not location:
            return
        from urllib.parse import urljoin

        try:
            location = location.encode("latin1").decode("utf8")
        except (UnicodeDecodeError, UnicodeEncodeError):
            pass
        target = urljoin(r.url, location)
        self._sync_allowlist()  # the policy as it is now, as for a first send
        downgrade = r.url[:6].lower() == "https:" and target[:5].lower() == "http:"
        allowed = not downgrade and self.allows_url(target)
        req = r.request
        carried = any(name in req.headers for name in self.cache.names)
        self._strip(req.headers)  # fail closed: whatever their values, they are ours
        header = self.cache.header
        if allowed:
            # The current value, never a stale one; and only on a hop that still carries the
            # credential: a chain that passed a host not allowed (or requests' own stripping of
            # Authorization) never gets it back, so such a host cannot aim it elsewhere.
            if carried and header is not None:
                req.headers[header[0]] = header[1]
            return
        host, port = host_port_of(target)
        label = "%s:%s" % (host or "?", port)
        if downgrade:
            self._warn_once(
                "downgrade " + label,
                "mlflow_secrets_auth: following a redirect from https to http (%s) without "
                "the credential: it would travel unencrypted. Point %s at the https URL",
                label,
                TRACKING_URI_ENV,
            )
            return
        self._warn_once(
            label,
            "mlflow_secrets_auth: following a redirect to %s without the credential: host not "
            "allowed (%s). To allow it, add it to %s",
            label,
            self._allowlist.describe(),
            ALLOWED_HOSTS_ENV,
        )

    def _retry_after_refusal(self, r, send_kwargs):
        req = r.request
        sent = self.cache.header
        if sent is None or req.headers.get(sent[0]) != sent[1]:
            return r  # we did not set the current credential on this request
        if getattr(req, "_mlflow_secrets_auth_retried", False):
            return r
        body = req.body
        if body is not None and not isinstance(body, (bytes, str)):
            return r  # a stream cannot be replayed
        self.cache.refresh(True)
        self._sync_allowlist()
        new = self.cache.header
        if new is None or new == sent:
            logger.debug("HTTP %s and the credential did not change; not re-sending", r.status_code)
            return r
        if not self.allows_url(req.url):  # the allowlist moved since the first send
            self._admit(req.url)  # logs why
            return r
        # Release the connection so the re-send can reuse it (as requests' HTTPDigestAuth does).
        r.content  # noqa: B018
        r.close()
        # The re-send is the same request object, updated in place: requests follows a redirect
        # of the answer by copying the request it passed to the adapter (this one), so no copy
        # with the old value survives to be sent on.
        req._mlflow_secrets_auth_retried = True
        self._strip(req.headers)
        req.headers[new[0]] = new[1]
        try:
            from requests.cookies import extract_cookies_to_jar

            extract_cookies_to_jar(req._cookies, req, r.raw)
            req.prepare_cookies(req._cookies)
        except Exception:  # cookies are a nicety here, never a reason to fail
            pass
        logger.info(
            "mlflow_secrets_auth: HTTP %s with a credential that has since rotated; re-sent once",
            r.status_code,
        )
        new_r = r.connection.send(req, **send_kwargs)
        new_r.history.append(r)
        new_r.request = req
        # requests dispatches no hooks for a response its adapter returned to a hook: guard the
        # re-send's redirect here, before requests copies the request for the next hop.
        if new_r.status_code in _REDIRECT_CODES:
            self._guard_redirect(new_r)
        return new_r

    # ---- introspection (CLI, tests) -------------------------------------------------------
    def current(self) -> Optional[Credential]:
        return self.cache.credential

    @property
    def allowlist(self) -> Allowlist:
        self._sync_allowlist()
        return self._allowlist
