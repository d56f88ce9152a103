"""Smoke tests that show each local service is the real thing and answers as clients expect."""
from __future__ import annotations

import json
import time
import uuid

import pytest


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# -- AWS (moto) ------------------------------------------------------------------------------

def test_a_secret_round_trips_through_boto3_secrets_manager(moto):
    sm = moto.client("secretsmanager")
    name = _unique("mlflow/auth")
    value = json.dumps({"username": "alice", "password": "pw-" + uuid.uuid4().hex})
    sm.create_secret(Name=name, SecretString=value)

    assert sm.get_secret_value(SecretId=name)["SecretString"] == value


def test_a_web_identity_role_assumption_yields_credentials_that_read_the_secret(moto):
    import jwt

    sm = moto.client("secretsmanager")
    name = _unique("team-a/mlflow")
    arn = sm.create_secret(Name=name, SecretString="token-" + uuid.uuid4().hex)["ARN"]
    role_arn = moto.create_web_identity_role(_unique("mlflow-reader"), secret_arns=[arn])
    now = int(time.time())
    web_token = jwt.encode({"iss": "https://kubernetes.local", "sub": "system:serviceaccount:team-a:trainer",
                            "aud": "sts.amazonaws.com", "iat": now, "exp": now + 600},
                           "moto-does-not-check-this-signature-key", algorithm="HS256")

    sts = moto.client("sts")
    assumed = sts.assume_role_with_web_identity(RoleArn=role_arn, RoleSessionName="trainer",
                                                WebIdentityToken=web_token)
    creds = assumed["Credentials"]
    scoped = moto.client("secretsmanager", aws_access_key_id=creds["AccessKeyId"],
                         aws_secret_access_key=creds["SecretAccessKey"],
                         aws_session_token=creds["SessionToken"])

    assert assumed["AssumedRoleUser"]["Arn"].endswith("/trainer")
    assert creds["AccessKeyId"] != moto.access_key_id
    assert scoped.get_secret_value(SecretId=arn)["SecretString"].startswith("token-")


# -- MLflow with basic auth ------------------------------------------------------------------

def test_mlflow_basic_auth_refuses_anonymous_calls_and_accepts_the_admin(mlflow_basic):
    path = "/api/2.0/mlflow/experiments/search?max_results=1"

    assert mlflow_basic.get(path, auth=None)[0] == 401
    assert mlflow_basic.get(path)[0] == 200


def test_a_created_user_logs_in_until_its_password_is_changed(mlflow_basic):
    path = "/api/2.0/mlflow/experiments/search?max_results=1"
    user, old, new = _unique("alice"), "old-" + uuid.uuid4().hex, "new-" + uuid.uuid4().hex
    mlflow_basic.create_user(user, old)
    assert mlflow_basic.get(path, auth=(user, old))[0] == 200

    mlflow_basic.update_password(user, new)

    assert mlflow_basic.get(path, auth=(user, old))[0] == 401
    assert mlflow_basic.get(path, auth=(user, new))[0] == 200


def test_the_real_mlflow_client_logs_a_run_with_basic_credentials(mlflow_basic, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", mlflow_basic.admin_username)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", mlflow_basic.admin_password)
    client = MlflowClient(tracking_uri=mlflow_basic.url)
    experiment_id = client.create_experiment(_unique("smoke"))
    run = client.create_run(experiment_id)
    client.log_metric(run.info.run_id, "loss", 0.5)

    assert client.get_run(run.info.run_id).data.metrics == {"loss": 0.5}


def test_the_mlflow_client_without_credentials_is_refused(mlflow_basic, monkeypatch):
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    for var in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN",
                "MLFLOW_TRACKING_AUTH"):
        monkeypatch.delenv(var, raising=False)

    with pytest.raises(MlflowException, match="401|Unauthorized|credentials"):
        MlflowClient(tracking_uri=mlflow_basic.url).search_experiments(max_results=1)


# -- MLflow behind the bearer / custom-header front ------------------------------------------

def _front_get(front, headers: dict[str, str]) -> int:
    import urllib.error
    import urllib.request

    req = urllib.request.Request(front.url + "/api/2.0/mlflow/experiments/search?max_results=1",
                                 headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_the_front_refuses_requests_without_an_allowed_token(mlflow_front):
    assert _front_get(mlflow_front, {}) == 401
    assert _front_get(mlflow_front, {"Authorization": "Bearer never-allowed"}) == 401
    assert _front_get(mlflow_front, {"Authorization": "Basic dXNlcjpwYXNz"}) == 401


def test_the_front_accepts_an_allowed_bearer_token_until_it_is_revoked(mlflow_front):
    token = "tok-" + uuid.uuid4().hex
    mlflow_front.allow_token(token)
    assert _front_get(mlflow_front, {"Authorization": f"Bearer {token}"}) == 200

    mlflow_front.revoke_token(token)

    assert _front_get(mlflow_front, {"Authorization": f"Bearer {token}"}) == 401


def test_the_front_accepts_the_token_in_its_custom_header(mlflow_front):
    token = "tok-" + uuid.uuid4().hex
    mlflow_front.allow_token(token)
    try:
        assert _front_get(mlflow_front, {mlflow_front.custom_header: token}) == 200
        assert _front_get(mlflow_front, {"X-Other-Header": token}) == 401
    finally:
        mlflow_front.revoke_token(token)


def test_the_front_records_the_auth_header_and_host_each_request_carried(mlflow_front):
    token = "tok-" + uuid.uuid4().hex
    mlflow_front.allow_token(token)
    try:
        _front_get(mlflow_front, {"Authorization": f"Bearer {token}"})
    finally:
        mlflow_front.revoke_token(token)

    mine = [r for r in mlflow_front.requests_seen() if r["authorization"] == f"Bearer {token}"]
    assert len(mine) == 1
    assert mine[0]["host"] == f"127.0.0.1:{mlflow_front.port}"
    assert mine[0]["uri"].startswith("/api/2.0/mlflow/experiments/search")
    assert mine[0]["status"] == 200


def test_the_real_mlflow_client_logs_a_run_through_the_front_with_a_bearer_token(mlflow_front,
                                                                                monkeypatch):
    from mlflow.tracking import MlflowClient

    token = "tok-" + uuid.uuid4().hex
    mlflow_front.allow_token(token)
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", token)
    for var in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_AUTH"):
        monkeypatch.delenv(var, raising=False)
    try:
        client = MlflowClient(tracking_uri=mlflow_front.url)
        run = client.create_run(client.create_experiment(_unique("front")))
        client.log_param(run.info.run_id, "via", "front")
        assert client.get_run(run.info.run_id).data.params == {"via": "front"}
    finally:
        mlflow_front.revoke_token(token)


# -- Keycloak --------------------------------------------------------------------------------

def test_keycloak_issues_a_client_credentials_token_that_its_jwks_verifies(keycloak):
    import jwt

    answer = keycloak.client_credentials_token()
    key = jwt.PyJWKClient(keycloak.jwks_url).get_signing_key_from_jwt(answer["access_token"])
    claims = jwt.decode(answer["access_token"], key.key, algorithms=["RS256"],
                        audience="mlflow", issuer=keycloak.issuer_url)

    assert answer["token_type"].lower() == "bearer"
    assert 119 <= answer["expires_in"] <= 120
    assert claims["azp"] == keycloak.client_id
    assert 119 <= claims["exp"] - claims["iat"] <= 121  # Keycloak rounds each on its own


def test_keycloak_refuses_a_wrong_client_secret(keycloak):
    from dev.stack.proc import StackError

    with pytest.raises(StackError, match="401|invalid_client|unauthorized_client"):
        keycloak.client_credentials_token(client_secret="not-the-secret")


def test_a_disabled_or_rotated_keycloak_client_can_no_longer_get_tokens(keycloak):
    from dev.stack.proc import StackError

    client_id = _unique("revocable")
    secret = keycloak.create_client(client_id)
    assert keycloak.client_credentials_token(client_id, secret)["access_token"]

    keycloak.disable_client(client_id)
    with pytest.raises(StackError):
        keycloak.client_credentials_token(client_id, secret)

    keycloak.enable_client(client_id)
    new_secret = keycloak.regenerate_client_secret(client_id)
    with pytest.raises(StackError):
        keycloak.client_credentials_token(client_id, secret)
    assert keycloak.client_credentials_token(client_id, new_secret)["access_token"]


def test_the_front_accepts_a_keycloak_token_once_it_trusts_the_issuer(keycloak, mlflow_front):
    mlflow_front.distrust_issuer(keycloak.issuer_url)   # other tests of the session may trust it
    token = keycloak.client_credentials_token()["access_token"]
    assert _front_get(mlflow_front, {"Authorization": f"Bearer {token}"}) == 401

    mlflow_front.trust_issuer(keycloak.issuer_url, audience="mlflow")

    assert _front_get(mlflow_front, {"Authorization": f"Bearer {token}"}) == 200
    tampered = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    assert _front_get(mlflow_front, {"Authorization": f"Bearer {tampered}"}) == 401


# -- Azure Key Vault (Lowkey Vault) ----------------------------------------------------------

def test_a_secret_and_its_versions_round_trip_through_azure_keyvault_secrets(lowkey):
    client = lowkey.secret_client()
    name = _unique("mlflow-auth")
    first = client.set_secret(name, "first-" + uuid.uuid4().hex)
    second = client.set_secret(name, "second-" + uuid.uuid4().hex)

    assert client.get_secret(name).value == second.value
    assert client.get_secret(name, version=first.properties.version).value == first.value
    assert first.properties.version != second.properties.version


def test_the_managed_identity_credential_gets_a_token_from_lowkey(lowkey):
    token = lowkey.credential().get_token(lowkey.vault_url + "/.default")

    assert token.token
    assert token.expires_on > time.time()


def test_the_per_run_lowkey_certificate_is_trusted_for_127_0_0_1(tmp_path):
    """The keystore Lowkey serves is valid TLS for its URL (checked with a Python TLS server)."""
    import http.server
    import ssl
    import threading
    import urllib.error
    import urllib.request

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.serialization import pkcs12

    from dev.stack.proc import free_port
    from dev.stack.azure import LowkeyVault

    vault = LowkeyVault()
    store, password = vault._make_keystore(tmp_path)
    key, cert, _ = pkcs12.load_key_and_certificates(store.read_bytes(), password.encode())
    (tmp_path / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    port = free_port()
    httpd = http.server.HTTPServer(("127.0.0.1", port), http.server.SimpleHTTPRequestHandler)
    httpd.socket = server_ctx.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        client_ctx = ssl.create_default_context(cafile=str(vault.ca_file))
        with urllib.request.urlopen(f"https://127.0.0.1:{port}/", context=client_ctx,
                                    timeout=10) as resp:
            assert resp.status == 200
        with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
            urllib.request.urlopen(f"https://127.0.0.1:{port}/",
                                   context=ssl.create_default_context(), timeout=10)
    finally:
        httpd.shutdown()
        thread.join(timeout=10)
