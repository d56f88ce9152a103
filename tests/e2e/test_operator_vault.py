"""The operator against a real API server and a real OpenBao: each Vault auth method, KV v1/v2,
rotation on the interval and on request, refusal for a namespace identity without access."""
from __future__ import annotations

import base64
import secrets

import pytest
from kubernetes.client.rest import ApiException

from mlflow_secrets_auth_api import ANNOTATION_SYNC, GROUP, LABEL_BINDING, PLURAL, SECRET_TYPE, VERSION
from tests.e2e.fixtures_operator import (create_binding, create_service_account, custom_api,
                                         events_for, get_binding, patch_binding, put_secret,
                                         read_secret, wait_ready)
from tests.e2e.waiting import wait_for



def _vault_token(openbao, namespace: str, paths) -> str:
    policy = f"{namespace}-read"
    openbao.write_read_policy(policy, paths)
    return openbao.client().auth.token.create(policies=[policy], ttl="1h")["auth"]["client_token"]


def _token_binding(openbao, path: str, **extra) -> dict:
    spec = {"provider": {"vault": {"address": openbao.addr, "path": path,
                                   "auth": {"token": {"secretRef": {"name": "vault-token",
                                                                    "key": "token"}}}}},
            "refresh": {"interval": "1h"}}
    spec.update(extra)
    return spec


def _write_kv2(openbao, path: str, data: dict) -> None:
    openbao.client().secrets.kv.v2.create_or_update_secret(path=path, secret=data,
                                                           mount_point="secret")


@pytest.fixture
def vault_token_ns(openbao, operator, kube_api, namespace):
    """A namespace holding a Vault token that may read secret/<namespace>/*."""
    token = _vault_token(openbao, namespace, [f"secret/data/{namespace}/*"])
    put_secret(kube_api, namespace, "vault-token", {"token": token})
    operator.used(token)
    return namespace


def test_vault_token_auth_kv2_bearer_becomes_ready_with_one_owned_secret(
        openbao, operator, kube_api, vault_token_ns):
    ns, value = vault_token_ns, "tok-" + secrets.token_hex(12)
    operator.used(value)
    _write_kv2(openbao, f"{ns}/mlflow", {"token": value})
    create_binding(kube_api, ns, "mlflow", _token_binding(openbao, f"{ns}/mlflow"))
    binding = wait_ready(kube_api, ns, "mlflow")
    status = binding["status"]
    assert status["secretName"] == "mlflow-mlflow-auth" and status["provider"] == "vault"
    assert status["observedGeneration"] == binding["metadata"]["generation"]
    assert status["lastSyncTime"] and status["nextRefreshTime"] and status["secretVersion"] == "1"
    fields = read_secret(kube_api, ns, "mlflow-mlflow-auth")
    assert fields == {"header-name": "Authorization", "header-value": f"Bearer {value}",
                      "token": value}
    from kubernetes import client
    secret = client.CoreV1Api(kube_api).read_namespaced_secret("mlflow-mlflow-auth", ns)
    assert secret.type == SECRET_TYPE
    assert secret.metadata.labels[LABEL_BINDING] == "mlflow"
    assert secret.metadata.owner_references[0].uid == binding["metadata"]["uid"]
    assert ("Normal", "Synced") in [(t, r) for t, r, _ in events_for(kube_api, ns, "mlflow")]
    table = operator.kube.kubectl("get", "mab", "-n", ns, "mlflow")
    assert "True" in getattr(table, "stdout", str(table))


def test_vault_kubernetes_auth_kv1_basic_uses_the_namespace_service_account(
        openbao, operator, kube_api, namespace):
    openbao.enable_kv("kv1", version=1)
    path = f"{namespace}/mlflow"
    password = "pw-" + secrets.token_hex(12)
    operator.used(password)
    openbao.client().secrets.kv.v1.create_or_update_secret(
        path=path, secret={"user": "alice", "pass": password}, mount_point="kv1")
    openbao.write_read_policy(f"{namespace}-kv1", [f"kv1/{namespace}/*"])
    openbao.write_kubernetes_role(namespace, namespace, ["mlflow-reader"], [f"{namespace}-kv1"],
                                   audience="vault")
    create_service_account(kube_api, namespace, "mlflow-reader")
    create_binding(kube_api, namespace, "basic", {
        "provider": {"vault": {"address": openbao.addr, "mount": "kv1", "path": path,
                               "kvVersion": "1",
                               "auth": {"kubernetes": {"role": namespace,
                                                       "serviceAccountName": "mlflow-reader"}}}},
        "credential": {"type": "basic", "usernameKey": "user", "passwordKey": "pass"},
        "refresh": {"interval": "1h"}})
    wait_ready(kube_api, namespace, "basic")
    fields = read_secret(kube_api, namespace, "basic-mlflow-auth")
    assert (fields["username"], fields["password"]) == ("alice", password)
    assert fields["header-value"] == "Basic " + base64.b64encode(f"alice:{password}".encode()).decode()


def test_bindings_of_one_namespace_share_one_vault_login_and_survive_its_revocation(
        openbao, operator, kube_api, namespace):
    openbao.write_read_policy(f"{namespace}-kv2", [f"secret/data/{namespace}/*"])
    openbao.write_kubernetes_role(namespace, namespace, ["mlflow-reader"], [f"{namespace}-kv2"],
                                   audience="vault")
    create_service_account(kube_api, namespace, "mlflow-reader")
    values = {name: "tok-" + secrets.token_hex(12) for name in ("a", "b", "c")}
    operator.used(*values.values())
    for name, value in values.items():
        _write_kv2(openbao, f"{namespace}/{name}", {"token": value})
        create_binding(kube_api, namespace, name, {
            "provider": {"vault": {"address": openbao.addr, "path": f"{namespace}/{name}",
                                   "auth": {"kubernetes": {"role": namespace,
                                                           "serviceAccountName": "mlflow-reader"}}}},
            "refresh": {"interval": "1h"}})
    for name, value in values.items():
        wait_ready(kube_api, namespace, name)
        assert read_secret(kube_api, namespace, f"{name}-mlflow-auth")["token"] == value
    tokens = openbao.tokens_of_role(namespace)
    assert len(tokens) == 1, f"3 bindings made {len(tokens)} Vault logins (tokens), expected 1"

    openbao.client().auth.token.revoke_accessor(tokens[0])
    rotated = "tok-" + secrets.token_hex(12)
    operator.used(rotated)
    _write_kv2(openbao, f"{namespace}/a", {"token": rotated})
    patch_binding(kube_api, namespace, "a", {"metadata": {"annotations": {
        ANNOTATION_SYNC: "after-revoke"}}})
    wait_for(lambda: read_secret(kube_api, namespace, "a-mlflow-auth")["token"] == rotated, 10,
             "the new value read with a fresh login after the cached Vault token was revoked")
    assert wait_ready(kube_api, namespace, "a")["status"]["lastSyncRequest"] == "after-revoke"
    assert len(openbao.tokens_of_role(namespace)) == 1


def test_vault_kv_version_auto_detects_a_v1_mount(openbao, operator, kube_api, namespace):
    openbao.enable_kv("kv1", version=1)
    value = "tok-" + secrets.token_hex(12)
    operator.used(value)
    openbao.client().secrets.kv.v1.create_or_update_secret(
        path=f"{namespace}/auto", secret={"token": value}, mount_point="kv1")
    token = openbao.client().auth.token.create(policies=["root"], ttl="10m")["auth"]["client_token"]
    operator.used(token)
    put_secret(kube_api, namespace, "vault-token", {"token": token})
    spec = _token_binding(openbao, f"{namespace}/auto")
    spec["provider"]["vault"]["mount"] = "kv1"
    create_binding(kube_api, namespace, "auto", spec)
    wait_ready(kube_api, namespace, "auto")
    assert read_secret(kube_api, namespace, "auto-mlflow-auth")["token"] == value


def test_vault_approle_auth_with_a_custom_header(openbao, operator, kube_api, namespace):
    client = openbao.client()
    if "approle/" not in client.sys.list_auth_methods()["data"]:
        try:
            client.sys.enable_auth_method("approle")
        except Exception:  # noqa: BLE001 - another test enabled it meanwhile
            pass
    openbao.write_read_policy(f"{namespace}-approle", [f"secret/data/{namespace}/*"])
    client.auth.approle.create_or_update_approle(namespace, token_policies=[f"{namespace}-approle"])
    role_id = client.auth.approle.read_role_id(namespace)["data"]["role_id"]
    secret_id = client.auth.approle.generate_secret_id(namespace)["data"]["secret_id"]
    value = "hdr-" + secrets.token_hex(12)
    operator.used(secret_id, value)
    _write_kv2(openbao, f"{namespace}/header", {"value": value})
    put_secret(kube_api, namespace, "approle", {"secret-id": secret_id})
    create_binding(kube_api, namespace, "hdr", {
        "provider": {"vault": {"address": openbao.addr, "path": f"{namespace}/header",
                               "auth": {"appRole": {"roleId": role_id, "secretIdRef": {
                                   "name": "approle", "key": "secret-id"}}}}},
        "credential": {"type": "header", "headerName": "X-MLflow-Auth", "tokenKey": "value"}})
    wait_ready(kube_api, namespace, "hdr")
    fields = read_secret(kube_api, namespace, "hdr-mlflow-auth")
    assert (fields["header-name"], fields["header-value"]) == ("X-MLflow-Auth", value)


def test_a_new_value_reaches_the_secret_within_the_refresh_interval(
        openbao, operator, kube_api, vault_token_ns):
    ns = vault_token_ns
    first, second = "tok-" + secrets.token_hex(12), "tok-" + secrets.token_hex(12)
    operator.used(first, second)
    _write_kv2(openbao, f"{ns}/rotating", {"token": first})
    create_binding(kube_api, ns, "rot", _token_binding(openbao, f"{ns}/rotating",
                                                      refresh={"interval": "5s"}))
    wait_ready(kube_api, ns, "rot")
    assert read_secret(kube_api, ns, "rot-mlflow-auth")["token"] == first
    _write_kv2(openbao, f"{ns}/rotating", {"token": second})
    wait_for(lambda: read_secret(kube_api, ns, "rot-mlflow-auth")["token"] == second, 5 + 5,
             "the rotated token in the Secret within interval + 5s")
    wait_for(lambda: ("Normal", "Rotated") in [(t, r) for t, r, _ in events_for(kube_api, ns, "rot")],
             10, "a Rotated event")


def test_the_sync_annotation_forces_an_immediate_sync(openbao, operator, kube_api, vault_token_ns):
    ns = vault_token_ns
    first, second = "tok-" + secrets.token_hex(12), "tok-" + secrets.token_hex(12)
    operator.used(first, second)
    _write_kv2(openbao, f"{ns}/forced", {"token": first})
    create_binding(kube_api, ns, "forced", _token_binding(openbao, f"{ns}/forced"))  # 1h interval
    wait_ready(kube_api, ns, "forced")
    _write_kv2(openbao, f"{ns}/forced", {"token": second})
    patch_binding(kube_api, ns, "forced", {"metadata": {"annotations": {
        ANNOTATION_SYNC: "now-1"}}})
    wait_for(lambda: read_secret(kube_api, ns, "forced-mlflow-auth")["token"] == second, 5,
             "the new token right after the sync-requested annotation")
    wait_for(lambda: get_binding(kube_api, ns, "forced")["status"].get("lastSyncRequest") == "now-1",
             5, "status.lastSyncRequest")


def test_a_spec_change_resyncs_at_once(openbao, operator, kube_api, vault_token_ns):
    ns = vault_token_ns
    value, other = "tok-" + secrets.token_hex(12), "alt-" + secrets.token_hex(12)
    operator.used(value, other)
    _write_kv2(openbao, f"{ns}/two", {"token": value, "alt": other})
    create_binding(kube_api, ns, "two", _token_binding(openbao, f"{ns}/two"))
    wait_ready(kube_api, ns, "two")
    patch_binding(kube_api, ns, "two", {"spec": {"credential": {"tokenKey": "alt"}}})
    wait_for(lambda: read_secret(kube_api, ns, "two-mlflow-auth")["token"] == other, 5,
             "the Secret following the new tokenKey")
    binding = wait_ready(kube_api, ns, "two")
    assert binding["status"]["observedGeneration"] == binding["metadata"]["generation"] == 2


def test_a_namespace_identity_that_may_not_read_the_path_is_refused_and_nothing_is_written(
        openbao, operator, kube_api, namespace):
    _write_kv2(openbao, f"other-team-{namespace}/mlflow", {"token": "not-yours-" + secrets.token_hex(6)})
    token = _vault_token(openbao, namespace, [f"secret/data/{namespace}/*"])
    operator.used(token)
    put_secret(kube_api, namespace, "vault-token", {"token": token})
    create_binding(kube_api, namespace, "deny", _token_binding(openbao, f"other-team-{namespace}/mlflow"))
    binding = wait_ready(kube_api, namespace, "deny", status="False", reason="PermissionDenied")
    assert "may not read" in binding["status"]["conditions"][0]["message"]
    assert read_secret(kube_api, namespace, "deny-mlflow-auth") is None
    assert "secretName" not in binding["status"]
    wait_for(lambda: ("Warning", "PermissionDenied") in
             [(t, r) for t, r, _ in events_for(kube_api, namespace, "deny")], 10, "a Warning event")


def test_a_missing_secret_path_is_reported_as_secret_not_found(openbao, operator, kube_api,
                                                               vault_token_ns):
    create_binding(kube_api, vault_token_ns, "nf", _token_binding(openbao, f"{vault_token_ns}/absent"))
    binding = wait_ready(kube_api, vault_token_ns, "nf", status="False", reason="SecretNotFound")
    assert "spec.provider.vault" in binding["status"]["conditions"][0]["message"]


def test_deleting_the_binding_removes_its_secret(openbao, operator, kube_api, vault_token_ns):
    ns = vault_token_ns
    value = "tok-" + secrets.token_hex(12)
    operator.used(value)
    _write_kv2(openbao, f"{ns}/gone", {"token": value})
    create_binding(kube_api, ns, "gone", _token_binding(openbao, f"{ns}/gone"))
    wait_ready(kube_api, ns, "gone")
    custom_api(kube_api).delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "gone")

    def binding_gone():
        try:
            get_binding(kube_api, ns, "gone")
        except ApiException as exc:
            return exc.status == 404
        return False
    wait_for(binding_gone, 20, "the binding to be deleted (finalizer released)")
    wait_for(lambda: read_secret(kube_api, ns, "gone-mlflow-auth") is None, 30,
             "garbage collection of the owned Secret")


def _jwt(exp: int, jti: str) -> str:
    def part(doc):
        import json
        return base64.urlsafe_b64encode(json.dumps(doc).encode()).decode().rstrip("=")
    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part({'exp': exp, 'jti': jti})}.c2ln"


def test_a_credential_with_an_expiry_is_refreshed_ahead_of_it_and_exported_as_metrics(
        openbao, operator, kube_api, vault_token_ns):
    import time

    ns = vault_token_ns
    first = _jwt(int(time.time()) + 12, secrets.token_hex(8))
    second = _jwt(int(time.time()) + 3600, secrets.token_hex(8))
    operator.used(first, second)
    _write_kv2(openbao, f"{ns}/jwt", {"token": first})
    create_binding(kube_api, ns, "jwt", _token_binding(openbao, f"{ns}/jwt"))  # 1h interval
    binding = wait_ready(kube_api, ns, "jwt")
    fields = read_secret(kube_api, ns, "jwt-mlflow-auth")
    assert fields["expires-at"] == binding["status"]["expiresAt"]
    _write_kv2(openbao, f"{ns}/jwt", {"token": second})
    # the interval is an hour, but the first token expires in 12 s: refreshed after ~2/3 of that
    wait_for(lambda: read_secret(kube_api, ns, "jwt-mlflow-auth")["token"] == second, 15,
             "a refresh ahead of the credential's expiry")
    wait_for(lambda: operator.metric("msa_credential_seconds_to_expiry", namespace=ns,
                                     binding="jwt") > 3000, 10, "the seconds-to-expiry gauge")
    assert operator.metric("msa_provider_calls_total", provider="vault", result="ok") >= 2
    assert operator.metric("msa_sync_duration_seconds_count", provider="vault") >= 2


def test_a_binding_from_before_the_scheduler_loses_the_old_finalizer_and_its_deletion_takes_the_secret(
        openbao, operator, kube_api, vault_token_ns):
    """Bindings created by the daemon design carry the finalizer mlflow-secrets-auth.io/operator;
    nothing needs it now: kopf removes it, and deleting the binding removes its Secret (GC)."""
    ns, value = vault_token_ns, "tok-" + secrets.token_hex(12)
    operator.used(value)
    _write_kv2(openbao, f"{ns}/old", {"token": value})
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "MlflowAuthBinding",
            "metadata": {"name": "old", "namespace": ns,
                         "finalizers": ["mlflow-secrets-auth.io/operator"]},
            "spec": _token_binding(openbao, f"{ns}/old")}
    custom_api(kube_api).create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, body)
    wait_ready(kube_api, ns, "old")
    wait_for(lambda: not get_binding(kube_api, ns, "old")["metadata"].get("finalizers"), 30,
             "the old finalizer to be removed")
    assert read_secret(kube_api, ns, "old-mlflow-auth") is not None
    custom_api(kube_api).delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "old")

    def gone(read):
        try:
            return read() is None
        except ApiException as exc:
            return exc.status == 404
    wait_for(lambda: gone(lambda: get_binding(kube_api, ns, "old")), 30, "the binding to go")
    wait_for(lambda: gone(lambda: read_secret(kube_api, ns, "old-mlflow-auth")), 60,
             "its Secret to be garbage-collected")
