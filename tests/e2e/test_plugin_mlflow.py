"""The plugin inside a real MLflow client, against the real MLflow basic-auth server and the real
nginx bearer/custom-header front: every header mode, rotation while logging, 401 recovery, the
allowlist and a redirect to another host.

The credential directory is written the way kubelet writes a projected Secret (``..data`` swap).
"""
from __future__ import annotations

import http.server
import secrets
import threading
import time

import pytest

from tests.e2e.plugin_client import MlflowClientProcess, client_env, read_int, unique
from tests.e2e.waiting import wait_for
from tests.unit.plugin.volume import ProjectedVolume


def volume(tmp_path, files):
    vol = ProjectedVolume(tmp_path / "creds")
    vol.write(files)
    return vol


@pytest.fixture
def basic_user(mlflow_basic):
    user, password = unique("alice"), "pw-" + secrets.token_hex(12)
    mlflow_basic.create_user(user, password)
    yield user, password
    mlflow_basic.delete_user(user)


def seen_with(front, token):
    return [r for r in front.requests_seen()
            if token in ((r.get("authorization") or "") + " " + (r.get("custom_header") or ""))]


# ---- every header mode -------------------------------------------------------------------------
def test_username_and_password_files_authenticate_to_the_basic_auth_server(
        mlflow_basic, basic_user, tmp_path):
    user, password = basic_user
    vol = volume(tmp_path, {"username": user, "password": password})
    env = client_env(tmp_path, mlflow_basic.url, MLFLOW_SECRETS_AUTH_DIR=str(vol.root))
    result = MlflowClientProcess(env, [["search"], ["log", unique("exp")]], [password]).run()
    assert result.ok, result


def test_an_authorization_header_file_authenticates_to_the_basic_auth_server(
        mlflow_basic, basic_user, tmp_path):
    user, password = basic_user
    header = mlflow_basic.basic_header(user, password)
    vol = volume(tmp_path, {"header-name": "Authorization", "header-value": header})
    env = client_env(tmp_path, mlflow_basic.url, MLFLOW_SECRETS_AUTH_DIR=str(vol.root))
    result = MlflowClientProcess(env, [["search"], ["log", unique("exp")]],
                                 [password, header.split()[1]]).run()
    assert result.ok, result


def test_a_wrong_password_is_refused_by_the_basic_auth_server(mlflow_basic, basic_user, tmp_path):
    user, _ = basic_user
    vol = volume(tmp_path, {"username": user, "password": "not-the-password"})
    env = client_env(tmp_path, mlflow_basic.url, MLFLOW_SECRETS_AUTH_DIR=str(vol.root))
    result = MlflowClientProcess(env, [["search"]]).run()
    assert not result.ok and "401" in result.steps[0]["error"], result


def test_a_token_file_authenticates_to_the_bearer_front(mlflow_front, front_token, tmp_path):
    vol = volume(tmp_path, {"token": front_token})
    env = client_env(tmp_path, mlflow_front.url, MLFLOW_SECRETS_AUTH_DIR=str(vol.root))
    result = MlflowClientProcess(env, [["search"], ["log", unique("exp")]], [front_token]).run()
    assert result.ok, result
    seen = seen_with(mlflow_front, front_token)
    assert seen and all(r["authorization"] == "Bearer " + front_token for r in seen)


def test_a_custom_header_authenticates_to_the_front(mlflow_front, front_token, tmp_path):
    vol = volume(tmp_path, {"header-name": "X-MLflow-Auth", "header-value": front_token})
    env = client_env(tmp_path, mlflow_front.url, MLFLOW_SECRETS_AUTH_DIR=str(vol.root))
    result = MlflowClientProcess(env, [["search"], ["log", unique("exp")]], [front_token]).run()
    assert result.ok, result
    seen = seen_with(mlflow_front, front_token)
    assert seen and all(r["custom_header"] == front_token and not r["authorization"]
                        for r in seen)


# ---- rotation and 401 recovery -----------------------------------------------------------------
def test_a_rotated_token_is_picked_up_within_a_second_while_the_client_keeps_logging(
        mlflow_front, tmp_path):
    old, new = "tok-old-" + secrets.token_hex(8), "tok-new-" + secrets.token_hex(8)
    mlflow_front.allow_token(old)
    try:
        vol = volume(tmp_path, {"token": old})
        stop, progress = tmp_path / "stop", tmp_path / "progress"
        env = client_env(tmp_path, mlflow_front.url, MLFLOW_SECRETS_AUTH_DIR=str(vol.root))
        client = MlflowClientProcess(
            env, [["loop", str(stop), str(progress), 90, unique("exp")]], [old, new]).start()
        wait_for(lambda: read_int(progress) >= 3, 60, "the client to log with the first token")
        mlflow_front.allow_token(new)
        vol.write({"token": new})  # kubelet's atomic swap
        rotated = time.time()
        first_new = wait_for(lambda: seen_with(mlflow_front, new), 10,
                             "a request carrying the rotated token")[0]
        assert first_new["time"] - rotated < 1.0
        mlflow_front.revoke_token(old)
        after = read_int(progress)
        wait_for(lambda: read_int(progress) >= after + 5, 30, "more steps after the old token died")
        stop.touch()
        result = client.wait(60)
        assert result.ok, result  # not one failed log_metric across the rotation
        later = [r for r in mlflow_front.requests_seen() if r["time"] > first_new["time"]]
        assert later and all(r["authorization"] == "Bearer " + new for r in later
                             if old in (r["authorization"] or "") or new in (r["authorization"] or ""))
    finally:
        mlflow_front.revoke_token(old)
        mlflow_front.revoke_token(new)


def test_a_401_after_a_password_change_is_recovered_by_rereading_the_volume(
        mlflow_basic, basic_user, tmp_path):
    user, old = basic_user
    new = "pw-" + secrets.token_hex(12)
    vol = volume(tmp_path, {"username": user, "password": old})
    ready, go = tmp_path / "ready", tmp_path / "go"
    # A check interval of an hour: the only way to see the new password is the 401 re-read.
    env = client_env(tmp_path, mlflow_basic.url, MLFLOW_SECRETS_AUTH_DIR=str(vol.root),
                     MLFLOW_SECRETS_AUTH_CHECK_INTERVAL="3600")
    client = MlflowClientProcess(
        env, [["search"], ["touch", str(ready)], ["wait_file", str(go)], ["log", unique("exp")]],
        [old, new]).start()
    wait_for(ready.exists, 60, "the client's first authenticated call")
    mlflow_basic.update_password(user, new)
    vol.write({"username": user, "password": new})
    go.touch()
    result = client.wait(90)
    assert result.ok, result
    assert any("re-sent once" in line for line in result.plugin_log()), result.stderr[-2000:]


# ---- allowlist and redirects -------------------------------------------------------------------
def test_no_credential_goes_to_a_tracking_host_outside_the_allowlist(
        mlflow_front, front_token, tmp_path):
    vol = volume(tmp_path, {"token": front_token})
    env = client_env(tmp_path, mlflow_front.url, MLFLOW_SECRETS_AUTH_DIR=str(vol.root),
                     MLFLOW_SECRETS_ALLOWED_HOSTS="mlflow.example.com")
    mlflow_front.clear_requests()
    result = MlflowClientProcess(env, [["search"]], [front_token]).run()
    assert not result.ok
    assert mlflow_front.requests_seen() and not seen_with(mlflow_front, front_token)
    warnings = [ln for ln in result.plugin_log() if "not sending the credential" in ln]
    assert len(warnings) == 1
    assert "127.0.0.1:%d" % mlflow_front.port in warnings[0]
    assert "MLFLOW_SECRETS_ALLOWED_HOSTS" in warnings[0]


class Redirector(http.server.ThreadingHTTPServer):
    """Answers every request with a 307 to the same path on ``target`` (another host name)."""

    daemon_threads = True

    def __init__(self, target: str) -> None:
        self.target = target

        class Handler(http.server.BaseHTTPRequestHandler):
            def _redirect(self):
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                self.send_response(307)
                self.send_header("Location", target + self.path)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST = _redirect

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True).start()

    @property
    def url(self) -> str:
        return "http://127.0.0.1:%d" % self.server_address[1]


@pytest.fixture
def redirect_to_front(mlflow_front):
    server = Redirector("http://localhost:%d" % mlflow_front.port)
    yield server
    server.shutdown()
    server.server_close()


def test_a_redirect_to_another_host_does_not_carry_the_custom_header(
        mlflow_front, front_token, redirect_to_front, tmp_path):
    vol = volume(tmp_path, {"header-name": "X-MLflow-Auth", "header-value": front_token})
    env = client_env(tmp_path, redirect_to_front.url, MLFLOW_SECRETS_AUTH_DIR=str(vol.root))
    mlflow_front.clear_requests()
    result = MlflowClientProcess(env, [["search"]], [front_token]).run()
    assert not result.ok  # the front refuses the redirected request: it has no credential
    seen = mlflow_front.requests_seen()
    assert seen and all(not r["custom_header"] for r in seen), seen
    assert any("redirect to localhost:%d without the credential" % mlflow_front.port in ln
               for ln in result.plugin_log()), result.stderr[-2000:]


def test_a_redirect_to_an_allowed_host_keeps_the_custom_header(
        mlflow_front, front_token, redirect_to_front, tmp_path):
    vol = volume(tmp_path, {"header-name": "X-MLflow-Auth", "header-value": front_token})
    allowed = "127.0.0.1:%d,localhost:%d" % (redirect_to_front.server_address[1], mlflow_front.port)
    env = client_env(tmp_path, redirect_to_front.url, MLFLOW_SECRETS_AUTH_DIR=str(vol.root),
                     MLFLOW_SECRETS_ALLOWED_HOSTS=allowed)
    result = MlflowClientProcess(env, [["search"]], [front_token]).run()
    assert result.ok, result
    assert seen_with(mlflow_front, front_token)
