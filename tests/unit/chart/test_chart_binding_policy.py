"""The chart's admission policy on MlflowAuthBindings: shipped as files/policies/ has it (the
e2e tests apply that same file), bound with its parameters, and configurable from values."""
from __future__ import annotations

from pathlib import Path

import yaml

from mlflow_secrets_auth_api import GROUP, PLURAL
from tests.unit.chart.conftest import CHART, NAMESPACE

POLICY_FILE = Path(CHART) / "files" / "policies" / "binding-authorization.yaml"


def test_the_chart_ships_the_policy_file_unchanged_but_for_its_name_and_labels(render):
    rendered = render().one("ValidatingAdmissionPolicy")
    source = yaml.safe_load(POLICY_FILE.read_text())
    labels = rendered["metadata"].pop("labels")
    assert labels["app.kubernetes.io/part-of"] == "mlflow-secrets-auth"
    assert rendered["metadata"].pop("name") == "msa-mlflow-secrets-auth-bindings"
    source["metadata"].pop("name")
    assert rendered == source


def _checks(policy: dict, resource: str, verb: str) -> dict:
    """field -> validation, for each validation that asks the authorizer ``verb`` ``resource``."""
    found = {}
    for validation in policy["spec"]["validations"]:
        expr = validation["expression"]
        if f"resource('{resource}')" in expr and f".check('{verb}')" in expr:
            field = validation["messageExpression"].split("'")[1].split(":")[0]
            found[field] = validation
    return found


def test_the_policy_checks_the_authors_rights_on_every_secret_and_service_account_reference():
    policy = yaml.safe_load(POLICY_FILE.read_text())
    assert policy["spec"]["failurePolicy"] == "Fail"
    rules = policy["spec"]["matchConstraints"]["resourceRules"]
    assert rules == [{"apiGroups": [GROUP], "apiVersions": ["*"],
                      "resources": [PLURAL], "operations": ["CREATE", "UPDATE"]}]
    tokens = _checks(policy, "serviceaccounts", "create")
    secrets = _checks(policy, "secrets", "get")
    assert set(tokens) == {f"spec.provider.{f}.serviceAccountName" for f in (
        "vault.auth.kubernetes", "awsSecretsManager.auth.webIdentity",
        "azureKeyVault.auth.workloadIdentity")}
    assert set(secrets) == {f"spec.provider.{f}" for f in (
        "vault.auth.token.secretRef", "vault.auth.appRole.secretIdRef",
        "awsSecretsManager.auth.staticKeys.secretRef", "azureKeyVault.auth.clientSecret.secretRef")}
    assert all(".subresource('token')" in v["expression"] for v in tokens.values())
    assert all(v["reason"] == "Forbidden" for v in [*tokens.values(), *secrets.values()])


def test_every_secret_and_service_account_reference_of_the_crd_is_checked_by_the_policy():
    """A new secretRef or serviceAccountName in the CRD must be added to the policy too."""
    crd = (Path(CHART).parents[1] / "crds" / "mlflowauthbindings.yaml").read_text()
    policy = yaml.safe_load(POLICY_FILE.read_text())
    refs = [line.strip() for line in crd.splitlines()
            if line.strip().startswith(("secretRef:", "secretIdRef:"))]
    assert len(refs) == len(_checks(policy, "secrets", "get")) == 4
    assert crd.count("serviceAccountName:") == len(_checks(policy, "serviceaccounts", "create"))


def test_the_policy_is_bound_with_the_refused_namespaces_and_audiences(render):
    rendered = render({"operator": {"refusedNamespaces": ["kube-system", "infra"],
                                    "apiAudiences": ["https://kubernetes.default.svc"]}})
    binding = rendered.one("ValidatingAdmissionPolicyBinding")
    assert binding["spec"]["policyName"] == "msa-mlflow-secrets-auth-bindings"
    assert binding["spec"]["validationActions"] == ["Deny"]
    ref = binding["spec"]["paramRef"]
    assert ref["namespace"] == NAMESPACE and ref["parameterNotFoundAction"] == "Deny"
    params = rendered.one("ConfigMap", ref["name"])
    assert params["data"] == {"refusedNamespaces": f"{NAMESPACE},kube-system,infra",
                              "refusedAudiences": "https://kubernetes.default.svc"}


def test_the_operator_gets_the_same_lists_and_its_identity_allowlist(render):
    rendered = render({"operator": {"apiAudiences": ["a1"],
                                    "operatorIdentityAddresses": ["https://vault.example.com:8200"],
                                    "namespaceWorkers": 2}})
    container = rendered.one("Deployment", "msa-mlflow-secrets-auth-operator")[
        "spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["MSA_API_AUDIENCES"] == "a1"
    assert env["MSA_OPERATOR_IDENTITY_ADDRESSES"] == "https://vault.example.com:8200"
    assert env["MSA_REFUSED_NAMESPACES"] == "kube-system,kube-public,kube-node-lease"
    assert env["MSA_OPERATOR_NAMESPACE"] == NAMESPACE
    assert env["MSA_NAMESPACE_WORKERS"] == "2"


def test_the_policy_can_be_turned_off(render):
    rendered = render({"bindingPolicy": {"enabled": False}})
    assert rendered.of_kind("ValidatingAdmissionPolicy") == []
    assert rendered.of_kind("ValidatingAdmissionPolicyBinding") == []


def test_bad_addresses_are_refused_by_the_schema(render_error):
    assert "operatorIdentityAddresses" in render_error(
        {"operator": {"operatorIdentityAddresses": ["vault.example.com"]}})


def test_self_managed_tls_narrows_the_webhooks_patch_to_the_ca_bundle(render):
    rendered = render({"tls": {"mode": "selfManaged"}})
    policy = rendered.one("ValidatingAdmissionPolicy", "msa-mlflow-secrets-auth-webhook-cabundle-only")
    rule = policy["spec"]["matchConstraints"]["resourceRules"][0]
    assert rule["resources"] == ["mutatingwebhookconfigurations"]
    assert rule["resourceNames"] == ["msa-mlflow-secrets-auth"]
    assert "system:serviceaccount:msa-system:msa-mlflow-secrets-auth-webhook" in \
        policy["spec"]["matchConditions"][0]["expression"]
    check = policy["spec"]["validations"][0]["expression"]
    for field in ("rules", "objectSelector", "namespaceSelector", "failurePolicy",
                  "clientConfig.service", "clientConfig.url", "metadata.annotations"):
        assert f".{field} ==" in check, field
    assert "caBundle" not in check
    binding = rendered.one("ValidatingAdmissionPolicyBinding",
                           "msa-mlflow-secrets-auth-webhook-cabundle-only")
    assert binding["spec"]["validationActions"] == ["Deny"]


def test_other_tls_modes_need_no_webhook_configuration_policy(render):
    for mode in ("helm", "certManager"):
        names = [p["metadata"]["name"] for p in render({"tls": {"mode": mode}}).of_kind(
            "ValidatingAdmissionPolicy")]
        assert names == ["msa-mlflow-secrets-auth-bindings"]
