"""OpenBao is a real Vault API, and its Kubernetes auth trusts the real API server's tokens."""
from __future__ import annotations

import secrets

import hvac.exceptions
import pytest
from kubernetes import client

from dev.stack.openbao import request_token


def test_a_secret_round_trips_through_hvac_in_kv_v1_and_kv_v2(openbao):
    mount = f"kv1-{secrets.token_hex(3)}"
    openbao.enable_kv(mount, version=1)
    bao = openbao.client()

    bao.secrets.kv.v1.create_or_update_secret("mlflow/auth", {"username": "u", "password": "p"},
                                              mount_point=mount)
    bao.secrets.kv.v2.create_or_update_secret("mlflow/auth", {"token": "t"}, mount_point="secret")

    assert bao.secrets.kv.v1.read_secret("mlflow/auth", mount_point=mount)["data"] == {
        "username": "u", "password": "p"}
    assert bao.secrets.kv.v2.read_secret_version(
        "mlflow/auth", mount_point="secret", raise_on_deleted_version=True)["data"]["data"] == {"token": "t"}


@pytest.fixture
def kv_reader_role(openbao, kube_api, namespace):
    """Role `reader-<ns>` lets ServiceAccount `reader` of the test namespace read kv path `<ns>/*`."""
    core = client.CoreV1Api(kube_api)
    for name in ("reader", "stranger"):
        core.create_namespaced_service_account(namespace, client.V1ServiceAccount(
            metadata=client.V1ObjectMeta(name=name)))
    openbao.enable_kv("kv", version=1)
    openbao.client().secrets.kv.v1.create_or_update_secret(
        f"{namespace}/mlflow", {"token": "from-openbao"}, mount_point="kv")
    openbao.write_read_policy(f"read-{namespace}", [f"kv/{namespace}/*"])
    role = f"reader-{namespace}"
    openbao.write_kubernetes_role(role, namespace, ["reader"], [f"read-{namespace}"])
    return role


def test_a_token_request_for_a_bound_service_account_logs_in_to_openbao(
        openbao, kube, namespace, kv_reader_role):
    jwt = request_token(kube, namespace, "reader")

    bao = openbao.login_kubernetes(kv_reader_role, jwt)

    assert bao.is_authenticated()
    assert bao.secrets.kv.v1.read_secret(f"{namespace}/mlflow", mount_point="kv")["data"] == {
        "token": "from-openbao"}


def test_a_token_for_a_service_account_not_bound_to_the_role_is_refused(
        openbao, kube, namespace, kv_reader_role):
    jwt = request_token(kube, namespace, "stranger")

    with pytest.raises(hvac.exceptions.Forbidden, match="not authorized"):
        openbao.login_kubernetes(kv_reader_role, jwt)


def test_a_token_the_api_server_did_not_sign_is_refused(openbao, kube, namespace, kv_reader_role):
    header, payload, _ = request_token(kube, namespace, "reader").split(".")
    forged = f"{header}.{payload}.{'A' * 342}"

    with pytest.raises(hvac.exceptions.Forbidden):
        openbao.login_kubernetes(kv_reader_role, forged)
