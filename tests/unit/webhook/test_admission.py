"""Admission decisions: which binding, every denial's message, warnings, skips."""
import copy

import pytest

from mlflow_secrets_auth_webhook.admission import BadReview, admit

from .helpers import decoded_patch, env_of, patched


def run(review, bindings, settings):
    return admit(review, lambda namespace: bindings, settings)


def second_binding(binding_raw, name):
    other = copy.deepcopy(binding_raw)
    other["metadata"]["name"] = name
    other["status"]["secretName"] = f"{name}-mlflow-auth"
    return other


def test_labelled_pod_with_the_namespaces_only_binding_is_mutated(review, binding_raw, settings):
    outcome = run(review, [binding_raw], settings)
    response = outcome.body["response"]
    assert outcome.result == "mutated"
    assert response["allowed"] is True and response["uid"] == review["request"]["uid"]
    assert response["patchType"] == "JSONPatch"
    pod = patched(review["request"]["object"], decoded_patch(outcome.body))
    assert env_of(pod["spec"]["containers"][1])["MLFLOW_TRACKING_AUTH"] == "mlflow_secrets_auth"


def test_pod_without_label_is_not_mutated(review, binding_raw, settings):
    del review["request"]["object"]["metadata"]["labels"]["mlflow-secrets-auth/inject"]
    outcome = run(review, [binding_raw], settings)
    assert outcome.result == "skipped"
    assert outcome.body["response"] == {"uid": review["request"]["uid"], "allowed": True}


def test_already_injected_pod_is_allowed_without_a_patch(review, binding_raw, settings):
    review["request"]["object"]["metadata"]["annotations"] = {"mlflow-secrets-auth/injected": "true"}
    outcome = run(review, [], settings)
    assert outcome.result == "already_injected"
    assert "patch" not in outcome.body["response"] and outcome.body["response"]["allowed"] is True


@pytest.mark.parametrize("operation,kind", [("UPDATE", "Pod"), ("CREATE", "Deployment")])
def test_other_operations_and_kinds_are_allowed_untouched(review, settings, operation, kind):
    review["request"]["operation"] = operation
    review["request"]["kind"]["kind"] = kind
    outcome = run(review, [], settings)
    assert outcome.result == "skipped" and outcome.body["response"]["allowed"] is True


def test_annotation_chooses_among_several_bindings(review, binding_raw, settings):
    review["request"]["object"]["metadata"]["annotations"] = {"mlflow-secrets-auth/binding": "other"}
    outcome = run(review, [binding_raw, second_binding(binding_raw, "other")], settings)
    pod = patched(review["request"]["object"], decoded_patch(outcome.body))
    volume = next(v for v in pod["spec"]["volumes"] if "projected" in v)
    assert volume["projected"]["sources"][0]["secret"]["name"] == "other-mlflow-auth"


def denial(outcome):
    assert outcome.result == "denied"
    response = outcome.body["response"]
    assert response["allowed"] is False and "patch" not in response
    assert response["status"]["code"] == 403
    return response["status"]["message"]


def test_namespace_without_binding_is_denied_with_what_to_do(review, settings):
    message = denial(run(review, [], settings))
    assert "has no MlflowAuthBinding" in message and "kubectl apply -n team-a" in message
    assert "remove the label" in message


def test_several_bindings_without_annotation_are_denied_naming_them(review, binding_raw, settings):
    message = denial(run(review, [binding_raw, second_binding(binding_raw, "other")], settings))
    assert "2 MlflowAuthBindings (mlflow, other)" in message
    assert "mlflow-secrets-auth/binding: <name>" in message


def test_annotation_naming_a_missing_binding_is_denied(review, binding_raw, settings):
    review["request"]["object"]["metadata"]["annotations"] = {"mlflow-secrets-auth/binding": "nope"}
    message = denial(run(review, [binding_raw], settings))
    assert "'nope'" in message and "it has: mlflow" in message and "fix the annotation" in message


def test_binding_whose_secret_was_never_written_is_denied(review, binding_raw, settings):
    binding_raw["status"] = {"conditions": [{"type": "Ready", "status": "False",
                                             "reason": "ProviderError", "message": "403 from vault"}]}
    message = denial(run(review, [binding_raw], settings))
    assert "has not written its credential Secret yet" in message
    assert "Ready=False (ProviderError: 403 from vault)" in message
    assert "kubectl describe mlflowauthbinding mlflow -n team-a" in message


def test_service_account_not_allowed_by_the_binding_is_denied(review, binding_raw, settings):
    review["request"]["object"]["spec"]["serviceAccountName"] = "intruder"
    message = denial(run(review, [binding_raw], settings))
    assert "'intruder'" in message and "spec.allowedServiceAccounts: trainer" in message
    assert "spec.serviceAccountName" in message


def test_empty_allowed_service_accounts_allows_any(review, binding_raw, settings):
    binding_raw["spec"]["allowedServiceAccounts"] = []
    review["request"]["object"]["spec"]["serviceAccountName"] = "anyone"
    assert run(review, [binding_raw], settings).result == "mutated"


def test_malformed_binding_is_denied_with_the_field(review, binding_raw, settings):
    binding_raw["spec"]["provider"] = {}
    message = denial(run(review, [binding_raw], settings))
    assert "could not be read" in message and "spec.provider" in message


def test_unready_binding_with_a_secret_is_allowed_with_a_warning(review, binding_raw, settings):
    binding_raw["status"]["conditions"][0].update(status="False", reason="ProviderUnavailable",
                                                  message="vault unreachable")
    outcome = run(review, [binding_raw], settings)
    assert outcome.result == "mutated"
    [warning] = outcome.body["response"]["warnings"]
    assert "not Ready" in warning and "ProviderUnavailable" in warning and "'mlflow-mlflow-auth'" in warning


def test_pod_conflicting_with_our_names_is_denied(review, binding_raw, settings):
    review["request"]["object"]["spec"]["volumes"] = [{"name": "mlflow-secrets-auth-plugin", "emptyDir": {}}]
    assert "remove that volume" in denial(run(review, [binding_raw], settings))


def test_api_failure_is_a_retryable_denial_not_a_crash(review, settings):
    def broken(namespace):
        raise ConnectionError("apiserver down")
    outcome = admit(review, broken, settings)
    assert outcome.result == "error"
    assert outcome.body["response"]["status"]["code"] == 503
    assert "retry" in outcome.body["response"]["status"]["message"]


def test_pod_with_wrong_types_is_denied_as_invalid(review, settings):
    review["request"]["object"]["spec"]["containers"] = [{"name": "c", "env": "not-a-list"}]
    outcome = run(review, [], settings)
    assert outcome.result == "invalid" and outcome.body["response"]["status"]["code"] == 400


@pytest.mark.parametrize("body", [None, [], "x", {}, {"apiVersion": "admission.k8s.io/v1beta1",
                                                       "kind": "AdmissionReview", "request": {"uid": "u"}}])
def test_a_body_that_is_not_a_review_is_a_bad_request(body, settings):
    with pytest.raises(BadReview):
        admit(body, lambda namespace: [], settings)
