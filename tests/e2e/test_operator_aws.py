"""The operator against moto's real Secrets Manager and STS: static keys and web identity through
a TokenRequest, SecretString (JSON, plain) and SecretBinary."""
from __future__ import annotations

import json
import secrets

from tests.e2e.fixtures_operator import (create_binding, create_service_account, put_secret,
                                         read_secret, wait_ready)


def _aws(moto, secret_id: str, auth: dict) -> dict:
    return {"awsSecretsManager": {"region": moto.region, "secretId": secret_id,
                                  "endpointUrl": moto.endpoint_url, "auth": auth}}


def _static_keys(kube_api, moto, namespace: str, operator) -> dict:
    put_secret(kube_api, namespace, "aws-keys", {"AWS_ACCESS_KEY_ID": moto.access_key_id,
                                                 "AWS_SECRET_ACCESS_KEY": moto.secret_access_key})
    operator.used(moto.secret_access_key)
    return {"staticKeys": {"secretRef": {"name": "aws-keys"}}}


def test_aws_static_keys_json_secret_string(moto, operator, kube_api, namespace):
    value = "aws-" + secrets.token_hex(12)
    operator.used(value)
    moto.client("secretsmanager").create_secret(Name=f"{namespace}/json",
                                                SecretString=json.dumps({"token": value}))
    create_binding(kube_api, namespace, "json", {
        "provider": _aws(moto, f"{namespace}/json", _static_keys(kube_api, moto, namespace, operator)),
        "refresh": {"interval": "1h"}})
    binding = wait_ready(kube_api, namespace, "json")
    assert binding["status"]["provider"] == "awsSecretsManager" and binding["status"]["secretVersion"]
    assert read_secret(kube_api, namespace, "json-mlflow-auth")["header-value"] == f"Bearer {value}"


def test_aws_web_identity_through_a_service_account_token_plain_secret(moto, operator, kube_api,
                                                                        namespace):
    value = "aws-" + secrets.token_hex(12)
    operator.used(value)
    sm = moto.client("secretsmanager")
    arn = sm.create_secret(Name=f"{namespace}/plain", SecretString=value + "\n")["ARN"]
    role = moto.create_web_identity_role(f"r-{secrets.token_hex(4)}", secret_arns=[arn])
    create_service_account(kube_api, namespace, "mlflow-reader")
    create_binding(kube_api, namespace, "wi", {
        "provider": _aws(moto, f"{namespace}/plain", {"webIdentity": {
            "roleArn": role, "serviceAccountName": "mlflow-reader"}}),
        "credential": {"format": "plain"}, "refresh": {"interval": "1h"}})
    wait_ready(kube_api, namespace, "wi")
    assert read_secret(kube_api, namespace, "wi-mlflow-auth")["token"] == value


def test_aws_web_identity_without_the_service_account_names_the_field(moto, operator, kube_api,
                                                                       namespace):
    role = moto.create_web_identity_role(f"r-{secrets.token_hex(4)}")
    create_binding(kube_api, namespace, "nosa", {
        "provider": _aws(moto, f"{namespace}/none", {"webIdentity": {
            "roleArn": role, "serviceAccountName": "missing-sa"}}),
        "credential": {"format": "plain"}})
    binding = wait_ready(kube_api, namespace, "nosa", status="False", reason="ServiceAccountNotFound")
    assert "webIdentity.serviceAccountName" in binding["status"]["conditions"][0]["message"]


def test_aws_secret_binary_utf8_json_and_base64_plain(moto, operator, kube_api, namespace):
    value = "bin-" + secrets.token_hex(12)
    raw = b"\x00\x9f\x92\x96" + secrets.token_bytes(12)
    operator.used(value)
    sm = moto.client("secretsmanager")
    sm.create_secret(Name=f"{namespace}/bin-json", SecretBinary=json.dumps({"token": value}).encode())
    sm.create_secret(Name=f"{namespace}/bin-raw", SecretBinary=raw)
    auth = _static_keys(kube_api, moto, namespace, operator)
    create_binding(kube_api, namespace, "binjson", {
        "provider": _aws(moto, f"{namespace}/bin-json", auth), "refresh": {"interval": "1h"}})
    create_binding(kube_api, namespace, "binraw", {
        "provider": _aws(moto, f"{namespace}/bin-raw", auth),
        "credential": {"format": "plain", "binaryEncoding": "base64"}, "refresh": {"interval": "1h"}})
    wait_ready(kube_api, namespace, "binjson")
    wait_ready(kube_api, namespace, "binraw")
    import base64
    encoded = base64.b64encode(raw).decode()
    operator.used(encoded)
    assert read_secret(kube_api, namespace, "binjson-mlflow-auth")["token"] == value
    assert read_secret(kube_api, namespace, "binraw-mlflow-auth")["token"] == encoded


def test_aws_missing_secret_is_secret_not_found(moto, operator, kube_api, namespace):
    create_binding(kube_api, namespace, "absent", {
        "provider": _aws(moto, f"{namespace}/absent", _static_keys(kube_api, moto, namespace, operator))})
    binding = wait_ready(kube_api, namespace, "absent", status="False", reason="SecretNotFound")
    assert "secretId" in binding["status"]["conditions"][0]["message"]
