"""The OAuth2 client-credentials exchange against a local token endpoint (http.server)."""
from __future__ import annotations

import base64
import json
import logging
import threading
import time
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote

import pytest

from mlflow_secrets_auth_api.binding import OAuth2ClientCredentials
from mlflow_secrets_auth_operator import builders
from mlflow_secrets_auth_operator import exchange as ex

SECRET = "s3cr3t-Client-Value-7f"
TOKEN = "eyJhbGciOiJub25lIn0.eyJleHAiOjE3MDAwMDAwMDB9.c2lnbmF0dXJlLXRva2Vu"
NOW = datetime(2025, 1, 1, 12, 0, 0, tzinfo=timezone.utc)


def jwt(claims: dict) -> str:
    enc = lambda d: base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()  # noqa: E731
    return f"{enc({'alg': 'RS256'})}.{enc(claims)}.c2ln"


class TokenServer:
    """A scripted token endpoint: ``answers`` maps a path to (status, body, delay seconds)."""

    def __init__(self):
        self.requests: list = []
        self.answers: dict = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode() if length else ""
                server.requests.append({"method": self.command, "path": self.path,
                                        "headers": dict(self.headers), "form": parse_qs(body)})
                status, payload, delay = server.answers.get(self.path, (404, b"{}", 0))
                if delay:
                    time.sleep(delay)
                if isinstance(payload, (dict, list)):
                    payload = json.dumps(payload).encode()
                self.send_response(status)
                if status in (301, 302, 307):
                    self.send_header("Location", server.url + "/elsewhere")
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = _answer

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def token(self, status=200, body=None, delay=0.0, path="/token"):
        if body is None:
            body = {"access_token": TOKEN, "token_type": "Bearer", "expires_in": 300}
        self.answers[path] = (status, body, delay)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    srv = TokenServer()
    yield srv
    srv.close()


@pytest.fixture
def client():
    c = ex.TokenClient(clock=lambda: NOW, timeout=(2.0, 2.0))
    yield c
    c.close()


CREDS = ex.ClientCredentials("mlflow-ci", SECRET)


def cfg(**kw) -> OAuth2ClientCredentials:
    return OAuth2ClientCredentials(**kw)


# --- client authentication ----------------------------------------------------------------------
def test_client_secret_basic_sends_the_client_in_the_authorization_header_only(server, client):
    server.token()
    client.mint(CREDS, cfg(token_url=server.url + "/token"))
    req = server.requests[-1]
    scheme, value = req["headers"]["Authorization"].split(" ", 1)
    assert scheme == "Basic"
    assert base64.b64decode(value).decode() == f"mlflow-ci:{SECRET}"
    assert req["form"] == {"grant_type": ["client_credentials"]}


def test_client_secret_basic_form_urlencodes_id_and_secret_before_base64(server, client):
    server.token()
    odd = ex.ClientCredentials("my client", "p@ss:w/rd+%")
    client.mint(odd, cfg(token_url=server.url + "/token"))
    value = server.requests[-1]["headers"]["Authorization"].split(" ", 1)[1]
    user, _, password = base64.b64decode(value).decode().partition(":")
    assert (unquote(user), unquote(password)) == ("my client", "p@ss:w/rd+%")
    assert ":" not in password


def test_client_secret_post_sends_the_client_in_the_form_only(server, client):
    server.token()
    client.mint(CREDS, cfg(token_url=server.url + "/token", client_auth_method="client_secret_post"))
    req = server.requests[-1]
    assert "Authorization" not in req["headers"]
    assert req["form"]["client_id"] == ["mlflow-ci"]
    assert req["form"]["client_secret"] == [SECRET]
    assert req["form"]["grant_type"] == ["client_credentials"]


def test_scope_and_audience_are_sent_when_configured(server, client):
    server.token()
    client.mint(CREDS, cfg(token_url=server.url + "/token", scope="mlflow profile",
                           audience="mlflow-api"))
    form = server.requests[-1]["form"]
    assert form["scope"] == ["mlflow profile"]
    assert form["audience"] == ["mlflow-api"]


# --- discovery ----------------------------------------------------------------------------------
def test_token_endpoint_is_discovered_from_the_issuer_once_and_cached(server, client):
    issuer = server.url + "/realms/ml"
    server.answers["/realms/ml/.well-known/openid-configuration"] = (
        200, {"issuer": issuer, "token_endpoint": server.url + "/realms/ml/token"}, 0)
    server.token(path="/realms/ml/token")
    for _ in range(3):
        token = client.mint(CREDS, cfg(issuer_url=issuer + "/"))
        assert token.access_token == TOKEN
    paths = [r["path"] for r in server.requests]
    assert paths.count("/realms/ml/.well-known/openid-configuration") == 1
    assert paths.count("/realms/ml/token") == 3


def test_discovery_is_repeated_after_its_cache_lifetime(server):
    now = [NOW]
    client = ex.TokenClient(clock=lambda: now[0], discovery_ttl=timedelta(minutes=10))
    issuer = server.url + "/realms/ml"
    server.answers["/realms/ml/.well-known/openid-configuration"] = (
        200, {"issuer": issuer, "token_endpoint": server.url + "/token"}, 0)
    server.token()
    client.mint(CREDS, cfg(issuer_url=issuer))
    now[0] = NOW + timedelta(minutes=11)
    client.mint(CREDS, cfg(issuer_url=issuer))
    paths = [r["path"] for r in server.requests]
    assert paths.count("/realms/ml/.well-known/openid-configuration") == 2


def test_discovery_naming_another_issuer_is_refused(server, client):
    server.answers["/realms/ml/.well-known/openid-configuration"] = (
        200, {"issuer": "https://evil.example/realms/ml", "token_endpoint": server.url + "/token"}, 0)
    with pytest.raises(ex.InvalidExchangeConfig, match="issuerUrl"):
        client.mint(CREDS, cfg(issuer_url=server.url + "/realms/ml"))
    assert not any(r["path"] == "/token" for r in server.requests)


def test_a_wrong_issuer_url_says_which_field_to_fix(server, client):
    with pytest.raises(ex.InvalidExchangeConfig, match=r"HTTP 404.*issuerUrl"):
        client.mint(CREDS, cfg(issuer_url=server.url + "/realms/nope"))


def test_a_binding_without_token_url_or_issuer_url_cannot_mint(client):
    with pytest.raises(ex.InvalidExchangeConfig, match="tokenUrl or issuerUrl"):
        client.mint(CREDS, OAuth2ClientCredentials.model_construct())  # the model refuses it too


# --- expiry -------------------------------------------------------------------------------------
def test_expiry_is_the_request_time_plus_expires_in(server, client):
    server.token(body={"access_token": TOKEN, "token_type": "bearer", "expires_in": 90})
    token = client.mint(CREDS, cfg(token_url=server.url + "/token"))
    assert token.issued_at == NOW
    assert token.expires_at == NOW + timedelta(seconds=90)
    assert token.lifetime == timedelta(seconds=90)


def test_expiry_falls_back_to_the_jwt_exp_claim_without_expires_in(server, client):
    exp = int((NOW + timedelta(minutes=3)).timestamp())
    server.token(body={"access_token": jwt({"exp": exp, "sub": "x"}), "token_type": "Bearer"})
    token = client.mint(CREDS, cfg(token_url=server.url + "/token"))
    assert token.expires_at == datetime.fromtimestamp(exp, timezone.utc)


def test_an_opaque_token_without_expires_in_has_no_known_expiry(server, client):
    server.token(body={"access_token": "opaque-token-value", "token_type": "Bearer"})
    token = client.mint(CREDS, cfg(token_url=server.url + "/token"))
    assert token.expires_at is None
    assert builders.refresh_time(token.issued_at, token.expires_at) is None


# --- error classification -----------------------------------------------------------------------
@pytest.mark.parametrize("status,code", [(401, "invalid_client"), (400, "invalid_client"),
                                         (400, "unauthorized_client")])
def test_a_rejected_client_is_authentication_failed_with_what_to_check(server, client, status, code):
    server.token(status, {"error": code, "error_description": "Invalid client credentials"})
    with pytest.raises(ex.AuthenticationFailed) as err:
        client.mint(CREDS, cfg(token_url=server.url + "/token"))
    assert err.value.reason == "AuthenticationFailed"
    assert not err.value.transient
    assert "mlflow-ci" in err.value.message
    assert "secret manager" in err.value.message and "enabled" in err.value.message


def test_a_refused_scope_is_token_request_rejected_naming_the_field(server, client):
    server.token(400, {"error": "invalid_scope"})
    with pytest.raises(ex.TokenRequestRejected, match=r"oauth2ClientCredentials\.scope"):
        client.mint(CREDS, cfg(token_url=server.url + "/token", scope="admin"))


@pytest.mark.parametrize("status", [500, 502, 503, 429])
def test_server_errors_are_provider_unavailable_and_transient(server, client, status):
    server.token(status, b"<html>down</html>")
    with pytest.raises(ex.ProviderUnavailable) as err:
        client.mint(CREDS, cfg(token_url=server.url + "/token"))
    assert err.value.transient and err.value.reason == "ProviderUnavailable"


def test_a_closed_port_is_provider_unavailable(client):
    srv = TokenServer()
    url = srv.url + "/token"
    srv.close()
    with pytest.raises(ex.ProviderUnavailable, match="failed"):
        client.mint(CREDS, cfg(token_url=url))


def test_a_slow_token_endpoint_times_out_as_provider_unavailable(server):
    client = ex.TokenClient(clock=lambda: NOW, timeout=(1.0, 0.5))
    server.token(delay=2.0)  # answered after 2 s: a success but for the 0.5 s read timeout
    with pytest.raises(ex.ProviderUnavailable, match="timed out"):
        client.mint(CREDS, cfg(token_url=server.url + "/token"))


@pytest.mark.parametrize("body,match", [
    (b"<html>login</html>", "without a JSON object"),
    ({"token_type": "Bearer", "expires_in": 60}, "without an access_token"),
    ({"access_token": TOKEN, "token_type": "mac", "expires_in": 60}, "not Bearer"),
    ({"access_token": TOKEN, "token_type": "Bearer", "expires_in": "soon"}, "non-numeric"),
    ({"access_token": TOKEN, "token_type": "Bearer", "expires_in": 0}, "positive"),
    ({"access_token": "abc\r\nX-Evil: 1", "token_type": "Bearer"}, "line breaks"),
])
def test_a_malformed_answer_is_invalid_token_response(server, client, body, match):
    server.token(200, body)
    with pytest.raises(ex.InvalidTokenResponse, match=match) as err:
        client.mint(CREDS, cfg(token_url=server.url + "/token"))
    assert err.value.reason == "InvalidTokenResponse"


def test_a_redirect_is_not_followed_with_the_client_secret(server, client):
    server.token(302, b"")
    with pytest.raises(ex.InvalidExchangeConfig, match="redirect"):
        client.mint(CREDS, cfg(token_url=server.url + "/token"))
    assert [r["path"] for r in server.requests] == ["/token"]


def test_missing_client_fields_in_the_secret_name_the_keys_to_set():
    conf = cfg(token_url="http://x/token", client_id_key="id", client_secret_key="secret")
    with pytest.raises(ex.InvalidExchangeConfig) as err:
        ex.client_credentials_from({"id": "a", "other": SECRET}, conf, "vault secret/mlflow")
    assert "'secret'" in err.value.message and "vault secret/mlflow" in err.value.message
    assert SECRET not in err.value.message
    assert ex.client_credentials_from({"id": " a ", "secret": SECRET}, conf) == \
        ex.ClientCredentials("a", SECRET)


# --- secrets stay secret ------------------------------------------------------------------------
def test_neither_the_secret_nor_the_token_reach_logs_errors_or_repr(server, client, caplog):
    caplog.set_level(logging.DEBUG)
    server.token()
    token = client.mint(CREDS, cfg(token_url=server.url + "/token"))
    server.token(401, {"error": "invalid_client", "error_description": f"bad secret {SECRET}"})
    with pytest.raises(ex.AuthenticationFailed) as err:
        client.mint(CREDS, cfg(token_url=server.url + "/token", client_auth_method="client_secret_post"))
    server.token(200, {"access_token": TOKEN, "token_type": TOKEN})
    with pytest.raises(ex.InvalidTokenResponse) as err2:
        client.mint(CREDS, cfg(token_url=server.url + "/token"))
    text = "\n".join([caplog.text, repr(token), repr(CREDS), str(err.value), str(err2.value)]
                     + [repr(r.__dict__) for r in caplog.records])
    assert "minted access token" in caplog.text
    for secret in (SECRET, TOKEN, base64.b64encode(f"mlflow-ci:{SECRET}".encode()).decode()):
        assert secret not in text


# --- TLS ----------------------------------------------------------------------------------------
def _ca_and_server_cert(tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    import ipaddress

    def name(cn):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    start = datetime.now(timezone.utc) - timedelta(minutes=1)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("test ca")).issuer_name(name("test ca"))
          .public_key(ca_key.public_key()).serial_number(1).not_valid_before(start)
          .not_valid_after(start + timedelta(hours=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(name("127.0.0.1")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(2).not_valid_before(start)
            .not_valid_after(start + timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = lambda c: c.public_bytes(serialization.Encoding.PEM)  # noqa: E731
    (tmp_path / "server.pem").write_bytes(pem(cert) + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return pem(ca).decode(), tmp_path / "server.pem"


@pytest.fixture
def tls_server(tmp_path):
    import ssl
    ca_pem, server_pem = _ca_and_server_cert(tmp_path)
    srv = TokenServer()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(server_pem)
    srv.httpd.socket = ctx.wrap_socket(srv.httpd.socket, server_side=True)
    srv.url = srv.url.replace("http://", "https://")
    srv.token()
    yield srv, ca_pem
    srv.close()


def test_the_token_endpoint_is_verified_with_the_configured_ca(tls_server, client):
    srv, ca_pem = tls_server
    token = client.mint(CREDS, cfg(token_url=srv.url + "/token", ca_cert=ca_pem))
    assert token.access_token == TOKEN


def test_an_unknown_ca_fails_with_a_hint_to_set_ca_cert(tls_server, client):
    srv, _ = tls_server
    with pytest.raises(ex.ProviderUnavailable, match=r"TLS verification failed.*caCert"):
        client.mint(CREDS, cfg(token_url=srv.url + "/token"))
    assert srv.requests == []


def test_a_ca_cert_that_is_not_pem_is_a_config_error(client):
    with pytest.raises(ex.InvalidExchangeConfig, match="caCert"):
        client.mint(CREDS, cfg(token_url="https://127.0.0.1:1/token", ca_cert="not a cert"))


# --- refresh timing -----------------------------------------------------------------------------
def test_refresh_is_at_two_thirds_of_the_lifetime_with_bounded_jitter():
    expires = NOW + timedelta(seconds=300)
    mid = builders.refresh_time(NOW, expires, rng=lambda: 0.5)
    low = builders.refresh_time(NOW, expires, rng=lambda: 0.0)
    high = builders.refresh_time(NOW, expires, rng=lambda: 0.999999)
    assert mid == NOW + timedelta(seconds=200)
    assert NOW + timedelta(seconds=184) < low < mid < high < NOW + timedelta(seconds=216)


def test_refresh_times_spread_across_bindings():
    import random
    rnd = random.Random(7)
    times = {builders.refresh_time(NOW, NOW + timedelta(seconds=60), rng=rnd.random) for _ in range(50)}
    assert len(times) > 40
    assert all(NOW + timedelta(seconds=36) <= t <= NOW + timedelta(seconds=44) for t in times)


def test_refresh_stays_ahead_of_expiry_for_very_short_tokens():
    at = builders.refresh_time(NOW, NOW + timedelta(seconds=6), rng=lambda: 0.999, min_lead=timedelta(seconds=5))
    assert at == NOW + timedelta(seconds=1)
    assert builders.refresh_time(NOW, NOW + timedelta(seconds=3), rng=lambda: 0.5) == NOW
