"""A total deadline and a size cap for the operator's HTTP calls to secret managers and issuers.

A socket timeout bounds each read, not the call: a server that answers one byte every half
second never trips a 1 s read timeout and holds a worker for as long as it likes. So every sync
runs its provider calls inside a :class:`Deadline`; each HTTP request made through a session from
:func:`session` registers its connection with the current deadline, and when the deadline passes
those connections are shut down, so a blocked read returns at once and the call fails with
:class:`DeadlineExceeded` (a ``requests`` ConnectionError: providers report it as
ProviderUnavailable, which is retried with backoff). Answers larger than the cap are cut and fail
with :class:`AnswerTooLarge`.

Built on urllib3's public extension points (connection and pool classes) and requests' adapter.
"""
from __future__ import annotations

import socket
import threading
import time
from typing import Callable, Optional

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

CHUNK = 64 * 1024
_current = threading.local()


class DeadlineExceeded(requests.exceptions.ConnectionError):
    """The call ran past its total deadline and its connections were cut."""


class AnswerTooLarge(requests.exceptions.ConnectionError):
    """The answer was larger than the cap; it was not read further."""


class Deadline:
    """A total time budget for the HTTP calls made in this thread while it is entered."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic):
        self.seconds = seconds
        self._clock = clock
        self._connections: list = []
        self._lock = threading.Lock()
        self._timer: Optional[threading.Timer] = None
        self.expired = False

    def __enter__(self) -> "Deadline":
        self._outer = getattr(_current, "deadline", None)
        _current.deadline = self
        self._timer = threading.Timer(self.seconds, self.expire)
        self._timer.daemon = True
        self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._timer is not None:
            self._timer.cancel()
        _current.deadline = self._outer
        with self._lock:
            self._connections.clear()

    def track(self, connection) -> None:
        """Cut ``connection`` when the deadline passes (at once if it already has)."""
        with self._lock:
            if not self.expired:
                self._connections.append(connection)
                return
        _cut(connection)
        raise DeadlineExceeded(f"the call ran past its deadline of {self.seconds:g}s")

    def expire(self) -> None:
        with self._lock:
            self.expired = True
            connections, self._connections = self._connections, []
        for connection in connections:
            _cut(connection)


def current() -> Optional[Deadline]:
    return getattr(_current, "deadline", None)


def _cut(connection) -> None:
    sock = getattr(connection, "sock", None)
    if sock is None:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)  # wakes a recv blocked in another thread
    except OSError:
        pass


class _Tracked:
    def request(self, *args, **kwargs):
        deadline = current()
        if deadline is not None:
            deadline.track(self)
        return super().request(*args, **kwargs)


class _HTTPConnection(_Tracked, HTTPConnection):
    pass


class _HTTPSConnection(_Tracked, HTTPSConnection):
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


POOLS = {"http": _HTTPPool, "https": _HTTPSPool}


class DeadlineAdapter(HTTPAdapter):
    """requests' adapter with connections the current :class:`Deadline` can cut, and a cap on
    the size of every answer read through it."""

    def __init__(self, max_bytes: int, **kwargs):
        self.max_bytes = max_bytes
        super().__init__(**kwargs)

    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(POOLS)

    def proxy_manager_for(self, proxy, **kwargs):
        manager = super().proxy_manager_for(proxy, **kwargs)
        manager.pool_classes_by_scheme = dict(POOLS)
        return manager

    def send(self, request, stream=False, **kwargs):
        """Send and read the whole answer (even when the caller asked to stream: the answers
        of secret managers and issuers are small, and only a whole read can be capped and
        checked against the deadline). A cut connection may look like an answer that simply
        ended, so once the deadline has passed no answer is returned, whole or not."""
        deadline = current()
        try:
            response = super().send(request, stream=True, **kwargs)
            self._read_capped(response)
        except (DeadlineExceeded, AnswerTooLarge):
            raise
        except Exception:
            if deadline is not None and deadline.expired:
                raise self._late(request, deadline) from None
            raise
        if deadline is not None and deadline.expired:
            raise self._late(request, deadline)
        return response

    @staticmethod
    def _late(request, deadline: Deadline) -> DeadlineExceeded:
        return DeadlineExceeded(f"the call to {_origin(request.url)} ran past its deadline of "
                                f"{deadline.seconds:g}s")

    def _read_capped(self, response) -> None:
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            response.close()
            raise AnswerTooLarge(f"the answer of {_origin(response.url)} declares "
                                 f"{declared} bytes, more than the cap of {self.max_bytes}")
        body = bytearray()
        for chunk in response.iter_content(CHUNK):
            body += chunk
            if len(body) > self.max_bytes:
                response.close()
                raise AnswerTooLarge(f"the answer of {_origin(response.url)} is larger than the "
                                     f"cap of {self.max_bytes} bytes")
        # what requests itself does when it reads a response that was not streamed
        response._content = bytes(body)
        response._content_consumed = True


def _origin(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url or "")
    return f"{parts.scheme}://{parts.netloc}" if parts.netloc else "the server"


def session(max_bytes: int) -> requests.Session:
    """A requests.Session whose calls obey the current :class:`Deadline` and ``max_bytes``."""
    s = requests.Session()
    adapter = DeadlineAdapter(max_bytes)
    s.mount("http://", adapter)
    s.mount("https://", adapter)
    return s


_threads = threading.local()


def thread_session(max_bytes: int) -> requests.Session:
    """One :func:`session` per worker thread, so calls reuse their connections."""
    cached = getattr(_threads, "session", None)
    if cached is None or getattr(_threads, "max_bytes", None) != max_bytes:
        cached = _threads.session = session(max_bytes)
        _threads.max_bytes = max_bytes
    return cached


class _Body:
    """What botocore reads an answer from (``raw.stream()``)."""

    def __init__(self, content: bytes):
        self._content = content

    def stream(self, **_):
        yield self._content


def botocore_send(max_bytes: int, timeout: float, verify=True):
    """A botocore ``before-send`` handler: the request goes out through :func:`thread_session`
    (so it obeys the current :class:`Deadline` and the cap) instead of botocore's own HTTP."""

    def send(request, **_):
        from botocore.awsrequest import AWSResponse
        from botocore.exceptions import EndpointConnectionError

        try:
            resp = thread_session(max_bytes).request(
                request.method, request.url, headers=dict(request.headers.items()),
                data=request.body, timeout=(timeout, timeout), verify=verify,
                allow_redirects=False)
        except requests.exceptions.RequestException as exc:
            raise EndpointConnectionError(endpoint_url=f"{_origin(request.url)} "
                                          f"({type(exc).__name__})") from None
        return AWSResponse(request.url, resp.status_code, resp.headers, _Body(resp.content))

    return send
