"""Issue 11, through a real MLflow client: the credential reaches only the hosts it should.

Each test runs a real MLflow client process (the plugin selected by MLFLOW_TRACKING_AUTH, the
credential in a kubelet-style volume) against real HTTP(S) servers on 127.0.0.1: the nginx
bearer front of the e2e stack, and small recording servers that answer what MLflow's search
call expects, redirect, or refuse. Each server records every header it received, so a test can
say which host saw which value.
"""
from __future__ import annotations

import secrets
import ssl

import jsonpatch
import pytest

from mlflow_secrets_auth_api import MlflowAuthBinding
from mlflow_secrets_auth_webhook.mutation import build_patch
from mlflow_secrets_auth_webhook.settings import Settings
from tests.e2e.plugin_client import MlflowClientProcess, client_env
from tests.e2e.waiting import wait_for
from tests.unit.plugin.conftest import Recorder, make_tls_files
from tests.unit.plugin.volume import ProjectedVolume

OK = (200, {"Content-Type": "application/json"}, b"{}")  # MLflow's search reads {} as no results


@pytest.fixture
def serve():
    servers = []

    def start(respond=None, ssl_context=None) -> Recorder:
        server = Recorder(respond or (lambda req, n: OK), ssl_context)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def carrying(server, *values):
    """The requests ``server`` received with any of ``values`` in any header."""
    return [r for r in server.requests
            if any(v in hv for v in values for hv in r["headers"].values())]


def volume(tmp_path, files):
    vol = ProjectedVolume(tmp_path / "creds")
    vol.write(files)
    return vol


# ---- a re-send after 401 and its redirect ------------------------------------------------------
@pytest.mark.parametrize("target_allowed", [False, True])
def test_the_redirect_of_a_request_resent_after_401_carries_only_the_current_credential_where_allowed(
        serve, tmp_path, target_allowed):
    old, new = "old-" + secrets.token_hex(12), "new-" + secrets.token_hex(12)
    catcher = serve()
    state = {"rotated": False}

    def gate(req, n):
        value = req["headers"].get("X-MLflow-Auth")
        if not state["rotated"]:
            return OK
        if value == old:
            return 401, {}, b"{}"
        return 307, {"Location": "http://localhost:%d%s" % (catcher.port, req["target"])}, b""

    origin = serve(gate)
    vol = volume(tmp_path, {"header-name": "X-MLflow-Auth", "header-value": old})
    ready, go = tmp_path / "ready", tmp_path / "go"
    extra = {"MLFLOW_SECRETS_AUTH_DIR": str(vol.root),
             # an hour: the only way to see the rotated value is the 401's re-read
             "MLFLOW_SECRETS_AUTH_CHECK_INTERVAL": "3600"}
    if target_allowed:
        extra["MLFLOW_SECRETS_ALLOWED_HOSTS"] = "127.0.0.1:%d,localhost:%d" % (origin.port,
                                                                               catcher.port)
    env = client_env(tmp_path, "http://127.0.0.1:%d" % origin.port, **extra)
    client = MlflowClientProcess(
        env, [["search"], ["touch", str(ready)], ["wait_file", str(go)], ["search"]],
        [old, new]).start()
    wait_for(ready.exists, 60, "the client's first call with the old credential")
    vol.write({"header-name": "X-MLflow-Auth", "header-value": new})
    state["rotated"] = True
    go.touch()
    result = client.wait(90)
    assert result.ok, result
    assert any("re-sent once" in line for line in result.plugin_log()), result.stderr[-2000:]
    assert [r["headers"].get("X-MLflow-Auth") for r in origin.requests[-2:]] == [old, new]
    assert catcher.requests, result
    assert not carrying(catcher, old), "a stale credential followed the redirect"
    if target_allowed:
        assert len(carrying(catcher, new)) == len(catcher.requests)
    else:
        assert not carrying(catcher, new)
        assert any("redirect to localhost:%d without the credential" % catcher.port in line
                   for line in result.plugin_log()), result.stderr[-2000:]


# ---- https -> http -----------------------------------------------------------------------------
def test_an_https_to_http_redirect_does_not_carry_the_custom_header(serve, tmp_path):
    token = "tok-" + secrets.token_hex(16)
    plain = serve()
    cert, key = make_tls_files(tmp_path)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    secure = serve(lambda req, n: (307, {"Location": "http://127.0.0.1:%d%s" % (
        plain.port, req["target"])}, b""), ctx)
    vol = volume(tmp_path, {"header-name": "X-MLflow-Auth", "header-value": token})
    env = client_env(tmp_path, "https://127.0.0.1:%d" % secure.port,
                     MLFLOW_SECRETS_AUTH_DIR=str(vol.root), MLFLOW_TRACKING_SERVER_CERT_PATH=cert,
                     MLFLOW_SECRETS_ALLOWED_HOSTS="127.0.0.1")  # both ports allowed by host
    result = MlflowClientProcess(env, [["search"]], [token]).run()
    assert result.ok, result
    assert carrying(secure, token) and plain.requests
    assert not carrying(plain, token), "the credential left unencrypted"
    assert any("from https to http" in line for line in result.plugin_log()), result.stderr[-2000:]


# ---- the webhook pins the allowlist; set_tracking_uri cannot move the credential --------------
def pod_env_from_the_webhook(binding_spec: dict, credential_dir: str) -> dict:
    """The env the real webhook mutation gives an app container for this binding."""
    binding = MlflowAuthBinding.model_validate({
        "metadata": {"name": "mlflow", "namespace": "team-a"},
        "spec": {"provider": {"vault": {"address": "http://127.0.0.1:8200", "path": "mlflow/auth",
                                        "auth": {"token": {"secretRef": {"name": "t", "key": "t"}}}}},
                 **binding_spec},
        "status": {"secretName": "mlflow-mlflow-auth"}})
    pod = {"metadata": {"name": "p", "labels": {"mlflow-secrets-auth/inject": "true"}},
           "spec": {"containers": [{"name": "app", "image": "python",
                                    "env": [{"name": "MLFLOW_SECRETS_AUTH_DIR",
                                             "value": credential_dir}]}]}}
    mutated = jsonpatch.apply_patch(pod, build_patch(pod, binding, Settings()))
    env = {e["name"]: e["value"] for e in mutated["spec"]["containers"][0]["env"]}
    env.pop("PYTHONPATH")  # the dev venv has the plugin installed
    return env


def test_set_tracking_uri_to_another_server_does_not_move_the_credential(
        mlflow_front, front_token, serve, tmp_path):
    other = serve()
    vol = volume(tmp_path, {"token": front_token})
    env = client_env(tmp_path, mlflow_front.url)
    env.update(pod_env_from_the_webhook({"trackingUri": mlflow_front.url}, str(vol.root)))
    assert env["MLFLOW_SECRETS_ALLOWED_HOSTS"] == "127.0.0.1:%d" % mlflow_front.port
    result = MlflowClientProcess(env, [["search"], ["set_uri", "http://127.0.0.1:%d" % other.port],
                                       ["search"]], [front_token]).run()
    assert result.steps[0]["ok"] and result.steps[1]["ok"], result
    assert other.requests and not carrying(other, front_token), "the credential moved"
    assert any("not sending the credential to 127.0.0.1:%d" % other.port in line
               for line in result.plugin_log()), result.stderr[-2000:]


# ---- malformed allowlist patterns --------------------------------------------------------------
@pytest.mark.parametrize("pattern", ["[*]", "[*]:{port}", "[*.0.0.1]"])
def test_a_bracketed_glob_in_the_allowlist_allows_no_host(mlflow_front, front_token, tmp_path,
                                                          pattern):
    pattern = pattern.format(port=mlflow_front.port)
    vol = volume(tmp_path, {"token": front_token})
    env = client_env(tmp_path, mlflow_front.url, MLFLOW_SECRETS_AUTH_DIR=str(vol.root),
                     MLFLOW_SECRETS_ALLOWED_HOSTS=pattern)
    mlflow_front.clear_requests()
    result = MlflowClientProcess(env, [["search"]], [front_token]).run()
    assert not result.ok  # the front refuses a request without the credential
    seen = mlflow_front.requests_seen()
    assert seen and not [r for r in seen if front_token in (r.get("authorization") or "")]
    ignoring = [ln for ln in result.plugin_log() if "ignoring the allowed-host pattern" in ln]
    assert len(ignoring) == 1 and repr(pattern) in ignoring[0], result.stderr[-2000:]


# ---- header names that frame or route the request, values HTTP cannot carry ------------------
@pytest.mark.parametrize("name,value", [
    ("Host", "{secret}"),
    ("Proxy-Authorization", "Basic {secret}"),
    ("Cookie", "session={secret}"),
    ("X-MLflow-Auth", "{secret}\x01"),
    ("X-MLflow-Auth", "{secret}\u20ac"),
])
def test_a_credential_that_would_frame_or_break_the_request_is_never_sent(
        serve, tmp_path, name, value):
    secret = "tok-" + secrets.token_hex(16)
    server = serve()
    vol = volume(tmp_path, {"header-name": name, "header-value": value.format(secret=secret)})
    env = client_env(tmp_path, "http://127.0.0.1:%d" % server.port,
                     MLFLOW_SECRETS_AUTH_DIR=str(vol.root))
    result = MlflowClientProcess(env, [["search"], ["search"]], [secret]).run()
    assert result.ok, result  # the request goes out without the credential; MLflow does not crash
    assert len(server.requests) == 2 and not carrying(server, secret)
    refused = [ln for ln in result.plugin_log() if "refusing the credential" in ln]
    assert len(refused) == 1 and name in refused[0], result.stderr[-2000:]
