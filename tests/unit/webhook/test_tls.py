"""Certificates and hot reload: a real uvicorn TLS server picks up new files without a restart."""
import asyncio
import datetime as dt
import socket
import ssl
import threading

import pytest

from mlflow_secrets_auth_webhook import Settings, create_app
from mlflow_secrets_auth_webhook.bindings import BindingSource
from mlflow_secrets_auth_webhook.certs import TLSState, plan
from mlflow_secrets_auth_webhook.server import build_server, serve
from mlflow_secrets_auth_webhook.tls import (fingerprint, issue_ca, issue_serving_cert, needs_renewal,
                                             utcnow, write_atomically)

NOW = dt.datetime(2025, 6, 1, tzinfo=dt.timezone.utc)


def pair(now=None, hosts=("127.0.0.1", "localhost")):
    now = now or utcnow()
    ca = issue_ca("test-ca", dt.timedelta(days=30), now)
    return ca, issue_serving_cert(ca, hosts, dt.timedelta(days=10), now)


def served_fingerprint(port, ca_pem):
    ctx = ssl.create_default_context(cadata=ca_pem.decode())
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        with ctx.wrap_socket(sock, server_hostname="127.0.0.1") as tls:
            der = tls.getpeercert(binary_form=True)
    return fingerprint(ssl.DER_cert_to_PEM_cert(der).encode())


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def running(tmp_path):
    ca, serving = pair()
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    write_atomically(cert, serving.cert_pem)
    write_atomically(key, serving.key_pem)
    settings = Settings(host="127.0.0.1", port=free_port())
    server, reloader = build_server(settings, create_app(settings, BindingSource(lambda ns: [])), str(cert), str(key))
    thread = threading.Thread(target=asyncio.run, args=(serve(server, reloader, 0.05),), daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        threading.Event().wait(0.05)
    assert server.started, "uvicorn did not start within 10 s"
    yield settings, ca, serving, cert, key, reloader
    server.should_exit = True
    thread.join(timeout=10)


def test_a_rotated_certificate_is_served_without_a_restart(running):
    settings, ca, serving, cert, key, reloader = running
    assert served_fingerprint(settings.port, ca.cert_pem) == fingerprint(serving.cert_pem)
    new_ca, new_serving = pair()
    write_atomically(key, new_serving.key_pem)
    write_atomically(cert, new_serving.cert_pem)
    for _ in range(200):
        if reloader.reloads:
            break
        threading.Event().wait(0.05)
    assert served_fingerprint(settings.port, new_ca.cert_pem) == fingerprint(new_serving.cert_pem)


def test_a_half_written_pair_keeps_the_old_certificate(running):
    settings, ca, serving, cert, key, reloader = running
    _, other = pair()
    write_atomically(cert, other.cert_pem)          # the key does not match yet
    assert reloader.check() is False
    assert served_fingerprint(settings.port, ca.cert_pem) == fingerprint(serving.cert_pem)


def test_renewal_is_due_in_the_last_third_of_the_lifetime():
    ca, serving = pair(NOW)
    assert not needs_renewal(serving.cert_pem, NOW + dt.timedelta(days=6))
    assert needs_renewal(serving.cert_pem, NOW + dt.timedelta(days=7))
    assert needs_renewal(b"not a cert", NOW)


def test_plan_creates_then_keeps_then_renews_the_serving_certificate():
    hosts = ["webhook", "webhook.ns.svc"]
    first = plan(None, hosts, NOW)
    assert first is not None and first.bundle == first.ca.cert_pem
    assert plan(first, hosts, NOW + dt.timedelta(days=1)) is None
    renewed = plan(first, hosts, NOW + dt.timedelta(days=80))
    assert renewed.ca == first.ca and renewed.serving != first.serving


def test_plan_keeps_the_previous_ca_in_the_bundle_after_a_ca_rotation():
    hosts = ["webhook"]
    first = plan(None, hosts, NOW)
    later = NOW + dt.timedelta(days=4 * 365)
    rotated = plan(first, hosts, later)
    assert rotated.ca != first.ca and rotated.previous_ca_pem == first.ca.cert_pem
    assert rotated.bundle == rotated.ca.cert_pem + first.ca.cert_pem
    assert TLSState.from_secret_data(rotated.to_secret_data()) == rotated


def test_plan_reissues_when_the_service_names_change():
    first = plan(None, ["old"], NOW)
    assert plan(first, ["new"], NOW).serving != first.serving
