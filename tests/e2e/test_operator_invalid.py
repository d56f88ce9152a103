"""Invalid bindings: each is rejected at apply (OpenAPI + CEL, by the real API server) or reported
with a condition naming the field; the operator stays healthy throughout."""
from __future__ import annotations

import pytest
from kubernetes.client.rest import ApiException

from mlflow_secrets_auth_api import CRD_NAME
from tests.e2e.fixtures_operator import create_binding, put_secret, wait_ready
from tests.e2e.waiting import wait_for
from tests.unit.api.examples import INVALID, VALID


@pytest.mark.parametrize("case", sorted(INVALID))
def test_invalid_binding_is_rejected_at_apply_naming_the_field(case, operator, kube_api, namespace):
    example = INVALID[case]
    with pytest.raises(ApiException) as err:
        create_binding(kube_api, namespace, example.name or "bad", example.spec)
    assert err.value.status in (400, 422), err.value.body
    assert example.field.split(".")[-1] in err.value.body, err.value.body
    assert operator.still_healthy()


@pytest.mark.parametrize("case,spec,reason,field", [
    ("missing-token-secret", VALID["vault-token-bearer"], "SecretRefNotFound",
     "spec.provider.vault.auth.token.secretRef"),
    ("missing-service-account", VALID["vault-kubernetes-basic-kv1"], "ServiceAccountNotFound",
     "spec.provider.vault.auth.kubernetes.serviceAccountName"),
    ("operator-identity-not-allowed", VALID["azure-operator-identity"], "OperatorIdentityNotAllowed",
     "spec.provider.azureKeyVault.auth.operatorIdentity"),
    ("aws-keys-secret-missing", VALID["aws-static-keys-binary-base64"], "SecretRefNotFound",
     "spec.provider.awsSecretsManager.auth.staticKeys.secretRef"),
])
def test_binding_the_api_accepts_but_cannot_work_is_reported_naming_the_field(
        case, spec, reason, field, operator, kube_api, namespace):
    create_binding(kube_api, namespace, case, spec)
    binding = wait_ready(kube_api, namespace, case, status="False", reason=reason)
    assert field in binding["status"]["conditions"][0]["message"]
    assert operator.still_healthy()


def test_a_token_secret_without_the_key_names_the_key(operator, kube_api, namespace):
    put_secret(kube_api, namespace, "vault-token", {"other": "x" * 12})
    create_binding(kube_api, namespace, "nokey", VALID["vault-token-bearer"])
    binding = wait_ready(kube_api, namespace, "nokey", status="False", reason="SecretRefNotFound")
    assert "'token'" in binding["status"]["conditions"][0]["message"]
    assert operator.still_healthy()


def _explain(kube, field: str) -> str:
    """``kubectl explain``, retried while the API server publishes the CRD's OpenAPI schema."""
    def attempt():
        result = kube.kubectl("explain", field, check=False)
        return result.stdout if result.returncode == 0 else None
    return wait_for(attempt, 60, f"kubectl explain {field}", interval=2)


def test_kubectl_explain_teaches_the_binding_fields(operator):
    text = _explain(operator.kube, "mab.spec.provider.vault.auth")
    assert "exactly one of kubernetes, token, appRole, operatorIdentity" in " ".join(text.split())
    assert "appRole" in text
    assert "serviceAccountName" in _explain(operator.kube, "mab.spec.provider.vault.auth.kubernetes")
    printed = operator.kube.kubectl("get", "crd", CRD_NAME,
                                    "-o", "jsonpath={.spec.versions[0].additionalPrinterColumns[*].name}"
                                    ).stdout
    assert printed.split() == ["Ready", "Reason", "Provider", "Expires", "Age"]
