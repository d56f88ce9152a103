"""Direct mode (no operator, no mounted credential): a real MLflow client fetching its credential
from real OpenBao and a real moto server with the reference plugin's variables, and the CLI's
``doctor --dry-run`` against the real front."""
from __future__ import annotations

import json
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.plugin_client import MlflowClientProcess, client_env, unique


@pytest.fixture
def basic_user(mlflow_basic):
    user, password = unique("bob"), "pw-" + secrets.token_hex(12)
    mlflow_basic.create_user(user, password)
    yield user, password
    mlflow_basic.delete_user(user)


def direct_env(tmp_path, tracking_uri, **extra):
    # No MLFLOW_SECRETS_AUTH_DIR: with the default directory absent, direct mode is used.
    assert not Path("/var/run/secrets/mlflow-secrets-auth").exists()
    return client_env(tmp_path, tracking_uri, **extra)


# ---- OpenBao (Vault API) -----------------------------------------------------------------------
def test_vault_token_and_kv_v2_give_a_bearer_token_to_the_front(
        openbao, mlflow_front, front_token, tmp_path):
    path = "mlflow/" + unique("auth")
    openbao.client().secrets.kv.v2.create_or_update_secret(
        path=path, secret={"token": front_token}, mount_point="secret")
    env = direct_env(tmp_path, mlflow_front.url, MLFLOW_SECRETS_AUTH_ENABLE="vault",
                     VAULT_ADDR=openbao.addr, VAULT_TOKEN=openbao.root_token,
                     MLFLOW_VAULT_SECRET_PATH="secret/" + path)
    result = MlflowClientProcess(env, [["search"], ["log", unique("exp")]],
                                 [front_token, openbao.root_token]).run()
    assert result.ok, result


def test_vault_approle_and_kv_v1_on_a_named_mount_give_basic_auth(
        openbao, mlflow_basic, basic_user, tmp_path):
    user, password = basic_user
    mount, path = "plugin-kv1", "mlflow/" + unique("auth")
    openbao.enable_kv(mount, version=1)
    admin = openbao.client()
    admin.secrets.kv.v1.create_or_update_secret(
        path=path, secret={"username": user, "password": password}, mount_point=mount)
    if "approle/" not in admin.sys.list_auth_methods()["data"]:
        admin.sys.enable_auth_method("approle")
    policy = unique("plugin-read")
    openbao.write_read_policy(policy, ["%s/%s" % (mount, path)])
    role = unique("plugin-role")
    admin.auth.approle.create_or_update_approle(role_name=role, token_policies=[policy])
    role_id = admin.auth.approle.read_role_id(role)["data"]["role_id"]
    secret_id = admin.auth.approle.generate_secret_id(role)["data"]["secret_id"]
    env = direct_env(tmp_path, mlflow_basic.url, MLFLOW_SECRETS_AUTH_ENABLE="vault",
                     VAULT_ADDR=openbao.addr, VAULT_ROLE_ID=role_id, VAULT_SECRET_ID=secret_id,
                     MLFLOW_VAULT_MOUNT=mount, MLFLOW_VAULT_SECRET_PATH=path,
                     MLFLOW_VAULT_KV_VERSION="1", MLFLOW_VAULT_AUTH_MODE="basic")
    result = MlflowClientProcess(env, [["search"], ["log", unique("exp")]],
                                 [password, secret_id]).run()
    assert result.ok, result


def test_a_missing_vault_secret_is_reported_once_and_no_header_is_sent(
        openbao, mlflow_front, tmp_path):
    env = direct_env(tmp_path, mlflow_front.url, MLFLOW_SECRETS_AUTH_ENABLE="vault",
                     VAULT_ADDR=openbao.addr, VAULT_TOKEN=openbao.root_token,
                     MLFLOW_VAULT_SECRET_PATH="secret/mlflow/" + unique("absent"))
    result = MlflowClientProcess(env, [["search"]], [openbao.root_token]).run()
    assert not result.ok and "UNAUTHENTICATED" in result.steps[0]["error"]
    assert [ln for ln in result.plugin_log() if "no secret at secret/" in ln], result.stderr[-2000:]


def test_doctor_dry_run_in_direct_mode_checks_the_real_server(
        openbao, mlflow_front, front_token, tmp_path):
    path = "mlflow/" + unique("doctor")
    openbao.client().secrets.kv.v2.create_or_update_secret(
        path=path, secret={"token": front_token}, mount_point="secret")
    env = direct_env(tmp_path, mlflow_front.url, MLFLOW_SECRETS_AUTH_ENABLE="vault",
                     VAULT_ADDR=openbao.addr, VAULT_TOKEN=openbao.root_token,
                     MLFLOW_VAULT_SECRET_PATH="secret/" + path)
    out = subprocess.run([sys.executable, "-m", "mlflow_secrets_auth", "doctor", "--dry-run",
                          mlflow_front.url], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "answered 200" in out.stdout
    assert front_token not in out.stdout + out.stderr
    assert openbao.root_token not in out.stdout + out.stderr


# ---- AWS Secrets Manager (moto) ----------------------------------------------------------------
def test_an_aws_secret_string_gives_basic_auth(moto, mlflow_basic, basic_user, tmp_path):
    user, password = basic_user
    name = unique("mlflow/auth")
    moto.client("secretsmanager").create_secret(
        Name=name, SecretString=json.dumps({"username": user, "password": password}))
    env = direct_env(tmp_path, mlflow_basic.url, MLFLOW_SECRETS_AUTH_ENABLE="aws-secrets-manager",
                     MLFLOW_AWS_SECRET_ID=name, MLFLOW_AWS_AUTH_MODE="basic", **moto.env)
    result = MlflowClientProcess(env, [["search"], ["log", unique("exp")]], [password]).run()
    assert result.ok, result


def test_an_aws_secret_binary_at_a_version_stage_gives_a_bearer_token(
        moto, mlflow_front, front_token, tmp_path):
    name = unique("mlflow/token")
    sm = moto.client("secretsmanager")
    sm.create_secret(Name=name, SecretBinary=front_token.encode())
    sm.put_secret_value(SecretId=name, SecretBinary=b"tok-not-allowed-" + secrets.token_hex(4).encode())
    # AWSCURRENT now holds a token the front refuses; AWSPREVIOUS holds the allowed one.
    env = direct_env(tmp_path, mlflow_front.url, MLFLOW_SECRETS_AUTH_ENABLE_AWS_SECRETS_MANAGER="true",
                     MLFLOW_AWS_SECRET_ID=name, MLFLOW_AWS_SECRET_VERSION="AWSPREVIOUS", **moto.env)
    result = MlflowClientProcess(env, [["search"]], [front_token]).run()
    assert result.ok, result


def test_aws_web_identity_from_the_default_chain_feeds_a_custom_header(
        moto, mlflow_front, front_token, tmp_path):
    name = unique("mlflow/wi")
    arn = moto.client("secretsmanager").create_secret(Name=name, SecretString=front_token)["ARN"]
    role = moto.create_web_identity_role(unique("plugin-wi"), secret_arns=[arn])
    token_file = tmp_path / "sa-token"
    token_file.write_text("eyJhbGciOiJub25lIn0.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6YTpiIn0.")
    aws = {k: v for k, v in moto.env.items() if not k.startswith("AWS_SECRET") and k != "AWS_ACCESS_KEY_ID"}
    env = direct_env(tmp_path, mlflow_front.url, MLFLOW_SECRETS_AUTH_ENABLE="aws-secrets-manager",
                     MLFLOW_AWS_SECRET_ID=name, AWS_ROLE_ARN=role,
                     AWS_WEB_IDENTITY_TOKEN_FILE=str(token_file),
                     MLFLOW_AUTH_HEADER_NAME="X-MLflow-Auth", **aws)
    mlflow_front.clear_requests()
    result = MlflowClientProcess(env, [["search"]], [front_token]).run()
    assert result.ok, result
    seen = mlflow_front.requests_seen()
    assert seen and all(r["custom_header"] == front_token and not r["authorization"] for r in seen)


# ---- Azure Key Vault (Lowkey Vault) ------------------------------------------------------------
def test_an_azure_key_vault_secret_via_default_azure_credential_gives_a_bearer_token(
        lowkey, mlflow_front, front_token, tmp_path):
    name = unique("mlflow-token").replace("/", "-")
    lowkey.secret_client().set_secret(name, front_token)
    env = direct_env(tmp_path, mlflow_front.url, MLFLOW_SECRETS_AUTH_ENABLE="azure-key-vault",
                     AZURE_KEY_VAULT_URL=lowkey.vault_url, MLFLOW_AZURE_SECRET_NAME=name,
                     MLFLOW_SECRETS_CA_BUNDLE=str(lowkey.ca_file),
                     # Lowkey's challenge names https://127.0.0.1:PORT, not *.vault.azure.net
                     MLFLOW_AZURE_VERIFY_CHALLENGE_RESOURCE="false", **lowkey.identity_env)
    result = MlflowClientProcess(env, [["search"]], [front_token]).run()
    assert result.ok, result
