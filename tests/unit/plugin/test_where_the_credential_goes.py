"""Every request that leaves the auth (first send, re-send after 401, each redirect hop) carries the
credential only if its own URL is allowed, and never a stale value (issue 11). Real local HTTP(S)
servers, a real requests.Session."""
import ssl

import pytest
import requests

from mlflow_secrets_auth.auth import SecretsAuth
from mlflow_secrets_auth.cache import CredentialCache
from mlflow_secrets_auth.sources import FileSource

from .conftest import CUSTOM, TOKEN, make_tls_files
from .test_auth import ManualTimer, make_auth, plugin_warnings, session, volume

OLD, NEW = "old-" + CUSTOM, "new-" + CUSTOM


def header_values(seen):
    """Every value that looks like one of our credentials, under any header name."""
    return sorted(v for k, v in seen["headers"].items() if CUSTOM in v or TOKEN in v)


def gate(serve, target):
    """401 for the old custom header, a 307 to ``target`` for the new one (or for none)."""
    def respond(req, n):
        if req["headers"].get("X-MLflow-Auth") == OLD:
            return 401, {}, b"{}"
        return 307, {"Location": target + "/hop"}, b""
    return serve(respond)


def rotated_auth(tmp_path, allowed, tracking=None):
    """An auth that has sent OLD once; the volume now holds NEW, unseen until a 401 re-reads it."""
    vol = volume(tmp_path, {"header-name": "X-MLflow-Auth", "header-value": OLD})
    auth = make_auth(FileSource(str(vol.root)), allowed, tracking, timer=ManualTimer())
    auth(requests.Request("GET", "http://127.0.0.1/").prepare())  # loads OLD
    vol.write({"header-name": "X-MLflow-Auth", "header-value": NEW})
    return auth


def test_the_redirect_of_a_resent_request_carries_no_credential_to_a_host_not_allowed(
        tmp_path, serve, caplog):
    elsewhere = serve()
    origin = gate(serve, elsewhere.url("localhost"))
    auth = rotated_auth(tmp_path, None, origin.url())
    r = session().post(origin.url() + "/api", json={"k": 1}, auth=auth)
    assert r.status_code == 200
    assert [q["headers"].get("X-MLflow-Auth") for q in origin.requests] == [OLD, NEW]
    assert len(elsewhere.requests) == 1 and header_values(elsewhere.requests[0]) == []
    assert any("redirect to localhost:%d without the credential" % elsewhere.port in w
               for w in plugin_warnings(caplog))


def test_the_redirect_of_a_resent_request_carries_the_new_value_to_an_allowed_host(
        tmp_path, serve):
    elsewhere = serve()
    origin = gate(serve, elsewhere.url("localhost"))
    auth = rotated_auth(tmp_path, "127.0.0.1:%d,localhost:%d" % (origin.port, elsewhere.port))
    assert session().get(origin.url() + "/api", auth=auth).status_code == 200
    assert header_values(elsewhere.requests[0]) == [NEW]


def test_a_resend_goes_without_the_credential_when_the_allowlist_no_longer_allows_the_host(
        tmp_path, serve):
    env = {}
    srv = serve(lambda req, n: (401, {}, b"{}"))
    vol = volume(tmp_path, {"header-name": "X-MLflow-Auth", "header-value": OLD})
    auth = SecretsAuth(CredentialCache(FileSource(str(vol.root)), timer=ManualTimer()),
                       allowlist_values=lambda: (env.get("allowed"), None))
    env["allowed"] = "127.0.0.1:%d" % srv.port
    s = session()
    s.get(srv.url(), auth=auth)
    vol.write({"header-name": "X-MLflow-Auth", "header-value": NEW})
    env["allowed"] = "mlflow.example.com"  # e.g. the environment changed in between
    assert s.get(srv.url(), auth=auth).status_code == 401
    assert [header_values(q) for q in srv.requests] == [[OLD], [OLD]]  # no NEW re-send


@pytest.mark.parametrize("target_allowed", [False, True])
def test_a_header_name_that_rotated_away_never_follows_a_redirect(
        tmp_path, serve, target_allowed):
    """The credential rotates from X-Old to X-New while a request is in flight (another thread
    polls); the redirect must carry neither X-Old (stale) nor, to a host not allowed, X-New."""
    timer = ManualTimer()
    vol = volume(tmp_path, {"header-name": "X-Old", "header-value": OLD})
    elsewhere = serve()
    holder = {}

    def respond(req, n):
        vol.write({"header-name": "X-New", "header-value": NEW})
        timer.elapse()
        holder["auth"](requests.Request("GET", "http://127.0.0.1/").prepare())  # another thread
        return 307, {"Location": elsewhere.url("localhost") + "/hop"}, b""

    origin = serve(respond)
    allowed = "127.0.0.1:%d" % origin.port
    if target_allowed:
        allowed += ",localhost:%d" % elsewhere.port
    holder["auth"] = auth = make_auth(FileSource(str(vol.root)), allowed, timer=timer)
    assert session().get(origin.url(), auth=auth).status_code == 200
    assert header_values(origin.requests[0]) == [OLD]
    hop = elsewhere.requests[0]["headers"]
    assert "X-Old" not in hop
    assert hop.get("X-New") == (NEW if target_allowed else None)


def tls_server(serve, tmp_path, respond):
    cert, key = make_tls_files(tmp_path)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    return serve(respond, ctx), cert


@pytest.mark.parametrize("files", [
    {"header-name": "X-MLflow-Auth", "header-value": CUSTOM},
    {"token": TOKEN},
])
def test_an_https_to_http_redirect_drops_every_credential_header_even_to_an_allowed_host(
        tmp_path, serve, caplog, files):
    plain = serve()
    secure, cert = tls_server(serve, tmp_path, lambda req, n: (
        307, {"Location": plain.url() + "/hop"}, b""))
    auth = make_auth(FileSource(str(volume(tmp_path, files).root)), "127.0.0.1")  # any port
    r = session().get(secure.url(scheme="https") + "/api", auth=auth, verify=cert)
    assert r.status_code == 200
    assert header_values(secure.requests[0]) != []
    assert header_values(plain.requests[0]) == []
    assert any("from https to http" in w for w in plugin_warnings(caplog))


def test_an_http_to_https_redirect_on_an_allowed_host_keeps_the_custom_header(tmp_path, serve):
    secure, cert = tls_server(serve, tmp_path, lambda req, n: (200, {}, b"{}"))
    plain = serve(lambda req, n: (307, {"Location": secure.url(scheme="https") + "/hop"}, b""))
    vol = volume(tmp_path, {"header-name": "X-MLflow-Auth", "header-value": CUSTOM})
    auth = make_auth(FileSource(str(vol.root)), "127.0.0.1")
    assert session().get(plain.url(), auth=auth, verify=cert).status_code == 200
    assert header_values(secure.requests[0]) == [CUSTOM]


def test_a_redirect_hop_carries_the_credential_current_when_the_hop_leaves(tmp_path, serve):
    """Same host, same header name, a new value between the first send and the redirect."""
    timer = ManualTimer()
    vol = volume(tmp_path, {"header-name": "X-MLflow-Auth", "header-value": OLD})
    holder = {}

    def respond(req, n):
        if req["target"] == "/start":
            vol.write({"header-name": "X-MLflow-Auth", "header-value": NEW})
            timer.elapse()
            holder["auth"](requests.Request("GET", "http://127.0.0.1/").prepare())
            return 302, {"Location": "/final"}, b""
        return 200, {}, b"{}"

    srv = serve(respond)
    holder["auth"] = auth = make_auth(FileSource(str(vol.root)), None, srv.url(), timer=timer)
    session().get(srv.url() + "/start", auth=auth)
    assert [header_values(q) for q in srv.requests] == [[OLD], [NEW]]


def test_invalid_allowlist_patterns_are_logged_once_naming_the_pattern(tmp_path, caplog):
    auth = make_auth(FileSource(str(volume(tmp_path, {"token": TOKEN}).root)), "[*],mlflow:5000")
    for _ in range(3):
        req = auth(requests.Request("GET", "http://evil.example/").prepare())
    assert "Authorization" not in req.headers
    ignoring = [w for w in plugin_warnings(caplog) if "ignoring the allowed-host pattern" in w]
    assert len(ignoring) == 1 and "'[*]'" in ignoring[0]
    assert "MLFLOW_SECRETS_ALLOWED_HOSTS" in ignoring[0]


@pytest.mark.parametrize("name", ["Host", "Transfer-Encoding", "Proxy-Authorization", "Cookie"])
def test_a_credential_in_a_framing_or_routing_header_is_never_sent(tmp_path, serve, caplog, name):
    srv = serve()
    vol = volume(tmp_path, {"header-name": name, "header-value": CUSTOM})
    auth = make_auth(FileSource(str(vol.root)), None, srv.url(), timer=ManualTimer())
    for _ in range(2):
        session().get(srv.url() + "/api", auth=auth)
    assert all(header_values(q) == [] for q in srv.requests)
    refused = [w for w in plugin_warnings(caplog) if "refusing the credential" in w]
    assert len(refused) == 1 and repr(name) in refused[0]



def test_a_redirect_hop_is_judged_by_the_allowlist_as_it_is_when_the_hop_leaves(tmp_path, serve):
    env = {}
    elsewhere = serve()

    def respond(req, n):
        env["allowed"] = "127.0.0.1:%d" % origin.port  # narrowed while the request was in flight
        return 307, {"Location": elsewhere.url("localhost") + "/hop"}, b""

    origin = serve(respond)
    env["allowed"] = "127.0.0.1:%d,localhost:%d" % (origin.port, elsewhere.port)
    vol = volume(tmp_path, {"header-name": "X-MLflow-Auth", "header-value": CUSTOM})
    auth = SecretsAuth(CredentialCache(FileSource(str(vol.root)), timer=ManualTimer()),
                       allowlist_values=lambda: (env["allowed"], None))
    assert session().get(origin.url(), auth=auth).status_code == 200
    assert header_values(origin.requests[0]) == [CUSTOM]
    assert header_values(elsewhere.requests[0]) == []


def test_a_host_not_allowed_cannot_bounce_the_request_back_to_an_allowed_host_with_the_credential(
        tmp_path, serve):
    def origin_respond(req, n):
        if req["target"] == "/start":
            return 307, {"Location": evil.url("localhost") + "/bounce"}, b""
        return 200, {}, b"{}"

    def evil_respond(req, n):  # aims the request at another path of the allowed server
        return 307, {"Location": origin.url() + "/admin/delete-everything"}, b""

    origin = serve(origin_respond)
    evil = serve(evil_respond)
    vol = volume(tmp_path, {"header-name": "X-MLflow-Auth", "header-value": CUSTOM})
    auth = make_auth(FileSource(str(vol.root)), None, origin.url())
    assert session().post(origin.url() + "/start", json={}, auth=auth).status_code == 200
    assert [q["target"] for q in origin.requests] == ["/start", "/admin/delete-everything"]
    assert [header_values(q) for q in origin.requests] == [[CUSTOM], []]
    assert header_values(evil.requests[0]) == []
