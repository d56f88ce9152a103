"""The chart's admission policy on the real API server: a binding can exercise no right its author
lacks. A user who may only create bindings is refused a binding that would make the operator read
a Secret or mint a ServiceAccount token; the same binding is accepted from a user who holds those
rights. API-server audiences and refused namespaces are refused at apply.

The policy is charts/mlflow-secrets-auth/files/policies/binding-authorization.yaml, applied as
the chart ships it; the test binds it (like templates/binding-policy.yaml) only to bindings
labelled for this test, so the other e2e tests of the session are not affected.
"""
from __future__ import annotations

import copy
import secrets
from pathlib import Path

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from dev.stack.kube import API_AUDIENCES
from tests.e2e.fixtures_operator import GROUP, PLURAL, VERSION, apply_crd
from tests.e2e.waiting import wait_for
from tests.unit.api.examples import VALID

ROOT = Path(__file__).resolve().parents[2]
POLICY = ROOT / "charts" / "mlflow-secrets-auth" / "files" / "policies" / "binding-authorization.yaml"
LABEL = "mlflow-secrets-auth.io/policy-test"
PARAMS_NAMESPACE = "msa-policy-test"
REFUSED_NAMESPACES = ("kube-system", "kube-public", "kube-node-lease", PARAMS_NAMESPACE)

# (example, what the binding makes the operator use, the field the denial must name)
SECRET_REFS = [
    ("vault-token-bearer", "vault-token", "spec.provider.vault.auth.token.secretRef"),
    ("vault-approle-header", "approle", "spec.provider.vault.auth.appRole.secretIdRef"),
    ("aws-static-keys-binary-base64", "aws-keys",
     "spec.provider.awsSecretsManager.auth.staticKeys.secretRef"),
    ("azure-client-secret", "azure-sp", "spec.provider.azureKeyVault.auth.clientSecret.secretRef"),
]
SERVICE_ACCOUNTS = [
    ("vault-kubernetes-basic-kv1", "spec.provider.vault.auth.kubernetes.serviceAccountName"),
    ("aws-web-identity-plain", "spec.provider.awsSecretsManager.auth.webIdentity.serviceAccountName"),
    ("azure-workload-identity",
     "spec.provider.azureKeyVault.auth.workloadIdentity.serviceAccountName"),
]


def _body(namespace: str, name: str, spec: dict) -> dict:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "MlflowAuthBinding",
            "metadata": {"name": name, "namespace": namespace, "labels": {LABEL: "true"}},
            "spec": copy.deepcopy(spec)}


def _create(api, namespace: str, name: str, spec: dict) -> dict:
    return client.CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, _body(namespace, name, spec))


def _refusal(api, namespace: str, spec: dict) -> ApiException:
    """Create a binding that must be refused; return the API server's refusal."""
    name = "b-" + secrets.token_hex(4)
    try:
        _create(api, namespace, name, spec)
    except ApiException as exc:
        return exc
    client.CustomObjectsApi(api).delete_namespaced_custom_object(GROUP, VERSION, namespace,
                                                                 PLURAL, name)
    raise AssertionError(f"the API server accepted binding {namespace}/{name}")


@pytest.fixture(scope="session")
def binding_policy(kube, kube_api):
    """The chart's policy, its parameters and a binding to bindings labelled for this test."""
    apply_crd(kube)
    core = client.CoreV1Api(kube_api)
    try:
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=PARAMS_NAMESPACE)))
    except ApiException as exc:
        if exc.status != 409:
            raise
    params = {"apiVersion": "v1", "kind": "ConfigMap",
              "metadata": {"name": "binding-policy", "namespace": PARAMS_NAMESPACE},
              "data": {"refusedNamespaces": ",".join(REFUSED_NAMESPACES),
                       "refusedAudiences": ",".join(API_AUDIENCES)}}
    policy = yaml.safe_load(POLICY.read_text())
    policy_binding = {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": "msa-policy-test"},
        "spec": {"policyName": policy["metadata"]["name"], "validationActions": ["Deny"],
                 "paramRef": {"name": "binding-policy", "namespace": PARAMS_NAMESPACE,
                              "parameterNotFoundAction": "Deny"},
                 "matchResources": {"objectSelector": {"matchLabels": {LABEL: "true"}}}}}
    manifest = "\n---\n".join(yaml.safe_dump(d) for d in (params, policy_binding))
    kube.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(POLICY))
    kube.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=manifest)
    # the API server compiles the policy and sees its binding a moment later: wait until a
    # binding in a refused namespace is refused
    wait_for(lambda: _refusal(kube_api, "kube-public", VALID["vault-token-bearer"]).status in
             (403, 422), 60, "the binding policy to take effect")
    return policy


def _user_api(kube, kube_api, namespace: str, *, may_read: tuple = (), may_token: tuple = ()):
    """An API client impersonating a fresh user who may create and update bindings in
    ``namespace``, get the Secrets ``may_read`` and request tokens for ``may_token``."""
    user = "user-" + secrets.token_hex(4)
    rbac = client.RbacAuthorizationV1Api(kube_api)
    rules = [client.V1PolicyRule(api_groups=[GROUP], resources=[PLURAL],
                                 verbs=["get", "list", "create", "update", "patch", "delete"])]
    if may_read:
        rules.append(client.V1PolicyRule(api_groups=[""], resources=["secrets"],
                                         resource_names=list(may_read), verbs=["get"]))
    if may_token:
        rules.append(client.V1PolicyRule(api_groups=[""], resources=["serviceaccounts/token"],
                                         resource_names=list(may_token), verbs=["create"]))
    rbac.create_namespaced_role(namespace, client.V1Role(
        metadata=client.V1ObjectMeta(name=user), rules=rules))
    rbac.create_namespaced_role_binding(namespace, client.V1RoleBinding(
        metadata=client.V1ObjectMeta(name=user),
        role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role", name=user),
        subjects=[client.RbacV1Subject(kind="User", name=user, api_group="rbac.authorization.k8s.io")]))
    api = kube.api_client()
    api.set_default_header("Impersonate-User", user)
    # RBAC is read from an informer: wait until the user's binding rights are in effect
    wait_for(lambda: client.CustomObjectsApi(api).list_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL) is not None, 30, f"RBAC for {user}")
    return api


@pytest.mark.parametrize("example,secret,field", SECRET_REFS, ids=[s[0] for s in SECRET_REFS])
def test_a_user_who_may_not_read_the_secret_cannot_make_a_binding_read_it(
        kube, kube_api, binding_policy, namespace, example, secret, field):
    with _user_api(kube, kube_api, namespace) as api:
        refusal = _refusal(api, namespace, VALID[example])
    assert refusal.status == 403, refusal.body
    assert field in refusal.body and f"Secret {secret}" in refusal.body


@pytest.mark.parametrize("example,secret,field", SECRET_REFS, ids=[s[0] for s in SECRET_REFS])
def test_a_user_who_may_read_the_secret_may_create_the_binding(
        kube, kube_api, binding_policy, namespace, example, secret, field):
    with _user_api(kube, kube_api, namespace, may_read=(secret,)) as api:
        created = _create(api, namespace, "mlflow", VALID[example])
    assert created["metadata"]["name"] == "mlflow"


@pytest.mark.parametrize("example,field", SERVICE_ACCOUNTS, ids=[s[0] for s in SERVICE_ACCOUNTS])
def test_a_user_who_may_not_request_tokens_cannot_make_a_binding_mint_one(
        kube, kube_api, binding_policy, namespace, example, field):
    with _user_api(kube, kube_api, namespace, may_read=("vault-token",)) as api:
        refusal = _refusal(api, namespace, VALID[example])
    assert refusal.status == 403, refusal.body
    assert field in refusal.body and "serviceaccounts/token" in refusal.body


@pytest.mark.parametrize("example,field", SERVICE_ACCOUNTS, ids=[s[0] for s in SERVICE_ACCOUNTS])
def test_a_user_who_may_request_tokens_for_the_service_account_may_create_the_binding(
        kube, kube_api, binding_policy, namespace, example, field):
    with _user_api(kube, kube_api, namespace, may_token=("mlflow-reader",)) as api:
        assert _create(api, namespace, "mlflow", VALID[example])["metadata"]["name"] == "mlflow"


def test_a_right_to_another_service_account_is_not_enough(kube, kube_api, binding_policy, namespace):
    with _user_api(kube, kube_api, namespace, may_token=("someone-else",)) as api:
        refusal = _refusal(api, namespace, VALID["vault-kubernetes-basic-kv1"])
    assert refusal.status == 403 and "mlflow-reader" in refusal.body


def test_changing_the_spec_is_checked_but_a_label_change_is_not(
        kube, kube_api, binding_policy, namespace):
    """A user who may edit bindings cannot repoint one at a Secret they may not read, but may
    still change its metadata (the operator's finalizer patches, labels)."""
    with _user_api(kube, kube_api, namespace, may_read=("vault-token",)) as owner:
        _create(owner, namespace, "mlflow", VALID["vault-token-bearer"])
    custom = client.CustomObjectsApi
    with _user_api(kube, kube_api, namespace) as other:
        custom(other).patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, "mlflow", {"metadata": {"labels": {"team": "a"}}},
            _content_type="application/merge-patch+json")
        repoint = {"spec": {"provider": {"vault": {"auth": {"token": {"secretRef": {
            "name": "other-token", "key": "token"}}}}}}}
        with pytest.raises(ApiException) as refused:
            custom(other).patch_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, "mlflow", repoint,
                _content_type="application/merge-patch+json")
    assert refused.value.status == 403 and "other-token" in refused.value.body


@pytest.mark.parametrize("example,path", [
    ("vault-kubernetes-basic-kv1", ("provider", "vault", "auth", "kubernetes")),
    ("aws-web-identity-plain", ("provider", "awsSecretsManager", "auth", "webIdentity")),
    ("azure-workload-identity", ("provider", "azureKeyVault", "auth", "workloadIdentity")),
])
def test_an_api_server_audience_is_refused_at_apply_even_for_an_admin(
        kube_api, binding_policy, namespace, example, path):
    spec = copy.deepcopy(VALID[example])
    node = spec
    for key in path:
        node = node[key]
    node["audience"] = API_AUDIENCES[0]
    refusal = _refusal(kube_api, namespace, spec)
    assert refusal.status == 403 and "spec." + ".".join(path) + ".audience" in refusal.body


@pytest.mark.parametrize("refused", REFUSED_NAMESPACES)
def test_bindings_in_system_and_operator_namespaces_are_refused_at_apply(
        kube_api, binding_policy, refused):
    refusal = _refusal(kube_api, refused, VALID["vault-token-bearer"])
    assert refusal.status == 403 and f"namespace {refused}" in refusal.body
