"""Tenants cannot starve each other: a total deadline and a size cap on every provider call,
shown against a real trickling HTTP server on 127.0.0.1 through the real Vault client (hvac) and
the real OAuth2 token client, and a per-namespace share of the sync workers."""
from __future__ import annotations

import asyncio
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Optional

import pytest

from mlflow_secrets_auth_api.binding import OAuth2ClientCredentials
from mlflow_secrets_auth_operator import deadline, exchange, reconcile
from mlflow_secrets_auth_operator.identity import DEFAULT_FETCHERS
from mlflow_secrets_auth_operator.loop import NamespaceLimiter
from tests.e2e.waiting import wait_for
from tests.unit.api.examples import VALID
from tests.unit.operator.fakes import FakeKube, binding, context

STATUS_LINE = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"


class Trickle:
    """A server on 127.0.0.1 that answers one byte every ``every`` seconds, for at most
    ``longest`` seconds, and records when each client hung up. ``answering`` (if given) is
    called once, in the server's thread, when the first request has been read and the first
    ``answering_after`` bytes of its answer sent: the call is then surely in flight."""

    def __init__(self, answer: bytes, every: float = 0.1, longest: float = 30.0, tls=None,
                 answering: Optional[Callable[[], None]] = None, answering_after: int = 10):
        self.answer, self.every, self.longest, self.tls = answer, every, longest, tls
        self._answering, self._answering_after = answering, answering_after
        self.hung_up: list = []   # seconds after the request at which the client went away
        self.served: list = []    # seconds after the request at which the whole answer was sent
        self._sock = socket.create_server(("127.0.0.1", 0))
        scheme = "https" if tls else "http"
        self.url = f"{scheme}://127.0.0.1:{self._sock.getsockname()[1]}"
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        self._sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        if self.tls is not None:
            try:
                conn.settimeout(10)
                conn = self.tls.wrap_socket(conn, server_side=True)
            except OSError:
                return
        with conn:
            conn.recv(65536)
            started = time.monotonic()
            for i in range(len(self.answer)):
                if self._stop.is_set() or time.monotonic() - started > self.longest:
                    return
                try:
                    conn.sendall(self.answer[i:i + 1])
                except OSError:
                    self.hung_up.append(time.monotonic() - started)
                    return
                if i + 1 == self._answering_after and self._answering is not None:
                    answering, self._answering = self._answering, None
                    answering()
                time.sleep(self.every)
            self.served.append(time.monotonic() - started)

    def close(self):
        self._stop.set()
        self._sock.close()


@pytest.fixture
def trickle():
    servers = []

    def make(answer: bytes, **kwargs) -> Trickle:
        servers.append(Trickle(answer, **kwargs))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


@pytest.fixture
def expire_sync_deadline(monkeypatch):
    """A function that makes the deadline of the sync under way pass now.

    A sync's deadline counts from before its client is built (boto3 and azure build theirs in
    the sync, which takes a good part of a second, more on a loaded machine), so with a real
    timer of a second or two the deadline may pass before the request reaches the server, which
    then never sees a connection to cut. The tests that check the server sees the hang-up give
    the sync a deadline far past the server's ``longest`` and make it pass from the server's
    ``answering`` hook, when the request is surely in flight: exactly what the deadline's timer
    does (``Deadline.expire``), at a moment that does not depend on the machine's load. The
    timer itself is shown by the OAuth2 test below."""
    entered: list = []

    class Recorded(deadline.Deadline):
        def __enter__(self):
            entered.append(self)
            return super().__enter__()

    monkeypatch.setattr(deadline, "Deadline", Recorded)

    def expire() -> None:
        assert len(entered) == 1, entered
        entered[0].expire()

    return expire


# far past every Trickle's ``longest``: only ``expire_sync_deadline`` cuts these syncs
NEVER = 600.0


def _vault_binding(address: str) -> dict:
    spec = {**VALID["vault-token-bearer"]}
    spec["provider"] = {"vault": {**spec["provider"]["vault"], "address": address,
                                  "kvVersion": "2"}}
    return binding(spec)


def _vault_context(**settings):
    kube = FakeKube()
    kube.plain[("team-a", "vault-token")] = {"token": "s.vaulttoken"}
    return context(kube, dict(DEFAULT_FETCHERS), **settings)


def test_a_vault_that_trickles_its_answer_is_cut_at_the_deadline(trickle, expire_sync_deadline):
    """Each byte comes well within the 1 s read timeout; only the total deadline stops it."""
    server = trickle(STATUS_LINE + b"Content-Length: 40\r\n\r\n" + b"{" + b" " * 1000,
                     every=0.05, longest=20, answering=expire_sync_deadline)
    ctx = _vault_context(provider_timeout=1.0, provider_deadline=NEVER)
    outcome = reconcile.sync(_vault_binding(server.url), ctx)
    assert (outcome.reason, outcome.transient) == ("ProviderUnavailable", True)
    assert "DeadlineExceeded" in outcome.message
    # the operator hung up: the server could not finish its answer
    assert server.served == []
    wait_for(lambda: server.hung_up, 10, "the trickling server to see the connection cut")


def test_a_vault_answer_larger_than_the_cap_is_refused(trickle):
    body = b'{"data": {"data": {"token": "' + b"x" * 8192 + b'"}}}'
    server = trickle(STATUS_LINE + b"Content-Length: %d\r\n\r\n" % len(body) + body, every=0)
    ctx = _vault_context(max_answer_bytes=4096)
    outcome = reconcile.sync(_vault_binding(server.url), ctx)
    assert outcome.reason == "ProviderUnavailable" and "AnswerTooLarge" in outcome.message


def test_an_answer_without_a_length_is_cut_at_the_cap(trickle):
    body = b'{"data": {"data": {"token": "' + b"x" * 8192 + b'"}}}'
    server = trickle(STATUS_LINE + b"Connection: close\r\n\r\n" + body, every=0)
    ctx = _vault_context(max_answer_bytes=4096)
    outcome = reconcile.sync(_vault_binding(server.url), ctx)
    assert outcome.reason == "ProviderUnavailable" and "AnswerTooLarge" in outcome.message


def test_an_oauth2_issuer_that_trickles_is_cut_at_the_deadline(trickle):
    server = trickle(STATUS_LINE + b"Content-Length: 100\r\n\r\n" + b"{" * 1000, every=0.05,
                     longest=20)
    client = exchange.TokenClient(session_factory=lambda: deadline.session(1 << 20),
                                  timeout=(1.0, 1.0))
    cfg = OAuth2ClientCredentials(token_url=server.url + "/token")
    with pytest.raises(exchange.ProviderUnavailable, match="deadline"):
        with deadline.Deadline(1.5):
            client.mint(exchange.ClientCredentials("id", "client-secret-1"), cfg)


def test_a_deadline_that_has_passed_refuses_new_requests():
    d = deadline.Deadline(0.01)
    d.expired = True

    class Conn:
        sock = None

    with pytest.raises(deadline.DeadlineExceeded):
        d.track(Conn())


def test_one_namespace_cannot_hold_every_worker():
    """Four workers; namespace a has four syncs stuck on a slow manager; namespace b's sync
    still runs, because a holds at most its share (here 1)."""
    release = threading.Event()
    running = {"a": 0, "most_a": 0}
    lock = threading.Lock()

    def stuck():
        with lock:
            running["a"] += 1
            running["most_a"] = max(running["most_a"], running["a"])
        release.wait(10)
        with lock:
            running["a"] -= 1
        return "a"

    async def scenario():
        limiter = NamespaceLimiter(1)
        with ThreadPoolExecutor(max_workers=4) as pool:
            stuck_syncs = [asyncio.ensure_future(limiter.run("a", pool, stuck)) for _ in range(4)]
            try:
                done = await asyncio.wait_for(limiter.run("b", pool, lambda: "b"), timeout=5)
            finally:
                release.set()
            assert await asyncio.gather(*stuck_syncs) == ["a"] * 4
            return done, limiter

    done, limiter = asyncio.run(scenario())
    assert done == "b" and running["most_a"] == 1
    assert limiter._slots == {}


def test_an_aws_endpoint_that_trickles_is_cut_at_the_deadline(trickle, expire_sync_deadline):
    """The real boto3 client, its requests sent through the operator's HTTP (before-send)."""
    server = trickle(STATUS_LINE + b"Content-Length: 900\r\n\r\n" + b"{" * 1000, every=0.05,
                     longest=20, answering=expire_sync_deadline)
    spec = {"provider": {"awsSecretsManager": {
        "region": "eu-west-1", "secretId": "mlflow/token", "endpointUrl": server.url,
        "auth": {"staticKeys": {"secretRef": {"name": "aws-keys"}}}}},
        "credential": {"format": "plain"}}
    kube = FakeKube()
    kube.plain[("team-a", "aws-keys")] = {"AWS_ACCESS_KEY_ID": "AKIAEXAMPLE",
                                          "AWS_SECRET_ACCESS_KEY": "secret-key-1"}
    ctx = context(kube, dict(DEFAULT_FETCHERS), provider_timeout=1.0, provider_deadline=NEVER)
    outcome = reconcile.sync(binding(spec), ctx)
    assert (outcome.reason, outcome.transient) == ("ProviderUnavailable", True), outcome.message
    assert server.served == []
    # the operator hung up (had the server given up after ``longest``, no hang-up is recorded)
    wait_for(lambda: server.hung_up, 10, "the trickling server to see the connection cut")


def test_an_azure_key_vault_that_trickles_is_cut_at_the_deadline(trickle, tmp_path,
                                                                  expire_sync_deadline):
    """The real azure-keyvault client over TLS, its requests carried by the operator's HTTP."""
    import datetime as dt
    import ssl

    from mlflow_secrets_auth_webhook.tls import issue_ca, issue_serving_cert, utcnow

    now = utcnow()
    ca = issue_ca("trickle-ca", dt.timedelta(days=1), now)
    serving = issue_serving_cert(ca, ["127.0.0.1"], dt.timedelta(days=1), now)
    (tmp_path / "tls.crt").write_bytes(serving.cert_pem)
    (tmp_path / "tls.key").write_bytes(serving.key_pem)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")
    server = trickle(STATUS_LINE + b"Content-Length: 900\r\n\r\n" + b"{" * 1000, every=0.05,
                     longest=30, tls=tls, answering=expire_sync_deadline)
    spec = {"provider": {"azureKeyVault": {
        "vaultUrl": server.url, "secretName": "mlflow", "caCert": ca.cert_pem.decode(),
        "auth": {"clientSecret": {"tenantId": "t", "clientId": "c",
                                  "secretRef": {"name": "azure-sp", "key": "client-secret"}}}}},
        "credential": {"format": "plain"}}
    kube = FakeKube()
    kube.plain[("team-a", "azure-sp")] = {"client-secret": "client-secret-1"}
    ctx = context(kube, dict(DEFAULT_FETCHERS), provider_timeout=1.0, provider_deadline=NEVER)
    ctx.ca_dir = tmp_path / "ca"
    outcome = reconcile.sync(binding(spec), ctx)
    assert (outcome.reason, outcome.transient) == ("ProviderUnavailable", True), outcome.message
    assert server.served == []
    # the operator hung up (had the server given up after ``longest``, no hang-up is recorded)
    wait_for(lambda: server.hung_up, 10, "the trickling server to see the connection cut")
