"""The real kube-apiserver calls the real webhook (uvicorn over TLS) for pods in test namespaces;
bindings are synced by the real operator from the real OpenBao."""
from __future__ import annotations

import secrets

import pytest
from kubernetes.client.rest import ApiException

from tests.e2e.fixtures_webhook import INJECT_IMAGE, admission_error, create_pod, vault_binding


def env_of(container: dict) -> dict:
    return {e["name"]: e.get("value") for e in container.get("env") or []}


@pytest.fixture
def ready_binding(webhook, openbao, operator, kube_api, namespace):
    token = "tok-" + secrets.token_hex(12)
    return vault_binding(openbao, operator, kube_api, namespace, "mlflow", {"token": token},
                         trackingUri="http://127.0.0.1:5000", allowedHosts=["127.0.0.1:5000"])


def test_labelled_pod_is_mutated_by_the_api_server(ready_binding, kube_api, namespace):
    pod = create_pod(kube_api, namespace, "trainer")
    spec = pod["spec"]
    init = spec["initContainers"][0]
    assert init["image"] == INJECT_IMAGE
    assert init["command"] == ["cp", "-R", "/opt/mlflow-secrets-auth/payload/.", "/mlflow-secrets-auth/"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["mlflow-secrets-auth-credential"]["projected"]["sources"] == [
        {"secret": {"name": "mlflow-mlflow-auth"}}]
    env = env_of(spec["containers"][0])
    assert env == {"MLFLOW_TRACKING_AUTH": "mlflow_secrets_auth",
                   "MLFLOW_SECRETS_AUTH_DIR": "/var/run/secrets/mlflow-secrets-auth",
                   "MLFLOW_SECRETS_ALLOWED_HOSTS": "127.0.0.1:5000",
                   "MLFLOW_TRACKING_URI": "http://127.0.0.1:5000",
                   "PYTHONPATH": "/mlflow-secrets-auth"}
    assert pod["metadata"]["annotations"]["mlflow-secrets-auth/injected"] == "true"


def test_pod_without_label_is_not_mutated(ready_binding, kube_api, namespace):
    pod = create_pod(kube_api, namespace, "plain", inject=False)
    assert not pod["spec"].get("initContainers")
    assert "mlflow-secrets-auth/injected" not in (pod["metadata"].get("annotations") or {})
    assert env_of(pod["spec"]["containers"][0]) == {}


def test_stored_pod_holds_no_secret_value(ready_binding, operator, kube_api, namespace):
    pod = create_pod(kube_api, namespace, "trainer")
    text = str(pod)
    leaked = [v for v in operator.secret_values if v and v in text]
    assert leaked == [] and "secretKeyRef" not in text


def denial_for(kube_api, namespace, name, **kwargs) -> str:
    with pytest.raises(ApiException) as info:
        create_pod(kube_api, namespace, name, **kwargs)
    assert info.value.status in (400, 403)
    message = admission_error(info.value)
    assert "denied the request" in message
    return message


def test_namespace_without_binding_is_denied_with_what_to_do(webhook, kube_api, namespace):
    message = denial_for(kube_api, namespace, "lonely")
    assert "has no MlflowAuthBinding" in message and "kubectl apply" in message


def test_several_bindings_without_annotation_are_denied(ready_binding, webhook, openbao, operator,
                                                        kube_api, namespace):
    vault_binding(openbao, operator, kube_api, namespace, "second", {"token": "t-" + secrets.token_hex(8)})
    message = denial_for(kube_api, namespace, "ambiguous")
    assert "(mlflow, second)" in message and "mlflow-secrets-auth/binding: <name>" in message
    pod = create_pod(kube_api, namespace, "chosen", annotations={"mlflow-secrets-auth/binding": "second"})
    sources = next(v for v in pod["spec"]["volumes"] if "projected" in v)["projected"]["sources"]
    assert sources == [{"secret": {"name": "second-mlflow-auth"}}]


def test_binding_whose_secret_was_never_written_is_denied(webhook, openbao, operator, kube_api, namespace):
    vault_binding(openbao, operator, kube_api, namespace, "empty", None, wait="False")
    message = denial_for(kube_api, namespace, "early")
    assert "has not written its credential Secret yet" in message
    assert "kubectl describe mlflowauthbinding empty" in message


def test_service_account_not_allowed_by_the_binding_is_denied(webhook, openbao, operator, kube_api, namespace):
    vault_binding(openbao, operator, kube_api, namespace, "mlflow", {"token": "t-" + secrets.token_hex(8)},
                  allowedServiceAccounts=["trainer"])
    message = denial_for(kube_api, namespace, "intruder", service_account="intruder")
    assert "'intruder'" in message and "spec.allowedServiceAccounts: trainer" in message
    pod = create_pod(kube_api, namespace, "allowed", service_account="trainer")
    assert pod["metadata"]["annotations"]["mlflow-secrets-auth/injected"] == "true"


def test_webhook_metrics_count_what_it_answered(ready_binding, webhook, kube_api, namespace):
    create_pod(kube_api, namespace, "counted")
    text = webhook.get("/metrics")
    mutated = [line for line in text.splitlines()
               if line.startswith('mlflow_secrets_auth_webhook_admissions_total{result="mutated"}')]
    assert mutated and float(mutated[0].split()[-1]) >= 1
    assert "mlflow_secrets_auth_webhook_admission_duration_seconds_bucket" in text


def test_webhook_logs_are_json_without_secret_values(ready_binding, webhook, operator, kube_api, namespace):
    create_pod(kube_api, namespace, "logged")
    records = webhook.log_records()
    assert records and all("unparsed" not in r for r in records), [r for r in records if "unparsed" in r][:3]
    assert any(r.get("message") == "pod injected" and r.get("namespace") == namespace for r in records)
    logs = webhook.logs()
    assert [v for v in operator.secret_values if v and v in logs] == []


# ---- issue 11: the allowlist is pinned; a container's own credential dir agrees or is denied ---
def test_without_allowed_hosts_the_pods_allowlist_is_pinned_to_the_tracking_uri(
        webhook, openbao, operator, kube_api, namespace):
    vault_binding(openbao, operator, kube_api, namespace, "mlflow",
                  {"token": "tok-" + secrets.token_hex(12)}, trackingUri="http://127.0.0.1:5000/")
    env = env_of(create_pod(kube_api, namespace, "pinned")["spec"]["containers"][0])
    assert env["MLFLOW_SECRETS_ALLOWED_HOSTS"] == "127.0.0.1:5000"
    assert env["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:5000/"


@pytest.mark.parametrize("entry,words", [
    ({"valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}, "from valueFrom"),
    ({"value": "creds"}, "not a normalized absolute path"),
    ({"value": "/mlflow-secrets-auth/creds"}, "collides with the plugin's mount"),
])
def test_a_container_credential_dir_the_mount_cannot_agree_with_is_denied(
        ready_binding, kube_api, namespace, entry, words):
    containers = [{"name": "app", "image": "python:3.11-slim", "command": ["true"],
                   "env": [{"name": "MLFLOW_SECRETS_AUTH_DIR", **entry}]}]
    message = denial_for(kube_api, namespace, "own-dir", containers=containers)
    assert words in message and "container 'app' sets MLFLOW_SECRETS_AUTH_DIR" in message
