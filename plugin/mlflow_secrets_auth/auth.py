"""The ``requests`` auth object MLflow attaches to every tracking request.

Imported only when MLflow first asks for the auth (``requests`` is loaded by then). Per request
it does what a header assignment costs: one attribute test, one ``str.startswith`` against the tuple
of ``scheme://netloc/`` prefixes already found allowed, the header assignment and a hook
append. No clock is read per request (``clock_gettime`` is a syscall on some hosts): after
each poll a one-shot timer raises the "due" flag ``check_interval`` seconds later, and the next
request polls the source (a ``readlink`` of ``..data``). The allowlist is re-read from the
environment at the same moments (and before refusing a host), so ``mlflow.set_tracking_uri``
is honoured without a restart. A forked child polls on its first request (the parent's timer
thread does not survive a fork).

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
import threading
import time
import weakref
from typing import Callable, Optional, Set

from requests.auth import AuthBase

from .allowlist import (ALLOWED_HOSTS_ENV, HOW_TO_WRITE, TRACKING_URI_ENV, Allowlist,
                        host_port_of)
from .credentials import Credential, CredentialError
from .rfc3339 import rfc3339
from .sources import UNCHANGED

logger = logging.getLogger("mlflow_secrets_auth")

_REDIRECT_CODES = frozenset((301, 302, 303, 307, 308))
_RETRY_CODES = frozenset((401, 403))
_PREFIX_LIMIT = 16


def _env_allowlist_values(environ=os.environ):
    return environ.get(ALLOWED_HOSTS_ENV), environ.get(TRACKING_URI_ENV)


def _start_timer(delay: float, callback: Callable[[], None]) -> None:
    timer = threading.Timer(delay, callback)
    timer.daemon = True
    timer.start()


_INSTANCES: "weakref.WeakSet" = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for auth in list(_INSTANCES):
        auth._timer_pending = False
        auth._mark_due()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class SecretsAuth(AuthBase):
    """Sets the credential's header on requests to allowed hosts; see the module docstring."""

    def __init__(
        self,
        source,
        *,
        allowlist_values: Callable[[], tuple] = _env_allowlist_values,
        check_interval: float = 0.5,
        schedule: Callable[[float, Callable[[], None]], None] = _start_timer,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._source = source
        self._allowlist_values = allowlist_values
        self._interval = check_interval
        self._schedule = schedule
        self._wall = wall_clock
        self._due = True
        # The header for the hot path: None whenever a poll is due or there is no credential,
        # so __call__ tests one attribute (the slow path sorts out which case it is).
        self._fast: Optional[tuple] = None
        self._timer_pending = False
        self._lock = threading.Lock()
        self._cred: Optional[Credential] = None
        # (name, value) read by __call__ in one attribute load, so a concurrent swap is atomic
        self._header: Optional[tuple] = None
        # Every header name a credential of this process has used: a redirect or a re-send
        # removes all of them, so a name that rotated away cannot travel with its old value.
        self._names: tuple = ()
        self._ok: tuple = ()  # "scheme://netloc/" prefixes found allowed (a str.startswith arg)
        self._warned_hosts: Set[str] = set()
        self._warned_errors: Set[str] = set()
        self._expiry_warned_for: Optional[float] = None
        self._allow_key = None
        self._allowlist = Allowlist([], TRACKING_URI_ENV)
        self._hook = self._on_response
        self._sync_allowlist()
        _INSTANCES.add(self)

    # ---- hot path -------------------------------------------------------------------------
    def __call__(self, r):
        header = self._fast
        if header is None:
            header = self._slow_header()
            if header is None:
                return r
        if r.url.startswith(self._ok) or self._admit(r.url):
            name, value = header
            r.headers[name] = value
            r.hooks["response"].append(self._hook)
        return r

    def _slow_header(self) -> Optional[tuple]:
        if self._due:
            self._refresh(False)
        header = self._header
        if header is None:
            # No credential yet: wait for a thread that may be loading it, then use what it got.
            with self._lock:
                header = self._header
        return header

    # ---- credential -----------------------------------------------------------------------
    def _refresh(self, force: bool) -> bool:
        """Poll the source; True when the credential changed. Never raises."""
        if not self._lock.acquire(blocking=force):
            return False  # another thread is polling; keep using the current credential
        try:
            self._due = self._interval <= 0  # an interval of 0 polls on every request
            if not self._due and not self._timer_pending:
                self._timer_pending = True
                try:
                    self._schedule(self._interval, self._mark_due)
                except RuntimeError:  # no new threads (interpreter shutting down): poll next time
                    self._timer_pending = False
                    self._due = True
            self._sync_allowlist()
            try:
                result = self._source.poll(force)
            except CredentialError as exc:
                self._warn_error(str(exc))
                return False
            except Exception as exc:  # a provider outage: keep the last good credential
                self._warn_error(
                    "could not read the credential from %s (%s); keeping the last good one"
                    % (self._source.describe(), exc.__class__.__name__)
                )
                return False
            changed = False
            if result is not UNCHANGED:
                self._warned_errors.clear()
                changed = not result.same_header(self._cred)
                self._cred = result
                if result.header_name not in self._names:
                    self._names = self._names + (result.header_name,)
                self._header = (result.header_name, result.header_value)
                if changed:
                    logger.debug("credential loaded from %s", self._source.describe())
            self._check_expiry()
            return changed
        finally:
            self._fast = None if self._due else self._header
            self._lock.release()

    def _mark_due(self) -> None:
        self._timer_pending = False
        self._due = True
        self._fast = None

    def _warn_error(self, message: str) -> None:
        if message not in self._warned_errors:
            self._warned_errors.add(message)
            logger.warning("mlflow_secrets_auth: %s", message)

    def _check_expiry(self) -> None:
        cred = self._cred
        if cred is None or cred.expires_at is None:
            return
        if self._wall() >= cred.expires_at and self._expiry_warned_for != cred.expires_at:
            self._expiry_warned_for = cred.expires_at
            logger.warning(
                "mlflow_secrets_auth: the credential from %s expired at %s and has not been "
                "rotated; requests will likely be refused. Check the MlflowAuthBinding's status "
                "(kubectl get mab) or the secret manager",
                self._source.describe(),
                rfc3339(cred.expires_at),
            )

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
        for name in self._names:
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
        carried = any(name in req.headers for name in self._names)
        self._strip(req.headers)  # fail closed: whatever their values, they are ours
        header = self._header
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
        sent = self._header
        if sent is None or req.headers.get(sent[0]) != sent[1]:
            return r  # we did not set the current credential on this request
        if getattr(req, "_mlflow_secrets_auth_retried", False):
            return r
        body = req.body
        if body is not None and not isinstance(body, (bytes, str)):
            return r  # a stream cannot be replayed
        self._refresh(True)
        new = self._header
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
        return self._cred

    @property
    def allowlist(self) -> Allowlist:
        self._sync_allowlist()
        return self._allowlist
