"""Helpers for the plugin's unit tests: local HTTP servers that record what they receive."""
from __future__ import annotations

import http.server
import logging
import threading
from typing import Callable, List, Optional

import pytest

import mlflow_secrets_auth
from mlflow_secrets_auth.credentials import basic_value


class Recorder(http.server.ThreadingHTTPServer):
    """An HTTP server on 127.0.0.1 whose handler is a function of the request."""

    daemon_threads = True
    block_on_close = False

    def handle_error(self, request, client_address):  # a client that gave up (timeout tests)
        pass

    def __init__(self, respond: Callable, ssl_context=None) -> None:
        self.requests: List[dict] = []
        self.respond = respond
        super().__init__(("127.0.0.1", 0), _Handler)
        if ssl_context is not None:
            self.socket = ssl_context.wrap_socket(self.socket, server_side=True)
        self.thread = threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return self.server_address[1]

    def url(self, host: str = "127.0.0.1", scheme: str = "http") -> str:
        return "%s://%s:%d" % (scheme, host, self.port)

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        seen = {"method": self.command, "target": self.path, "headers": dict(self.headers),
                "body": body}
        self.server.requests.append(seen)
        status, headers, payload = self.server.respond(seen, len(self.server.requests))
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = _handle

    def log_message(self, *args) -> None:  # keep test output quiet
        pass


@pytest.fixture
def serve():
    servers: List[Recorder] = []

    def start(respond: Optional[Callable] = None, ssl_context=None) -> Recorder:
        srv = Recorder(respond or (lambda req, n: (200, {}, b"{}")), ssl_context)
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.stop()


TOKEN = "s3cr3t-token-VALUE"
PASSWORD = "hunter2-PASSWORD"
CUSTOM = "custom-header-SECRET"
SECRETS = (TOKEN, PASSWORD, CUSTOM, basic_value("alice", PASSWORD).split(" ")[1])


@pytest.fixture(autouse=True)
def _no_secret_in_logs(caplog):
    """Every plugin test runs with DEBUG logs captured and fails if a secret shows up in them."""
    caplog.set_level(logging.DEBUG, logger="mlflow_secrets_auth")
    yield
    for secret in SECRETS:
        assert secret not in caplog.text, "a secret value leaked into the logs"


@pytest.fixture(autouse=True)
def _fresh_shared_auth(monkeypatch):
    """Each test builds MLflow's shared auth object from its own environment: the plugin keeps
    one per process (``mlflow_secrets_auth._auth``) and each provider instance MLflow registered
    caches it in its ``get_auth``."""
    from mlflow.tracking.request_auth.registry import _request_auth_provider_registry

    monkeypatch.setattr(mlflow_secrets_auth, "_auth", None)
    yield
    for provider in _request_auth_provider_registry._registry:
        if isinstance(provider, mlflow_secrets_auth.SecretsAuthProvider):
            provider.__dict__.pop("get_auth", None)


def make_tls_files(directory):
    """A self-signed certificate for 127.0.0.1 (cert.pem doubles as the CA bundle)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path = directory / "cert.pem"
    key_path = directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return str(cert_path), str(key_path)
