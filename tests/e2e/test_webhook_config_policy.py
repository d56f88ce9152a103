"""tls.mode=selfManaged on the real API server: the webhook's ServiceAccount may patch its own
MutatingWebhookConfiguration (RBAC allows the whole object), but the chart's admission policy
lets it change only the caBundle. The policy is rendered from the chart with the pinned helm."""
from __future__ import annotations

import base64
import json
import secrets

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from dev.helm import render
from tests.e2e.waiting import wait_for



def _render_policy(release: str, namespace: str) -> str:
    return "\n---\n".join(json.dumps(doc) for doc in render(
        release, namespace, {"tls": {"mode": "selfManaged"}}, "templates/webhook-config-policy.yaml"))


@pytest.fixture
def self_managed_release(kube, kube_api, namespace):
    """The chart's policy for a release in ``namespace``, its webhook configuration (matching no
    namespace, so no pod depends on it), the webhook's ServiceAccount with the chart's
    get/patch on that configuration, and an API client impersonating that ServiceAccount."""
    release = "r" + secrets.token_hex(3)
    config_name, sa = f"{release}-mlflow-secrets-auth", f"{release}-mlflow-secrets-auth-webhook"
    admission = client.AdmissionregistrationV1Api(kube_api)
    rbac = client.RbacAuthorizationV1Api(kube_api)
    config = next(d for d in render(release, namespace, {"tls": {"mode": "selfManaged"}},
                                    "templates/webhook-admission.yaml")
                  if d["kind"] == "MutatingWebhookConfiguration")
    assert config["metadata"]["name"] == config_name
    config["webhooks"][0]["namespaceSelector"] = {
        "matchLabels": {"kubernetes.io/metadata.name": "no-such-ns-x"}}
    admission.create_mutating_webhook_configuration(config)
    client.CoreV1Api(kube_api).create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=sa)))
    rbac.create_cluster_role(client.V1ClusterRole(
        metadata=client.V1ObjectMeta(name=config_name),
        rules=[client.V1PolicyRule(api_groups=["admissionregistration.k8s.io"],
                                   resources=["mutatingwebhookconfigurations"],
                                   resource_names=[config_name], verbs=["get", "patch"])]))
    rbac.create_cluster_role_binding(client.V1ClusterRoleBinding(
        metadata=client.V1ObjectMeta(name=config_name),
        role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="ClusterRole",
                                  name=config_name),
        subjects=[client.RbacV1Subject(kind="ServiceAccount", name=sa, namespace=namespace)]))
    kube.kubectl("apply", "-f", "-", input=_render_policy(release, namespace))
    api = kube.api_client()
    api.set_default_header("Impersonate-User", f"system:serviceaccount:{namespace}:{sa}")
    try:
        yield config_name, client.AdmissionregistrationV1Api(api)
    finally:
        api.close()
        policy = f"{release}-mlflow-secrets-auth-webhook-cabundle-only"
        for delete in (lambda: admission.delete_mutating_webhook_configuration(config_name),
                       lambda: admission.delete_validating_admission_policy_binding(policy),
                       lambda: admission.delete_validating_admission_policy(policy),
                       lambda: rbac.delete_cluster_role_binding(config_name),
                       lambda: rbac.delete_cluster_role(config_name)):
            try:
                delete()
            except ApiException:
                pass


def _patch(api, name: str, ops: list):
    return api.patch_mutating_webhook_configuration(name, ops)


def _refused(api, name: str, ops: list) -> ApiException:
    try:
        _patch(api, name, ops)
    except ApiException as exc:
        return exc
    raise AssertionError(f"the API server accepted {ops}")


@pytest.mark.parametrize("ops", [
    [{"op": "replace", "path": "/webhooks/0/rules/0/resources", "value": ["pods", "secrets"]}],
    [{"op": "remove", "path": "/webhooks/0/objectSelector"}],
    [{"op": "replace", "path": "/webhooks/0/failurePolicy", "value": "Ignore"}],
    [{"op": "replace", "path": "/webhooks/0/namespaceSelector", "value": {}}],
    [{"op": "add", "path": "/metadata/annotations", "value": {"x": "y"}}],
], ids=["rules", "objectSelector", "failurePolicy", "namespaceSelector", "annotations"])
def test_the_webhook_may_change_only_the_ca_bundle_of_its_configuration(self_managed_release, ops):
    name, as_webhook = self_managed_release
    # the policy takes effect a moment after it is created: wait until a change of the timeout
    # (a new value each time, so that an attempt accepted before that is no no-op) is refused
    wait_for(lambda: _refused(as_webhook, name, [{
        "op": "replace", "path": "/webhooks/0/timeoutSeconds",
        "value": 11 + secrets.randbelow(19)}]).status == 403, 30, "the policy to take effect")
    refusal = _refused(as_webhook, name, ops)
    assert refusal.status == 403 and "only the caBundle" in refusal.body
    ca = base64.b64encode(b"-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n").decode()
    patched = _patch(as_webhook, name, [{"op": "add", "path": "/webhooks/0/clientConfig/caBundle",
                                         "value": ca}])
    assert patched.webhooks[0].client_config.ca_bundle == ca
    assert patched.webhooks[0].rules[0].resources == ["pods"]
