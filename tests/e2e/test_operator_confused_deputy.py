"""The operator is no confused deputy, against the real API server, OpenBao and moto: it never
requests a ServiceAccount token for the Kubernetes API (no audience, or an API-server audience),
and it sends its own identity only to the addresses the cluster admin listed.

Bindings here carry no policy-test label, so the admission policy (test_binding_authorization.py)
does not see them: these tests show the operator's own defence, behind the policy.
"""
from __future__ import annotations

import http.server
import json
import secrets
import threading
from pathlib import Path

import pytest

from mlflow_secrets_auth_api import API_VERSION, KIND
from dev.stack.kube import API_AUDIENCES
from mlflow_secrets_auth_operator import reconcile
from mlflow_secrets_auth_operator.kube import KubeApi
from mlflow_secrets_auth_redaction import Redactor
from mlflow_secrets_auth_operator.metrics import Metrics
from mlflow_secrets_auth_operator.settings import Settings
from tests.e2e.fixtures_operator import create_binding, create_service_account, wait_ready
from tests.e2e.waiting import wait_for


def _kubernetes_binding(openbao, path: str, role: str, **auth) -> dict:
    return {"provider": {"vault": {"address": openbao.addr, "path": path, "kvVersion": "2",
                                   "auth": {"kubernetes": {"role": role,
                                                           "serviceAccountName": "mlflow-reader",
                                                           **auth}}}},
            "refresh": {"interval": "1h"}}


@pytest.fixture
def vault_role(openbao, kube_api, namespace, operator):
    """A Vault role for this namespace's mlflow-reader that sets no audience: OpenBao then accepts
    a token of whatever audience, the API server's own included (what the operator used to
    send when a binding named none)."""
    value = "tok-" + secrets.token_hex(12)
    operator.used(value)
    openbao.client().secrets.kv.v2.create_or_update_secret(
        path=f"{namespace}/mlflow", secret={"token": value}, mount_point="secret")
    openbao.write_read_policy(f"{namespace}-read", [f"secret/data/{namespace}/*"])
    openbao.write_kubernetes_role(namespace, namespace, ["mlflow-reader"], [f"{namespace}-read"])
    create_service_account(kube_api, namespace, "mlflow-reader")
    return namespace


def test_a_binding_naming_the_api_server_audience_is_refused_and_vault_sees_no_login(
        openbao, operator, kube_api, vault_role):
    ns = vault_role
    create_binding(kube_api, ns, "api-aud", _kubernetes_binding(
        openbao, f"{ns}/mlflow", ns, audience=API_AUDIENCES[0]))
    binding = wait_ready(kube_api, ns, "api-aud", status="False", reason="AudienceNotAllowed")
    message = binding["status"]["conditions"][0]["message"]
    assert "spec.provider.vault.auth.kubernetes.audience" in message
    assert openbao.tokens_of_role(ns) == []


def test_aws_web_identity_with_the_api_server_audience_never_reaches_sts(
        moto, operator, kube_api, namespace):
    role = moto.create_web_identity_role(f"r-{secrets.token_hex(4)}")
    create_service_account(kube_api, namespace, "mlflow-reader")
    create_binding(kube_api, namespace, "wi", {
        "provider": {"awsSecretsManager": {
            "region": moto.region, "secretId": f"{namespace}/x", "endpointUrl": moto.endpoint_url,
            "auth": {"webIdentity": {"roleArn": role, "serviceAccountName": "mlflow-reader",
                                     "audience": API_AUDIENCES[0]}}}},
        "credential": {"format": "plain"}})
    binding = wait_ready(kube_api, namespace, "wi", status="False", reason="AudienceNotAllowed")
    assert "webIdentity.audience" in binding["status"]["conditions"][0]["message"]


class _Trap(http.server.BaseHTTPRequestHandler):
    """An address a binding chooses: records every request (method, path, body)."""

    seen: list

    def _record(self):
        length = int(self.headers.get("Content-Length") or 0)
        self.seen.append((self.command, self.path, self.rfile.read(length) if length else b""))
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST = do_PUT = _record

    def log_message(self, *args):
        pass


@pytest.fixture
def trap():
    handler = type("Trap", (_Trap,), {"seen": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler.seen
    finally:
        server.shutdown()
        server.server_close()


def test_the_operator_vault_token_goes_only_to_an_address_the_admin_listed(
        openbao, kube, kube_api, namespace, trap, tmp_path: Path):
    """One sync with the operator's settings (allowOperatorIdentity on, its own Vault token, one
    listed address), through the real KubeApi and the real Vault client."""
    trap_url, seen = trap
    value = "tok-" + secrets.token_hex(12)
    openbao.client().secrets.kv.v2.create_or_update_secret(
        path=f"{namespace}/op", secret={"token": value}, mount_point="secret")
    settings = Settings(allow_operator_identity=True, vault_token=openbao.root_token,
                        operator_identity_addresses=(openbao.addr,))
    with kube.api_client() as api:
        ctx = reconcile.Context(settings=settings, kube=KubeApi(api), metrics=Metrics(),
                                redactor=Redactor(), ca_dir=tmp_path)

        def body(address):
            return {"apiVersion": API_VERSION, "kind": KIND,
                    "metadata": {"name": "op", "namespace": namespace, "uid": "not-stored"},
                    "spec": {"provider": {"vault": {"address": address, "path": f"{namespace}/op",
                                                    "kvVersion": "2",
                                                    "auth": {"operatorIdentity": {}}}}},
                    "status": {"secretName": "op-mlflow-auth"}}

        refused = reconcile.sync(body(trap_url), ctx)
        assert refused.reason == "OperatorIdentityAddressNotAllowed", refused.message
        assert "operatorIdentityAddresses" in refused.message and seen == []
        assert openbao.root_token not in refused.message
        listed = reconcile.sync(body(openbao.addr), ctx)
    assert listed.ok, listed.message


def test_without_an_audience_the_token_the_operator_sends_is_no_kubernetes_api_credential(
        operator, kube_api, namespace, trap):
    """Before, a binding without `audience` made the operator send a token for the API server
    itself to the binding's address. Now the token it sends is for `vault` only: the API server
    does not accept it."""
    from kubernetes import client

    from mlflow_secrets_auth_operator.jwt_claims import audiences

    url, seen = trap
    create_service_account(kube_api, namespace, "mlflow-reader")
    create_binding(kube_api, namespace, "no-aud", {
        "provider": {"vault": {"address": url, "path": f"{namespace}/mlflow", "kvVersion": "2",
                               "auth": {"kubernetes": {"role": "r",
                                                       "serviceAccountName": "mlflow-reader"}}}},
        "refresh": {"interval": "1h"}})
    login = wait_for(lambda: next((body for method, path, body in seen
                                   if path == "/v1/auth/kubernetes/login"), None),
                     30, "the operator to log in at the binding's address")
    jwt = json.loads(login)["jwt"]
    operator.used(jwt)
    assert audiences(jwt) == ("vault",)
    review = client.AuthenticationV1Api(kube_api).create_token_review(client.V1TokenReview(
        spec=client.V1TokenReviewSpec(token=jwt)))
    assert not review.status.authenticated
